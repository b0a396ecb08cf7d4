"""The refusals and failures of a link's TLS (server/tls.c; docs/PROTOCOL.md,
"Between servers"), played by openssl s_client / s_server against one real
server, Bona, whose neighbours are Bailey (who dials Bona: its name sorts
first) and Zed (whom Bona dials).  Each bad peer is refused with the reason
tls.c gives, logged; Bona keeps serving clients and real neighbours."""
import hashlib
import hmac
import os
import select
import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import (exchange, free_port, log_mark, program, read_log, wait_for, wait_listening,
                      wait_log, write_config)
from test_tls import RecordingProxy

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")

SECRET = "cov-tls-secret-0123456789"
SHA256_SUITE = "TLS_AES_128_GCM_SHA256"


def psk_key(dialer, acceptor, secret=SECRET):
    """The link key docs/PROTOCOL.md gives: HMAC-SHA256(secret, "proxyherd-v1 psk A B")."""
    return hmac.new(secret.encode(), f"proxyherd-v1 psk {dialer} {acceptor}".encode(),
                    hashlib.sha256).hexdigest()


class Bona:
    """herd-server Bona on a free port; Bailey's port is never listened on,
    Zed's is whatever the test puts there (an s_server, or nothing)."""

    def __init__(self, path):
        self.dir = str(path)
        self.port, self.bailey_port, self.zed_port = free_port(), free_port(), free_port()
        self.cfg = write_config(self.dir, {"Bailey": (self.bailey_port, ["Bona"]),
                                           "Bona": (self.port, ["Bailey", "Zed"]),
                                           "Zed": (self.zed_port, ["Bona"])})
        self.proc = None

    def start(self):
        self.err = open(os.path.join(self.dir, "Bona.stderr"), "wb")
        self.proc = subprocess.Popen([program("herd-server"), "Bona", "-c", self.cfg],
                                     stdout=subprocess.DEVNULL, stderr=self.err,
                                     env=dict(os.environ, HERD_SECRET=SECRET))
        assert wait_listening(self.port, self.proc), self.stderr()
        return self

    def stderr(self):
        return open(os.path.join(self.dir, "Bona.stderr"), errors="replace").read()

    def log(self):
        return read_log(self.dir, "Bona")

    def mark(self):
        return log_mark(self.dir, "Bona")

    def wait_log(self, text, since=0, timeout=10):
        return wait_log(self.dir, "Bona", text, timeout=timeout, since=since)

    def serves(self, client):
        """Bona answers a client: an IAMAT stored, then found by WHATSAT."""
        at = exchange(self.port, b"IAMAT %s +1.0+2.0 %.9f\n" % (client, time.time()))
        assert at.startswith(b"AT Bona "), at
        assert exchange(self.port, b"WHATSAT %s 1 1\n" % client).startswith(at), client
        return at

    def stop(self):
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()
        rc, self.proc = self.proc.returncode, None
        err = self.stderr()
        assert "Sanitizer" not in err and "runtime error" not in err, err
        assert rc == 0, f"herd-server exited with {rc}: {err}"


@pytest.fixture
def bona(tmp_path):
    b = Bona(tmp_path)
    yield b
    b.stop()


def s_client(port, identity, key, suites=SHA256_SUITE):
    """An s_client offering one external PSK, reading what the server sends."""
    return subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                             "-ciphersuites", suites, "-psk_identity", identity, "-psk", key,
                             "-quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def refused_client(port, identity, key, suites=SHA256_SUITE):
    """Run an s_client the server must refuse: it gets no byte of data and
    ends by itself (the handshake failed)."""
    c = s_client(port, identity, key, suites)
    try:
        out, _ = c.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        c.kill()
        c.communicate()
        raise AssertionError(f"{identity}: s_client was not refused")
    assert c.returncode != 0 and out == b"", (identity, c.returncode, out)


def read_until(proc, want, timeout=10):
    """What proc writes on its stdout, until 'want' is in it."""
    got = b""
    deadline = time.time() + timeout
    while want not in got:
        left = deadline - time.time()
        assert left > 0, (want, got)
        if select.select([proc.stdout], [], [], left)[0]:
            b = os.read(proc.stdout.fileno(), 4096)
            assert b, (want, got)              # ended first
            got += b
    return got


# what a server sends first on a link (docs/PROTOCOL.md, "Between servers")
FIRST_LINES = b"AGREE version=2 max_stored_clients=1000000 forwarding=tree\nLINK Bona "


def linked_client(port, identity="proxyherd-v1 Bailey Bona", key=None):
    """An s_client that gets Bailey's link: Bona speaks first (its AGREE,
    then LINK Bona ...)."""
    c = s_client(port, identity, key or psk_key("Bailey", "Bona"))
    try:
        assert read_until(c, b"LINK Bona ").startswith(FIRST_LINES)
    except AssertionError:
        end(c)
        raise
    return c


def end(proc):
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


# ------------------------------------------------------------- acceptor side

IDENTITIES = [
    # (identity, key from these names with the herd secret, reason logged);
    # the peer is "?" but for the last: the identity named Bailey's link
    ("proxyherd-v1-Bailey-Bona", ("Bailey", "Bona"), "unknown PSK identity"),   # no spaces
    ("proxyherd-v1 Bailey Bonb", ("Bailey", "Bonb"), "unknown PSK identity"),   # same length
    ("proxyherd-v1 Bailey Bon", ("Bailey", "Bon"), "unknown PSK identity"),     # a prefix of us
    ("proxyherd-v1 Nobody Bona", ("Nobody", "Bona"),
     "PSK identity of a server that does not dial us"),                        # no such neighbour
    ("proxyherd-v1 Zed Bona", ("Zed", "Bona"),
     "PSK identity of a server that does not dial us"),                        # Bona dials Zed
    ("proxyherd-v1 Bailey Bona", ("Bailey", "Bona", "another-secret"),
     "TLS: the PSK does not match (wrong secret?)"),
]


def test_psk_identities_that_name_no_link_here_are_refused(bona):
    """Even with the key the herd secret gives for the names it offers, an
    identity that does not name Bona as the acceptor, or names a dialer
    that is no neighbour dialling Bona, gets no key and no handshake; the
    reason is logged for each, and Bona then links with the real Bailey."""
    bona.start()
    for identity, names, why in IDENTITIES:
        mark = bona.mark()
        refused_client(bona.port, identity, psk_key(*names))
        peer = "Bailey" if "secret" in why else "?"
        assert bona.wait_log(f"peer-refused peer={peer} addr=127.0.0.1:", since=mark), \
            (identity, bona.log()[mark:])
        assert bona.wait_log(f" reason={why}\n", since=mark), (identity, bona.log()[mark:])
        assert "link-up" not in bona.log()[mark:], identity
    bona.serves(b"after-identities")
    c = linked_client(bona.port)
    try:
        assert bona.wait_log("link-up peer=Bailey addr=127.0.0.1:")
        c.stdin.write(b"AT Bailey +0.100000000 via-link +2.0+2.0 7\n")
        c.stdin.flush()
        assert wait_for(lambda: exchange(bona.port, b"WHATSAT via-link 1 1\n").startswith(
            b"AT Bailey +0.100000000 via-link +2.0+2.0 7\n"), 10)
    finally:
        end(c)


def test_a_client_offering_no_sha256_suite_is_refused(bona):
    """TLS_AES_256_GCM_SHA384 only: no suite in common with the link's one
    (TLS_AES_128_GCM_SHA256), refused as OpenSSL says."""
    bona.start()
    mark = bona.mark()
    refused_client(bona.port, "proxyherd-v1 Bailey Bona", psk_key("Bailey", "Bona"),
                   suites="TLS_AES_256_GCM_SHA384")
    assert bona.wait_log("reason=no shared cipher\n", since=mark), bona.log()[mark:]
    assert "link-up" not in bona.log()
    bona.serves(b"after-sha384")


def hello_start():
    """The first bytes of a ClientHello: a handshake record of 512 bytes
    announced, 46 sent."""
    return b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc\x03\x03" + b"A" * 40


def test_a_peer_gone_during_the_tls_handshake_is_refused(bona):
    """A peer that resets its connection in the middle of its ClientHello is
    refused as reset; one that closes it, as a failed handshake.  Both are
    logged at once (not at the handshake timeout) and Bona serves on."""
    bona.start()
    for how, why in (("reset", "reset during the TLS handshake"),
                     ("close", "TLS handshake failed")):
        mark = bona.mark()
        s = socket.create_connection(("127.0.0.1", bona.port), timeout=10)
        s.sendall(hello_start())
        port = s.getsockname()[1]
        time.sleep(0.3)                        # Bona has read the start and waits for more
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t0 = time.time()
        s.close()
        assert bona.wait_log(f"peer-refused peer=? addr=127.0.0.1:{port} reason={why}\n",
                             since=mark, timeout=4), (how, bona.log()[mark:])
        assert time.time() - t0 < 4, how     # not the 5 s handshake timeout
    bona.serves(b"after-gone")


# --------------------------------------------------------------- dialer side

def s_server(port, key, *extra):
    """Zed played by s_server: PSK only (no certificate), the identity Bona offers."""
    return subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-tls1_3", "-nocert",
                             "-ciphersuites", SHA256_SUITE, "-psk_identity",
                             "proxyherd-v1 Bona Zed", "-psk", key, "-quiet", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def test_dialing_a_neighbour_that_asks_for_another_key_share(bona):
    """Zed (s_server) accepts only P-256 key shares: it answers Bona's first
    ClientHello with a HelloRetryRequest, and Bona offers its PSK again for
    the second one (now told the hash: SHA-256).  The link comes up and an
    update crosses it."""
    zed = s_server(bona.zed_port, psk_key("Bona", "Zed"), "-groups", "P-256")
    try:
        assert wait_listening(bona.zed_port, zed), "s_server did not start"
        bona.start()
        assert bona.wait_log(f"link-up peer=Zed addr=127.0.0.1:{bona.zed_port} dir=out"), bona.log()
        at = bona.serves(b"over-hrr")
        got = read_until(zed, at)
        assert got.startswith(FIRST_LINES), got
    finally:
        end(zed)


def test_dialing_a_neighbour_with_another_secret_is_refused_and_retried(bona):
    """Zed (s_server) holds another key: the binder fails there, Zed sends
    its alert, and Bona logs that the neighbour refused its PSK, once per
    attempt, the dial failure once; no link."""
    zed = s_server(bona.zed_port, psk_key("Bona", "Zed", "another-secret"))
    try:
        assert wait_listening(bona.zed_port, zed), "s_server did not start"
        bona.start()
        refused = (f"peer-refused peer=Zed addr=127.0.0.1:{bona.zed_port} "
                   "reason=TLS: the neighbour refused our PSK (wrong secret?)\n")
        assert wait_for(lambda: bona.log().count(refused) >= 2, 10), bona.log()
        assert bona.log().count("link-dial-failed peer=Zed") == 1
        assert "link-up" not in bona.log()
        bona.serves(b"after-refusal")
    finally:
        end(zed)


def read_record(sock):
    """One TLS record (header and body) from sock."""
    data = b""
    while len(data) < 5 or len(data) < 5 + struct.unpack("!H", data[3:5])[0]:
        b = sock.recv(65536)
        assert b, data
        data += b
    return data


def test_alerts_and_a_close_from_the_neighbour_we_dial(bona):
    """Zed played by hand: each of Bona's dials offers the PSK identity
    "proxyherd-v1 Bona Zed" in its ClientHello, and Zed answers with an
    alert, then once by closing, then with a line that is no TLS at all.
    decrypt_error and illegal_parameter (what a binder that does not verify
    gets) read as the neighbour refusing our PSK; another alert and the
    plain text are logged as OpenSSL names them; a close as a failed
    handshake.  Bona retries each time and serves on."""
    refused = "TLS: the neighbour refused our PSK (wrong secret?)"
    answers = [(b"\x15\x03\x03\x00\x02\x02\x33", refused),      # fatal decrypt_error
               (b"\x15\x03\x03\x00\x02\x02\x2f", refused),      # fatal illegal_parameter
               (b"\x15\x03\x03\x00\x02\x02\x50", "tlsv1 alert internal error"),
               (b"", "TLS handshake failed"),
               (b"? PEER HELLO\n", "wrong version number")]   # no TLS at all
    hellos = []
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", bona.zed_port))
    ls.listen(4)
    ls.settimeout(15)
    try:
        bona.start()
        for answer, why in answers:
            mark = bona.mark()
            c, _ = ls.accept()
            with c:
                c.settimeout(10)
                hellos.append(read_record(c))
                if answer:
                    c.sendall(answer)
                    c.recv(100)                  # until Bona closes
            assert bona.wait_log(f"peer-refused peer=Zed addr=127.0.0.1:{bona.zed_port} "
                                 f"reason={why}\n", since=mark), (why, bona.log()[mark:])
        for h in hellos:
            assert h[:1] == b"\x16" and h[5:6] == b"\x01", h[:8]     # a ClientHello
            assert b"proxyherd-v1 Bona Zed" in h, h
        assert bona.log().count("link-dial-failed peer=Zed") == 1
        assert "link-up" not in bona.log()
        bona.serves(b"after-alerts")
    finally:
        ls.close()


# ----------------------------------------------------------- an open link

def test_a_broken_record_or_a_reset_ends_an_open_link(bona):
    """On Bailey's open link (s_client through a proxy), a record that does
    not decrypt ends the link as a bad TLS record; a reset from the wire
    ends it as a reset.  Each is logged as the link's end, and Bailey gets
    its link again afterwards."""
    bona.start()
    proxy = RecordingProxy(bona.port)
    clients = []
    try:
        for n, (act, why) in enumerate((("garbage", "bad TLS record"),
                                        ("reset", "reset by client"))):
            mark = bona.mark()
            clients.append(linked_client(proxy.port))
            assert bona.wait_log("link-up peer=Bailey", since=mark)
            if act == "garbage":      # application data, 32 bytes that no key sealed
                proxy.inject(b"\x17\x03\x03\x00\x20" + bytes(range(32)))
            else:
                proxy.reset()
            assert bona.wait_log(f"link-down peer=Bailey reason={why} ", since=mark), \
                (act, bona.log()[mark:])
            assert "link-up" not in bona.log()[bona.log().rindex(f"reason={why}"):]
        bona.serves(b"after-broken-links")
        mark = bona.mark()
        clients.append(linked_client(bona.port))
        assert bona.wait_log("link-up peer=Bailey", since=mark)
    finally:
        for c in clients:
            end(c)
        proxy.close()
