"""Encrypted links (docs/PROTOCOL.md, "Between servers"): TLS 1.3 keyed by
the herd secret, refused when the secret, the transport or the handshake is
wrong, and no client location in clear on the wire."""
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import (DEFAULT_LINKS, exchange, free_port, program, wait_listening, wait_log,
                      write_config)
from test_herd import iamat

ALL = list(DEFAULT_LINKS)
LOC = b"+34.068930-118.445127"


def test_tls_herd_passes_updates(herd):
    h = herd
    h.start().wait_links()
    for n in ALL:
        assert "tls=1" in h.log(n), n
    at = iamat(h, "Bailey", b"tlsclient", LOC)
    h.wait_stored(ALL, b"tlsclient", at)


def test_wrong_secret_is_refused_and_logged(herd):
    h = herd
    h.start().wait_links()
    h.stop("Bailey")
    h.start("Bailey", secret="not-the-herd-secret")
    # Bailey dials Bona and Campbell; both check the PSK binder and refuse
    for n in ("Bona", "Campbell"):
        assert h.wait_log(n, "peer-refused peer=Bailey", timeout=10), h.log(n)
        assert "the PSK does not match (wrong secret?)" in h.log(n)
    assert h.wait_log("Bailey", "peer-refused peer=Bona", timeout=10)
    assert "the neighbour refused our PSK (wrong secret?)" in h.log("Bailey")
    at = iamat(h, "Bailey", b"outsider", LOC)
    time.sleep(0.5)
    for n in ("Bona", "Campbell"):
        assert h.stored(n, b"outsider") is None
    assert h.stored("Bailey", b"outsider") == at
    assert h.log("Bailey").count("link-up") == 2      # from the first start only


def test_plain_text_peer_is_refused(herd):
    """A server speaking the plain-text handshake of earlier versions (PEER
    HELLO, then AT lines) gets "? " lines, no link, and is logged."""
    h = herd
    h.start().wait_links()
    h.stop("Bailey")
    hello = b"PEER HELLO Bailey 0123456789abcdef0123456789abcdef"
    at = b"AT Bailey +0.100000000 plainpeer +1.0+1.0 5"
    with socket.create_connection(("127.0.0.1", h.ports["Bona"]), timeout=10) as s:
        s.sendall(hello + b"\n" + at + b"\n")
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            b = s.recv(4096)
            if not b:
                break
            reply += b
    assert reply == b"? " + hello + b"\n? " + at + b"\n"
    assert h.wait_log("Bona", "reason=plain-text handshake (links are TLS)")
    time.sleep(0.3)
    for n in ALL:
        if n != "Bailey":
            assert h.stored(n, b"plainpeer") is None
    assert h.log("Bona").count("link-up peer=Bailey") == 1   # the first start's only
def open_raw(port, data):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        s.sendall(data)
    return s


def closed_within(s, seconds):
    """True when the server closes s (EOF or reset) within 'seconds'."""
    s.settimeout(seconds)
    deadline = time.time() + seconds
    try:
        while time.time() < deadline:
            if not s.recv(4096):
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
    return False


def test_garbage_after_0x16_is_refused_and_the_server_serves_on(herd):
    h = herd
    h.start().wait_links()
    port = h.ports["Bona"]
    garbage = [
        b"\x16" + os.urandom(300),
        b"\x16\x03\x01\x00\x10" + b"\x01" + b"\xff" * 15,    # a record holding a broken hello
        b"\x16\x03\x01\xff\xff" + b"A" * 2000,               # a record longer than allowed
    ]
    for g in garbage:
        s = open_raw(port, g)
        t0 = time.time()
        assert closed_within(s, 8), g[:8]
        assert time.time() - t0 < 8
        s.close()
    assert h.wait_log("Bona", "peer-refused peer=?")
    at = iamat(h, "Bona", b"stillserving", LOC)
    h.wait_stored(ALL, b"stillserving", at)
    assert h.procs["Bona"].poll() is None


def test_stalled_tls_handshake_is_dropped_within_the_timeout(herd):
    h = herd
    h.start().wait_links()
    stalled = [open_raw(h.ports["Bona"], b"\x16"), open_raw(h.ports["Bona"], b"\x16\x03\x01\x02")]
    t0 = time.time()
    # served meanwhile
    at = iamat(h, "Bona", b"meanwhile", LOC)
    h.wait_stored(ALL, b"meanwhile", at)
    for s in stalled:
        assert closed_within(s, 10)
        s.close()
    took = time.time() - t0
    assert 4 <= took < 9, took            # the 5 s handshake timeout, swept each second
    assert h.wait_log("Bona", "reason=handshake timeout before its TLS handshake was done")


class RecordingProxy:
    """A TCP proxy from a free port to 'target' that keeps every byte it
    forwards, both ways (no root needed, unlike a capture on lo).  The test
    may also write bytes of its own towards the target on the newest
    connection (inject) or reset that connection there (reset)."""

    def __init__(self, target):
        self.target = target
        self.port = free_port()
        self.recorded = bytearray()
        self.lock = threading.Lock()
        self.up = None                   # the newest connection to the target
        self.up_lock = threading.Lock()  # one writer towards the target at a time
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(8)
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                a.close()
                continue
            self.socks += [a, b]
            self.up = b
            for src, dst, lock in ((a, b, self.up_lock), (b, a, threading.Lock())):
                threading.Thread(target=self._pump, args=(src, dst, lock), daemon=True).start()

    def _pump(self, src, dst, lock):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    self.recorded += data
                with lock:
                    dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def inject(self, data):
        with self.up_lock:
            self.up.sendall(data)

    def reset(self):
        self.up.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.up.close()

    def close(self):
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


def run_pair_through_proxy(tmp_path):
    """Alpha dials Beta through a recording proxy; an update goes each way
    (one before the link is up, so the catch-up stream is on the wire too).
    Returns the bytes the proxy saw."""
    pa, pb = free_port(), free_port()
    proxy = RecordingProxy(pb)
    procs = []
    env = dict(os.environ, HERD_SECRET="proxy-secret-0123456789")
    try:
        for name, beta_port in (("Beta", pb), ("Alpha", proxy.port)):
            d = tmp_path / name
            d.mkdir()
            cfg = write_config(str(d), {"Alpha": (pa, ["Beta"]), "Beta": (beta_port, ["Alpha"])})
            err = open(d / "stderr", "wb")
            procs.append((subprocess.Popen([program("herd-server"), name, "-c", cfg],
                                           stdout=subprocess.DEVNULL, stderr=err, env=env), err))
            assert wait_listening(pa if name == "Alpha" else pb, procs[-1][0])
            if name == "Beta":
                exchange_line(pb, b"IAMAT early-client +11.111111+22.222222 1700000000.5\n")
        deadline = time.time() + 10
        while b"link-up" not in read_bytes(tmp_path / "Alpha" / "logs" / "Alpha.log"):
            assert time.time() < deadline, "no link"
            time.sleep(0.05)
        exchange_line(pa, b"IAMAT secret-client-42 -33.333333+44.444444 1700000001.5\n")
        for port, client in ((pb, b"secret-client-42"), (pa, b"early-client")):
            deadline = time.time() + 10
            while not exchange_line(port, b"WHATSAT %s 1 1\n" % client).startswith(b"AT "):
                assert time.time() < deadline, client
                time.sleep(0.05)
        with proxy.lock:
            return bytes(proxy.recorded)
    finally:
        problems = []
        for p, err in procs:
            p.terminate()
            p.wait(timeout=10)
            err.close()
            text = open(err.name, errors="replace").read()
            if p.returncode != 0 or "Sanitizer" in text or "runtime error" in text:
                problems.append(f"exit {p.returncode}: {text[-2000:]}")
        proxy.close()
        assert not problems, problems


def read_bytes(path):
    try:
        return open(path, "rb").read()
    except FileNotFoundError:
        return b""


def exchange_line(port, data):
    return exchange(port, data)


SECRETS = [b"secret-client-42", b"-33.333333+44.444444", b"early-client", b"+11.111111+22.222222"]


def test_no_client_location_in_clear_on_a_link(tmp_path):
    """Both updates crossed the link (run_pair_through_proxy waits for each
    at the other end), yet no client id or location is in what it carried.
    (Before links were TLS, all four were there in clear.)"""
    wire = run_pair_through_proxy(tmp_path)
    assert wire[:1] == b"\x16", wire[:40]          # a TLS handshake record first
    assert len(wire) > 500
    for s in SECRETS:
        assert s not in wire, s
    assert b"PEER HELLO" not in wire


def test_tls_neighbour_gets_its_link_past_a_full_client_table(tmp_path):
    """As with a plain HELLO: idle clients fill Bona's max_clients, and
    Bailey, restarted, still gets its TLS link (on probation); garbage after
    0x16 past the full table is refused and gives back its place."""
    from test_bounds_conn import Pair, hold_clients, wait_for
    h = Pair(tmp_path, {"max_clients": 4})
    try:
        h.start("Bona")
        h.start("Bailey")
        assert wait_for(lambda: "link-up" in h.log("Bona"), 10)
        idle = hold_clients(h.ports["Bona"], 4, b"IDLE")
        for _ in range(3):
            s = open_raw(h.ports["Bona"], b"\x16" + b"\x00" * 50)
            assert closed_within(s, 8)
            s.close()
        h.procs["Bailey"].kill()
        h.procs["Bailey"].wait()
        assert wait_for(lambda: "link-down" in h.log("Bona"), 10)
        h.start("Bailey")
        assert wait_for(lambda: h.log("Bona").count("link-up") >= 2, 15), h.log("Bona")
        assert "tls=1" in h.log("Bona").split("link-up")[-1].splitlines()[0]
        at = exchange_line(h.ports["Bailey"], b"IAMAT back +1.0+1.0 %.9f\n" % time.time())[:-1]
        idle.pop().close()
        assert wait_for(lambda: exchange_line(h.ports["Bona"], b"WHATSAT back 1 1\n")
                        .startswith(at), 10)
        for c in idle:
            c.close()
    finally:
        h.stop()


def test_the_documented_psk_opens_a_link_from_another_tls_client(tmp_path):
    """openssl s_client, given only what docs/PROTOCOL.md says (identity
    "proxyherd-v1 A B", key HMAC-SHA256(secret, "proxyherd-v1 psk A B")),
    gets the link: the catch-up arrives and its AT line is stored.  The
    same client with another secret is refused."""
    import hashlib
    import hmac
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    secret = "psk-doc-secret-0123456789"
    pa, pb = free_port(), free_port()
    cfg = write_config(str(tmp_path), {"Bailey": (pa, ["Bona"]), "Bona": (pb, ["Bailey"])})
    err = open(tmp_path / "stderr", "wb")
    p = subprocess.Popen([program("herd-server"), "Bona", "-c", cfg], stdout=subprocess.DEVNULL,
                         stderr=err, env=dict(os.environ, HERD_SECRET=secret))
    try:
        assert wait_listening(pb, p)
        exchange_line(pb, b"IAMAT known +1.0+1.0 5\n")

        def s_client(key_secret, line):
            key = hmac.new(key_secret.encode(), b"proxyherd-v1 psk Bailey Bona",
                           hashlib.sha256).hexdigest()
            c = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{pb}", "-tls1_3",
                                  "-ciphersuites", "TLS_AES_128_GCM_SHA256", "-psk_identity",
                                  "proxyherd-v1 Bailey Bona", "-psk", key, "-quiet"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
            c.stdin.write(line)
            c.stdin.flush()
            time.sleep(1.0)
            c.kill()
            out, _ = c.communicate()
            return out

        out = s_client(secret, b"AT Bailey +0.100000000 from-sclient +2.0+2.0 7\n")
        # the link is up: Bona speaks first, its settings, its link states and
        # its table's digest
        assert out.startswith(b"AGREE version=2 max_stored_clients=1000000 forwarding=tree\n"
                              b"LINK Bona ") and b"\nSUM 1 " in out, out
        assert exchange_line(pb, b"WHATSAT from-sclient 1 1\n").startswith(
            b"AT Bailey +0.100000000 from-sclient +2.0+2.0 7\n")
        out = s_client("another-secret", b"AT Bailey +0.100000000 intruder +2.0+2.0 7\n")
        assert out == b""
        assert exchange_line(pb, b"WHATSAT intruder 1 1\n") == b"? WHATSAT intruder 1 1\n"
        assert wait_log(str(tmp_path), "Bona", "the PSK does not match (wrong secret?)")
    finally:
        p.terminate()
        p.wait(timeout=10)
        err.close()
    assert p.returncode == 0
    text = open(tmp_path / "stderr", errors="replace").read()
    assert "Sanitizer" not in text and "runtime error" not in text, text
