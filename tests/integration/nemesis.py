"""The nemesis of test_chaos.py::test_nemesis_schedule: a TCP proxy for links, a herd started
with one config file per server, the model of the herd's order, and one
seeded random schedule run against them.

Every choice of a schedule is drawn from random.Random(seed), so a seed
replays the same schedule (the same actions in the same order; what the
processes make of them still depends on timing).  The rules the model
follows are those of docs/PROTOCOL.md ("IAMAT", "Stored clients").
"""
import collections
import os
import random
import re
import select
import signal
import socket
import subprocess
import threading
import time

from harness import PLACES, exchange, free_port, program, wait_listening, yaml_section

NAMES = ["Bailey", "Bona", "Campbell", "Clark", "Jaquez"]
SECRET = "nemesis-secret-0123456789"
ANTI_ENTROPY_MS = 200
SNAPSHOT_S = 1
FUTURE_BOUND_S = 86400       # an IAMAT further ahead than this is refused
QUIET_PERIODS = 5            # the window of check 4, in anti-entropy periods
AT_RE = re.compile(rb"^AT (\S+) ([+-][0-9]+\.[0-9]{9}) (\S+) (\S+) (\S+)$")


# ------------------------------------------------------------------ model

def parse_time(t):
    """(seconds, nanoseconds) of a time field; digits past the ninth after
    the point are ignored."""
    whole, _, frac = t.partition(b".")
    return int(whole), int(frac[:9].ljust(9, b"0")) if frac else 0


def line_key(line):
    """Where an AT line stands in the herd's order: time, location bytes,
    origin, then the whole line (two different lines are never equal).  The
    line holds the client id, so this orders two clients' updates too."""
    m = AT_RE.match(line)
    assert m, f"not an AT line: {line!r}"
    origin, _diff, _client, loc, t = m.groups()
    return parse_time(t), loc, origin, line


def at_fields(line):
    m = AT_RE.match(line)
    return m.groups() if m else None


class Update:
    """One IAMAT the test sent.  status: 'acked' (its AT reply was read:
    line holds it), 'refused' (its `? ` reply was read), 'maybe' (no reply:
    the server may or may not have taken it)."""

    def __init__(self, client, loc, t, origin, kind):
        self.client, self.loc, self.t, self.origin, self.kind = client, loc, t, origin, kind
        self.status, self.line, self.reply = "maybe", None, b""

    def request(self):
        return b"IAMAT %s %s %s\n" % (self.client, self.loc, self.t)

    def matches(self, line):
        """Could this IAMAT have made the AT line (any diff)?"""
        f = at_fields(line)
        return f is not None and (f[0], f[2], f[3], f[4]) == \
            (self.origin.encode(), self.client, self.loc, self.t)

    def __repr__(self):
        return f"{self.request()[:-1].decode(errors='replace')} @{self.origin} [{self.kind}]"


class Model:
    """Every update the test sent, and what the herd must hold after them."""

    def __init__(self, max_stored):
        self.updates = []
        self.max_stored = max_stored

    def clients(self):
        return sorted({u.client for u in self.updates})

    def newest_acked(self, client):
        lines = [u.line for u in self.updates if u.client == client and u.status == "acked"]
        return max(lines, key=line_key) if lines else None

    def check_line(self, client, line):
        """None when 'line' may be what the herd holds for client, else why
        not: it must be the newest acknowledged line, or a newer line that an
        unanswered IAMAT made."""
        best = self.newest_acked(client)
        if line == best:
            return None
        f = at_fields(line)
        if f is None or f[2] != client:
            return f"holds {line!r}, not an AT line of this client"
        if best is not None and line_key(line) < line_key(best):
            return f"holds {line!r}, older than the acknowledged {best!r}"
        if any(u.status == "maybe" and u.matches(line) for u in self.updates):
            return None
        if any(u.status == "far-acked" and u.matches(line) for u in self.updates):
            return f"holds {line!r}, more than {FUTURE_BOUND_S} s ahead (to be refused)"
        return f"holds {line!r}, which no update sent makes (newest acknowledged: {best!r})"

    def check_table(self, table):
        """Problems of one table {client: line or None} (checks 1 and 2)."""
        problems = []
        held = {c: l for c, l in table.items() if l is not None}
        valid = []
        for c, l in sorted(held.items()):
            why = self.check_line(c, l)
            if why:
                problems.append(f"check 1: client {c!r}: {why}")
            else:
                valid.append(line_key(l))
        if len(held) > self.max_stored:
            problems.append(f"check 1: {len(held)} clients held, more than {self.max_stored}")
        for c in self.clients():
            best = self.newest_acked(c)
            if c in held or best is None:
                continue
            newer = sum(1 for k in valid if k > line_key(best))
            if newer < self.max_stored:
                problems.append(f"check 2: client {c!r}: acknowledged {best!r} lost, though "
                                f"only {newer} clients are held with newer lines "
                                f"(max_stored_clients {self.max_stored})")
        return problems


# ------------------------------------------------------------------ proxy

class Proxy:
    """A TCP proxy in front of one server, for the link its neighbour dials.

    Modes: 'pass', 'delay' (each chunk held delay_s), 'stall' (nothing
    read or written; connections stay open), 'down' (connections closed,
    new ones closed at once).  One-shot: close() closes both sides of every
    connection; tear() passes part of the next chunk, then closes both
    sides (a torn TLS record)."""

    def __init__(self, label, target_port, seed):
        self.label, self.target = label, target_port
        self.rng = random.Random(seed)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = free_port()
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(16)
        self.wake_r, self.wake_w = socket.socketpair()
        self.lock = threading.Lock()
        self.mode, self.delay_s, self.tear_armed, self.close_now = "pass", 0.0, False, False
        self.stopping = False
        self.pairs = {}          # socket -> [its other side, deque of (due, bytes) to send it]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def set(self, mode, delay_s=0.0):
        with self.lock:
            self.mode, self.delay_s = mode, delay_s
            if mode == "down":
                self.close_now = True
        self.wake_w.send(b"x")

    def close(self):
        with self.lock:
            self.close_now = True
        self.wake_w.send(b"x")

    def tear(self):
        with self.lock:
            self.tear_armed = True
        self.wake_w.send(b"x")

    def stop(self):
        self.stopping = True
        self.wake_w.send(b"x")
        self.thread.join(timeout=5)
        for s in list(self.pairs):
            s.close()
        for s in (self.lsock, self.wake_r, self.wake_w):
            s.close()

    def _drop(self, s, flush=False):
        """Close both sides; with flush, first pass on what the other side
        is due (a peer that closed: its last bytes still arrive)."""
        other = self.pairs.pop(s, [None])[0]
        s.close()
        if flush and other is not None and other in self.pairs:
            try:
                other.setblocking(True)
                other.settimeout(0.5)
                for _, chunk in self.pairs[other][1]:
                    other.sendall(chunk)
            except OSError:
                pass
        if other is not None and other in self.pairs:
            self.pairs.pop(other)
            other.close()

    def _accept(self, mode):
        a, _ = self.lsock.accept()
        if mode == "down":
            a.close()
            return
        try:
            b = socket.create_connection(("127.0.0.1", self.target), timeout=1)
        except OSError:
            a.close()
            return
        for s in (a, b):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pairs[a] = [b, collections.deque()]
        self.pairs[b] = [a, collections.deque()]

    def _read(self, s, mode, delay):
        try:
            data = s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(s, flush=True)
            return
        other, _ = self.pairs[s]
        queue = self.pairs[other][1]
        with self.lock:
            tear, self.tear_armed = self.tear_armed, False
        if tear:
            part = data[:self.rng.randint(1, len(data) - 1)] if len(data) > 1 else b""
            try:
                other.setblocking(True)
                other.settimeout(0.5)
                for _, chunk in queue:
                    other.sendall(chunk)
                other.sendall(part)
            except OSError:
                pass
            self._drop(s)
            return
        queue.append((time.monotonic() + (delay if mode == "delay" else 0), data))

    def _write(self, s, now):
        queue = self.pairs[s][1]
        while queue and queue[0][0] <= now:
            due, data = queue.popleft()
            try:
                n = s.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self._drop(s)
                return
            if n < len(data):
                queue.appendleft((due, data[n:]))
                return

    def _run(self):
        while not self.stopping:
            with self.lock:
                mode, delay, close_now, self.close_now = self.mode, self.delay_s, self.close_now, False
            if close_now:
                for s in list(self.pairs):
                    if s in self.pairs:
                        self._drop(s)
            now = time.monotonic()
            readers, writers, timeout = [self.lsock, self.wake_r], [], 0.05
            if mode != "stall":
                for s, (_, queue) in self.pairs.items():
                    readers.append(s)
                    if queue and queue[0][0] <= now:
                        writers.append(s)
                    elif queue:
                        timeout = min(timeout, queue[0][0] - now)
            r, w, _ = select.select(readers, writers, [], max(timeout, 0))
            if self.wake_r in r:
                self.wake_r.recv(4096)
            if self.lsock in r:
                self._accept(mode)
            for s in r:
                if s in self.pairs:
                    self._read(s, mode, delay)
            now = time.monotonic()
            for s in w:
                if s in self.pairs:
                    self._write(s, now)


# ------------------------------------------------------------------- herd

def read_prom(path):
    """(modification time, {sample name with labels: value}) of a metrics
    file, or (0, {}) when there is none."""
    try:
        mtime = os.stat(path).st_mtime
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return 0, {}
    samples = {}
    for l in text.splitlines():
        if l and not l.startswith("#"):
            k, _, v = l.rpartition(" ")
            samples[k] = float(v)
    return mtime, samples


class Node:
    """One herd-server, started with its own config file."""

    def __init__(self, folder, name, port):
        self.folder, self.name, self.port = folder, name, port
        self.config = os.path.join(folder, f"{name}.yml")
        self.stderr_path = os.path.join(folder, f"{name}.stderr")
        self.proc, self.paused, self.killed_pids = None, False, []

    def start(self):
        env = dict(os.environ, HERD_SECRET=SECRET)
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([program("herd-server"), self.name, "-c", self.config],
                                         stdout=subprocess.DEVNULL, stderr=err, env=env)
        self.paused = False
        if not wait_listening(self.port, self.proc):
            raise AssertionError(f"{self.name} did not start: {self.stderr()[-2000:]}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        self.killed_pids.append(self.proc.pid)
        self.proc, self.paused = None, False

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        """SIGTERM; a problem (not exit status 0, a sanitizer report) or None."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if self.paused:
            p.send_signal(signal.SIGCONT)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return f"{self.name} ignored SIGTERM"
        err = self.stderr()
        if p.returncode != 0 or "Sanitizer" in err or "runtime error" in err:
            return f"{self.name} exited with {p.returncode}: {err[-2000:]}"
        return None

    def prom(self):
        return read_prom(os.path.join(self.folder, "state", f"{self.name}.prom"))

    def snap_mtime(self):
        try:
            return os.stat(os.path.join(self.folder, "state", f"{self.name}.snap")).st_mtime
        except FileNotFoundError:
            return 0


def write_configs(folder, nodes, links, proxies, max_stored):
    """One config per server: the same servers, links and settings, but the
    port of each neighbour a server dials (the name that sorts first dials)
    is that link's proxy."""
    for me in nodes:
        text = "servers:\n"
        for n in nodes:
            port = nodes[n].port
            if (me, n) in proxies:
                port = proxies[(me, n)].port
            neigh = sorted(b for a, b in links if a == n) + sorted(a for a, b in links if b == n)
            text += f"  {n}: {{ host: 127.0.0.1, port: {port}, neighbors: [{', '.join(neigh)}] }}\n"
        text += yaml_section("places", {"provider": "local", "local_file": PLACES})
        text += yaml_section("limits", {"max_stored_clients": max_stored})
        text += yaml_section("logging", {"dir": "logs", "flush_ms": 50})
        text += yaml_section("herd", {"snapshot_interval_s": SNAPSHOT_S,
                                      "anti_entropy_ms": ANTI_ENTROPY_MS})
        with open(nodes[me].config, "w") as f:
            f.write(text)


class Request:
    """An IAMAT on its own connection, its reply read now or later."""

    def __init__(self, node, update):
        self.node, self.update, self.buf = node, update, b""
        self.sock = socket.create_connection(("127.0.0.1", node.port), timeout=3)
        self.sock.sendall(update.request())
        self.sock.shutdown(socket.SHUT_WR)
        self.done, self.ignore = False, False

    def collect(self, timeout):
        """Read the reply until EOF or timeout; classify the update."""
        if self.done:
            return
        if self.ignore:            # the client never reads its reply
            return self.finish()
        deadline = time.monotonic() + timeout
        try:
            while not self.buf.endswith(b"\n") and time.monotonic() < deadline:
                r, _, _ = select.select([self.sock], [], [], max(0, deadline - time.monotonic()))
                if not r:
                    break
                b = self.sock.recv(4096)
                if not b:
                    break
                self.buf += b
        except OSError:
            pass
        self.finish()

    def finish(self):
        self.done = True
        self.sock.close()
        u = self.update
        u.reply = self.buf
        if self.buf.startswith(b"AT ") and self.buf.endswith(b"\n"):
            u.status, u.line = "acked", self.buf[:-1]
        elif self.buf.startswith(b"? ") and self.buf.endswith(b"\n"):
            u.status = "refused"


# --------------------------------------------------------------- schedule

class Schedule:
    """One seeded schedule: build a herd, run the nemesis, heal, check."""

    def __init__(self, seed, folder, log=None):
        self.seed, self.folder = seed, str(folder)
        self.rng = random.Random(seed)
        self.events, self.problems, self.pending = [], [], []
        self.log = log
        rng = self.rng
        names = sorted(rng.sample(NAMES, rng.randint(3, 5)))
        order = names[:]
        rng.shuffle(order)
        links = set()
        for i in range(1, len(order)):                 # a spanning tree, then a few more
            a, b = sorted((order[i], rng.choice(order[:i])))
            links.add((a, b))
        for a in names:
            for b in names:
                if a < b and (a, b) not in links and rng.random() < 0.3:
                    links.add((a, b))
        self.links = sorted(links)
        self.small = rng.random() < 0.5
        self.max_stored = rng.randint(3, 8) if self.small else 1000000
        n_clients = (self.max_stored + rng.randint(2, 6)) if self.small else rng.randint(4, 10)
        marks = ["c", "z", "A", "\u00e9", "\u03a9"]
        self.clients = [f"{rng.choice(marks)}{i}".encode() for i in range(n_clients)]
        self.hot = self.clients[:2]
        self.locations = [self._location() for _ in range(rng.randint(2, 5))]
        self.steps = rng.randint(35, 60)
        self.now0 = time.time()
        os.makedirs(self.folder, exist_ok=True)
        self.nodes = {n: Node(self.folder, n, free_port()) for n in names}
        self.proxies = {(a, b): Proxy(f"{a}->{b}", self.nodes[b].port, rng.random())
                        for a, b in self.links}
        write_configs(self.folder, self.nodes, self.links, self.proxies, self.max_stored)
        self.model = Model(self.max_stored)
        self.restart_at, self.resume_at = {}, {}
        self.last_sent = {n: 0.0 for n in names}

    # -- helpers

    def note(self, text):
        self.events.append(f"{time.monotonic() - self.t0:7.3f} {text}")

    def _location(self):
        rng = self.rng
        lat = f"{rng.choice('+-')}{rng.randint(0, 89):02d}.{rng.randint(0, 10**6 - 1):06d}"
        lon = f"{rng.choice('+-')}{rng.randint(0, 179):03d}.{rng.randint(0, 10**6 - 1):06d}"
        return (lat + lon).encode()

    def _spell(self, sec, nsec):
        """One of the ways to write a time: the fewest digits, padded with
        zeros, digits past the ninth, an integer with or without '.0'."""
        rng = self.rng
        frac = f"{nsec:09d}"
        style = rng.choice(["short", "short", "pad", "long"])
        if style == "short":
            frac = frac.rstrip("0")
            if not frac:
                return f"{sec}".encode() if rng.random() < 0.5 else f"{sec}.0".encode()
        elif style == "long":
            frac += str(rng.randint(0, 10**6))
        return f"{sec}.{frac}".encode()

    def _time(self, kind):
        rng = self.rng
        if kind == "past":
            return rng.choice([b"0.000001", b"1.5", b"1.500", b"7", b"7.0", b"0.5"])
        if kind == "future":
            t = self.now0 + rng.uniform(1, 3600)
        elif kind == "ahead":      # newer than the other updates of its client
            t = self.now0 + rng.uniform(3600, 7200)
        elif kind == "far-future":
            t = self.now0 + FUTURE_BOUND_S + rng.uniform(3600, 10**8)
        else:
            t = self.now0 - rng.uniform(0, 1000)
        sec = int(t)
        return self._spell(sec, rng.randint(0, 999) * 10**6 if rng.random() < 0.5 else
                           rng.randint(0, 10**9 - 1))

    def _respell(self, t):
        sec, nsec = parse_time(t)
        for _ in range(8):
            s = self._spell(sec, nsec)
            if s != t:
                return s
        return t + (b".0" if b"." not in t else b"0")

    def live(self, unpaused=False):
        return [n for n in sorted(self.nodes)
                if self.nodes[n].running() and not (unpaused and self.nodes[n].paused)]

    def send(self, node, update, wait=True):
        """Send one IAMAT; its reply is read now, or (paused server, or
        wait=False) later."""
        self.model.updates.append(update)
        self.last_sent[node.name] = time.time()
        try:
            req = Request(node, update)
        except OSError as e:
            self.note(f"send {update!r}: {e}")
            return None
        if node.paused or not wait:
            self.pending.append(req)
        else:
            req.collect(5)
            self._judge(update)
            if update.status == "maybe":
                self.problems.append(f"{node.name} (running) did not answer {update!r} in 5 s")
        self.note(f"sent {update!r} -> {update.status}")
        return req

    def _judge(self, u):
        """The reply itself: the AT line of this IAMAT, or `? ` and the line
        for a time too far ahead."""
        far = parse_time(u.t)[0] > time.time() + FUTURE_BOUND_S
        if u.status == "acked":
            f = at_fields(u.line)
            if far:
                self.problems.append(f"clock bound: {u!r} ({u.t.decode()} is more than "
                                     f"{FUTURE_BOUND_S} s ahead) got {u.line!r}, not `? `")
                u.status = "far-acked"      # the model does not count it
            elif f is None or (f[0], f[2], f[3], f[4]) != (u.origin.encode(), u.client, u.loc, u.t):
                self.problems.append(f"reply: {u!r} got {u.line!r}")
        elif u.status == "refused":
            if not far or u.reply != b"? " + u.request():
                self.problems.append(f"reply: {u!r} got {u.reply!r}")

    def collect_pending(self, node=None, timeout=3):
        keep = []
        for req in self.pending:
            if node is None or req.node is node:
                req.collect(timeout)
                self._judge(req.update)
                self.note(f"late reply {req.update!r} -> {req.update.status}")
            else:
                keep.append(req)
        self.pending = keep

    def new_update(self, node, client=None, kind=None, t=None, loc=None):
        rng = self.rng
        if client is None:
            client = rng.choice(self.hot) if rng.random() < 0.3 else rng.choice(self.clients)
        if kind is None:
            kind = rng.choices(["recent", "past", "future", "far-future"], [70, 10, 12, 8])[0]
        if t is None:
            t = self._time(kind)
        if loc is None:
            loc = rng.choice(self.locations) if rng.random() < 0.6 else self._location()
        return Update(client, loc, t, node.name, kind)

    # -- actions

    def act_iamat(self):
        n = self.rng.choice(self.live())
        self.send(self.nodes[n], self.new_update(self.nodes[n]))

    def act_resend(self):
        """An IAMAT sent before, again: the same bytes or its time written
        another way, to the same server or another one."""
        rng = self.rng
        old = [u for u in self.model.updates if u.kind != "far-future"]
        if not old:
            return self.act_iamat()
        u = rng.choice(old)
        t = u.t if rng.random() < 0.5 else self._respell(u.t)
        live = self.live()
        n = u.origin if u.origin in live and rng.random() < 0.6 else rng.choice(live)
        self.send(self.nodes[n], Update(u.client, u.loc, t, n, "resend"))

    def act_tie(self):
        """Equal times at two origins (the same location or another)."""
        rng = self.rng
        live = self.live()
        if len(live) < 2:
            return self.act_iamat()
        a, b = rng.sample(live, 2)
        u = self.new_update(self.nodes[a], kind="recent")
        self.send(self.nodes[a], u)
        loc = u.loc if rng.random() < 0.5 else self._location()
        self.send(self.nodes[b], Update(u.client, loc, self._respell(u.t), b, "tie"))

    def act_burst(self):
        """Many updates of one client, at random servers."""
        c = self.rng.choice(self.hot)
        for _ in range(self.rng.randint(5, 15)):
            n = self.rng.choice(self.live())
            self.send(self.nodes[n], self.new_update(self.nodes[n], client=c, kind="recent"))

    def kill(self, name, after_snapshot):
        node = self.nodes[name]
        if after_snapshot:         # one written after the last update sent to it
            since = self.last_sent[name]
            deadline = time.time() + 2 * SNAPSHOT_S + 0.5
            while node.snap_mtime() <= since and time.time() < deadline:
                time.sleep(0.02)
        node.kill()                # a paused one too: SIGKILL needs no SIGCONT
        self.resume_at.pop(name, None)
        self.collect_pending(node, timeout=0.2)
        self.note(f"kill -9 {name} ({'after' if after_snapshot else 'before'} a snapshot)")
        self.demote_lost(name)

    def promote_seen(self, tables):
        """An unanswered IAMAT whose line a server holds was taken: from then
        on it counts as acknowledged, with that line."""
        known = {u.line for u in self.model.updates if u.status == "acked"}
        for n, t in sorted(tables.items()):
            for line in t.values():
                if line is None or line in known:
                    continue
                for u in self.model.updates:
                    if u.status == "maybe" and u.matches(line):
                        u.status, u.line = "acked", line
                        u.kind += f", seen at {n}"
                        known.add(line)
                        self.note(f"taken: {u!r}")
                        break

    def demote_lost(self, killed):
        """An acknowledged update that no running server holds (nor a newer
        line of its client) when one is killed may have lived only there:
        the reply comes before the snapshot, and the nemesis may have eaten
        the flood.  It counts as unanswered from then on."""
        others = [n for n in self.live(unpaused=True) if n != killed]
        tables = self.tables(others)
        self.promote_seen(tables)
        acked = [u for u in self.model.updates if u.status == "acked"]
        for u in acked:
            held = [t[u.client] for t in tables.values() if t[u.client] is not None]
            if not any(line_key(l) >= line_key(u.line) for l in held):
                u.status = "maybe"
                u.kind += f", held only by {killed} when it was killed"
                self.note(f"at risk: {u!r}")

    def restart(self, name):
        self.nodes[name].start()
        self.restart_at.pop(name, None)
        self.note(f"restart {name}")

    def act_kill(self):
        rng = self.rng
        live = self.live()
        if len(live) < 2:
            return
        name = rng.choice(live)
        if rng.random() < 0.5:     # a reply lost: the IAMAT sent, the server killed
            n = self.nodes[name]
            if not n.paused:
                req = self.send(n, self.new_update(n, kind="recent"), wait=False)
                if req is not None:
                    req.ignore = rng.random() < 0.5
                time.sleep(rng.choice([0, 0.001, 0.003]))
        self.kill(name, rng.random() < 0.4)
        self.restart_at[name] = self.step + rng.randint(0, 8)

    def act_forget(self):
        """An origin that forgets an update (killed before its snapshot) and
        then gets the same IAMAT again, maybe with its time written another
        way, before or after its neighbours gave the update back."""
        rng = self.rng
        live = self.live(unpaused=True)
        if len(live) < 2:
            return self.act_iamat()
        name = rng.choice(live)
        node = self.nodes[name]
        u = self.new_update(node, kind="ahead")
        self.send(node, u)
        time.sleep(rng.uniform(0.02, 0.15))       # flooded to the neighbours
        self.kill(name, False)
        cut = rng.random() < 0.5
        if cut:
            for (a, b), p in self.proxies.items():
                if name in (a, b):
                    p.set("down")
        self.restart(name)
        t = u.t if rng.random() < 0.5 else self._respell(u.t)
        self.send(node, Update(u.client, u.loc, t, name, "forgotten"))
        self.note(f"forget at {name}{' (its links down)' if cut else ''}")

    def act_link(self):
        rng = self.rng
        key = rng.choice(self.links)
        p = self.proxies[key]
        op = rng.choices(["close", "down", "delay", "stall", "tear", "heal"], [3, 3, 2, 2, 3, 4])[0]
        if op == "close":
            p.close()
        elif op == "tear":
            p.tear()
        elif op == "delay":
            p.set("delay", rng.uniform(0.02, 0.3))
        elif op == "heal":
            p.set("pass")
        else:
            p.set(op)
        self.note(f"link {p.label}: {op}")

    def act_pause(self):
        live = self.live(unpaused=True)
        if len(live) < 2:
            return
        name = self.rng.choice(live)
        self.nodes[name].pause()
        self.resume_at[name] = self.step + self.rng.randint(1, 6)
        self.note(f"SIGSTOP {name}")

    def resume(self, name):
        self.nodes[name].resume()
        self.resume_at.pop(name, None)
        self.note(f"SIGCONT {name}")
        self.collect_pending(self.nodes[name])

    def act_sleep(self):
        time.sleep(self.rng.uniform(0, 0.2))

    ACTIONS = [("iamat", 34), ("resend", 10), ("tie", 5), ("burst", 4), ("kill", 6),
               ("forget", 4), ("link", 16), ("pause", 4), ("sleep", 10)]

    # -- the run

    def wait_links(self, since, timeout=25):
        """Until both ends of every link report it up in metrics files
        written after 'since'."""
        deadline = time.time() + timeout
        while True:
            down = []
            for a, b in self.links:
                for me, peer in ((a, b), (b, a)):
                    mtime, s = self.nodes[me].prom()
                    if mtime <= since or s.get(f'proxyherd_link_up{{peer="{peer}"}}') != 1:
                        down.append(f"{me}->{peer}")
            if not down:
                return None
            if time.time() > deadline:
                return down
            time.sleep(0.1)

    def tables(self, names=None, clients=None):
        """{server: {client: stored AT line or None}}, by WHATSAT."""
        clients = self.model.clients() if clients is None else clients
        out = {}
        for n in sorted(self.nodes) if names is None else names:
            node = self.nodes[n]
            reply = exchange(node.port, b"".join(b"WHATSAT %s 1 1\n" % c for c in clients))
            table, rest = {}, reply
            for c in clients:
                line, _, rest = rest.partition(b"\n")
                if line.startswith(b"? "):
                    table[c] = None
                else:
                    table[c] = line
                    _, _, rest = rest.partition(b"\n\n")     # the JSON, then an empty line
            out[n] = table
        return out

    def converge(self, timeout=8):
        deadline = time.time() + timeout
        while True:
            t = self.tables()
            first = next(iter(t.values()))
            if all(v == first for v in t.values()):
                return t, True
            if time.time() > deadline:
                return t, False
            time.sleep(0.1)

    def link_sent(self, since, timeout=5):
        """proxyherd_link_updates_sent_total summed over the servers, from
        metrics files all written after 'since'."""
        deadline = time.time() + timeout
        while True:
            proms = [node.prom() for node in self.nodes.values()]
            if all(m > since for m, _ in proms) or time.time() > deadline:
                return sum(s.get("proxyherd_link_updates_sent_total", 0) for _, s in proms)
            time.sleep(0.05)

    def run(self):
        rng = self.rng
        self.t0 = time.monotonic()
        self.note(f"seed {self.seed}: servers {sorted(self.nodes)}, links {self.links}, "
                  f"max_stored_clients {self.max_stored}, clients {len(self.clients)}, "
                  f"steps {self.steps}")
        for node in self.nodes.values():
            node.start()
        if self.wait_links(0, timeout=10):
            self.problems.append("the links did not come up at start")
            return
        acts, weights = zip(*self.ACTIONS)
        for self.step in range(self.steps):
            for n, at in sorted(self.restart_at.items()):
                if at <= self.step:
                    self.restart(n)
            for n, at in sorted(self.resume_at.items()):
                if at <= self.step:
                    self.resume(n)
            getattr(self, "act_" + rng.choices(acts, weights)[0])()
            time.sleep(rng.uniform(0, 0.1))
            for n in sorted(self.nodes):          # a server the test did not kill died
                node = self.nodes[n]
                if node.proc is not None and node.proc.poll() is not None:
                    self.problems.append(f"{n} died by itself: {node.stderr()[-2000:]}")
                    node.proc = None
                    self.restart_at[n] = self.step
        self.heal()

    def heal(self):
        self.note("heal: every server running, every proxy passing")
        for n in sorted(self.resume_at):
            self.resume(n)
        for n in sorted(n for n in self.nodes if not self.nodes[n].running()):
            self.restart(n)
        healed = time.time()
        for p in self.proxies.values():
            p.set("pass")
        self.collect_pending()
        down = self.wait_links(healed)
        if down:
            self.problems.append(f"links not up 25 s after the heal: {down}")
            return
        self.note("links up")
        tables, same = self.converge()
        self.note(f"converged: {same}")
        if not same:                                     # check 3
            for c in self.model.clients():
                held = {n: t[c] for n, t in tables.items()}
                if len(set(held.values())) > 1:
                    self.problems.append(f"check 3: client {c!r}: the servers differ: {held}")
        for n, t in tables.items():                      # checks 1 and 2
            self.problems += [f"{n}: {p}" for p in self.model.check_table(t)]
            if same:
                break
        # Check 4: the links fall quiet.
        settled = time.time() + 2 * ANTI_ENTROPY_MS / 1000
        time.sleep(max(0, settled - time.time()))
        before = self.link_sent(settled)
        window_end = time.time() + QUIET_PERIODS * ANTI_ENTROPY_MS / 1000
        time.sleep(max(0, window_end - time.time()))
        after = self.link_sent(window_end)
        self.note(f"link AT lines sent: {before:.0f} then {after:.0f}")
        if after != before:
            self.problems.append(f"check 4: {after - before:.0f} AT lines sent on links over "
                                 f"{QUIET_PERIODS} anti-entropy periods after convergence "
                                 f"({before:.0f} -> {after:.0f})")

    def close(self):
        for p in self.proxies.values():
            p.stop()
        for req in self.pending:
            req.sock.close()
        for n in sorted(self.nodes):
            why = self.nodes[n].stop()
            if why:
                self.problems.append(why)
        with open(os.path.join(self.folder, "schedule.txt"), "w") as f:
            f.write("\n".join(self.events) + "\n")


def run_schedule(seed, folder):
    """Run one schedule; returns (problems, events)."""
    s = Schedule(seed, folder)
    try:
        s.run()
    finally:
        s.close()
    return s.problems, s.events
