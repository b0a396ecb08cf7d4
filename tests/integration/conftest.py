"""Fixtures for driving the real herd-server binary on free loopback ports.

HERD_BIN_DIR names the folder holding the programs (the Makefile points it
at bin/ or at the sanitizer build).  Every process a test starts is stopped
when the test ends, pass or fail, and a sanitizer report or a non-zero exit
status fails the test.
"""
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("HERD_BIN_DIR", os.path.join(ROOT, "bin"))
PLACES = os.path.join(ROOT, "data", "places.geojson")

# 10,000 held connections need more descriptors than the usual 1024, on
# both ends; the servers inherit the raised limit.  Root may raise the hard
# limit too.
WANT_FILES = 32768
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if os.geteuid() == 0 and _hard < WANT_FILES:
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (WANT_FILES, WANT_FILES))
        _soft, _hard = WANT_FILES, WANT_FILES
    except (ValueError, OSError):
        pass
if _soft < min(_hard, WANT_FILES):
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(_hard, WANT_FILES), _hard))


# Figures a test measured (resident sizes, counts), printed at the end of
# the run whether or not output is captured; with HERD_MEASURED_FILE set,
# also appended there as JSON lines (make report-data keeps them for the
# report).
_MEASURED = []


@pytest.fixture
def report(request):
    def add(text):
        _MEASURED.append(f"{request.node.name}: {text}")
        path = os.environ.get("HERD_MEASURED_FILE")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": request.node.name, "text": text}) + "\n")
    return add


def pytest_terminal_summary(terminalreporter):
    if _MEASURED:
        terminalreporter.section("measured")
        for line in _MEASURED:
            terminalreporter.write_line(line)


_HANDED_OUT = set()


# make test-valgrind: run the server under valgrind; any error or leak makes
# it exit 99, which the fixture's stop() reports.
VALGRIND = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect"] \
    if os.environ.get("HERD_VALGRIND") else []


def _port_range():
    """Where free_port() looks: from 10000 up to the kernel's ephemeral range
    (net.ipv4.ip_local_port_range), else above it.  A port of that range may
    be any outgoing connection's source port the moment a server lets go of
    it (between a stop and a restart), so none is handed out; nor the few
    just below it (tests use port + 1 too)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    for lo, hi in ((10000, low - 10), (high + 1, 65500)):
        if hi - lo >= 1000:
            return lo, hi
    return 10000, 65500    # no room outside it: anywhere


# seeded with the pid: parallel runs (and pytest-xdist workers) draw
# different ports
_PORTS = random.Random(os.getpid() * 1000003 + time.time_ns())
_RANGE = _port_range()


def free_port():
    """A TCP port nobody is bound to right now, outside the kernel's
    ephemeral range, never a default herd port and never one this test run
    handed out before (a herd needs five different ones)."""
    while True:
        port = _PORTS.randint(*_RANGE)
        if port in (10099, 10044, 10022, 10211, 10194) or port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def program(name):
    return os.path.join(BIN_DIR, name)


def yaml_section(name, values):
    if not values:
        return ""
    lines = [f"{name}:"]
    for k, v in values.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        lines.append(f"  {k}: {v}")
    return "\n".join(lines) + "\n"


def write_config(path, servers, places=None, limits=None, logging=None, extra=""):
    """servers: {name: (port, [neighbours])}.  Returns the config path."""
    text = "servers:\n"
    for name, (port, neigh) in servers.items():
        text += f"  {name}: {{ host: 127.0.0.1, port: {port}, neighbors: [{', '.join(neigh)}] }}\n"
    text += yaml_section("places", {"provider": "local", "local_file": PLACES, **(places or {})})
    text += yaml_section("limits", limits or {})
    text += yaml_section("logging", {"dir": "logs", "flush_ms": 50, **(logging or {})})
    text += extra
    cfg = os.path.join(path, "config.yml")
    with open(cfg, "w") as f:
        f.write(text)
    return cfg


def proc_kib(pid, field="VmRSS"):
    """A size from /proc/PID/status in KiB (VmRSS: resident now, VmHWM: its
    peak); 0 when the process has none (a zombie)."""
    with open(f"/proc/{pid}/status") as f:
        return next((int(l.split()[1]) for l in f if l.startswith(field + ":")), 0)


def wait_listening(port, proc, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class Server:
    """One herd-server process on a free port, in its own folder."""

    def __init__(self, tmp_path, name="Bailey", limits=None, places=None, logging=None):
        self.dir = str(tmp_path)
        self.name = name
        self.port = free_port()
        self.config = write_config(self.dir, {name: (self.port, [])}, places=places,
                                   limits=limits, logging=logging)
        self.log_path = os.path.join(self.dir, "logs", f"{name}.log")
        self.stderr_path = os.path.join(self.dir, f"{name}.stderr")
        self.proc = None

    def start(self):
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(VALGRIND + [program("herd-server"), self.name, "-c", self.config],
                                     stdout=subprocess.DEVNULL, stderr=self.stderr)
        if not wait_listening(self.port, self.proc):
            self.stop(check=False)
            raise AssertionError(f"herd-server did not start: {self.read_stderr()}")
        return self

    def read_stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def read_log(self, wait_for=None, timeout=3.0):
        """The log's text; with wait_for, poll until that text shows up."""
        deadline = time.time() + timeout
        while True:
            try:
                with open(self.log_path, "rb") as f:
                    text = f.read().decode(errors="replace")
            except FileNotFoundError:
                text = ""
            if wait_for is None or wait_for in text or time.time() > deadline:
                return text
            time.sleep(0.05)

    def rss_kib(self):
        return proc_kib(self.proc.pid)

    def stop(self, check=True):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if check:
                    raise AssertionError("herd-server ignored SIGTERM")
        rc = self.proc.returncode
        self.proc = None
        self.stderr.close()
        err = self.read_stderr()
        if check:
            assert "Sanitizer" not in err and "runtime error" not in err, err
            assert rc == 0, f"herd-server exited with {rc}: {err}"


@pytest.fixture
def make_server(tmp_path):
    started = []

    def make(**kw):
        sub = tmp_path / f"s{len(started)}"
        sub.mkdir()
        s = Server(sub, **kw).start()
        started.append(s)
        return s

    yield make
    errors = []
    for s in started:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors


@pytest.fixture
def server(make_server):
    return make_server()


def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def recv_until_eof(sock, limit=64 << 20):
    chunks = []
    total = 0
    while True:
        b = sock.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)
        total += len(b)
        if total > limit:
            raise AssertionError("reply larger than expected")


def wait_for(cond, timeout, step=0.05):
    """Poll cond() until it is true or timeout seconds pass; returns its
    last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def exchange(port, data, host="127.0.0.1", timeout=10.0):
    """Send data, half-close, return everything until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        return recv_until_eof(s)


def recv_exact_lines(sock, n):
    """Read until n LF-terminated lines arrived."""
    data = b""
    while data.count(b"\n") < n:
        b = sock.recv(65536)
        if not b:
            break
        data += b
    return data


# ------------------------------------------------------------------ herds

DEFAULT_LINKS = {
    "Bailey": ["Bona", "Campbell"],
    "Bona": ["Bailey", "Clark", "Campbell"],
    "Campbell": ["Bailey", "Bona", "Jaquez"],
    "Clark": ["Jaquez", "Bona"],
    "Jaquez": ["Clark", "Campbell"],
}


def read_log(folder, name):
    """logs/NAME.log below folder, or "" when it does not exist yet."""
    try:
        return open(os.path.join(folder, "logs", f"{name}.log"), errors="replace").read()
    except FileNotFoundError:
        return ""


def wait_log(folder, name, text, timeout=3, since=0):
    """True once logs/NAME.log holds text (lines are written in batches);
    with since (a log_mark()), only text written after that mark counts."""
    deadline = time.time() + timeout
    while text not in read_log(folder, name)[since:]:
        if time.time() > deadline:
            return False
        time.sleep(0.05)
    return True


def log_mark(folder, name):
    """Where logs/NAME.log ends now: pass it as wait_log(since=...) to see
    only what is logged from here on, not a line of an earlier start."""
    return len(read_log(folder, name))


SANITIZER_MARKS = ("Sanitizer", "runtime error", "LeakSanitizer")
CRASH_RE = re.compile(r" child-crash server=(\S+) pid=(\d+) (.*?); restart")


def supervised_problems(folder, servers, killed=(), may_crash=()):
    """What went wrong with a herd the supervisor ran in folder, and stopped:
    a server that crashed though the test did not kill it (killed: the pids
    the test sent SIGKILL, each of which must show as exactly that), one
    given up, one that did not stop with exit status 0 at the stop, a
    missing logs/NAME.stderr, or a sanitizer report in one.  Servers named in
    may_crash may crash and be given up (a test that makes them)."""
    problems = []
    sup = read_log(folder, "supervisor")
    crashed = set()
    for name, pid, how in CRASH_RE.findall(sup):
        pid = int(pid)
        crashed.add(pid)
        if name in may_crash:
            continue
        if pid not in killed:
            problems.append(f"{name} (pid {pid}) crashed: {how}")
        elif how != "killed by signal 9 (Killed)":
            problems.append(f"{name} (pid {pid}), killed by the test, ended with: {how}")
    missing = set(killed) - crashed
    if missing:
        problems.append(f"killed pids {sorted(missing)} show no child-crash line")
    for line in sup.splitlines():
        if any(f"server={n} " in line for n in may_crash):
            continue
        if " child-given-up " in line or " child-exit " in line:
            problems.append(line)
        if " child-stopped " in line and not line.endswith(" exit status 0"):
            problems.append(line)
    runs = sup.split(" INFO start pid=")
    last = runs[-1] if len(runs) > 1 else ""
    if " INFO stopped " in last:      # the last run stopped: every server with it
        for n in servers:
            if n not in may_crash and f" child-stopped server={n} exit status 0" not in last:
                problems.append(f"{n}: no 'exit status 0' at the last stop")
    logs = os.path.join(folder, "logs")
    files = os.listdir(logs) if os.path.isdir(logs) else []
    for n in servers:                 # NAME.stderr, and NAME.stderr.1 when rotated
        mine = [f for f in files if f == f"{n}.stderr" or f.startswith(f"{n}.stderr.")]
        if not mine:
            problems.append(f"the supervisor kept no {logs}/{n}.stderr")
        for f in mine:
            err = open(os.path.join(logs, f), errors="replace").read()
            if any(m in err for m in SANITIZER_MARKS):
                problems.append(f"{logs}/{f}: {err[-3000:]}")
    return problems


class Herd:
    """The five servers of the default herd (docs/PROTOCOL.md) on free ports, in one folder."""

    def __init__(self, path, secret="test-secret-0123456789", logging=None):
        self.dir = str(path)
        self.secret = secret
        self.ports = {name: free_port() for name in DEFAULT_LINKS}
        self.config = write_config(
            self.dir, {n: (self.ports[n], DEFAULT_LINKS[n]) for n in DEFAULT_LINKS},
            logging=logging, extra="herd:\n  snapshot_interval_s: 1\n")
        self.procs = {}
        self.stderr = {}

    def start(self, *names, secret=None, secret_from_file=False):
        """Start servers (all by default) with HERD_SECRET set, or with
        secret_from_file without it: they read herd.secret_file."""
        names = names or tuple(DEFAULT_LINKS)
        env = dict(os.environ, HERD_SECRET=secret or self.secret)
        if secret_from_file:
            del env["HERD_SECRET"]
        for n in names:
            err = open(os.path.join(self.dir, f"{n}.stderr"), "ab")
            self.stderr[n] = err
            self.procs[n] = subprocess.Popen([program("herd-server"), n, "-c", self.config],
                                             stdout=subprocess.DEVNULL, stderr=err, env=env)
        for n in names:
            assert wait_listening(self.ports[n], self.procs[n]), f"{n} did not start"
        return self

    def stop(self, *names, check=True):
        names = names or tuple(self.procs)
        for n in names:
            p = self.procs.get(n)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        problems = []
        for n in names:
            p = self.procs.pop(n, None)
            if not p:
                continue
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                problems.append(f"{n} ignored SIGTERM")
            self.stderr.pop(n).close()
            err = open(os.path.join(self.dir, f"{n}.stderr"), errors="replace").read()
            if p.returncode != 0 or "Sanitizer" in err or "runtime error" in err:
                problems.append(f"{n} exited {p.returncode}: {err[-2000:]}")
        if check:
            assert not problems, problems

    def kill(self, name):
        p = self.procs.pop(name)
        p.kill()
        p.wait()
        self.stderr.pop(name).close()

    def log(self, name):
        return read_log(self.dir, name)

    def wait_log(self, name, text, timeout=3, since=0):
        return wait_log(self.dir, name, text, timeout, since)

    def mark(self, name):
        return log_mark(self.dir, name)

    def snap_path(self, name):
        return os.path.join(self.dir, "state", f"{name}.snap")

    def send(self, name, data):
        return exchange(self.ports[name], data)

    def stored(self, name, client):
        """The AT line a server holds for a client, or None."""
        reply = self.send(name, b"WHATSAT %s 1 1\n" % client)
        if reply.startswith(b"? "):
            return None
        return reply.split(b"\n", 1)[0]

    def wait_links(self, timeout=10):
        """Until every server logged link-up for each of its neighbours."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if all(self.log(n).count("link-up") >= len(DEFAULT_LINKS[n])
                   for n in self.procs):
                return
            time.sleep(0.05)
        raise AssertionError("links did not come up")

    def wait_stored(self, names, client, want, timeout=10):
        """Poll until each server holds 'want' for client; returns seconds."""
        start = time.time()
        pending = set(names)
        while pending and time.time() - start < timeout:
            for n in list(pending):
                if self.stored(n, client) == want:
                    pending.discard(n)
            if pending:
                time.sleep(0.01)
        assert not pending, {n: self.stored(n, client) for n in pending}
        return time.time() - start


@pytest.fixture
def herd(tmp_path):
    h = Herd(tmp_path)
    yield h
    h.stop()
