"""Limits and abuse (docs/PROTOCOL.md, "Limits", "Stored clients"): line and
field sizes, max_clients and the per-address cap, idle and slow clients
(parked, slowloris, never reading), the descriptor limit, the bound on
stored clients and far-future times, and floods of random bytes; after
each, the server still serves everyone else.
"""
import os
import random
import re
import resource
import selectors
import signal
import socket
import subprocess
import time

from harness import (ALL, BUSY, BUSY_ADDR, LOC, WANT_FILES, connect, exchange, free_port, Herd,
                     hold_clients, program, read_log, recv_exact_lines, recv_until_eof, stored_set,
                     wait_for, wait_listening, wait_log, write_config)


def assert_serves(port):
    reply = exchange(port, b"IAMAT alive +1.0+1.0 1\n")
    assert reply.startswith(b"AT ") and reply.endswith(b" alive +1.0+1.0 1\n"), reply


def test_ten_thousand_idle_connections(make_server, report):
    import resource
    n = 10_000
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft >= n + 256, f"this test needs RLIMIT_NOFILE >= {n + 256} (have {soft}; " \
                            f"the suite raises it to {WANT_FILES} when it may)"
    s = make_server(limits={"max_clients": n + 100})
    assert_serves(s.port)
    rss_before = s.rss_kib()
    held = []
    try:
        for _ in range(n):
            c = socket.socket()
            c.settimeout(10)
            c.connect(("127.0.0.1", s.port))
            held.append(c)
        # The last one proves the server accepted them all (accept order).
        held[-1].sendall(b"PING\n")
        assert recv_exact_lines(held[-1], 1) == b"? PING\n"
        rss_held = s.rss_kib()

        def served_ms():                           # others are served meanwhile
            t0 = time.time()
            for i in range(200):
                reply = exchange(s.port, b"IAMAT busy%d +1.0+1.0 %d\n" % (i, i))
                assert reply.endswith(b" busy%d +1.0+1.0 %d\n" % (i, i))
            return (time.time() - t0) * 1000 / 200
        fresh_ms = served_ms()
        time.sleep(2.5)                            # quiet for two sweeps: parked
        parked_ms = served_ms()
        for c in held[::1000]:                     # held ones still answer
            c.sendall(b"IAMAT held +2.0+2.0 5\n")
            assert recv_exact_lines(c, 1).endswith(b" held +2.0+2.0 5\n")
        per_conn = (rss_held - rss_before) * 1024 / n
        report(f"{n} idle connections: resident {rss_before} KiB before, {rss_held} KiB held "
               f"({per_conn:.0f} bytes per connection); a new connection's IAMAT "
               f"{fresh_ms:.2f} ms while they are fresh, {parked_ms:.2f} ms once parked")
        assert per_conn < 4096, "an idle connection must cost little memory"
    finally:
        for c in held:
            c.close()
    time.sleep(0.5)
    assert_serves(s.port)
    assert "max_clients %d reached" % (n + 100) not in s.read_log()


def closed_by_server(sock, timeout=10):
    """True once the server closed sock: reading what it sent ends in EOF or
    a reset.  A peer that merely stopped reading keeps it open: False."""
    sock.settimeout(timeout)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if not sock.recv(1 << 20):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    return False


def sent_until_cut(sock, next_batch, deadline):
    """Send batches until the server cuts the connection off (True), or the
    deadline passes (False).  A send that blocks is no cut by itself: then
    the server must close the connection for it to count."""
    try:
        while time.time() < deadline:
            sock.sendall(next_batch())
    except (BrokenPipeError, ConnectionResetError):
        return True
    except socket.timeout:
        return closed_by_server(sock)
    return False


def test_iamat_flood_without_reading(make_server, report, monkeypatch):
    """A client that sends IAMATs as fast as it can and never reads is cut
    off at the output cap; what it sent before that is stored; the server's
    memory stays bounded and other clients are served meanwhile."""
    # under ASan, freed memory waits in a quarantine (256 MB by default) and
    # counts as resident: 100,000 replaced entries would look like growth
    monkeypatch.setenv("ASAN_OPTIONS", os.environ.get("ASAN_OPTIONS", "") +
                       ":quarantine_size_mb=1")
    cap = 64 * 1024
    s = make_server(limits={"max_output_bytes": cap})
    assert_serves(s.port)
    rss_before = s.rss_kib()
    sock = connect(s.port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = 0

    def batch():                # times 0, 1, 2, ...: each IAMAT newer than the last
        nonlocal sent
        if sent and sent % 50_000 == 0:
            assert_serves(s.port)
        data = b"".join(b"IAMAT flood +1.0+1.0 %d\n" % t for t in range(sent, sent + 1000))
        sent += 1000
        return data

    sock.settimeout(2)
    cut = sent_until_cut(sock, batch, time.time() + 30)
    sock.close()
    assert cut, "the server kept reading from a client that never reads its replies"
    assert "reason=output cap" in s.read_log(wait_for="output cap")
    rss_after = s.rss_kib()
    report(f"cut after fewer than {sent + 1000} IAMATs; resident {rss_before} KiB before, "
           f"{rss_after} KiB after")
    assert rss_after - rss_before < 32 * 1024, "memory must stay bounded"
    assert_serves(s.port)
    # Every IAMAT the server read was handled in order and stored: the log
    # holds IAMATs 0..T, each once, and T, the last one read, is the stored time.
    first = exchange(s.port, b"WHATSAT flood 1 1\n").split(b"\n", 1)[0]
    assert first.startswith(b"AT ") and b" flood +1.0+1.0 " in first, first
    stored = int(first.split()[-1])
    log = s.read_log(wait_for="WHATSAT flood")
    times = [int(t) for t in re.findall(r'recv id=\d+ "IAMAT flood \+1\.0\+1\.0 (\d+)"', log)]
    assert times == list(range(len(times))), "IAMATs read out of order or twice"
    assert stored == times[-1], f"stored {stored}, but the last IAMAT read was {times[-1]}"
    # at least the cap's worth of replies (about 40 bytes each) went unread
    assert stored >= cap // 48 and stored < sent, (stored, sent)


def test_random_bytes_nul_and_invalid_utf8(server, report):
    """Lines of random bytes (NUL, invalid UTF-8, control bytes, DEL, high
    bytes) each get exactly "? " + the line back, in order, and the server
    stays up and correct."""
    rng = random.Random(20261124)
    lines = []
    for i in range(3000):
        n = rng.randint(1, 300)
        body = bytes(rng.choice([0, 0xff, 0xc3, 0x80, 0xfe, 0x7f, 0x01, 0x1b, 0x41, 0x20,
                                 rng.randint(0, 255)]) for _ in range(n)).replace(b"\n", b"")
        lines.append(b"\x00" + body if i % 3 == 0 else body + b"\xed\xa0\x80")
    lines.append(b"IAMAT \xff\xfe\x00 +1.0+1.0 7")           # a NUL inside a client id
    ws = b" \t\r\x0b\x0c"
    want = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip(ws):
            want.append(line)
    with connect(server.port) as c:
        c.sendall(b"".join(line + b"\n" for line in lines))
        c.shutdown(socket.SHUT_WR)
        got = recv_until_eof(c)
    replies = got.split(b"\n")[:-1]
    assert len(replies) == len(want)
    for r, w in zip(replies[:-1], want[:-1]):
        assert r == b"? " + w
    # Client ids are any non-white-space bytes, NUL and invalid UTF-8 included.
    assert replies[-1].startswith(b"AT Bailey ") and replies[-1].endswith(b" \xff\xfe\x00 +1.0+1.0 7")
    reply = exchange(server.port, b"WHATSAT \xff\xfe\x00 1 1\n")
    assert reply.split(b"\n", 1)[0] == replies[-1]
    assert "Sanitizer" not in server.read_stderr()
    report(f"{len(lines)} lines of random bytes, {len(got)} bytes of replies, all exact")
    assert_serves(server.port)


def test_line_at_the_limit_is_served(make_server):
    s = make_server(limits={"max_line_bytes": 100})
    line = b"X" * 100
    assert exchange(s.port, line + b"\n") == b"? " + line + b"\n"


def test_line_over_the_limit_gets_error_and_close(make_server):
    s = make_server(limits={"max_line_bytes": 100})
    reply = exchange(s.port, b"X" * 101 + b"\nIAMAT never +1.0+1.0 1\n")
    assert reply.startswith(b"? ") and reply.count(b"\n") == 1, reply


def test_megabyte_line_without_lf(server):
    """1 MiB without LF: one '? ' line and a close, while another client is served."""
    other = connect(server.port)
    with connect(server.port) as big:
        payload = b"A" * (1 << 20)
        sent = 0
        try:
            while sent < len(payload):
                sent += big.send(payload[sent:sent + 65536])
                if sent > 64 * 1024:
                    other.sendall(b"IAMAT other +1.0+1.0 %d\n" % sent)
                    assert b" other +1.0+1.0 " in recv_exact_lines(other, 1)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close while we still push
        big.settimeout(5)
        try:
            reply = recv_until_eof(big)
        except ConnectionResetError:
            reply = b""
            raise AssertionError("the error line was lost to a reset")
        assert reply.startswith(b"? line too long") and reply.endswith(b"\n")
        assert reply.count(b"\n") == 1
    other.close()
    assert_serves(server.port)
    log = server.read_log(wait_for="line-too-long")
    assert "line-too-long" in log


def test_client_that_never_reads_is_cut_off(make_server):
    cap = 64 * 1024
    s = make_server(limits={"max_output_bytes": cap})
    assert_serves(s.port)
    exchange(s.port, b"IAMAT reader +34.068930-118.445127 1\n")
    rss_before = s.rss_kib()
    sock = connect(s.port)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = b"WHATSAT reader 50 20\n" * 200          # ~ 200 x 9 KB of replies
    deadline = time.time() + 20
    sock.settimeout(2)
    cut = sent_until_cut(sock, lambda: request, deadline)
    sock.close()
    assert cut, "the server kept accepting requests from a client that never reads"
    log = s.read_log(wait_for="output-cap")
    assert "output-cap" in log and "reason=output cap" in log
    assert s.rss_kib() - rss_before < 32 * 1024, "memory must stay bounded"
    assert_serves(s.port)


def test_max_clients(make_server):
    s = make_server(limits={"max_clients": 5})
    time.sleep(0.3)   # let the start-up probe's connection be closed
    socks = [connect(s.port) for _ in range(5)]
    for i, c in enumerate(socks):       # make sure all five are accepted
        c.sendall(b"PING %d\n" % i)
        assert recv_exact_lines(c, 1) == b"? PING %d\n" % i
    with connect(s.port) as extra:
        extra.settimeout(5)
        reply = recv_until_eof(extra)
        assert reply.startswith(b"? too many connections") and reply.endswith(b"\n")
    for i, c in enumerate(socks):
        c.sendall(b"IAMAT m%d +1.0+1.0 1\n" % i)
        assert recv_exact_lines(c, 1).startswith(b"AT ")
        c.close()
    time.sleep(0.2)
    assert_serves(s.port)
    assert "max_clients 5 reached" in s.read_log(wait_for="max_clients")


def test_idle_timeout(make_server):
    s = make_server(limits={"idle_timeout_s": 1})
    with connect(s.port) as idle:
        idle.settimeout(5)
        start = time.time()
        assert idle.recv(10) == b""
        assert 0.9 <= time.time() - start <= 4
    assert "reason=idle timeout" in s.read_log(wait_for="idle timeout")


def test_two_thousand_concurrent_connections(server):
    n = 2000
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft >= 2 * n + 64, f"this test needs RLIMIT_NOFILE >= {2 * n + 64} (have {soft})"
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        c = socket.socket()
        c.setblocking(True)
        c.settimeout(10)
        c.connect(("127.0.0.1", server.port))
        socks.append(c)
    for i, c in enumerate(socks):
        c.sendall(b"IAMAT conc%d +1.0+1.0 %d\n" % (i, i))
    got = {}
    for i, c in enumerate(socks):
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ, i)
        got[i] = b""
    pending = set(range(n))
    deadline = time.time() + 60
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            i = key.data
            try:
                data = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            got[i] += data
            if got[i].endswith(b"\n"):
                pending.discard(i)
                sel.unregister(key.fileobj)
    assert not pending, f"{len(pending)} connections got no reply"
    for i in range(n):
        assert got[i].startswith(b"AT Bailey ") and got[i].endswith(b" conc%d +1.0+1.0 %d\n" % (i, i))
    for c in socks:
        c.close()
    assert_serves(server.port)


def parked(server):
    """How many connections sit in the server's cold set: the descriptors
    registered in its epoll sets, from /proc/PID/fdinfo."""
    pid = server.proc.pid
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                n += sum(line.startswith("tfd:") for line in f)
        except FileNotFoundError:
            continue
    return n


def wait_parked(server, want, timeout=10):
    deadline = time.time() + timeout
    while parked(server) != want and time.time() < deadline:
        time.sleep(0.05)
    return parked(server)


def test_quiet_clients_are_parked_and_woken(server):
    """Clients silent for over a second leave the poll set; they must be
    served as before when they speak again, or half-close, or finish a line."""
    socks = [connect(server.port) for _ in range(50)]
    for i, c in enumerate(socks):
        c.sendall(b"IAMAT park%d +1.0+1.0 1\n" % i)
        assert recv_exact_lines(c, 1).startswith(b"AT ")
    partial = connect(server.port)
    partial.sendall(b"IAMAT half")
    # within two sweeps all 50 are parked; the one with half a line is not
    assert wait_parked(server, 50) == 50
    time.sleep(1.2)
    assert parked(server) == 50
    for i, c in enumerate(socks[:-1]):
        c.sendall(b"WHATSAT park%d 1 1\n" % i)
        data = b""
        while not data.endswith(b"\n\n"):
            data += c.recv(65536)
        assert data.startswith(b"AT Bailey ")
    assert parked(server) < 50, "clients that spoke must leave the cold set"
    last = socks[-1]
    last.sendall(b"FOO")
    last.shutdown(socket.SHUT_WR)        # half-close from the cold set
    assert recv_until_eof(last) == b"? FOO\n"
    partial.sendall(b" +1.0+1.0 2\n")
    assert recv_exact_lines(partial, 1).endswith(b" half +1.0+1.0 2\n")
    for c in socks + [partial]:
        c.close()


def test_slowloris_line_must_end_within_the_idle_timeout(make_server):
    """One byte a second keeps a connection busy but never finishes a line:
    it is closed once its line is older than the idle timeout."""
    s = make_server(limits={"idle_timeout_s": 2})
    slow = connect(s.port)
    start = time.time()
    closed = False
    while time.time() - start < 8:
        try:
            slow.sendall(b"X")
        except OSError:
            closed = True
            break
        assert_serves(s.port)            # everyone else is served meanwhile
        time.sleep(0.5)
        slow.setblocking(False)
        try:
            if slow.recv(1) == b"":
                closed = True
                break
        except BlockingIOError:
            pass
        except OSError:
            closed = True
            break
        finally:
            slow.setblocking(True)
    slow.close()
    assert closed, "a line trickling in forever kept its connection"
    assert 1.5 <= time.time() - start <= 5
    assert "line not finished within the idle timeout" in s.read_log(wait_for="line not finished")


def test_parked_clients_are_timed_out(make_server):
    """Clients parked in the cold set are closed at the idle timeout too."""
    s = make_server(limits={"idle_timeout_s": 3})
    socks = [connect(s.port) for _ in range(20)]
    for i, c in enumerate(socks):
        c.sendall(b"IAMAT cold%d +1.0+1.0 1\n" % i)
        assert recv_exact_lines(c, 1).startswith(b"AT ")
    last = time.time()
    assert wait_parked(s, 20, timeout=2.9) == 20, "quiet clients go cold after a second"
    for c in socks:
        c.settimeout(max(0.1, last + 8 - time.time()))
        try:
            assert c.recv(10) == b""
        except socket.timeout:
            raise AssertionError("a parked client outlived the idle timeout (3 s) by 5 s")
    took = time.time() - last
    assert 2.5 <= took <= 8, took
    assert parked(s) == 0
    log = s.read_log(wait_for="reason=idle timeout")
    deadline = time.time() + 3
    while log.count("reason=idle timeout") < 20 and time.time() < deadline:
        time.sleep(0.1)
        log = s.read_log()
    assert log.count("reason=idle timeout") == 20
    for c in socks:
        c.close()
    assert_serves(s.port)


def test_out_of_descriptors_sheds_and_recovers(tmp_path):
    """With 64 descriptors, connections past what fits are accepted and
    closed at once (the spare descriptor makes room), logged; held ones
    are served meanwhile, and once they close the server serves again."""
    import resource
    import subprocess

    port = free_port()
    cfg = write_config(str(tmp_path), {"Tiny": (port, [])})

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    err = open(tmp_path / "Tiny.stderr", "wb")
    proc = subprocess.Popen([program("herd-server"), "Tiny", "-c", cfg], preexec_fn=limit,
                            stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_listening(port, proc)
        held, shed = [], 0
        for i in range(100):
            c = connect(port)
            c.settimeout(5)
            c.sendall(b"IAMAT fd%d +1.0+1.0 1\n" % i)
            reply = recv_exact_lines(c, 1)
            if reply.startswith(b"AT "):
                held.append(c)
            else:                     # refused: never without its line
                assert reply == b"? too many connections, try again later\n", reply
                shed += 1
                c.close()
        # max_clients is fitted under the limit, with descriptors kept for the rest
        assert 16 <= len(held) < 64 and shed == 100 - len(held), (len(held), shed)
        held[0].sendall(b"WHATSAT fd0 1 1\n")
        assert recv_exact_lines(held[0], 1).startswith(b"AT ")
        for c in held:
            c.close()
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                assert_serves(port)
                break
            except (AssertionError, OSError):
                time.sleep(0.1)
        assert_serves(port)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
    log = open(tmp_path / "logs" / "Tiny.log").read()
    assert "max-clients-lowered max_clients=" in log
    assert log.count("conn-refused") >= shed
    assert "stopping signal=INT" in log
    stderr = open(tmp_path / "Tiny.stderr").read()
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr


def test_low_descriptor_limit_lowers_max_clients_and_every_refusal_has_its_line(tmp_path):
    """Started with RLIMIT_NOFILE 64 (soft and hard), the server lowers
    max_clients to fit, says so, and every connection past it gets the "? "
    line; the reserve still lets snapshots be written with the table full."""
    port = free_port()
    cfg = write_config(str(tmp_path), {"Bailey": (port, [])},
                       extra="herd:\n  snapshot_interval_s: 1\n")
    err = open(os.path.join(str(tmp_path), "stderr"), "wb")

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen([program("herd-server"), "Bailey", "-c", cfg],
                            stdout=subprocess.DEVNULL, stderr=err, preexec_fn=low_limit)
    socks = []
    try:
        assert wait_listening(port, proc)
        time.sleep(0.3)      # the start-up probe's connection is closed
        served, refused = 0, 0
        for i in range(80):
            c = connect(port)
            c.settimeout(10)
            socks.append(c)
            try:
                c.sendall(b"IAMAT fd%d +1.0+1.0 %d\n" % (i, i))
            except (BrokenPipeError, ConnectionResetError):
                pass         # refused before it spoke: its line is still there
            try:
                line = recv_exact_lines(c, 1)
            except ConnectionResetError:
                line = b"(reset)"
            if line == BUSY:
                refused += 1
                assert recv_until_eof(c) == b""
            else:
                assert line.startswith(b"AT Bailey ") and line.endswith(b" fd%d +1.0+1.0 %d\n"
                                                                         % (i, i)), \
                    f"connection {i} after {served} served: {line!r} (closed without a '? ' line)"
                served += 1
        log = read_log(str(tmp_path), "Bailey")
        assert "max-clients-lowered max_clients=32 configured=20000 fd_limit=64" in log, log
        assert served == 32 and refused == 48, (served, refused)
        # the table full of clients: the reserve still writes the snapshot
        snap = os.path.join(str(tmp_path), "state", "Bailey.snap")
        assert wait_for(lambda: os.path.exists(snap) and b"fd31" in open(snap, "rb").read(), 10)
        assert "snapshot-failed" not in read_log(str(tmp_path), "Bailey")
        # and so does a log rotation
        logs = os.path.join(str(tmp_path), "logs")
        os.rename(os.path.join(logs, "Bailey.log"), os.path.join(logs, "Bailey.log.1"))
        proc.send_signal(signal.SIGHUP)
        assert wait_log(str(tmp_path), "Bailey", "log-reopen path=", 5)
    finally:
        for c in socks:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        err.close()


def test_per_address_cap_refuses_with_a_line(make_server):
    s = make_server(limits={"max_clients_per_address": 3})
    time.sleep(0.3)          # the start-up probe's connection is closed
    held = hold_clients(s.port, 3, b"HOLD")
    with connect(s.port) as extra:
        extra.settimeout(5)
        extra.sendall(b"IAMAT four +1.0+1.0 1\n")
        assert recv_until_eof(extra) == BUSY_ADDR
    held.pop().close()       # a place frees up once one closes
    assert wait_for(lambda: exchange(s.port, b"PING\n") == b"? PING\n", 5)
    for c in held:
        c.close()
    assert "reason=max_clients_per_address 3 reached" in s.read_log(wait_for="reason=max_clients_per_address")


# 8 KB of leading zeros: a valid latitude once, 8 KB in every server's table
BIG_LOCATION = b"+" + b"0" * 8100 + b"1.0+1.0"


def test_8kb_location_is_refused_and_changes_nothing(tmp_path):
    h = Herd(tmp_path)
    try:
        h.start().wait_links()
        line = b"IAMAT big " + BIG_LOCATION + b" 1700000000"
        assert h.send("Bailey", line + b"\n") == b"? " + line + b"\n"
        old = h.send("Bailey", b"IAMAT keep +1.0+1.0 1700000000\n")[:-1]
        h.wait_stored(ALL, b"keep", old)
        line = b"IAMAT keep " + BIG_LOCATION + b" 1700000001"
        assert h.send("Bailey", line + b"\n") == b"? " + line + b"\n"
        # a later update reaches every server: whatever the bad lines sent
        # over the same links would have arrived before it
        marker = h.send("Bailey", b"IAMAT marker +2.0+2.0 1700000002\n")[:-1]
        h.wait_stored(ALL, b"marker", marker)
        for n in ALL:
            assert h.stored(n, b"big") is None, n
            assert h.stored(n, b"keep") == old, n
    finally:
        h.stop()


def test_field_limits_at_their_edges(make_server):
    s = make_server()
    d30 = b"123456789012345678901234567890"
    passes = [b"+089.%s-179.%s 1700000000.%s" % (d30, d30, d30),
              b"+090.000-180.000 1", b"+000.5+000.5 000000000000000001.5"]
    fails = [b"+0090.0+1.0 1", b"+1.0-0180.0 1", b"+1.%s1+1.0 1" % d30,
             b"+1.0-1.%s1 1" % d30, b"+1.0+1.0 1.%s1" % d30,
             b"+1.0+1.0 0000000000000000001.5"]
    for i, rest in enumerate(passes):
        line = b"IAMAT edge%d %s" % (i, rest)
        reply = exchange(s.port, line + b"\n")
        assert reply.startswith(b"AT Bailey ") and reply.endswith(b" edge%d %s\n" % (i, rest)), reply
        assert stored_set(s.port, [b"edge%d" % i])[b"edge%d" % i] == reply[:-1]
    for i, rest in enumerate(fails):
        line = b"IAMAT bad%d %s" % (i, rest)
        assert exchange(s.port, line + b"\n") == b"? " + line + b"\n"
        assert stored_set(s.port, [b"bad%d" % i]) == {b"bad%d" % i: None}


def bounded_herd(path, max_stored):
    h = Herd(path)
    with open(h.config, "a") as f:
        f.write(f"limits:\n  max_stored_clients: {max_stored}\n")
    return h


def test_every_server_keeps_the_same_newest_clients(tmp_path):
    n = 40
    h = bounded_herd(tmp_path, n)
    clients = [b"bound-%03d" % i for i in range(2 * n)]
    try:
        h.start(*[x for x in ALL if x != "Jaquez"])
        assert wait_for(lambda: h.log("Bailey").count("link-up") >= 2, timeout=15)
        lines = exchange(h.ports["Bailey"], b"".join(
            b"IAMAT %s +1.0+1.0 %d\n" % (c, 1700000000 + i) for i, c in enumerate(clients)))
        acks = lines.split(b"\n")[:-1]
        assert len(acks) == 2 * n and all(a.startswith(b"AT Bailey ") for a in acks)
        # Jaquez was down: it starts empty and catches up from its neighbours
        h.start("Jaquez")
        h.wait_links()
        want = {c: (acks[i] if i >= n else None) for i, c in enumerate(clients)}
        got = {}

        def converged():
            for name in ALL:
                got[name] = stored_set(h.ports[name], clients)
            return all(got[name] == want for name in ALL)

        ok = wait_for(converged, timeout=15)
        assert ok, {name: sorted(c for c, v in got[name].items() if v != want[c])[:5]
                    for name in ALL}
        # counted and logged as a summary, not a line per eviction
        assert h.wait_log("Bailey", f"evicted_total={n} ", timeout=5), h.log("Bailey")[-2000:]
        assert h.log("Bailey").count("table-full") <= 3
        # the snapshots hold the same n clients
        h.stop()
        for name in ALL:
            body = open(h.snap_path(name), "rb").read().split(b"\n")
            assert body[-2] == b"END %d" % n, (name, body[-2])
            assert sorted(body[1:-2]) == sorted(want[c] for c in clients[n:]), name
    finally:
        h.stop()


def test_far_future_times_cannot_pin_the_table(make_server):
    """A time more than a day (86,400 s) ahead of the server's clock is a bad
    field: refused with `? `, stored nowhere, so three such clients cannot make
    a table of three refuse every real client after them."""
    s = make_server(limits={"max_stored_clients": 3})
    for i in range(3):
        line = b"IAMAT pin%d +34.0-118.0 999999999999999999" % i
        assert exchange(s.port, line + b"\n") == b"? " + line + b"\n"
    now = int(time.time())
    late = b"IAMAT late +34.0-118.0 %d.5" % (now + 86400 + 60)
    assert exchange(s.port, late + b"\n") == b"? " + late + b"\n"
    near = b"IAMAT near +34.0-118.0 %d.5" % (now + 86400 - 60)
    assert exchange(s.port, near + b"\n").startswith(b"AT Bailey -")
    real = [b"real%d" % i for i in range(2)]
    for c in real:
        assert exchange(s.port, b"IAMAT %s +34.0-118.0 %.9f\n" % (c, time.time())).startswith(b"AT ")
    got = stored_set(s.port, [b"pin0", b"pin1", b"pin2", b"late", b"near"] + real)
    assert [c for c, line in got.items() if line] == [b"near"] + real, got


def send_corked(port, data):
    """data and the FIN leave together, so one read sees all of it and the
    next one EOF; returns everything until the server closes."""
    with connect(port) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        return recv_until_eof(c)


def test_line_too_long_and_eof_in_one_read_lose_no_reply(server):
    too_long = b"? line too long (more than 8192 bytes)\n"     # the default limit
    for _ in range(3):
        assert send_corked(server.port, b"A" * 65536) == too_long
    for i in range(3):
        iamat = b"IAMAT eof%d %s %.9f\n" % (i, LOC, time.time())
        reply = send_corked(server.port, iamat + b"A" * (65536 - len(iamat)))
        first, rest = reply.split(b"\n", 1) if b"\n" in reply else (reply, b"")
        assert first.startswith(b"AT Bailey ") and first.endswith(iamat.split(b" ", 1)[1][:-1]), reply
        assert rest == too_long, reply


def test_line_limit_does_not_count_the_cr(make_server):
    s = make_server(limits={"max_line_bytes": 64})
    line = b"X" * 64
    assert exchange(s.port, line + b"\n") == b"? " + line + b"\n"
    assert exchange(s.port, line + b"\r\n") == b"? " + line + b"\n"
    # the CR arrives in one read, its LF in the next
    with connect(s.port) as c:
        c.sendall(line + b"\r")
        time.sleep(0.3)
        c.sendall(b"\n")
        c.shutdown(socket.SHUT_WR)
        assert recv_until_eof(c) == b"? " + line + b"\n"
    too_long = b"? line too long (more than 64 bytes)\n"
    assert exchange(s.port, b"X" * 65 + b"\r\n") == too_long
    assert exchange(s.port, b"X" * 65 + b"\n") == too_long


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
