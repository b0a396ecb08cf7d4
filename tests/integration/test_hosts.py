"""Hosts: IPv6 and names as a server's host, one config on every host, install.

docs/PROTOCOL.md, "Hosts" and "Processes and files": a server's host is an
IPv4 or IPv6 literal or a name; the supervisor, start_servers.sh,
stop_servers.sh and --status handle only the servers whose host is an
address of this machine, and refuse when there is none.

The namespace tests rebuild the multi-host herd on the real scripts: three
network namespaces on a bridge, each with its own copy of one config (the
same text), each running ./start_servers.sh -c on it.  They need root and
`ip netns`, and are skipped with the reason otherwise.  Namespaces, bridge
and veths are named phh*, and everything is removed, pass or fail.

A capture on the bridge: the `net` fixture's Net.capture() starts tcpdump
on the bridge (a missing tcpdump fails the test: `make deps` installs it)
and returns a Capture whose stop() gives the pcap file's bytes;
pcap_tcp_packets() reads them.  test_capture_on_the_bridge_finds_no_client_location
checks with it that the links between the hosts carry no client id or
location in plain text (docs/PROTOCOL.md, "Between servers": every link is
TLS 1.3), while a client's own line across the same bridge is seen.
"""
import os
import random
import secrets
import shutil
import signal
import select
import socket
import struct
import subprocess
import time

import pytest

import conftest
from conftest import BIN_DIR, PLACES, ROOT, free_port, program, wait_for
from test_multihost import netns_available, plug, sh

SECRET = "0123456789abcdef" * 4 + "\n"


def config_text(servers, extra=""):
    """servers: {name: (host, port, [neighbours])}; hosts are quoted (::1)."""
    text = "servers:\n"
    for n, (host, port, neigh) in servers.items():
        text += f"  {n}: {{ host: \"{host}\", port: {port}, neighbors: [{', '.join(neigh)}] }}\n"
    text += f"places: {{ local_file: {PLACES} }}\nlogging: {{ dir: logs, flush_ms: 50 }}\n"
    text += "supervisor: { stop_timeout_s: 5 }\n" + extra
    return text


def write_herd_dir(folder, text):
    """A host's copy of the config, with the herd's secret (mode 0600) as the
    README says to copy it to every host."""
    os.makedirs(os.path.join(folder, "state"), mode=0o700, exist_ok=True)
    path = os.path.join(folder, "config.yml")
    with open(path, "w") as f:
        f.write(text)
    secret = os.path.join(folder, "state", "herd.secret")
    with open(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(SECRET)
    return path


def script_env():
    env = dict(os.environ, HERD_BIN_DIR=BIN_DIR, HERD_START_TIMEOUT="15")
    env.pop("HERD_SECRET", None)
    return env


def run_script(name, config, prefix=(), timeout=60):
    return subprocess.run([*prefix, os.path.join(ROOT, name), "-c", config],
                          capture_output=True, text=True, env=script_env(), timeout=timeout)


def read_pids(folder):
    try:
        with open(os.path.join(folder, "servers.pid")) as f:
            return {k: int(v) for k, v in (line.split() for line in f)}
    except FileNotFoundError:
        return {}


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def kill_all(pids):
    for p in pids:
        if alive(p):
            os.kill(p, signal.SIGKILL)


def log_of(folder, name):
    try:
        return open(os.path.join(folder, "logs", f"{name}.log"), errors="replace").read()
    except FileNotFoundError:
        return ""


def supervisor_problems(folder):
    """What the supervisor's log says went wrong with its servers: a crash,
    or a stop that was not a clean exit (a sanitizer report makes one)."""
    log = log_of(folder, "supervisor")
    return [line for line in log.splitlines()
            if "child-crash" in line or "child-given-up" in line or "child-hung" in line
            or ("child-stopped" in line and "exit status 0" not in line)]


def exchange(host, port, data, timeout=5):
    return conftest.exchange(port, data, host=host, timeout=timeout)


def stored(host, port, client):
    reply = exchange(host, port, b"WHATSAT %s 0.001 1\n" % client)
    return None if reply.startswith(b"? ") else reply.split(b"\n", 1)[0]


# ------------------------------------------------------- one machine's herds

TRIO = {"Bailey": ["Bona", "Campbell"], "Bona": ["Bailey", "Campbell"],
        "Campbell": ["Bailey", "Bona"]}


@pytest.fixture
def started(tmp_path):
    """Start a herd with start_servers.sh; stopped (and checked) at the end."""
    folders = []

    def start(text):
        folder = str(tmp_path / f"h{len(folders)}")
        cfg = write_herd_dir(folder, text)
        folders.append((folder, cfg))
        return folder, cfg, run_script("start_servers.sh", cfg)

    yield start
    for folder, cfg in folders:
        pids = list(read_pids(folder).values())
        run_script("stop_servers.sh", cfg)
        assert wait_for(lambda: not any(alive(p) for p in pids), 10), "a process survived"
        kill_all(pids)
        assert not supervisor_problems(folder), supervisor_problems(folder)


def status(cfg):
    return subprocess.run([program("herd-supervisor"), "-c", cfg, "--status"],
                          capture_output=True, text=True, env=script_env(), timeout=30)


def links_of(table, name):
    """The LINKS column of a --status row."""
    row = [line for line in table.splitlines() if line.startswith(name + " ")][0]
    return row.split()[6]


def check_links_column(folder, cfg, names):
    """--status shows each local server's links: from the servers' own
    metrics files when they write them (<state_dir>/NAME.prom), else from
    files written here, and '?' without one."""
    prom = {n: os.path.join(folder, "state", f"{n}.prom") for n in names}
    if all(wait_for(lambda n=n: os.path.exists(prom[n]), 3) for n in names):
        assert wait_for(lambda: all(
            links_of(status(cfg).stdout, n) == ",".join(f"{p}:up" for p in TRIO[n])
            for n in names), 10), status(cfg).stdout
        return
    table = status(cfg).stdout
    for n in names:
        assert links_of(table, n) == ",".join(f"{p}:?" for p in TRIO[n]), table
    a, b = TRIO["Bailey"]
    with open(prom["Bailey"], "w") as f:
        f.write("# TYPE proxyherd_link_up gauge\n"
                f'proxyherd_link_up{{peer="{a}"}} 1\nproxyherd_link_up{{peer="{b}"}} 0\n')
    table = status(cfg).stdout
    assert links_of(table, "Bailey") == f"{a}:up,{b}:down", table
    os.unlink(prom["Bailey"])


def check_herd(folder, cfg, host, ports, r, report=None):
    assert r.returncode == 0, r.stdout + r.stderr
    for n, port in ports.items():
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        assert shown in r.stdout or f"127.0.0.1:{port}" in r.stdout, r.stdout
    assert "3 of 3 servers listening" in r.stdout, r.stdout
    assert wait_for(lambda: all(log_of(folder, n).count("link-up") >= 2 for n in ports), 15), \
        {n: log_of(folder, n)[-600:] for n in ports}
    dial = host if host != "localhost" else "127.0.0.1"
    at = exchange(dial, ports["Bailey"], b"IAMAT v6 +1.0+1.0 %.9f\n" % time.time())[:-1]
    assert at.startswith(b"AT Bailey "), at
    assert wait_for(lambda: all(stored(dial, p, b"v6") == at for p in ports.values()), 10)
    check_links_column(folder, cfg, list(ports))


def test_herd_on_ipv6_loopback(started):
    ports = {n: free_port() for n in TRIO}
    folder, cfg, r = started(config_text({n: ("::1", ports[n], TRIO[n]) for n in TRIO}))
    check_herd(folder, cfg, "::1", ports, r)
    # the listener is IPv6 only, and peers and clients are logged as [v6]:port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ports["Bailey"]), timeout=2).close()
    log = log_of(folder, "Bailey")
    assert f"addr=[::1]:{ports['Bailey']} host=::1" in log, log[:2000]
    assert "from=[::1]:" in log, log[:2000]


def test_herd_on_localhost(started):
    """`localhost` is 127.0.0.1 (docs/PROTOCOL.md, "Hosts"): listener and dials agree."""
    ports = {n: free_port() for n in TRIO}
    folder, cfg, r = started(config_text({n: ("localhost", ports[n], TRIO[n]) for n in TRIO}))
    check_herd(folder, cfg, "localhost", ports, r)
    log = log_of(folder, "Bailey")
    assert f"addr=127.0.0.1:{ports['Bailey']} host=localhost" in log, log[:2000]


def test_config_of_remote_servers_is_refused(tmp_path):
    """192.0.2.0/24 and 2001:db8::/32 are documentation ranges: never here."""
    cfg = write_herd_dir(str(tmp_path), config_text({
        "Bailey": ("192.0.2.1", 10400, ["Bona"]), "Bona": ("2001:db8::7", 10400, ["Bailey"])}))
    r = run_script("start_servers.sh", cfg)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "none of its 2 servers has a host that is an address of this machine" in r.stderr, \
        r.stderr
    assert "192.0.2.1, 2001:db8::7" in r.stderr and "started nothing" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), "servers.pid"))
    assert not os.path.exists(os.path.join(str(tmp_path), "servers.lock"))
    r = run_script("stop_servers.sh", cfg)
    assert r.returncode != 0 and "none of its servers is on this machine" in r.stderr, r.stderr
    st = status(cfg)
    assert st.returncode == 3 and "none of its 2 servers" in st.stderr, st.stdout + st.stderr
    sup = subprocess.run([program("herd-supervisor"), "-c", cfg], capture_output=True,
                         text=True, timeout=30)
    assert sup.returncode == 1 and "nothing to run here" in sup.stderr, sup.stderr


def test_only_the_local_servers_run(started):
    """A config naming a server elsewhere: the two here run and link, the
    other is left alone (and dialled, as a neighbour)."""
    ports = {"Bailey": free_port(), "Bona": free_port()}
    folder, cfg, r = started(config_text({
        "Bailey": ("127.0.0.1", ports["Bailey"], ["Bona", "Campbell"]),
        "Bona": ("127.0.0.1", ports["Bona"], ["Bailey", "Campbell"]),
        "Campbell": ("192.0.2.1", 10400, ["Bailey", "Bona"])}))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 of 2 servers listening (1 more on other hosts)" in r.stdout, r.stdout
    rows = [line.split()[0] for line in r.stdout.splitlines()[2:] if not line.startswith("logs:")]
    assert rows == ["Bailey", "Bona"], r.stdout
    assert set(read_pids(folder)) == {"supervisor", "Bailey", "Bona"}
    assert wait_for(lambda: "link-up" in log_of(folder, "Bailey"), 10)
    assert not os.path.exists(os.path.join(folder, "logs", "Campbell.log"))


# ------------------------------------------------------------------ install

def test_make_install(tmp_path):
    dest = str(tmp_path / "root")
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    want = ["usr/bin/herd-server", "usr/bin/herd-supervisor", "usr/bin/herd-benchmark",
            "usr/share/proxyherd/start_servers.sh", "usr/share/proxyherd/stop_servers.sh",
            "usr/share/proxyherd/places.geojson", "usr/share/proxyherd/config.yml.sample",
            "usr/share/doc/proxyherd/README.md", "usr/share/doc/proxyherd/PROTOCOL.md",
            "usr/lib/systemd/system/proxyherd.service", "usr/lib/sysusers.d/proxyherd.conf",
            "usr/lib/tmpfiles.d/proxyherd.conf", "etc/proxyherd/config.yml"]
    for w in want:
        assert os.path.isfile(os.path.join(dest, w)), w
    for w in want[:5]:
        assert os.access(os.path.join(dest, w), os.X_OK), w
    # the installed sample is a valid config pointing at the installed places
    sample = open(os.path.join(dest, "etc/proxyherd/config.yml")).read()
    assert "/usr/share/proxyherd/places.geojson" in sample and "/var/lib/proxyherd" in sample
    local = sample.replace("/usr/share/proxyherd/places.geojson", PLACES)
    cfg = tmp_path / "check.yml"
    cfg.write_text(local)
    chk = subprocess.run([program("herd-server"), "Bailey", "-c", str(cfg), "--check"],
                         capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    # the installed scripts find the installed programs (no HERD_BIN_DIR, no make)
    ports = {n: free_port() for n in TRIO}
    cfg = write_herd_dir(str(tmp_path / "herd"),
                         config_text({n: ("127.0.0.1", ports[n], TRIO[n]) for n in TRIO}))
    env = script_env()
    env.pop("HERD_BIN_DIR")
    share = os.path.join(dest, "usr/share/proxyherd")
    r = subprocess.run([os.path.join(share, "start_servers.sh"), "-c", cfg], capture_output=True,
                       text=True, env=env, timeout=60)
    pids = read_pids(str(tmp_path / "herd"))
    try:
        assert r.returncode == 0 and "3 of 3 servers listening" in r.stdout, r.stdout + r.stderr
        assert os.readlink(f"/proc/{pids['supervisor']}/exe") == \
            os.path.join(dest, "usr/bin/herd-supervisor")
    finally:
        r = subprocess.run([os.path.join(share, "stop_servers.sh"), "-c", cfg],
                           capture_output=True, text=True, env=env, timeout=60)
        kill_all(pids.values())
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    unit = open(os.path.join(dest, "usr/lib/systemd/system/proxyherd.service")).read()
    assert "ExecStart=/usr/bin/herd-supervisor -c /etc/proxyherd/config.yml" in unit, unit
    # a second install keeps an edited config
    with open(os.path.join(dest, "etc/proxyherd/config.yml"), "a") as f:
        f.write("# edited\n")
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "# edited" in open(os.path.join(dest, "etc/proxyherd/config.yml")).read()
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is missing: the unit's syntax was not verified")
    v = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        os.path.join(dest, "usr/lib/systemd/system/proxyherd.service")],
                       capture_output=True, text=True, timeout=60)
    # verify also checks that ExecStart exists on this machine: only the
    # installed path may be missing here, nothing else may be wrong
    problems = [line for line in (v.stdout + v.stderr).splitlines()
                if line.strip() and "/usr/bin/herd-supervisor" not in line
                and "proxyherd.service: Command" not in line]
    assert not problems, v.stdout + v.stderr


# --------------------------------------------------------- several machines

# Five servers on three hosts: A runs two, B two, C one.
PLACEMENT = {"Bailey": "A", "Bona": "A", "Campbell": "B", "Clark": "B", "Jaquez": "C"}
LINKS = {"Bailey": ["Bona", "Campbell"], "Bona": ["Bailey", "Clark", "Campbell"],
         "Campbell": ["Bailey", "Bona", "Jaquez"], "Clark": ["Jaquez", "Bona"],
         "Jaquez": ["Clark", "Campbell"]}
PORTS = {"Bailey": 10601, "Bona": 10602, "Campbell": 10601, "Clark": 10602, "Jaquez": 10601}


class Capture:
    """tcpdump on the bridge, for a test that inspects the link traffic."""

    def __init__(self, iface, path):
        if not shutil.which("tcpdump"):
            pytest.fail("tcpdump is missing (`make deps` installs it): no capture on the bridge")
        self.path = path
        # --immediate-mode: each packet is written as it comes (without it, the
        # kernel hands packets over in blocks, and a stop may lose the last ones)
        self.proc = subprocess.Popen(["tcpdump", "-i", iface, "--immediate-mode", "-U", "-w",
                                      path, "tcp"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.said = b""
        deadline = time.time() + 10       # capturing once it says "listening on"
        while b"listening on" not in self.said and time.time() < deadline:
            if select.select([self.proc.stderr], [], [], 0.2)[0]:
                line = self.proc.stderr.readline()
                if not line:
                    break
                self.said += line
        if b"listening on" not in self.said:
            self.stop()
            pytest.fail(f"tcpdump on {iface} did not start: {self.said!r}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.said += self.proc.stderr.read()
            self.proc.stderr.close()
        with open(self.path, "rb") as f:
            return f.read()


def pcap_tcp_packets(data):
    """(src, sport, dst, dport, payload) of each IPv4 TCP packet of a pcap
    file of Ethernet frames (what tcpdump -w writes for a bridge)."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise AssertionError(f"not a pcap file: {data[:24]!r}")
    link_type = struct.unpack(order + "I", data[20:24])[0]
    assert link_type == 1, f"pcap link type {link_type}, not Ethernet"
    off = 24
    while off + 16 <= len(data):
        caplen = struct.unpack(order + "I", data[off + 8:off + 12])[0]
        frame = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue                               # not IPv4, or not TCP
        ip = frame[14:]
        tcp = ip[(ip[0] & 15) * 4:struct.unpack("!H", ip[2:4])[0]]
        sport, dport = struct.unpack("!HH", tcp[:4])
        yield (socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport,
               bytes(tcp[(tcp[12] >> 4) * 4:]))


class Net:
    """Three namespaces on a bridge; host X has one address, a name for it
    (host-x.herd, in each namespace's /etc/netns/NS/hosts, which `ip netns
    exec` puts over /etc/hosts), and a folder with its own copy of the same
    config, which names the hosts by those names."""

    def __init__(self, tmp_path):
        tag = "%04x" % random.randrange(1 << 16)
        self.net = f"10.{200 + random.randrange(50)}.{random.randrange(250)}"
        self.bridge = f"phhbr{tag}"
        self.hosts = ["A", "B", "C"]
        self.addr = {h: f"{self.net}.{i + 1}" for i, h in enumerate(self.hosts)}
        self.ns = {h: f"phh{tag}{h}" for h in self.hosts}
        self.veth = {h: f"phhv{tag}{h}" for h in self.hosts}
        self.name = {h: f"host-{h.lower()}.herd" for h in self.hosts}
        self.dir = {h: str(tmp_path / h) for h in self.hosts}
        self.tmp = str(tmp_path)
        self.made = []
        self.captures = []

    def up(self):
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.made.append(("link", self.bridge))
        sh("ip", "addr", "add", f"{self.net}.254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for h in self.hosts:
            ns, v = self.ns[h], self.veth[h]
            sh("ip", "netns", "add", ns)
            self.made.append(("netns", ns))
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            self.made.append(("etc", f"/etc/netns/{ns}"))
            self.write_hosts(h)
            self.made.append(("link", v))
            plug(self.bridge, ns, v, self.addr[h])
        text = config_text({n: (self.name[PLACEMENT[n]], PORTS[n], LINKS[n]) for n in LINKS},
                           extra="herd: { snapshot_interval_s: 1 }\n")
        self.config = {h: write_herd_dir(self.dir[h], text) for h in self.hosts}

    def write_hosts(self, h):
        """Host h's /etc/hosts, rewritten in place (the same file stays
        mounted in the namespace, and every lookup reads it again)."""
        text = "127.0.0.1 localhost\n::1 localhost\n" + \
            "".join(f"{self.addr[x]} {self.name[x]}\n" for x in self.hosts)
        with open(f"/etc/netns/{self.ns[h]}/hosts", "a+") as f:
            f.seek(0)
            f.truncate()
            f.write(text)

    def move(self, h, last_octet):
        """Give host h a new address, and tell every host's /etc/hosts."""
        new = f"{self.net}.{last_octet}"
        sh("ip", "-n", self.ns[h], "addr", "del", f"{self.addr[h]}/24", "dev", "eth0")
        sh("ip", "-n", self.ns[h], "addr", "add", f"{new}/24", "dev", "eth0")
        self.addr[h] = new
        for x in self.hosts:
            self.write_hosts(x)

    def in_ns(self, h):
        return ("ip", "netns", "exec", self.ns[h])

    def start(self, h):
        return run_script("start_servers.sh", self.config[h], prefix=self.in_ns(h))

    def stop(self, h):
        return run_script("stop_servers.sh", self.config[h], prefix=self.in_ns(h))

    def status(self, h):
        return subprocess.run([*self.in_ns(h), program("herd-supervisor"), "-c",
                               self.config[h], "--status"], capture_output=True, text=True,
                              timeout=30)

    def where(self, n):
        return self.addr[PLACEMENT[n]], PORTS[n]

    def send(self, n, data):
        return exchange(*self.where(n), data)

    def stored(self, n, client):
        try:
            return stored(*self.where(n), client)
        except OSError:
            return None

    def send_inside(self, n, line, host_from=None):
        """From inside n's namespace (it may be cut off the bridge), or from
        host host_from's; the reply, or with host_from (the client's port,
        the reply)."""
        host, port = self.where(n)
        code = ("import socket,sys\n"
                f"s=socket.create_connection(('{host}',{port}),timeout=5)\n"
                "sys.stdout.buffer.write(b'%d\\n' % s.getsockname()[1])\n"
                f"s.sendall({line!r});s.shutdown(socket.SHUT_WR)\n"
                "o=b''\nwhile True:\n b=s.recv(65536)\n if not b: break\n o+=b\n"
                "sys.stdout.buffer.write(o)\n")
        out = subprocess.run([*self.in_ns(host_from or PLACEMENT[n]), "/usr/bin/python3", "-c",
                              code], capture_output=True, timeout=20).stdout
        client_port, _, reply = out.partition(b"\n")
        return (int(client_port or 0), reply) if host_from else reply

    def wait_all(self, client, want, names=None, timeout=30):
        names = names or list(LINKS)
        ok = wait_for(lambda: all(self.stored(n, client) == want for n in names), timeout, 0.2)
        assert ok, {n: self.stored(n, client) for n in names}

    def log(self, n):
        return log_of(self.dir[PLACEMENT[n]], n)

    def capture(self):
        """The hook for a capture on the bridge (see the module's text)."""
        c = Capture(self.bridge, os.path.join(self.tmp, f"bridge{len(self.captures)}.pcap"))
        self.captures.append(c)
        return c

    def down(self):
        """Stop everything; returns what went wrong."""
        problems = []
        for c in self.captures:
            c.stop()
        for h in self.hosts:
            pids = read_pids(self.dir[h])
            if pids:
                r = self.stop(h)
                if r.returncode != 0:
                    problems.append(f"stop_servers.sh on {h}: {r.stdout}{r.stderr}")
            if not wait_for(lambda: not any(alive(p) for p in pids.values()), 10):
                problems.append(f"{h}: a process survived stop_servers.sh")
            problems += [f"{h}: {line}" for line in supervisor_problems(self.dir[h])]
        for kind, name in self.made:
            if kind == "netns":
                left = sh("ip", "netns", "pids", name, check=False).stdout.split()
                kill_all(int(p) for p in left)      # only what runs in our namespace
        for kind, name in reversed(self.made):
            if kind == "netns":
                sh("ip", "netns", "del", name, check=False)
            elif kind == "etc":
                shutil.rmtree(name, ignore_errors=True)
                try:
                    os.rmdir("/etc/netns")        # when no other namespace uses it
                except OSError:
                    pass
            else:
                sh("ip", "link", "del", name, check=False)
        return problems


@pytest.fixture
def net(tmp_path):
    why = netns_available()
    if why:
        pytest.skip(f"multi-host test skipped: {why}")
    n = Net(tmp_path)
    try:
        n.up()
        for h in n.hosts:
            r = n.start(h)
            assert r.returncode == 0, f"start_servers.sh on {h}: {r.stdout}{r.stderr}"
        assert wait_for(lambda: all(n.log(s).count("link-up") >= len(LINKS[s]) for s in LINKS),
                        20), {s: n.log(s)[-800:] for s in LINKS}
        yield n
    finally:
        problems = n.down()
    assert not problems, problems


def test_each_host_runs_its_own_servers_and_an_iamat_reaches_all(net):
    for h in net.hosts:
        mine = {n for n in LINKS if PLACEMENT[n] == h}
        assert set(read_pids(net.dir[h])) == {"supervisor", *mine}, read_pids(net.dir[h])
        st = net.status(h)
        assert st.returncode == 0, st.stdout + st.stderr
        rows = {line.split()[0] for line in st.stdout.splitlines()[2:]}
        assert rows == mine, st.stdout
        assert f"{len(mine)} of {len(mine)} servers listening ({5 - len(mine)} more" in st.stdout
        local = subprocess.run([*net.in_ns(h), program("herd-supervisor"), "-c",
                                net.config[h], "--local"], capture_output=True, text=True)
        assert set(local.stdout.split()) == mine, local.stdout
    at = net.send("Bailey", b"IAMAT mh +1.0+1.0 %.9f\n" % time.time())[:-1]
    assert at.startswith(b"AT Bailey ")
    net.wait_all(b"mh", at)
    # a server listens on what its name resolves to, and says both
    assert f"addr={net.addr['B']}:{PORTS['Campbell']} host=host-b.herd" in net.log("Campbell")


def test_a_host_cut_off_and_healed_converges(net, report):
    victim, other = "Jaquez", "Bailey"       # host C; its links go to host B
    sh("ip", "link", "set", net.veth["C"], "down")
    try:
        t = int(time.time())
        inside = net.send_inside(victim, b"IAMAT cut +2.0+2.0 %d.5\n" % t)
        outside = net.send(other, b"IAMAT out +3.0+3.0 %d\n" % t)
        older = net.send(other, b"IAMAT both +4.0+4.0 %d\n" % t)
        newer = net.send_inside(victim, b"IAMAT both +5.0+5.0 %d.9\n" % t)
        assert inside.startswith(b"AT Jaquez ") and outside and older and newer
        time.sleep(1.5)
        assert net.stored(other, b"cut") is None, "the cut did not cut"
    finally:
        sh("ip", "link", "set", net.veth["C"], "up")
    start = time.time()
    net.wait_all(b"cut", inside[:-1])
    net.wait_all(b"out", outside[:-1])
    net.wait_all(b"both", newer[:-1])
    report(f"host C cut for 1.5 s; all five converged {time.time() - start:.1f} s after healing")


def test_stop_on_one_host_stops_only_its_servers(net):
    pids = {h: read_pids(net.dir[h]) for h in net.hosts}
    r = net.stop("B")
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    assert wait_for(lambda: not any(alive(p) for p in pids["B"].values()), 10)
    for h in ("A", "C"):
        assert all(alive(p) for p in pids[h].values()), h
        assert net.status(h).returncode == 0, net.status(h).stdout
    for n in ("Campbell", "Clark"):
        with pytest.raises(OSError):
            net.send(n, b"WHATSAT x 1 1\n")
    at = net.send("Bona", b"IAMAT after +6.0+6.0 %.9f\n" % time.time())[:-1]
    net.wait_all(b"after", at, names=["Bailey", "Bona"])
    assert net.stored("Jaquez", b"after") is None     # its neighbours are all on B
    st = net.status("B")
    assert st.returncode == 3 and "no herd is running" in st.stdout, st.stdout


def test_a_host_that_moves_is_found(net):
    """Host C gets a new address and /etc/hosts says so; its neighbours on B
    resolve its name again before each dial and link to it there."""
    before = {n: net.log(n).count("link-up") for n in ("Campbell", "Clark")}
    r = net.stop("C")
    assert r.returncode == 0, r.stdout + r.stderr
    net.move("C", 77)
    r = net.start("C")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 of 1 servers listening" in r.stdout, r.stdout
    assert wait_for(lambda: all(net.log(n).count("link-up") > before[n]
                                for n in ("Campbell", "Clark")), 20), net.log("Clark")[-1500:]
    at = net.send("Bailey", b"IAMAT moved +7.0+7.0 %.9f\n" % time.time())[:-1]
    net.wait_all(b"moved", at)
    assert f"addr={net.addr['C']}:" in net.log("Jaquez")


def test_capture_on_the_bridge_finds_no_client_location(net, report):
    """Issue 18: a capture on the bridge while an update floods over the
    links finds no client id or location in the link traffic (every link is
    TLS 1.3, docs/PROTOCOL.md, "Between servers").  The control: the same
    capture and parser find each client's own plain IAMAT line, sent from
    host C to Bailey on host A across the same bridge."""
    cap = net.capture()
    tag = secrets.token_hex(8)
    sent = []                  # (client port, client id, location, IAMAT line)
    ats = []                   # (client id, the AT line Bailey answered)
    for i in range(3):
        client = b"capture-secret-client-%s-%d" % (tag.encode(), i)
        where = b"+12.345678-098.76543%d" % i
        line = b"IAMAT %s %s %.9f\n" % (client, where, time.time())
        port, reply = net.send_inside("Bailey", line, host_from="C")
        assert reply.startswith(b"AT Bailey ") and line[6:] in reply, reply
        sent.append((port, client, where, line))
        ats.append((client, reply.split(b"\n")[0]))
    for client, at in ats:                 # on every server of every host
        net.wait_all(client, at)
    data = cap.stop()
    packets = list(pcap_tcp_packets(data))
    assert packets, f"the capture is empty ({len(data)} bytes): {cap.said!r}"

    hosts = set(net.addr.values())
    servers = {(net.addr[PLACEMENT[n]], PORTS[n]) for n in LINKS}
    clients = {(net.addr["C"], port) for port, *_ in sent}
    flows = {}                 # (from, to) -> the payload bytes, in capture order
    for src, sport, dst, dport, payload in packets:
        flows.setdefault(((src, sport), (dst, dport)), bytearray()).extend(payload)
    link = {}
    for (a, b), payload in flows.items():
        if a[0] in hosts and b[0] in hosts and a[0] != b[0] and (a in servers or b in servers) \
                and a not in clients and b not in clients:
            link[(a, b)] = payload
    link_packets = [p for p in packets if ((p[0], p[1]), (p[2], p[3])) in link and p[4]]

    # the capture holds the links' traffic between the hosts, as TLS records
    assert link_packets, {k: len(v) for k, v in flows.items()}
    pairs = {frozenset((a[0], b[0])) for (a, b), v in link.items() if v}
    assert frozenset((net.addr["A"], net.addr["B"])) in pairs, pairs
    assert frozenset((net.addr["B"], net.addr["C"])) in pairs, pairs
    assert any(p[4].startswith(b"\x17\x03\x03") for p in link_packets), \
        [p[4][:8] for p in link_packets[:10]]
    # and the updates went that way (hosts B and C learnt them over the bridge
    # only): from A to B and from B to C, at least the bytes of the ids and
    # locations crossed, encrypted
    least = sum(len(client) + len(where) for _, client, where, _ in sent)
    for x, y in (("A", "B"), ("B", "C")):
        crossed = sum(len(v) for (a, b), v in link.items()
                      if a[0] == net.addr[x] and b[0] == net.addr[y])
        assert crossed >= least, f"{x} -> {y}: {crossed} bytes on the links, {least} at least"

    # the control: each client's own line is in plain text on its connection
    bailey = net.where("Bailey")
    for port, client, where, line in sent:
        mine = bytes(flows.get(((net.addr["C"], port), bailey), b""))
        assert mine == line, (mine, line)
        assert client in data and where in data

    # and no link carries a client id or location
    for (a, b), payload in link.items():
        for _, client, where, _ in sent:
            assert client not in payload and where not in payload, \
                f"{a} -> {b} carries {client!r} or {where!r} in plain text"
    link_bytes = sum(len(v) for v in link.values())
    report(f"capture {len(data)} bytes, {len(packets)} TCP packets; {len(link)} link flows "
           f"between hosts, {len(link_packets)} packets, {link_bytes} payload bytes: no client "
           f"id or location; the 3 clients' own lines found in their flows")
