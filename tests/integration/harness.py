"""The one harness of the integration tests: real processes on free loopback
ports, each in a test's own folder (pytest's tmp_path), and fakes for what
the herd talks to.

HERD_BIN_DIR names the folder holding the programs (the Makefile points it
at bin/ or at the sanitizer build).  What is here:

  ports, files   free_port, program, write_config, config_text, write_herd_dir
  waiting        wait_for (the one poll loop: a deadline, and what was awaited)
  processes      proc_kib, proc_state, alive, children, wait_gone, wait_listening
  sockets        connect, exchange, recv_until_eof, recv_exact_lines
  logs, metrics  read_log, wait_log, log_mark, parse_prom, read_metrics, wait_metrics
  pid files      read_pids, write_pids (servers.pid: "NAME PID" lines)
  Server         one herd-server
  Herd           the default herd's five servers, started directly
  SupervisedHerd servers under herd-supervisor, started directly or by
                 start_servers.sh/stop_servers.sh; waits for what a test needs
                 (wait_listening, wait_restarted)
  Namespaces     network namespaces on a bridge (multi-host), or one whose
                 resolver never answers; Capture (tcpdump on the bridge)
  FakePlaces     the Places API (New and legacy), over HTTP
  FakeLineServer a listening socket that answers lines and records them
  FakePeer       a neighbour's end of a TLS link (openssl s_client), LinkLines
  Pair           Bailey and Bona linked, with shared or differing settings
  the rest       helpers more than one test file uses (start_server,
                 configured_server, hold_clients, herd_iamat, plant...)

Nothing here uses a fixed port, a fixed /tmp name or the repository's own
servers.pid, servers.lock, logs or state: tests run under pytest-xdist.
conftest.py holds the fixtures built on these.
"""
import hashlib
import hmac
import json
import os
import random
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import types
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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

# make test-valgrind: run the server under valgrind; any error or leak makes
# it exit 99, which Server.stop() reports.
VALGRIND = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
            "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect"] \
    if os.environ.get("HERD_VALGRIND") else []

DEFAULT_LINKS = {
    "Bailey": ["Bona", "Campbell"],
    "Bona": ["Bailey", "Clark", "Campbell"],
    "Campbell": ["Bailey", "Bona", "Jaquez"],
    "Clark": ["Jaquez", "Bona"],
    "Jaquez": ["Clark", "Campbell"],
}

SANITIZER_MARKS = ("Sanitizer", "runtime error", "LeakSanitizer")


# ------------------------------------------------------------------ waiting

def wait_for(cond, timeout, what=None, step=0.05):
    """Poll cond() until it is true or timeout seconds pass.  Without what,
    returns its last value (for an assert with its own message); with what,
    raises AssertionError naming what was awaited when the time is up."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(step)
    last = cond()
    if what is not None and not last:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return last


# ------------------------------------------------------------ ports, files

_HANDED_OUT = set()


def ephemeral_range():
    """The kernel's ephemeral range (net.ipv4.ip_local_port_range): (low, high)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def _port_range():
    """Where free_port() looks: from 10000 up to the kernel's ephemeral range
    (net.ipv4.ip_local_port_range), else above it.  A port of that range may
    be any outgoing connection's source port the moment a server lets go of
    it (between a stop and a restart), so none is handed out; nor the few
    just below it (tests use port + 1 too)."""
    low, high = ephemeral_range()
    for lo, hi in ((10000, low - 10), (high + 1, 65500)):
        if hi - lo >= 1000:
            return lo, hi
    return 10000, 65500    # no room outside it: anywhere


def _worker_slice(lo, hi):
    """Under pytest-xdist, worker gwN of W draws from the Nth of W slices
    of lo..hi (less a few ports at its top, for port + 1): two workers never
    hand out the same port.  Alone, all of it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not worker.startswith("gw") or count < 2:
        return lo, hi
    n, size = int(worker[2:]) % count, (hi - lo + 1) // count
    return lo + n * size, lo + (n + 1) * size - 3


# seeded with the pid: parallel runs draw different ports
_PORTS = random.Random(os.getpid() * 1000003 + time.time_ns())
_RANGE = _worker_slice(*_port_range())


def _unbound_port(lo, hi, skip=()):
    """A port of lo..hi that nobody is bound to right now, not in skip and
    never one this test run handed out before."""
    while True:
        port = _PORTS.randint(lo, hi)
        if port in skip or port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def free_port():
    """A TCP port nobody is bound to right now, outside the kernel's
    ephemeral range, never a default herd port and never one this test run
    handed out before (a herd needs five different ones)."""
    return _unbound_port(*_RANGE, skip=(10099, 10044, 10022, 10211, 10194))


def ephemeral_port():
    """A port inside the kernel's ephemeral range that nobody is bound to
    right now, for the tests of the warning about such ports only (a server
    on it may fail to start again: free_port() never hands one out)."""
    return _unbound_port(*ephemeral_range())


def ephemeral_warning(name, port):
    """What --check and the supervisor say of server name's port in that range."""
    low, high = ephemeral_range()
    return (f"port {port} of {name} is in the ephemeral range {low}-{high} "
            f"(net.ipv4.ip_local_port_range): an outgoing connection may hold it when "
            f"{name} restarts")


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
    """servers: {name: (port, [neighbours])}, all on 127.0.0.1.  Returns
    the path of the config.yml written in folder path."""
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


def config_text(servers, extra=""):
    """A config's text for servers: {name: (host, port, [neighbours])};
    hosts are quoted (::1)."""
    text = "servers:\n"
    for n, (host, port, neigh) in servers.items():
        text += f"  {n}: {{ host: \"{host}\", port: {port}, neighbors: [{', '.join(neigh)}] }}\n"
    text += f"places: {{ local_file: {PLACES} }}\nlogging: {{ dir: logs, flush_ms: 50 }}\n"
    text += "supervisor: { stop_timeout_s: 5 }\n" + extra
    return text


HOSTS_SECRET = "0123456789abcdef" * 4 + "\n"


def write_herd_dir(folder, text, secret=HOSTS_SECRET):
    """A host's copy of the config, with the herd's secret (mode 0600) as the
    README says to copy it to every host; returns the config's path."""
    os.makedirs(os.path.join(folder, "state"), mode=0o700, exist_ok=True)
    path = os.path.join(folder, "config.yml")
    with open(path, "w") as f:
        f.write(text)
    path_secret = os.path.join(folder, "state", "herd.secret")
    with open(os.open(path_secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(secret)
    return path


# --------------------------------------------------------------- processes

def proc_kib(pid, field="VmRSS"):
    """A size from /proc/PID/status in KiB (VmRSS: resident now, VmHWM: its
    peak); 0 when the process has none (a zombie)."""
    with open(f"/proc/{pid}/status") as f:
        return next((int(l.split()[1]) for l in f if l.startswith(field + ":")), 0)


def proc_state(pid):
    """The state letter of /proc/PID/stat (R, S, D, t, T, Z...), or "" when
    the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def alive(pid):
    """Running or stopped; a zombie or a vanished pid is gone."""
    return proc_state(pid) not in ("", "Z", "X")


def children(pid):
    """The pids of pid's children (its main thread's)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def wait_gone(pids, timeout=10):
    """True once none of pids is alive, False when some still is at the end."""
    return wait_for(lambda: not any(alive(p) for p in pids), timeout)


def listens(port, host="127.0.0.1"):
    """True when a TCP connect to host:port succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_listening(port, proc, timeout=10.0):
    """True once a connect to port succeeds; False at the deadline or as
    soon as proc (the process that should listen, or its parent) ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if listens(port):
            return True
        time.sleep(0.02)
    return False


# ------------------------------------------------------------------ sockets

def connect(port, timeout=10.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


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


# --------------------------------------------------------------------- logs

def read_log(folder, name):
    """logs/NAME.log below folder, or "" when it does not exist yet."""
    try:
        return open(os.path.join(folder, "logs", f"{name}.log"), errors="replace").read()
    except FileNotFoundError:
        return ""


def wait_log(folder, name, text, timeout=3, since=0):
    """True once logs/NAME.log holds text (lines are written in batches);
    with since (a log_mark()), only text written after that mark counts."""
    return wait_for(lambda: text in read_log(folder, name)[since:], timeout)


def log_mark(folder, name):
    """Where logs/NAME.log ends now: pass it as wait_log(since=...) to see
    only what is logged from here on, not a line of an earlier start."""
    return len(read_log(folder, name))


# ------------------------------------------------------------------ metrics

PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
PROM_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
PROM_SAMPLE = re.compile(rf"({PROM_NAME})(?:\{{({PROM_LABEL}(?:,{PROM_LABEL})*)?\}})? (\S+)")


def parse_prom(text, server=None):
    """{name: {labels (sorted tuple, without server): value}}, or an
    AssertionError naming the bad line.  Every sample has its family's HELP
    and TYPE before it; the label server="<server>" when 'server' is given
    (herd.metrics_server_label), else none; a counter ends in _total; no
    series twice; the text ends with a newline."""
    assert text.endswith("\n"), f"not ending in a newline: {text[-80:]!r}"
    families, helps, types = {}, set(), {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert re.fullmatch(PROM_NAME, name) and doc and name not in helps, line
            helps.add(name)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert re.fullmatch(PROM_NAME, name) and name not in types, line
            assert kind in ("counter", "gauge"), line
            assert name not in families, f"TYPE after samples: {line}"
            types[name] = kind
        else:
            assert not line.startswith("#") and line, f"stray line {line!r}"
            m = PROM_SAMPLE.fullmatch(line)
            assert m, f"not a sample line: {line!r}"
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            assert name in helps and name in types, f"no HELP or TYPE before {line!r}"
            assert (types[name] == "counter") == name.endswith("_total"), line
            pairs = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
            assert pairs.pop("server", None) == server, f"server label: {line!r}"
            key = tuple(sorted(pairs.items()))
            series = families.setdefault(name, {})
            assert key not in series, f"series twice: {line!r}"
            series[key] = value
    return families


def prom_path(folder, name):
    return os.path.join(folder, "state", f"{name}.prom")


def read_metrics(folder, name):
    with open(prom_path(folder, name)) as f:
        return parse_prom(f.read())


def value(fams, name, **labels):
    return fams[name][tuple(sorted(labels.items()))]


def wait_metrics(folder, names, check, timeout=15):
    """Poll the files of 'names' until check({name: families}) is true;
    returns the last reading.  The files are rewritten once a second."""
    deadline = time.time() + timeout
    while True:
        try:
            got = {n: read_metrics(folder, n) for n in names}
        except FileNotFoundError:
            got = None
        if got is not None and check(got):
            return got
        if time.time() > deadline:
            raise AssertionError(f"metrics never matched: {got}")
        time.sleep(0.1)


# ---------------------------------------------------------------- pid files

def read_pids(folder):
    """{name: pid} from folder/servers.pid; {} when it is missing or
    half-written."""
    try:
        with open(os.path.join(folder, "servers.pid")) as f:
            return {k: int(v) for k, v in (line.split() for line in f)}
    except (FileNotFoundError, ValueError):
        return {}


def write_pids(folder, lines):
    """folder/servers.pid holding one "NAME PID" line per (name, pid)."""
    with open(os.path.join(folder, "servers.pid"), "w") as f:
        f.write("".join(f"{name} {pid}\n" for name, pid in lines))


# ------------------------------------------------------------------ servers

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


class Herd:
    """The five servers of the default herd (docs/PROTOCOL.md) on free ports,
    in one folder, started directly (no supervisor)."""

    def __init__(self, path, secret="test-secret-0123456789", logging=None, places=None):
        self.dir = str(path)
        self.secret = secret
        self.ports = {name: free_port() for name in DEFAULT_LINKS}
        self.config = write_config(
            self.dir, {n: (self.ports[n], DEFAULT_LINKS[n]) for n in DEFAULT_LINKS},
            places=places, logging=logging, extra="herd:\n  snapshot_interval_s: 1\n")
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

    def links_up(self, name):
        """The neighbours whose link 'name' holds up now: the last of its
        link-up and link-down lines for each is a link-up (counting link-up
        lines is not that: a link that came up twice counts for another)."""
        state = {}
        for line in self.log(name).splitlines():
            m = re.search(r" (link-up|link-down) peer=(\S+)", line)
            if m:
                state[m.group(2)] = m.group(1) == "link-up"
        return {peer for peer, up in state.items() if up}

    def wait_links(self, timeout=10):
        """Until each running server holds a link up to each of its running
        neighbours, both ends."""
        def all_up():
            return all(self.links_up(n) >= {p for p in DEFAULT_LINKS[n] if p in self.procs}
                       for n in self.procs)
        wait_for(all_up, timeout, what="every link up")

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


# ------------------------------------------------------- supervised herds

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


def supervisor_problems(folder):
    """The lines of the supervisor's log in folder that say something went
    wrong with its servers: a crash, a hang, one given up, or a stop that
    was not a clean exit (a sanitizer report makes one).  Lighter than
    supervised_problems: for herds whose stderr files are not checked."""
    log = read_log(folder, "supervisor")
    return [line for line in log.splitlines()
            if "child-crash" in line or "child-given-up" in line or "child-hung" in line
            or ("child-stopped" in line and "exit status 0" not in line)]


def script_env(start_timeout="15"):
    """The environment for start_servers.sh and stop_servers.sh: the
    programs of this build, no HERD_SECRET (the secret file counts)."""
    env = dict(os.environ, HERD_BIN_DIR=BIN_DIR, HERD_START_TIMEOUT=start_timeout)
    env.pop("HERD_SECRET", None)
    return env


def run_script(name, config, *args, prefix=(), env=None, timeout=60):
    """start_servers.sh or stop_servers.sh (name) of the repository with -c
    config and args, behind prefix (ip netns exec NS); the CompletedProcess."""
    return subprocess.run([*prefix, os.path.join(ROOT, name), "-c", config, *args],
                          capture_output=True, text=True, env=env or script_env(),
                          timeout=timeout)


def supervisor_cmd(config, *args, env=None, timeout=30):
    """herd-supervisor -c config ARGS run to its end (--status, --init-secret...)."""
    return subprocess.run([program("herd-supervisor"), "-c", config, *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def status_rows(out):
    """The --status table: {NAME: [its columns]}, from the header on."""
    lines = out.split("\n")
    head = next(i for i, line in enumerate(lines) if line.startswith("NAME "))
    table = {}
    for line in lines[head + 1:]:
        if not line.strip():
            break
        table[line.split()[0]] = line.split()
    return table


# the supervisor sections the tests use
RESTARTS = "supervisor:\n  restart_max: 3\n  restart_window_s: 60\n" \
           "  backoff_initial_ms: 100\n  backoff_max_ms: 400\n  stop_timeout_s: 5\n"
# stopped servers stay stopped for seconds: no hang restart meanwhile
NO_HANG = "supervisor:\n  hang_timeout_s: 120\n  stop_timeout_s: 5\n"
ONE_RESTART = "supervisor:\n  restart_max: 1\n  restart_window_s: 1\n" \
              "  backoff_initial_ms: 100\n  backoff_max_ms: 400\n  stop_timeout_s: 5\n"

SUP_HERD_SECRET = "cov-supervisor-secret-0123456789"


class SupervisedHerd:
    """Servers under herd-supervisor in one folder: servers is {name:
    [neighbours]} (the default herd unless given), extra the config's
    supervisor section, remote the names whose host is not this machine's
    (a TEST-NET address), secret HERD_SECRET (none: the secret file, which
    start_servers.sh makes).  Run it by the scripts (script("start_servers.sh"))
    or directly (start(), start_supervisor()).  problems() and the fixtures'
    stops check what the supervisor logged (see supervised_problems)."""

    def __init__(self, path, servers=None, extra=RESTARTS, remote=(), secret=None):
        servers = servers or DEFAULT_LINKS
        self.dir = str(path)
        self.ports = {n: free_port() for n in servers}
        self.config = write_config(self.dir, {n: (self.ports[n], servers[n]) for n in servers},
                                   extra=extra)
        if remote:
            text = open(self.config).read()
            for n in remote:
                text = text.replace(f"  {n}: {{ host: 127.0.0.1,", f"  {n}: {{ host: 192.0.2.1,")
            with open(self.config, "w") as f:
                f.write(text)
        self.local = [n for n in servers if n not in remote]
        self.pidfile = os.path.join(self.dir, "servers.pid")
        self.env = script_env(start_timeout="10")
        if secret is not None:
            self.env["HERD_SECRET"] = secret
        self.proc = None
        self.killed = set()          # pids the test sent SIGKILL
        self.may_crash = set()       # servers the test makes crash

    @property
    def port(self):
        """The port of the only local server."""
        assert len(self.local) == 1, self.local
        return self.ports[self.local[0]]

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def pids(self):
        """{name: pid} from servers.pid; {} when it is missing or half-written."""
        return read_pids(self.dir)

    def log(self, name):
        return read_log(self.dir, name)

    def wait_log(self, name, text, timeout=10):
        return wait_log(self.dir, name, text, timeout)

    def kill(self, pid):
        """SIGKILL a server, remembered: the check at the end expects its crash."""
        self.killed.add(pid)
        os.kill(pid, signal.SIGKILL)

    def problems(self):
        """Unexpected crashes, unclean stops, sanitizer reports."""
        return supervised_problems(self.dir, self.local, self.killed, self.may_crash)

    def script(self, name, *args):
        """start_servers.sh or stop_servers.sh on this herd's config."""
        return subprocess.run([os.path.join(ROOT, name), "-c", self.config, *args],
                              capture_output=True, text=True, env=self.env, timeout=60)

    def status(self, *args):
        return supervisor_cmd(self.config, "--status", *args)

    def start(self, config=None):
        """The supervisor, started directly (no script, no setsid) and kept
        as self.proc; returns once every local server listens and servers.pid
        names them all."""
        self.proc = subprocess.Popen([program("herd-supervisor"), "-c", config or self.config],
                                     env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for n in self.local:
            assert wait_listening(self.ports[n], self.proc), f"{n} did not start"
        wait_for(lambda: set(self.pids()) >= {"supervisor", *self.local}, 10,
                 what="servers.pid to name every server")
        return self

    def start_with_port_held(self, name):
        """The supervisor, started directly (self.proc) while a socket of the
        test holds name's port, so name crashes at each start (it may: see
        may_crash); returns that socket, listening, for the test to close."""
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", self.ports[name]))
        blocker.listen()
        self.may_crash.add(name)
        self.proc = subprocess.Popen([program("herd-supervisor"), "-c", self.config],
                                     env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return blocker

    def start_supervisor(self):
        """A supervisor started directly that the test stops itself; returns
        (process, the servers' pids) once each listens."""
        sup = subprocess.Popen([program("herd-supervisor"), "-c", self.config], env=self.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports.values():
            assert wait_listening(port, sup)
        wait_for(lambda: set(self.pids()) >= {"supervisor", *self.local}, 10,
                 what="servers.pid to name every server")
        return sup, [p for n, p in self.pids().items() if n != "supervisor"]

    def child(self, name=None, timeout=10):
        """The pid servers.pid gives a server (the only one by default),
        once it names one."""
        name = name or self.local[0]
        wait_for(lambda: name in self.pids(), timeout, what=f"a pid for {name} in servers.pid")
        return self.pids()[name]

    def wait_listening(self, name, timeout=10):
        """Until a TCP connect to the server succeeds (its pid in servers.pid
        says it was forked, not that it listens)."""
        wait_for(lambda: listens(self.ports[name]), timeout, step=0.02,
                 what=f"{name} to listen on port {self.ports[name]}")

    def wait_restarted(self, name, old_pid, timeout=10):
        """Until servers.pid names a server other than old_pid for name, and
        it listens; returns the new pid."""
        wait_for(lambda: self.pids().get(name) not in (None, old_pid), timeout,
                 what=f"{name} (pid {old_pid}) to be started again")
        self.wait_listening(name, timeout)
        return self.pids()[name]

    def stop(self, check=True):
        """SIGTERM to a supervisor start() started (everything stopped gets
        SIGCONT first); returns its exit status.  check: it must be 0, and
        no problems()."""
        if self.proc is None:
            return None
        for pid in self.pids().values():       # nothing may stay stopped
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        if check:
            assert rc == 0, f"herd-supervisor exited {rc}"
            problems = self.problems()
            assert not problems, problems
        return rc

    def stop_by_script(self, check=True):
        """stop_servers.sh when servers.pid exists; every pid it named must
        be gone after; check: no problems()."""
        if os.path.exists(self.pidfile):
            pids = list(self.pids().values())
            self.script("stop_servers.sh")
            for p in pids:
                if alive(p):
                    os.kill(p, signal.SIGKILL)
            assert wait_gone(pids), "a process of the herd survived its stop"
        if check:
            problems = self.problems()
            assert not problems, problems


# ------------------------------------------------------- network namespaces

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


# a nameserver on the namespace's loopback that reads queries and never
# answers (no ICMP error either: each lookup waits its whole timeout)
DNS_SINK = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
print("ready", flush=True)
time.sleep(600)
"""

# a client run inside a namespace: prints its own port, then the reply
_INSIDE = ("import socket,sys\n"
           "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5)\n"
           "sys.stdout.buffer.write(b'%d\\n' % s.getsockname()[1])\n"
           "s.sendall(sys.stdin.buffer.read());s.shutdown(socket.SHUT_WR)\n"
           "o=b''\nwhile True:\n b=s.recv(65536)\n if not b: break\n o+=b\n"
           "sys.stdout.buffer.write(o)\n")


class Namespaces:
    """Network namespaces for multi-host tests (root and `ip netns`: see
    netns_available), named phh* with a random tag and a random 10.x.y/24,
    so parallel tests do not meet.

    hosts: one namespace per label.  With bridge (the default), each host
    has an address on the bridge (self.addr) through a veth (self.veth;
    cut() and heal() set it down and up: packets vanish, no reset); with
    names, every namespace's /etc/netns/NS/hosts (which `ip netns exec` puts
    over /etc/hosts) gives each host the name host-X.herd (self.name).
    slow_dns: no bridge needed; the namespace's resolver is a nameserver on
    its loopback that never answers.  down() removes everything up() made
    and kills whatever still runs inside.  Subclasses put herds on it."""

    def __init__(self, hosts, bridge=True, names=False, slow_dns=False):
        tag = "%04x" % random.randrange(1 << 16)
        self.hosts = list(hosts)
        self.net = f"10.{100 + random.randrange(150)}.{random.randrange(250)}"
        self.bridge = f"phhbr{tag}" if bridge else None
        self.addr = {h: f"{self.net}.{i + 1}" for i, h in enumerate(self.hosts)}
        self.ns = {h: f"phh{tag}{i}" for i, h in enumerate(self.hosts)}
        self.veth = {h: f"phhv{tag}{i}" for i, h in enumerate(self.hosts)}
        self.name = {h: f"host-{str(h).lower()}.herd" for h in self.hosts}
        self.names, self.slow_dns = names, slow_dns
        self.made = []
        self.spawned = []

    def up(self):
        if self.bridge:
            sh("ip", "link", "add", self.bridge, "type", "bridge")
            self.made.append(("link", self.bridge))
            sh("ip", "addr", "add", f"{self.net}.254/24", "dev", self.bridge)
            sh("ip", "link", "set", self.bridge, "up")
        for h in self.hosts:
            self._add(h)
        return self

    def _add(self, h):
        ns = self.ns[h]
        sh("ip", "netns", "add", ns)
        self.made.append(("netns", ns))
        if self.names or self.slow_dns:
            os.makedirs(f"/etc/netns/{ns}", exist_ok=True)
            self.made.append(("etc", f"/etc/netns/{ns}"))
            self.write_hosts(h)
        if self.slow_dns:
            with open(f"/etc/netns/{ns}/resolv.conf", "w") as f:
                f.write("nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
        if self.bridge:
            self.made.append(("link", self.veth[h]))
            plug(self.bridge, ns, self.veth[h], self.addr[h])
        else:
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        if self.slow_dns:
            sink = self.spawn(h, ["/usr/bin/python3", "-c", DNS_SINK], stdout=subprocess.PIPE)
            assert sink.stdout.readline() == b"ready\n"

    def write_hosts(self, h):
        """Host h's /etc/hosts, rewritten in place (the same file stays
        mounted in the namespace, and every lookup reads it again)."""
        text = "127.0.0.1 localhost\n"
        if self.names:
            text += "::1 localhost\n" + \
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

    def cut(self, h):
        """Host h off the bridge: its veth down, packets vanish (no reset)."""
        sh("ip", "link", "set", self.veth[h], "down")

    def heal(self, h):
        sh("ip", "link", "set", self.veth[h], "up")

    def in_ns(self, h):
        return ("ip", "netns", "exec", self.ns[h])

    def spawn(self, h, argv, **kw):
        """A process in h's namespace; down() kills it if it still runs."""
        p = subprocess.Popen([*self.in_ns(h), *argv], **kw)
        self.spawned.append(p)
        return p

    def run(self, h, argv, timeout):
        return subprocess.run([*self.in_ns(h), *argv], capture_output=True, text=True,
                              timeout=timeout)

    def send_inside(self, h, host, port, data):
        """data to host:port from inside h's namespace (h may be cut off the
        bridge), half-closed; (the client's port, the reply)."""
        out = subprocess.run([*self.in_ns(h), "/usr/bin/python3", "-c", _INSIDE, host, str(port)],
                             input=data, capture_output=True, timeout=20).stdout
        client_port, _, reply = out.partition(b"\n")
        return int(client_port or 0), reply

    def capture(self, path):
        """tcpdump on the bridge into path (see Capture)."""
        return Capture(self.bridge, path)

    def down(self):
        """Remove what up() made; whatever still runs inside is killed."""
        for p in self.spawned:
            if p.poll() is None:
                p.kill()
            p.wait()
        for kind, name in self.made:
            if kind == "netns":
                left = sh("ip", "netns", "pids", name, check=False).stdout.split()
                for pid in left:                    # only what runs in our namespace
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
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
        self.made = []


class Capture:
    """tcpdump on an interface, for a test that inspects the link traffic;
    stop() gives the pcap file's bytes (see pcap_tcp_packets)."""

    def __init__(self, iface, path):
        if not shutil.which("tcpdump"):
            raise AssertionError("tcpdump is missing (`make deps` installs it): "
                                 "no capture on the bridge")
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
            raise AssertionError(f"tcpdump on {iface} did not start: {self.said!r}")

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


# ------------------------------------------------------------- fake places

NEW_PLACES = [
    {"id": "ChIJ-royce", "displayName": {"text": "Royce Hall", "languageCode": "en"},
     "shortFormattedAddress": "10745 Dickson Ct, Los Angeles",
     "formattedAddress": "10745 Dickson Ct, Los Angeles, CA 90095, USA",
     "types": ["performing_arts_theater", "point_of_interest", "establishment"],
     "location": {"latitude": 34.0729157, "longitude": -118.4421933},
     "rating": 4.8, "userRatingCount": 612, "businessStatus": "OPERATIONAL",
     "currentOpeningHours": {"openNow": True}},
    {"id": "ChIJ-diddy", "displayName": {"text": "Diddy Riese", "languageCode": "en"},
     "shortFormattedAddress": "926 Broxton Ave, Los Angeles",
     "types": ["bakery", "food", "store"],
     "location": {"latitude": 34.0630126, "longitude": -118.4468657},
     "rating": 4.7, "userRatingCount": 7310, "businessStatus": "OPERATIONAL",
     "priceLevel": "PRICE_LEVEL_INEXPENSIVE", "currentOpeningHours": {"openNow": False}},
    {"id": "ChIJ-hammer", "displayName": {"text": "Hammer Museum"},
     "formattedAddress": "10899 Wilshire Blvd, Los Angeles, CA 90024, USA",
     "types": ["museum"], "location": {"latitude": 34.0593, "longitude": -118.44325}},
]

LEGACY_RESULTS = [
    {"business_status": "OPERATIONAL",
     "geometry": {"location": {"lat": 34.0729157, "lng": -118.4421933}},
     "name": "Royce Hall", "place_id": "ChIJ-royce", "rating": 4.8,
     "types": ["point_of_interest"], "user_ratings_total": 612,
     "vicinity": "10745 Dickson Ct, Los Angeles"},
    {"geometry": {"location": {"lat": 34.063, "lng": -118.4468}},
     "name": "Diddy Riese", "place_id": "ChIJ-diddy", "types": ["bakery"],
     "vicinity": "926 Broxton Ave, Los Angeles"},
    {"geometry": {"location": {"lat": 34.0593, "lng": -118.44325}},
     "name": "Hammer Museum", "place_id": "ChIJ-hammer", "types": ["museum"],
     "vicinity": "10899 Wilshire Blvd, Los Angeles"},
]


class FakePlaces:
    """A fake Google Places server on loopback speaking both APIs.  It
    records every request (method, path, query, headers, body) and answers
    as told: normally, slowly, with an HTTP or Google error, with bad JSON,
    with a huge body, with a given body (raw), or not at all."""

    def __init__(self):
        self.requests = []
        self.mode = "ok"          # ok, slow, http, google-error, bad-json, huge, hang, zero, raw
        self.raw = (200, b"{}")   # mode raw: this (HTTP status, body) as it is
        self.delay = 0.0
        self.http_status = 500
        self.error_status = "PERMISSION_DENIED"
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self.handle_any(b"")

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                self.handle_any(self.rfile.read(n))

            def handle_any(self, body):
                url = urllib.parse.urlsplit(self.path)
                with fake.lock:
                    fake.requests.append({
                        "method": self.command, "path": url.path,
                        "query": urllib.parse.parse_qs(url.query), "raw_query": url.query,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body})
                status, payload = fake.answer(self.command, url.path)
                if payload is None:       # never answer
                    time.sleep(30)
                    return
                if fake.delay:
                    time.sleep(fake.delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None   # clients that hang up
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, method, path):
        legacy = path == "/maps/api/place/nearbysearch/json"
        if self.mode == "hang":
            return 200, None
        if self.mode == "raw":
            return self.raw
        if self.mode == "http":
            return self.http_status, b"<html>oops</html>"
        if self.mode == "bad-json":
            return 200, b'{"places": [ {"id": '
        if self.mode == "huge":
            return 200, b'{"places": [' + b'{"id": "x"},' * 500000 + b'{"id": "y"}]}'
        if self.mode == "google-error":
            if legacy:
                return 200, json.dumps({"error_message": "The provided API key is invalid.",
                                        "html_attributions": [], "results": [],
                                        "status": "REQUEST_DENIED"}).encode()
            return 403, json.dumps({"error": {"code": 403, "message": "API key not valid.",
                                              "status": self.error_status}}).encode()
        if self.mode == "zero":
            if legacy:
                return 200, json.dumps({"html_attributions": [], "results": [],
                                        "status": "ZERO_RESULTS"}).encode()
            return 200, b"{}"
        if legacy:
            return 200, json.dumps({"html_attributions": [], "results": LEGACY_RESULTS,
                                    "status": "OK"}).encode()
        return 200, json.dumps({"places": NEW_PLACES}).encode()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------- fake line server

class FakeLineServer:
    """A listening socket on a free loopback port that answers lines, one
    thread per connection, and records every line it read (self.lines).
    behaviour: "good" answers herd commands as a server would; "question"
    answers "? LINE" to all; "wrong-client" names another client in its AT
    line; "bad-json" and "flip-json" (every second WHATSAT) send a broken
    JSON body; "ok" answers "+OK" to every line."""

    def __init__(self, behaviour="good"):
        self.behaviour = behaviour
        self.whatsats = 0
        self.bad_json_sent = 0
        self.lines = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def answer(self, line):
        f = line.split()
        b = self.behaviour
        with self.lock:
            self.lines.append(line)
        if b == "ok":
            return b"+OK\r\n"
        if b == "question":
            return b"? " + line + b"\n"
        if f and f[0] == b"PING":
            return b"+PONG\r\n"
        if f and f[0] == b"IAMAT":
            if b == "wrong-client":
                f[1] = b"someone-else"
            return b"AT Fake +0.000000001 " + b" ".join(f[1:]) + b"\n"
        if f and f[0] == b"WHATSAT":
            at = b"AT Fake +0.000000001 %s +1.0+1.0 1\n" % f[1]
            with self.lock:
                self.whatsats += 1
                bad = b == "bad-json" or (b == "flip-json" and self.whatsats % 2 == 0)
                self.bad_json_sent += bad
            if bad:
                return at + b'{\n   "results" : [\n\n'
            return at + b'{\n   "html_attributions" : [],\n   "results" : [],\n   "status" : "ZERO_RESULTS"\n}\n\n'
        return b"? " + line + b"\n"

    def serve(self, c):
        buf = b""
        with c:
            while True:
                try:
                    data = c.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        c.sendall(self.answer(line.rstrip(b"\r")))
                    except OSError:
                        return

    def close(self):
        self.sock.close()


# --------------------------------------------------------- fake neighbour

def psk_key(secret, dialer, acceptor):
    """The link's TLS key, as docs/PROTOCOL.md gives it, in hex:
    HMAC-SHA256(secret, "proxyherd-v1 psk DIALER ACCEPTOR")."""
    return hmac.new(secret.encode(), f"proxyherd-v1 psk {dialer} {acceptor}".encode(),
                    hashlib.sha256).hexdigest()


def key_id(secret):
    """A secret's key id, as docs/PROTOCOL.md gives it: the first 8 hex
    digits of HMAC-SHA256(secret, "proxyherd-v1 key id")."""
    return hmac.new(secret.encode(), b"proxyherd-v1 key id", hashlib.sha256).hexdigest()[:8]

class FakePeer:
    """A neighbour's end of a TLS link, played by openssl s_client (Python's
    ssl module has TLS 1.3 external PSKs only from 3.13): sendall() goes
    into the link, recv() comes out of it, and a peer that stops reading
    stops s_client reading the socket, as a slow server would."""

    def __init__(self, port, me, them, secret):
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-brief",
             "-ciphersuites", "TLS_AES_128_GCM_SHA256",
             "-psk_identity", f"proxyherd-v1 {me} {them}", "-psk", psk_key(secret, me, them)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.timeout = None
        # -brief: the handshake's outcome on stderr, only the link's bytes on stdout
        said, deadline = b"", time.time() + 10
        while b"CONNECTION ESTABLISHED" not in said:
            left = deadline - time.time()
            r, _, _ = select.select([self.proc.stderr], [], [], max(left, 0))
            more = os.read(self.proc.stderr.fileno(), 4096) if r else b""
            if not more:
                self.close()
                raise AssertionError(f"no TLS link: {said!r}")
            said += more

    def sendall(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def settimeout(self, t):
        self.timeout = t

    def recv(self, n):
        r, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not r:
            raise socket.timeout()
        return os.read(self.proc.stdout.fileno(), n)

    def close(self):
        """What was sent goes out, then the link closes."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def fake_peer(herd, me, them):
    """Server 'me' towards 'them' over TLS; returns it once the link is up
    (the first bytes of the catch-up may still be on their way)."""
    return FakePeer(herd.ports[them], me, them, herd.secret)


class LinkLines:
    """Lines from a fake peer's link, one at a time."""

    def __init__(self, peer):
        self.peer, self.buf = peer, b""

    def next(self, timeout=5):
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            self.peer.settimeout(max(deadline - time.time(), 0.01))
            chunk = self.peer.recv(65536)       # socket.timeout past the deadline
            assert chunk, f"the link closed: {self.buf[-200:]!r}"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


# ------------------------------------------- helpers shared by test files

LOC = b"+34.068930-118.445127"      # a client location the tests send
ALL = tuple(DEFAULT_LINKS)


def herd_iamat(herd, name, client, loc=LOC, t=None):
    """IAMAT to a herd's server (now by default); its AT line."""
    t = t if t is not None else b"%.9f" % time.time()
    reply = herd.send(name, b"IAMAT %s %s %s\n" % (client, loc, t))
    assert reply.startswith(b"AT %s " % name.encode()), reply
    return reply[:-1]


def fill_clients(port, n, prefix=b"c"):
    """n clients' IAMATs on one connection; waits for every answer."""
    with connect(port) as c:
        c.sendall(b"".join(b"IAMAT %s%d %s %d\n" % (prefix, i, LOC, i + 1) for i in range(n)))
        c.shutdown(socket.SHUT_WR)
        got = recv_until_eof(c)
    assert got.count(b"\n") == n


def whatsat_reply(port, client):
    """The whole reply to WHATSAT client 1 1."""
    return exchange(port, b"WHATSAT %s 1 1\n" % client)


def run_with_secret(args, env=None, timeout=20):
    """A program run to its end with HERD_SECRET set (and env added)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HERD_SECRET=SUP_HERD_SECRET, **(env or {})))


PLACES_KEY = "Sekr3t/+=key-ABCDEFGHIJ"


def places_opts(fake, provider):
    return {"provider": provider, "base_url": fake.base, "api_key": f'"{PLACES_KEY}"',
            "timeout_ms": 3000, "cache_ttl_s": 60}


def snapshot_count(path):
    """The client count in a snapshot's END line, or None while there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64))
            tail = f.read().splitlines()
    except FileNotFoundError:
        return None
    return int(tail[-1].split()[1]) if tail and tail[-1].startswith(b"END ") else None


def start_server(tmp_path, name="Bailey", servers=None, extra="", env=None, limits=None,
                 logging=None, preexec=None, places=None):
    """A herd-server for 'name' in tmp_path/name (config from servers,
    {name: (port, [neighbours])}, by default alone), started with an
    optional preexec_fn; stop_server it with stop_server()."""
    sub = tmp_path / name
    sub.mkdir(exist_ok=True)
    s = Server(sub, name=name)
    if servers:
        s.port = servers[name][0]
    s.config = write_config(s.dir, servers or {name: (s.port, [])}, limits=limits,
                            logging=logging, extra=extra, places=places)
    s.stderr = open(s.stderr_path, "wb")
    s.proc = subprocess.Popen([program("herd-server"), name, "-c", s.config],
                              stdout=subprocess.DEVNULL, stderr=s.stderr,
                              env=env, preexec_fn=preexec)
    if not wait_listening(s.port, s.proc):
        s.stop(check=False)
        raise AssertionError(f"herd-server did not start: {s.read_stderr()}")
    return s


SERVER_SECRET = "cov-secret-0123456789"


def with_secret():
    return dict(os.environ, HERD_SECRET=SERVER_SECRET)


def stop_server(s):
    """SIGTERM; the exit status, and stderr checked for sanitizer reports."""
    s.proc.send_signal(signal.SIGTERM)
    try:
        rc = s.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait()
        rc = "ignored SIGTERM"
    s.proc = None
    s.stderr.close()
    err = s.read_stderr()
    assert "Sanitizer" not in err and "runtime error" not in err, err
    return rc


def kill_all(pids):
    for p in pids:
        if alive(p):
            os.kill(p, signal.SIGKILL)


TRIO = {"Bailey": ["Bona", "Campbell"], "Bona": ["Bailey", "Campbell"],
        "Campbell": ["Bailey", "Bona"]}


BUSY = b"? too many connections, try again later\n"


def hold_clients(port, n, tag):
    """n idle clients, each proven accepted by one answered line."""
    socks = []
    for i in range(n):
        c = connect(port)
        c.settimeout(5)
        c.sendall(b"%s%d\n" % (tag, i))
        reply = recv_exact_lines(c, 1)
        assert reply == b"? %s%d\n" % (tag, i), f"client {i} of {n}: {reply!r}"
        socks.append(c)
    return socks


BUSY_ADDR = b"? too many connections from your address, try again later\n"


def stored_set(port, clients):
    """{client: AT line or None} from one pipelined connection of WHATSATs."""
    data = exchange(port, b"".join(b"WHATSAT %s 1 1\n" % c for c in clients))
    out, pos = {}, 0
    for c in clients:
        if data.startswith(b"? ", pos):
            end = data.index(b"\n", pos) + 1
            out[c] = None
        else:            # the AT line, the JSON, an empty line
            end = data.index(b"\n\n", pos) + 2
            out[c] = data[pos:data.index(b"\n", pos)]
        pos = end
    assert pos == len(data), data[pos:pos + 200]
    return out


PAIR_SECRET = "test-secret-0123456789"


class Pair:
    """Bailey and Bona, linked; Bailey dials (its name sorts first).  With
    limits: one folder and config (snapshots every second).  With settings
    ({name: {"limits": {...}, "herd": {...}}}): each server in its own
    folder (self.dirs[name]) with its own config, so their settings may
    differ (anti_entropy_ms 100 unless given).  start() starts both, or the
    names given; stop(check=True) wants exit status 0 of each."""

    def __init__(self, path, limits=None, settings=None):
        self.dir = str(path)
        self.ports = {"Bailey": free_port(), "Bona": free_port()}
        servers = {"Bailey": (self.ports["Bailey"], ["Bona"]),
                   "Bona": (self.ports["Bona"], ["Bailey"])}
        self.dirs, self.configs, self.procs = {}, {}, {}
        for name in servers:
            if settings is None:
                self.dirs[name] = self.dir
                extra = "herd:\n  snapshot_interval_s: 1\n"
            else:
                self.dirs[name] = os.path.join(self.dir, name)
                os.makedirs(self.dirs[name])
                limits = settings[name].get("limits")
                herd = {"anti_entropy_ms": 100, **settings[name].get("herd", {})}
                extra = "herd:\n" + "".join(f"  {k}: {v}\n" for k, v in herd.items())
            self.configs[name] = write_config(self.dirs[name], servers, limits=limits,
                                              extra=extra)
        self.config = self.configs["Bailey"]

    def start(self, *names):
        for name in names or tuple(self.ports):
            with open(os.path.join(self.dirs[name], f"{name}.stderr"), "ab") as err:
                self.procs[name] = subprocess.Popen(
                    [program("herd-server"), name, "-c", self.configs[name]],
                    stdout=subprocess.DEVNULL, stderr=err,
                    env=dict(os.environ, HERD_SECRET=PAIR_SECRET))
            assert wait_listening(self.ports[name], self.procs[name]), f"{name} did not start"
        return self

    def wait_linked(self):
        """Until each server's metrics say its link to the other is up."""
        for name, peer in (("Bailey", "Bona"), ("Bona", "Bailey")):
            wait_metrics(self.dirs[name], [name],
                         lambda m: value(m[name], "proxyherd_link_up", peer=peer) == 1)
        return self

    def log(self, name):
        return read_log(self.dirs[name], name)

    def send(self, name, line):
        return exchange(self.ports[name], line)

    def stored(self, name, client):
        reply = self.send(name, b"WHATSAT %s 1 1\n" % client)
        return None if reply.startswith(b"? ") else reply.split(b"\n", 1)[0]

    def counters(self):
        """Link AT lines sent and differing SUMs received, over both servers."""
        m = {n: read_metrics(self.dirs[n], n) for n in self.dirs}
        return (sum(value(m[n], "proxyherd_link_updates_sent_total") for n in m),
                sum(value(m[n], "proxyherd_link_digest_mismatches_total") for n in m))

    def stop(self, check=False):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20 if check else 10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if check:
            assert all(p.returncode == 0 for p in self.procs.values()), \
                {n: p.returncode for n, p in self.procs.items()}


TRUST_SECRET = "trust-secret-0123456789"


def configured_server(tmp_path, name, servers, extra=""):
    """A Server for 'name' with the config written from 'servers'
    ({name: (port, [neighbours])}); not started yet."""
    sub = tmp_path / name
    sub.mkdir(exist_ok=True)
    s = Server(sub, name=name)
    s.port = servers[name][0]
    s.config = write_config(s.dir, servers, extra=extra)
    return s


def linked(tmp_path, started_servers, monkeypatch, me="Bona", them="Bailey"):
    """'me' started_servers with one neighbour 'them' that dials it (names sort that
    way); returns (server, a stand-in herd for fake_peer)."""
    monkeypatch.setenv("HERD_SECRET", TRUST_SECRET)
    ports = {me: free_port(), them: free_port()}
    s = configured_server(tmp_path, me, {me: (ports[me], [them]), them: (ports[them], [me])})
    started_servers.append(s.start())
    return s, types.SimpleNamespace(secret=TRUST_SECRET, ports=ports)


def one_server(folder, extra=""):
    os.makedirs(folder, exist_ok=True)
    port = free_port()
    return write_config(str(folder), {"Alpha": (port, [])}, extra=extra), port


def one_server_config(folder, port):
    return write_config(str(folder), {"Bailey": (port, [])})


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder away")


PRECIOUS = b"precious: the herd must never write here\n"


def outside_target(tmp_path):
    """A file outside the herd's folders that a planted link points to."""
    path = tmp_path / "outside.txt"
    path.write_bytes(PRECIOUS)
    return str(path)


def plant(target, link):
    """A symbolic link at 'link' (False while the name is taken)."""
    try:
        os.symlink(target, link)
        return True
    except FileExistsError:
        return False
