"""Promises of docs/PROTOCOL.md and README.md that no test checked before:
each test names the sentence it holds the code to."""
import os
import re
import signal
import socket
import stat
import subprocess
import time

from conftest import DEFAULT_LINKS, ROOT, connect, recv_exact_lines, wait_for
from test_supervisor import alive, sherd, wait_gone  # noqa: F401  (sherd: a fixture)

LOC = b"+34.068930-118.445127"
DIFF_RE = re.compile(rb"^AT Bailey ([+-])(\d+)\.(\d{9}) (\S+) (\S+) (\S+)\n$")


# ------------------------------------------------------ IAMAT: the diff

def wait_for_phase(lo_ns, hi_ns, timeout=3):
    """Until the wall clock's fraction of a second is in [lo_ns, hi_ns)."""
    assert wait_for(lambda: lo_ns <= time.time_ns() % 10**9 < hi_ns, timeout, step=0.001)


def iamat_ahead(port, client, ahead_ns, phase_ns):
    """An IAMAT whose time is ahead_ns past the clock, sent when the clock's
    fraction is phase_ns (so whether the client's time crosses into the next
    second, and the diff borrows a second, is known).  Returns (sign,
    seconds, nine digits, time in ns, clock before sending, after the reply)."""
    with connect(port) as s:
        wait_for_phase(phase_ns, phase_ns + 50_000_000)
        before = time.time_ns()
        t = before + ahead_ns
        tstr = b"%d.%09d" % (t // 10**9, t % 10**9)
        s.sendall(b"IAMAT %s %s %s\n" % (client, LOC, tstr))
        reply = recv_exact_lines(s, 1)
        after = time.time_ns()
    m = DIFF_RE.match(reply)
    assert m and m.group(4) == client and m.group(6) == tstr, reply
    return m.group(1), m.group(2), m.group(3), t, before, after


def check_negative_diff(port, ahead_ns, whole_s):
    """docs/PROTOCOL.md, IAMAT: diff = receive time - client's time, printed
    as a sign, the seconds, a point and nine digits.  Client ahead by
    ahead_ns: "-<whole_s>.<nine digits>", and the exact value plus the
    client's time lies between the clock readings around the exchange.  Both
    ways the nanoseconds can fall: the client's time in the same second as
    the receive time, and in a later one (a borrowed second)."""
    for phase in (100_000_000, 800_000_000):
        sign, sec, frac, t, before, after = iamat_ahead(port, b"ahead", ahead_ns, phase)
        got = b"%s%s.%s" % (sign, sec, frac)
        diff_ns = (-1 if sign == b"-" else 1) * (int(sec) * 10**9 + int(frac))
        assert before <= t + diff_ns <= after, (got, t, before, after)
        if after - before < 200_000_000:        # the reply came before the client's time
            assert sign == b"-" and int(sec) == whole_s, got


def test_a_client_ahead_by_less_than_a_second_gets_minus_zero_and_its_fraction(server):
    """"-0.250000000", give or take the time the line took: never "+0.75...",
    "-1.75..." or a negative fraction."""
    check_negative_diff(server.port, 250_000_000, 0)


def test_a_client_ahead_by_seconds_and_a_fraction_gets_both(server):
    """"-2.250000000", give or take the time the line took."""
    check_negative_diff(server.port, 2_250_000_000, 2)


# ------------------------------------------ IAMAT: the day bound is the origin's

def test_the_day_bound_is_the_origins_alone(herd):
    """docs/PROTOCOL.md, IAMAT: "AT lines from neighbours and snapshots are
    not checked against it".  A line a day and more ahead loads from Bailey's
    snapshot and reaches Bona over the link, though Bona refuses the same
    time from a client."""
    far = b"999999999999999999.5"
    line = b"AT Bailey +0.000000001 future " + LOC + b" " + far
    os.makedirs(os.path.dirname(herd.snap_path("Bailey")), mode=0o700, exist_ok=True)
    with open(herd.snap_path("Bailey"), "wb") as f:
        f.write(b"HERDSNAP 1 Bailey\n%s\nEND 1\n" % line)
    herd.start("Bailey")
    assert herd.stored("Bailey", b"future") == line
    herd.start("Bona")
    herd.wait_stored(["Bona"], b"future", line)
    own = b"IAMAT other " + LOC + b" " + far
    assert herd.send("Bona", own + b"\n") == b"? " + own + b"\n"


# ------------------------------------------------------------ limits

def test_idle_timeout_zero_never_closes(make_server):
    """docs/PROTOCOL.md, Limits: idle_timeout_s "0 never": neither a silent
    connection nor one with an unfinished line is closed, however old."""
    s = make_server(limits={"idle_timeout_s": 0})
    silent = connect(s.port)
    silent.sendall(b"IAMAT quiet +1.0+1.0 1\n")
    assert recv_exact_lines(silent, 1).startswith(b"AT Bailey ")
    partial = connect(s.port)
    partial.sendall(b"IAMAT half")

    def closed(sock):
        sock.setblocking(False)
        try:
            return sock.recv(1) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            sock.setblocking(True)

    # the server sweeps once a second: three sweeps and more go by
    assert not wait_for(lambda: closed(silent) or closed(partial), 3.5)
    silent.sendall(b"IAMAT quiet +1.0+1.0 2\n")
    assert recv_exact_lines(silent, 1).endswith(b" quiet +1.0+1.0 2\n")
    partial.sendall(b" +1.0+1.0 3\n")
    assert recv_exact_lines(partial, 1).endswith(b" half +1.0+1.0 3\n")
    silent.close()
    partial.close()
    assert "idle timeout" not in s.read_log()


# ------------------------------------------------------------ metrics

def gauge(folder, name, metric):
    """The value of a sample without labels in <folder>/state/NAME.prom, or None."""
    try:
        with open(os.path.join(folder, "state", f"{name}.prom")) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    m = re.search(r"^%s (\S+)$" % re.escape(metric), text, re.M)
    return float(m.group(1)) if m else None


def test_parked_clients_show_in_the_idle_gauge(server):
    """docs/PROTOCOL.md, Metrics: proxyherd_connections_idle, "idle client
    connections (parked out of the poll set)": quiet ones count, one with an
    unfinished line does not, and closed ones leave it."""
    quiet = [connect(server.port) for _ in range(3)]
    for i, c in enumerate(quiet):
        c.sendall(b"IAMAT idle%d +1.0+1.0 1\n" % i)
        assert recv_exact_lines(c, 1).startswith(b"AT ")
    partial = connect(server.port)
    partial.sendall(b"IAMAT unfinished")
    assert wait_for(lambda: gauge(server.dir, "Bailey", "proxyherd_connections_idle") == 3
                    and gauge(server.dir, "Bailey", "proxyherd_connections") == 4, 6), \
        open(os.path.join(server.dir, "state", "Bailey.prom")).read()
    for c in quiet + [partial]:
        c.close()
    assert wait_for(lambda: gauge(server.dir, "Bailey", "proxyherd_connections_idle") == 0
                    and gauge(server.dir, "Bailey", "proxyherd_connections") == 0, 6)


# ------------------------------------------------------------ links

def link_timers(port):
    """{(local port, remote port): (timer kind, seconds left)} of the
    established TCP sockets on 127.0.0.1 with port at either end, from
    /proc/net/tcp (kind 2 is the keepalive timer)."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            col = line.split()
            lport, rport = int(col[1].split(":")[1], 16), int(col[2].split(":")[1], 16)
            if col[3] != "01" or port not in (lport, rport):
                continue
            kind, when = col[5].split(":")
            out[(lport, rport)] = (int(kind, 16), int(when, 16) / hz)
    return out


def test_links_use_a_five_second_keepalive(herd):
    """docs/PROTOCOL.md, Anti-entropy: "Links use TCP keepalive (5 s idle
    ...)": both ends of a link run a keepalive timer of at most 5 s (the
    kernel's default is two hours).  The interval, the probe count and
    TCP_USER_TIMEOUT are not visible from outside the process."""
    herd.start("Bailey", "Bona")
    assert herd.wait_log("Bailey", "link-up peer=Bona", 10) and \
        herd.wait_log("Bona", "link-up peer=Bailey", 10)
    bona = herd.ports["Bona"]
    seen = {}

    def both_ends_seen():
        for ends, (kind, left) in link_timers(bona).items():
            if kind == 2:                     # between SUMs: no data in flight
                seen[ends] = left
        dialer = any(r == bona for (_, r) in seen)
        acceptor = any(l == bona for (l, _) in seen)
        return dialer and acceptor

    assert wait_for(both_ends_seen, 10, step=0.01), link_timers(bona)
    assert all(0 <= left <= 5.0 for left in seen.values()), seen


# ------------------------------------------------------- the supervisor's files

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_of_a_running_herd_have_their_documented_modes(sherd):  # noqa: F811
    """README, Operations: servers.pid "mode 0644: pids only", the metrics
    files 0644, a server's NAME.stderr "(mode 0640)"; under umask 0, so the
    modes are the programs' own."""
    old = os.umask(0)
    try:
        r = sherd.script("start_servers.sh")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr + r.stdout
    state, logs = os.path.join(sherd.dir, "state"), os.path.join(sherd.dir, "logs")
    assert mode(sherd.pidfile) == 0o644
    for n in DEFAULT_LINKS:
        prom = os.path.join(state, f"{n}.prom")
        assert wait_for(lambda: os.path.exists(prom), 5), prom
        assert mode(prom) == 0o644, (prom, oct(mode(prom)))
        err = os.path.join(logs, f"{n}.stderr")
        assert mode(err) == 0o640, (err, oct(mode(err)))
    assert sherd.script("stop_servers.sh").returncode == 0


def test_stop_script_kills_a_supervisor_that_does_not_exit(sherd):  # noqa: F811
    """docs/PROTOCOL.md, Processes: stop_servers.sh sends SIGTERM, waits,
    "SIGKILL after a timeout, removes servers.pid".  A supervisor that cannot
    act on TERM (SIGSTOPped): after HERD_STOP_TIMEOUT the script says so,
    kills it and every server, removes servers.pid and exits 0."""
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stderr + r.stdout
    pids = sherd.pids()
    assert set(pids) == {"supervisor", *DEFAULT_LINKS}
    os.kill(pids["supervisor"], signal.SIGSTOP)
    env = dict(sherd.env, HERD_STOP_TIMEOUT="1")
    start = time.time()
    try:
        r = subprocess.run([os.path.join(ROOT, "stop_servers.sh"), "-c", sherd.config],
                           capture_output=True, text=True, env=env, timeout=20)
    except subprocess.TimeoutExpired:
        for p in pids.values():
            if alive(p):
                os.kill(p, signal.SIGKILL)
        raise AssertionError("stop_servers.sh still waits for a supervisor that does not exit")
    took = time.time() - start
    assert r.returncode == 0, r.stderr + r.stdout
    assert "still running after 1s; sending SIGKILL" in r.stderr, r.stderr
    assert r.stdout == f"the herd is stopped (supervisor pid {pids['supervisor']})\n", r.stdout
    assert 1.0 <= took < 10, took
    assert wait_gone(pids.values(), 5), {n: p for n, p in pids.items() if alive(p)}
    assert not os.path.exists(sherd.pidfile)
    for port in sherd.ports.values():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                raise AssertionError(f"port {port} still served")
        except ConnectionRefusedError:
            pass


def test_dials_back_off_from_100_ms_to_3_2_s(herd):
    """README, Between servers: a neighbour is "retried with back-off (100 ms
    up to 3.2 s) while the other is down".  Bona here is a socket that takes
    each dial and closes it at once: the gaps between Bailey's dials double
    from 100 ms and stay at 3.2 s."""
    want = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 3.2]
    with socket.socket() as fake:
        fake.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        fake.bind(("127.0.0.1", herd.ports["Bona"]))
        fake.listen(16)
        fake.settimeout(1)
        herd.start("Bailey")
        dials = []
        deadline = time.time() + sum(want) + 5
        while len(dials) < len(want) + 1 and time.time() < deadline:
            try:
                conn, _ = fake.accept()
            except socket.timeout:
                continue
            dials.append(time.monotonic())
            conn.close()
    gaps = [b - a for a, b in zip(dials, dials[1:])]
    assert len(gaps) == len(want), gaps
    # never early; late by a poll round a dial, under load a little more
    since, due = 0.0, 0.0
    for got, w in zip(gaps, want):
        since, due = since + got, due + w
        assert got >= w - 0.02 and since <= due + 0.5, (gaps, want)
    assert herd.log("Bailey").count("link-dial-failed peer=Bona") == 1
