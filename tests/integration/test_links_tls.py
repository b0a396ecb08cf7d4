"""The TLS 1.3 of every link (docs/PROTOCOL.md, "Between servers"): the PSK
from the herd secret and its identities, handshakes refused for a wrong
secret, identity, suite, plain text or garbage, stalled or broken
handshakes and records, the dialing side's alerts and retries, and no
client location in clear on the wire.
"""
import hashlib
import hmac
import os
import select
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from harness import (ALL, LOC, SERVER_SECRET, TRUST_SECRET, configured_server, connect, exchange,
                     free_port, herd_iamat, hold_clients, key_id, linked, log_mark, Pair, program,
                     psk_key, read_log, recv_exact_lines, recv_until_eof, start_server,
                     stop_server, wait_for, wait_listening, wait_log, whatsat_reply, with_secret,
                     write_config)


OPENSSL = pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")


def test_tls_herd_passes_updates(herd):
    h = herd
    h.start().wait_links()
    for n in ALL:
        assert "tls=1" in h.log(n), n
    at = herd_iamat(h, "Bailey", b"tlsclient", LOC)
    h.wait_stored(ALL, b"tlsclient", at)


def read_calls(pid):
    """How many read() calls process pid has made (/proc/PID/io, syscr)."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("syscr:"))


def test_an_update_alone_on_a_link_costs_its_receiver_one_read(herd):
    """OpenSSL reads ahead: once it holds no byte more, the socket gave all
    it had, and another read() would only return EAGAIN (a quarter of the
    herd's read calls did).  Each IAMAT to Bailey reaches Bona as a record
    of its own: one read() each, not two."""
    h = herd
    h.start("Bailey", "Bona").wait_links()
    n = 300
    with connect(h.ports["Bailey"]) as c:
        c.sendall(b"IAMAT reads-warm %s %.9f\n" % (LOC, time.time()))
        recv_exact_lines(c, 1)
        h.wait_log("Bona", "reads-warm")      # the link's first lines are behind us
        before = read_calls(h.procs["Bona"].pid)
        for i in range(n):
            c.sendall(b"IAMAT reads-%d %s %.9f\n" % (i, LOC, time.time()))
            assert recv_exact_lines(c, 1).startswith(b"AT Bailey ")
    h.wait_log("Bona", f"reads-{n - 1} ")           # Bona has read them all
    reads = read_calls(h.procs["Bona"].pid) - before
    # n, and a few for the anti-entropy lines of a second; two per update before
    assert reads <= n + 20, f"{reads} read calls for {n} updates"


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
    at = herd_iamat(h, "Bailey", b"outsider", LOC)
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
    at = herd_iamat(h, "Bona", b"stillserving", LOC)
    h.wait_stored(ALL, b"stillserving", at)
    assert h.procs["Bona"].poll() is None


def test_stalled_tls_handshake_is_dropped_within_the_timeout(herd):
    h = herd
    h.start().wait_links()
    stalled = [open_raw(h.ports["Bona"], b"\x16"), open_raw(h.ports["Bona"], b"\x16\x03\x01\x02")]
    t0 = time.time()
    # served meanwhile
    at = herd_iamat(h, "Bona", b"meanwhile", LOC)
    h.wait_stored(ALL, b"meanwhile", at)
    for s in stalled:
        assert closed_within(s, 10)
        s.close()
    took = time.time() - t0
    assert 4 <= took < 9, took            # the 5 s handshake timeout, swept each second
    assert h.wait_log("Bona", "reason=handshake timeout before its TLS handshake was done")


SECRETS = [b"secret-client-42", b"-33.333333+44.444444", b"early-client", b"+11.111111+22.222222"]


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


def exchange_line(port, data):
    return exchange(port, data)


def read_bytes(path):
    try:
        return open(path, "rb").read()
    except FileNotFoundError:
        return b""


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


SECRET = "cov-tls-secret-0123456789"


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
    ("proxyherd-v1 Bailey Bona 0000000G", ("Bailey", "Bona"), "unknown PSK identity"),
    ("proxyherd-v1 Bailey Bona " + key_id("another-secret"), ("Bailey", "Bona"),
     "PSK identity names a key id not in our ring"),                           # another ring
    ("proxyherd-v1 Bailey Bona", ("Bailey", "Bona", "another-secret"),
     "TLS: the PSK does not match (wrong secret?)"),
]


SHA256_SUITE = "TLS_AES_128_GCM_SHA256"


def s_client(port, identity, key, suites=SHA256_SUITE):
    """An s_client offering one external PSK, reading what the server sends."""
    return subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                             "-ciphersuites", suites, "-psk_identity", identity, "-psk", key,
                             "-quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


# what a server sends first on a link (docs/PROTOCOL.md, "Between servers")
FIRST_LINES = b"AGREE version=2 max_stored_clients=1000000 forwarding=tree\nLINK Bona "


def end(proc):
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


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


def linked_client(port, identity="proxyherd-v1 Bailey Bona", key=None):
    """An s_client that gets Bailey's link: Bona speaks first (its AGREE,
    then LINK Bona ...)."""
    c = s_client(port, identity, key or psk_key(SECRET, "Bailey", "Bona"))
    try:
        assert read_until(c, b"LINK Bona ").startswith(FIRST_LINES)
    except AssertionError:
        end(c)
        raise
    return c


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


@OPENSSL
def test_psk_identities_that_name_no_link_here_are_refused(bona):
    """Even with the key the herd secret gives for the names it offers, an
    identity that does not name Bona as the acceptor, or names a dialer
    that is no neighbour dialling Bona, gets no key and no handshake; the
    reason is logged for each, and Bona then links with the real Bailey."""
    bona.start()
    for identity, names, why in IDENTITIES:
        mark = bona.mark()
        refused_client(bona.port, identity, psk_key((names[2:] or (SECRET,))[0], *names[:2]))
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


@OPENSSL
def test_an_identity_naming_the_key_id_of_our_secret_opens_the_link(bona):
    """The identity a dialer whose ring holds several secrets offers,
    "proxyherd-v1 A B KEYID", with the key of the secret KEYID names,
    opens the link on a server whose ring holds that secret (here its only
    one, from HERD_SECRET)."""
    bona.start()
    c = linked_client(bona.port, identity=f"proxyherd-v1 Bailey Bona {key_id(SECRET)}")
    try:
        assert bona.wait_log("link-up peer=Bailey addr=127.0.0.1:")
    finally:
        end(c)


@OPENSSL
def test_a_client_offering_no_sha256_suite_is_refused(bona):
    """TLS_AES_256_GCM_SHA384 only: no suite in common with the link's one
    (TLS_AES_128_GCM_SHA256), refused as OpenSSL says."""
    bona.start()
    mark = bona.mark()
    refused_client(bona.port, "proxyherd-v1 Bailey Bona", psk_key(SECRET, "Bailey", "Bona"),
                   suites="TLS_AES_256_GCM_SHA384")
    assert bona.wait_log("reason=no shared cipher\n", since=mark), bona.log()[mark:]
    assert "link-up" not in bona.log()
    bona.serves(b"after-sha384")


def hello_start():
    """The first bytes of a ClientHello: a handshake record of 512 bytes
    announced, 46 sent."""
    return b"\x16\x03\x01\x02\x00" + b"\x01\x00\x01\xfc\x03\x03" + b"A" * 40


@OPENSSL
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


def s_server(port, key, *extra):
    """Zed played by s_server: PSK only (no certificate), the identity Bona offers."""
    return subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-tls1_3", "-nocert",
                             "-ciphersuites", SHA256_SUITE, "-psk_identity",
                             "proxyherd-v1 Bona Zed", "-psk", key, "-quiet", *extra],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


@OPENSSL
def test_dialing_a_neighbour_that_asks_for_another_key_share(bona):
    """Zed (s_server) accepts only P-256 key shares: it answers Bona's first
    ClientHello with a HelloRetryRequest, and Bona offers its PSK again for
    the second one (now told the hash: SHA-256).  The link comes up and an
    update crosses it."""
    zed = s_server(bona.zed_port, psk_key(SECRET, "Bona", "Zed"), "-groups", "P-256")
    try:
        assert wait_listening(bona.zed_port, zed), "s_server did not start"
        bona.start()
        assert bona.wait_log(f"link-up peer=Zed addr=127.0.0.1:{bona.zed_port} dir=out"), bona.log()
        at = bona.serves(b"over-hrr")
        got = read_until(zed, at)
        assert got.startswith(FIRST_LINES), got
    finally:
        end(zed)


@OPENSSL
def test_dialing_a_neighbour_with_another_secret_is_refused_and_retried(bona):
    """Zed (s_server) holds another key: the binder fails there, Zed sends
    its alert, and Bona logs that the neighbour refused its PSK, once per
    attempt, the dial failure once; no link."""
    zed = s_server(bona.zed_port, psk_key("another-secret", "Bona", "Zed"))
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


@OPENSSL
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


@OPENSSL
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


def test_wrong_secret_never_gets_a_link(herd):
    herd.start().wait_links()
    herd.stop("Bailey")
    herd.start("Bailey", secret="not-the-herd-secret")
    time.sleep(1.0)
    at = herd_iamat(herd, "Bailey", b"outsider")
    time.sleep(0.5)
    for n in ("Bona", "Campbell"):
        assert herd.stored(n, b"outsider") is None
        assert herd.wait_log(n, "peer-refused")
    assert herd.wait_log("Bailey", "the neighbour refused our PSK (wrong secret?)")
    assert herd.stored("Bailey", b"outsider") == at


def test_plain_hello_to_a_server_without_links_is_just_a_bad_line(tmp_path):
    """"PEER HELLO" (the old plain-text handshake) at a server with no
    neighbours gets the "? " answer of any bad line; no refusal is logged,
    there being no link to refuse."""
    s = start_server(tmp_path)
    try:
        line = b"PEER HELLO Bona 0123456789abcdef0123456789abcdef"
        assert exchange(s.port, line + b"\n") == b"? " + line + b"\n"
        assert "conn-close" in s.read_log(wait_for="conn-close")
        assert "peer-refused" not in s.read_log()
    finally:
        assert stop_server(s) == 0


def psk_s_client(port, identity, dialer, acceptor):
    """openssl s_client offering 'identity' with the herd's key for the link
    dialer -> acceptor; its stderr (the handshake's outcome)."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                        "-brief", "-ciphersuites", "TLS_AES_128_GCM_SHA256",
                        "-psk_identity", identity, "-psk", psk_key(SERVER_SECRET, dialer, acceptor)],
                       input=b"AT Bailey +0.000000001 sneaked +1.0+1.0 5\n",
                       capture_output=True, timeout=20)
    return p.stderr


def test_tls_identities_that_name_no_link_of_ours_are_refused(tmp_path):
    """Bona (neighbours Bailey, who dials it, and Campbell, whom it dials)
    refuses a TLS peer whose PSK identity names a server that is no
    neighbour, a neighbour that does not dial it, or another acceptor: no
    link, each logged with its reason, the update it sent not stored."""
    ports = {n: free_port() for n in ("Bailey", "Bona", "Campbell")}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]),
               "Bona": (ports["Bona"], ["Bailey", "Campbell"]),
               "Campbell": (ports["Campbell"], ["Bona"])}
    s = start_server(tmp_path, "Bona", servers=servers, env=with_secret())
    try:
        cases = [("proxyherd-v1 Nobody Bona", "Nobody", "Bona",
                  "PSK identity of a server that does not dial us"),
                 ("proxyherd-v1 Campbell Bona", "Campbell", "Bona",
                  "PSK identity of a server that does not dial us"),
                 ("proxyherd-v1 Bailey Campbell", "Bailey", "Campbell", "unknown PSK identity")]
        for identity, dialer, acceptor, why in cases:
            mark = len(s.read_log())
            err = psk_s_client(s.port, identity, dialer, acceptor)
            assert b"CONNECTION ESTABLISHED" not in err, (identity, err)
            want = f"reason={why}"
            assert wait_for(lambda: want in s.read_log()[mark:], 5), (identity, s.read_log()[mark:])
            refused = [l for l in s.read_log()[mark:].splitlines() if "peer-refused" in l]
            assert len(refused) == 1 and "peer=? addr=127.0.0.1:" in refused[0], refused
        assert "link-up" not in s.read_log()
        assert exchange(s.port, b"WHATSAT sneaked 1 1\n") == b"? WHATSAT sneaked 1 1\n"
    finally:
        assert stop_server(s) == 0


def client_hello(identity, dialer, acceptor):
    """The first TLS record openssl s_client sends for a link's PSK: its
    ClientHello, caught on a socket of ours that answers nothing."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{ls.getsockname()[1]}",
                              "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256",
                              "-psk_identity", identity, "-psk", psk_key(SERVER_SECRET, dialer, acceptor)],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            ls.settimeout(10)
            c, _ = ls.accept()
            with c:
                c.settimeout(10)
                data = b""
                while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
                    more = c.recv(4096)
                    assert more, data
                    data += more
        finally:
            p.kill()
            p.wait()
    return data


def test_tls_handshake_stalled_after_a_known_identity_names_the_peer(tmp_path):
    """A ClientHello with Bailey's identity and key is answered (the PSK is
    right), then nothing more comes: at the handshake timeout the
    connection is closed and the refusal names Bailey, not "?"."""
    ports = {"Bailey": free_port(), "Bona": free_port()}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]), "Bona": (ports["Bona"], ["Bailey"])}
    s = start_server(tmp_path, "Bona", servers=servers, env=with_secret())
    try:
        hello = client_hello("proxyherd-v1 Bailey Bona", "Bailey", "Bona")
        assert hello[:1] == b"\x16" and b"proxyherd-v1 Bailey Bona" in hello
        with connect(s.port) as c:
            c.sendall(hello)
            c.settimeout(10)
            assert c.recv(5)[:1] == b"\x16", "no ServerHello: the PSK was refused"
            t0 = time.time()
            try:
                while c.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            took = time.time() - t0
        assert 3.5 <= took < 9, took      # the 5 s handshake timeout, swept each second
        want = "reason=handshake timeout before its TLS handshake was done"
        log = s.read_log(wait_for=want)
        line = next(l for l in log.splitlines() if want in l)
        assert "peer-refused peer=Bailey addr=127.0.0.1:" in line, line
        assert "link-up" not in log
    finally:
        assert stop_server(s) == 0


def test_at_line_after_a_plain_hello_gets_a_question_mark(tmp_path, started_servers, monkeypatch):
    """Links are TLS only: the old plain-text handshake from a configured
    neighbour, then an AT line, are two bad lines, and nothing is stored."""
    s, _ = linked(tmp_path, started_servers, monkeypatch)
    hello = b"PEER HELLO Bailey " + b"0123456789abcdef" * 2
    at = b"AT Bailey +0.100000000 early +1.0+1.0 5"
    with connect(s.port, timeout=5) as c:
        c.sendall(hello + b"\n" + at + b"\n")
        c.shutdown(socket.SHUT_WR)
        assert recv_until_eof(c) == b"? " + hello + b"\n? " + at + b"\n"
    assert whatsat_reply(s.port, b"early") == b"? WHATSAT early 1 1\n"
    assert "link-up" not in s.read_log()


def test_dialer_given_an_at_line_instead_of_a_tls_answer_survives(tmp_path, started_servers, monkeypatch):
    monkeypatch.setenv("HERD_SECRET", TRUST_SECRET)
    ports = {"Alpha": free_port(), "Zed": free_port()}
    s = configured_server(tmp_path, "Alpha", {"Alpha": (ports["Alpha"], ["Zed"]),
                                       "Zed": (ports["Zed"], ["Alpha"])})
    with socket.create_server(("127.0.0.1", ports["Zed"])) as lsn:
        lsn.settimeout(10)
        started_servers.append(s.start())
        c, _ = lsn.accept()                    # Alpha dials Zed
        with c:
            c.settimeout(5)
            hello = c.recv(5)
            assert hello[:1] == b"\x16", hello     # a TLS handshake record
            c.sendall(b"AT Zed +0.100000000 x +1.0+1.0 5\n")
            assert b"AT " not in recv_until_eof(c)  # at most a TLS alert, then close
    log = s.read_log(wait_for="peer-refused peer=Zed")
    assert "peer-refused peer=Zed" in log, log
    assert exchange(s.port, b"WHATSAT x 1 1\n") == b"? WHATSAT x 1 1\n"
