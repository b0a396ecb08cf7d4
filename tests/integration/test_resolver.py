"""A neighbour named by a host name is looked up off the server's loop
(docs/PROTOCOL.md, "Hosts and addresses"): while DNS does not answer, the
server keeps answering its clients at once, and the dial fails with the
resolver's reason when the lookup times out.

The server runs in a network namespace whose resolv.conf names a
nameserver on its loopback that reads queries and never answers (a UDP
socket nobody reads: no ICMP error, so each lookup waits for the whole
timeout, 2 s here).  Needs root and `ip netns`; skipped otherwise.
"""
import json
import os
import random
import signal
import subprocess
import time

import pytest

from conftest import free_port, proc_kib, program, read_log, wait_for, wait_log
from test_hosts import config_text
from test_multihost import netns_available, sh

# Times every PING for `seconds`, from inside the namespace: the largest
# wait for an answer, and how many were answered.
PROBE = """
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
worst, n, end = 0.0, 0, time.time() + seconds
while time.time() < end:
    t = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"PING\\n")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        got += b
    s.close()
    assert got == b"? PING\\n", got
    worst, n = max(worst, time.time() - t), n + 1
    time.sleep(0.05)
print(json.dumps({"worst": worst, "answered": n}))
"""

SINK = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
time.sleep(600)
"""


class SlowDnsNamespace:
    def __init__(self):
        self.ns = "herdres%04x" % random.randrange(1 << 16)
        self.etc = f"/etc/netns/{self.ns}"
        self.procs = []

    def __enter__(self):
        sh("ip", "netns", "add", self.ns)
        os.makedirs(self.etc, exist_ok=True)
        with open(f"{self.etc}/resolv.conf", "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
        with open(f"{self.etc}/hosts", "w") as f:
            f.write("127.0.0.1 localhost\n")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sink = self.spawn(["/usr/bin/python3", "-c", SINK], stdout=subprocess.PIPE)
        assert sink.stdout.readline() == b"ready\n"
        return self

    def spawn(self, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kw)
        self.procs.append(p)
        return p

    def run(self, argv, timeout):
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], capture_output=True,
                              text=True, timeout=timeout)

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        sh("ip", "netns", "del", self.ns, check=False)
        for f in ("resolv.conf", "hosts"):
            if os.path.exists(f"{self.etc}/{f}"):
                os.unlink(f"{self.etc}/{f}")
        os.rmdir(self.etc)


def resolver_children(pid):
    """Pids of pid's children named herd-resolver."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        if comm == "herd-resolver" and int(rest.split()[1]) == pid:
            found.append(int(d))
    return found


@pytest.fixture
def slow_dns():
    why = netns_available()
    if why:
        pytest.skip(why)
    with SlowDnsNamespace() as ns:
        yield ns


def test_a_host_name_dns_does_not_answer_never_holds_the_loop(tmp_path, slow_dns):
    port = free_port()
    text = config_text({"Alpha": ("127.0.0.1", port, ["Beta"]),
                        "Beta": ("beta.herd-test", port + 1, ["Alpha"])})
    cfg = tmp_path / "config.yml"
    cfg.write_text(text)
    env = dict(os.environ, HERD_SECRET="resolver-test-secret")
    err = open(tmp_path / "Alpha.stderr", "wb")
    server = slow_dns.spawn([program("herd-server"), "Alpha", "-c", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=err)
    assert wait_log(str(tmp_path), "Alpha", "listening server=Alpha", timeout=10)
    pid = int(read_log(str(tmp_path), "Alpha").split("listening server=Alpha")[1]
              .split(" pid=")[1].split()[0])
    # Alpha dials Beta (its name sorts first) and asks for beta.herd-test
    # again after each 2 s timeout: 4 s of PINGs span two lookups
    probe = slow_dns.run(["/usr/bin/python3", "-c", PROBE, str(port), "4"], timeout=60)
    assert probe.returncode == 0, probe.stderr
    got = json.loads(probe.stdout)
    assert got["worst"] < 1.0, f"a PING waited {got['worst']:.2f} s for the lookup"
    assert got["answered"] >= 20, got
    assert wait_log(str(tmp_path), "Alpha", "link-dial-failed peer=Beta reason=cannot resolve "
                    "'beta.herd-test': Temporary failure in name resolution (retrying)",
                    timeout=10)
    # the lookups run in one helper process, which a loss does not stop
    helpers = resolver_children(pid)
    assert len(helpers) == 1, helpers
    os.kill(helpers[0], signal.SIGKILL)
    assert wait_log(str(tmp_path), "Alpha", f"resolver pid={helpers[0]} went away", timeout=10)
    assert wait_for(lambda: resolver_children(pid) not in ([], helpers), timeout=10)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0
    assert resolver_children(pid) == []
    err.close()
    stderr = (tmp_path / "Alpha.stderr").read_text(errors="replace")
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr


def test_the_resolver_helper_holds_none_of_the_servers_memory(tmp_path):
    """The helper is a new image of herd-server, not a forked copy of the
    server: a copy kept the whole table as it was at the fork, and each
    page the server changed afterwards was a page more (a 300000-client
    table: 70 MB more, for a process that only calls getaddrinfo)."""
    port = free_port()
    cfg = tmp_path / "config.yml"
    cfg.write_text(config_text({"Alpha": ("127.0.0.1", port, ["Beta"]),
                                "Beta": ("localhost", port + 1, ["Alpha"])}))
    (tmp_path / "state").mkdir(mode=0o700)
    n, now = 200000, time.time()
    with open(tmp_path / "state" / "Alpha.snap", "w") as f:
        f.write("HERDSNAP 1 Alpha\n")
        f.writelines(f"AT Alpha +0.000000001 client{i:07d}-{'x' * 60} "
                     f"+34.068930-118.445127 {now - 60 + i / 1e6:.6f}\n" for i in range(n))
        f.write(f"END {n}\n")
    env = dict(os.environ, HERD_SECRET="resolver-test-secret")
    with open(tmp_path / "Alpha.stderr", "wb") as err:
        server = subprocess.Popen([program("herd-server"), "Alpha", "-c", str(cfg)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_log(str(tmp_path), "Alpha", f"snapshot-loaded file={tmp_path}/state/"
                        f"Alpha.snap clients={n}", timeout=30)
        assert wait_log(str(tmp_path), "Alpha", "listening server=Alpha", timeout=30)
        # Alpha dials Beta (its name sorts first): localhost goes to the helper
        assert wait_for(lambda: resolver_children(server.pid), timeout=10)
        helper = resolver_children(server.pid)[0]
        mine, theirs = proc_kib(helper), proc_kib(server.pid)
        assert mine < theirs * 0.4, f"helper {mine} kB, server {theirs} kB"
        with open(f"/proc/{helper}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        assert cmdline[:2] == [b"herd-server", b"--resolver-helper"], cmdline
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        assert not os.path.exists(f"/proc/{helper}")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    stderr = (tmp_path / "Alpha.stderr").read_text(errors="replace")
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr


@pytest.mark.skipif(not os.path.exists("/usr/bin/valgrind"), reason="needs valgrind")
def test_the_resolver_helper_starts_under_valgrind(tmp_path):
    """Under valgrind, /proc/self/exe is valgrind's tool, which will not run
    as the helper: the program's own path comes first (else every dial
    started a helper that died at once, and no name was ever looked up)."""
    with open(program("herd-server"), "rb") as f:
        if b"libasan" in f.read():
            pytest.skip("valgrind cannot run a sanitized build")
    port = free_port()
    cfg = tmp_path / "config.yml"
    cfg.write_text(config_text({"Alpha": ("127.0.0.1", port, ["Beta"]),
                                "Beta": ("localhost", port + 1, ["Alpha"])}))
    env = dict(os.environ, HERD_SECRET="resolver-test-secret")
    with open(tmp_path / "Alpha.stderr", "wb") as err:
        server = subprocess.Popen(["/usr/bin/valgrind", "--quiet", program("herd-server"),
                                   "Alpha", "-c", str(cfg)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        # localhost looked up, then the dial refused: nobody listens there
        refused = (f"link-dial-failed peer=Beta addr=127.0.0.1:{port + 1} "
                   "reason=Connection refused")
        assert wait_for(lambda: any(t in read_log(str(tmp_path), "Alpha")
                                    for t in (refused, "went away")), timeout=60)
        log = read_log(str(tmp_path), "Alpha")
        assert refused in log and "went away" not in log, log
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_the_reason_for_a_longest_name_is_logged_whole(tmp_path, slow_dns):
    """A neighbour's name of 253 characters (the most a host name may have)
    that cannot be looked up: the helper's answer cut the reason off."""
    port = free_port()
    name = ".".join(["a" * 63] * 4)[:253]
    text = config_text({"Alpha": ("127.0.0.1", port, ["Beta"]),
                        "Beta": (name, port + 1, ["Alpha"])})
    cfg = tmp_path / "config.yml"
    cfg.write_text(text)
    env = dict(os.environ, HERD_SECRET="resolver-test-secret")
    with open(tmp_path / "Alpha.stderr", "wb") as err:
        server = slow_dns.spawn([program("herd-server"), "Alpha", "-c", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_log(str(tmp_path), "Alpha", "link-dial-failed peer=Beta", timeout=20)
        line = next(l for l in read_log(str(tmp_path), "Alpha").splitlines()
                    if "link-dial-failed" in l)
        assert line.endswith(f"reason=cannot resolve '{name}': Temporary failure in name "
                             "resolution (retrying)"), line
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
