"""Limits of docs/PROTOCOL.md: each enforced without stopping or slowing others."""
import os
import selectors
import signal
import socket
import time

from conftest import connect, exchange, recv_exact_lines, recv_until_eof


def assert_serves(port):
    reply = exchange(port, b"IAMAT alive +1.0+1.0 1\n")
    assert reply.startswith(b"AT ") and reply.endswith(b" alive +1.0+1.0 1\n"), reply


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

    from conftest import free_port, program, wait_listening, write_config
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
