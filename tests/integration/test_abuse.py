"""Abuse: many held connections, a client that floods without reading,
random bytes.  Each leaves other clients served and memory bounded; the
resident sizes are reported at the end of the run."""
import os
import random
import re
import socket
import time

from conftest import WANT_FILES, connect, exchange, recv_exact_lines, recv_until_eof
from test_limits import sent_until_cut


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
