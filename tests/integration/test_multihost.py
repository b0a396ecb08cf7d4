"""Multi-host: each server in its own network namespace on a shared bridge.

Every server has its own address (same port on all), the config names
those hosts, and one server at a time is cut off the bridge (its veth set
down, so packets vanish without a reset), given updates on both sides,
and kept cut until both ends of each of its links logged link-down (the
links' TCP timeout, about 15 s); then healed: the links must come back
with a catch-up each way, and every server must end with the newest value
of every client.
Needs root and `ip netns`; skipped with the reason otherwise.
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import DEFAULT_LINKS, PLACES, exchange, program

NAMES = list(DEFAULT_LINKS)
PORT = 10500


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, **kw)


def netns_available():
    """None when this test can make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("ip"):
        return "needs ip (iproute2)"
    probe = f"herdprobe{os.getpid() % 100000}"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns unavailable: {r.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return None


def plug(bridge, ns, veth, addr):
    """A veth pair: veth on the bridge, its peer eth0 with addr/24 in the
    namespace ns (which exists already), both up, and ns's loopback up."""
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"p{veth}")
    sh("ip", "link", "set", f"p{veth}", "netns", ns)
    sh("ip", "-n", ns, "link", "set", f"p{veth}", "name", "eth0")
    sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "set", veth, "master", bridge)
    sh("ip", "link", "set", veth, "up")


class Hosts:
    def __init__(self, tmp_path):
        self.tag = "%04x" % random.randrange(1 << 16)
        self.net = f"10.{100 + random.randrange(100)}.{random.randrange(250)}"
        self.bridge = f"hb{self.tag}"
        self.addr = {n: f"{self.net}.{i + 1}" for i, n in enumerate(NAMES)}
        self.ns = {n: f"herd{self.tag}{i}" for i, n in enumerate(NAMES)}
        self.veth = {n: f"hv{self.tag}{i}" for i, n in enumerate(NAMES)}
        self.dir = str(tmp_path)
        self.procs = {}

    def up(self):
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.net}.254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for n in NAMES:
            sh("ip", "netns", "add", self.ns[n])
            plug(self.bridge, self.ns[n], self.veth[n], self.addr[n])

    def write_config(self):
        text = "servers:\n"
        for n in NAMES:
            text += (f"  {n}: {{ host: {self.addr[n]}, port: {PORT}, "
                     f"neighbors: [{', '.join(DEFAULT_LINKS[n])}] }}\n")
        text += f"places: {{ local_file: {PLACES} }}\nlogging: {{ dir: logs, flush_ms: 50 }}\n"
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write(text)

    def start(self):
        env = dict(os.environ, HERD_SECRET="multi-host-secret")
        for n in NAMES:
            err = open(os.path.join(self.dir, f"{n}.stderr"), "wb")
            self.procs[n] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns[n], program("herd-server"), n, "-c", self.config],
                stdout=subprocess.DEVNULL, stderr=err, env=env)
        for n in NAMES:
            deadline = time.time() + 10
            while True:
                try:
                    socket.create_connection((self.addr[n], PORT), timeout=0.5).close()
                    break
                except OSError:
                    assert time.time() < deadline, f"{n} did not listen"
                    time.sleep(0.05)

    def send(self, n, data):
        return exchange(PORT, data, host=self.addr[n], timeout=5)

    def send_inside(self, n, line):
        """From inside n's namespace (it may be cut off the bridge)."""
        code = ("import socket,sys\n"
                f"s=socket.create_connection(('{self.addr[n]}',{PORT}),timeout=5)\n"
                f"s.sendall({line!r});s.shutdown(socket.SHUT_WR)\n"
                "o=b''\nwhile True:\n b=s.recv(65536)\n if not b: break\n o+=b\n"
                "sys.stdout.buffer.write(o)\n")
        r = subprocess.run(["ip", "netns", "exec", self.ns[n], "/usr/bin/python3", "-c", code],
                           capture_output=True, timeout=20)
        return r.stdout

    def stored(self, n, client):
        reply = self.send(n, b"WHATSAT %s 0.001 1\n" % client)
        return None if reply.startswith(b"? ") else reply.split(b"\n", 1)[0]

    def log(self, n):
        try:
            return open(os.path.join(self.dir, "logs", f"{n}.log")).read()
        except FileNotFoundError:
            return ""

    def down(self):
        """Stop everything; returns what went wrong with the servers."""
        problems = []
        for n, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for n, p in self.procs.items():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            err = open(os.path.join(self.dir, f"{n}.stderr"), errors="replace").read()
            if p.returncode != 0 or "Sanitizer" in err or "runtime error" in err:
                problems.append(f"{n} exited {p.returncode}: {err[-1500:]}")
        for n in NAMES:
            sh("ip", "netns", "del", self.ns[n], check=False)
            sh("ip", "link", "del", self.veth[n], check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        return problems


def wait_all(hosts, client, want, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(hosts.stored(n, client) == want for n in NAMES):
            return
        time.sleep(0.2)
    raise AssertionError({n: hosts.stored(n, client) for n in NAMES})


def wait_lines(hosts, wanted, since, timeout):
    """Until each (server, text) of wanted is in that server's log past the
    offset since[server]: lines of this cut, not of an earlier one."""
    deadline = time.time() + timeout
    while True:
        missing = [(n, text) for n, text in wanted if text not in hosts.log(n)[since[n]:]]
        if not missing:
            return
        if time.time() > deadline:
            raise AssertionError(f"not logged within {timeout} s: {missing}")
        time.sleep(0.2)


def wait_any_line(hosts, choices, since, timeout):
    """Until one (server, text) of choices is in that server's log past
    since[server]."""
    deadline = time.time() + timeout
    while not any(text in hosts.log(n)[since[n]:] for n, text in choices):
        if time.time() > deadline:
            raise AssertionError(f"none logged within {timeout} s: {choices}")
        time.sleep(0.2)


def test_herd_across_hosts_survives_cut_links(tmp_path, report):
    why = netns_available()
    if why:
        pytest.skip(f"multi-host test skipped: {why}")
    hosts = Hosts(tmp_path)
    try:
        hosts.up()
        hosts.write_config()
        hosts.start()
        deadline = time.time() + 15
        while not all(hosts.log(n).count("link-up") >= len(DEFAULT_LINKS[n]) for n in NAMES):
            assert time.time() < deadline, "links did not come up across hosts"
            time.sleep(0.1)
        at = hosts.send("Bailey", b"IAMAT mh %s 1000\n" % b"+1.0+1.0")[:-1]
        wait_all(hosts, b"mh", at)
        for victim, other in (("Campbell", "Clark"), ("Clark", "Bailey")):
            near = DEFAULT_LINKS[victim]
            before = {n: len(hosts.log(n)) for n in NAMES}
            sh("ip", "link", "set", hosts.veth[victim], "down")      # cut off the bridge
            cut_at = time.time()
            t = int(time.time())
            inside = hosts.send_inside(victim, b"IAMAT cut-%s +2.0+2.0 %d.5\n" % (victim.encode(), t))
            outside = hosts.send(other, b"IAMAT out-%s +3.0+3.0 %d\n" % (victim.encode(), t))
            older = hosts.send(other, b"IAMAT both-%s +4.0+4.0 %d\n" % (victim.encode(), t))
            newer = hosts.send_inside(victim, b"IAMAT both-%s +5.0+5.0 %d.9\n" % (victim.encode(), t))
            assert inside.startswith(b"AT %s " % victim.encode()) and outside and older and newer
            # Packets vanish, so only the links' TCP timeouts (15 s with
            # data in flight) can notice: wait until both ends of every link
            # of the victim logged link-down.  The updates sent into the dead
            # links are lost with them; only the catch-up can bring them.
            down = [(victim, f"link-down peer={n} ") for n in near] + \
                   [(n, f"link-down peer={victim} ") for n in near]
            wait_lines(hosts, down, before, timeout=45)
            down_s = time.time() - cut_at
            assert hosts.stored(other, b"cut-%s" % victim.encode()) is None, "the cut did not cut"
            healed = {n: len(hosts.log(n)) for n in NAMES}
            sh("ip", "link", "set", hosts.veth[victim], "up")        # heal
            start = time.time()
            # the links come back (the dialer retries every 3.2 s at most), and
            # anti-entropy sends each side what the other lacks: the victim to
            # a neighbour, a neighbour to the victim (the first to find the
            # difference; the others may find none left)
            up = [(victim, f"link-up peer={n} ") for n in near] + \
                 [(n, f"link-up peer={victim} ") for n in near]
            wait_lines(hosts, up, healed, timeout=30)
            wait_any_line(hosts, [(victim, f"catch-up-sent peer={n} ") for n in near],
                          healed, timeout=30)
            wait_any_line(hosts, [(n, f"catch-up-sent peer={victim} ") for n in near],
                          healed, timeout=30)
            wait_all(hosts, b"cut-%s" % victim.encode(), inside[:-1])
            wait_all(hosts, b"out-%s" % victim.encode(), outside[:-1])
            wait_all(hosts, b"both-%s" % victim.encode(), newer[:-1])
            report(f"{victim} cut for {start - cut_at:.0f} s (its links down after "
                   f"{down_s:.0f} s); links up again and all five converged "
                   f"{time.time() - start:.1f} s after healing")
    finally:
        problems = hosts.down()
    assert not problems, problems
