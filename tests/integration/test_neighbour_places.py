"""A neighbour's link past a full table, whatever clients do (docs/PROTOCOL.md,
"Limits"): a client opening a connection every 50 ms past max_clients (or
past max_clients_per_address) does not keep Bailey's link to Bona down, each
of its connections still gets its "? " line, and a client cannot use what is
held back for the neighbours: past the table it is refused, and at once when
its first byte says it is no TLS handshake."""
import socket
import threading
import time

import pytest

from conftest import connect, recv_until_eof, wait_for
from test_bounds_conn import BUSY, BUSY_ADDR, hold_clients, pair  # noqa: F401 (a fixture)

HOG_EVERY_S = 0.05
LINK_BOUND_S = 5.0      # the first dial comes at once; a refused one backs off to 3.2 s


class Hog(threading.Thread):
    """Opens a connection every 50 ms and keeps it, sending 'first' (nothing:
    silent; b"\\x16\\x03\\x01": the start of a TLS record that never ends)."""

    def __init__(self, port, first):
        super().__init__(daemon=True)
        self.port, self.first = port, first
        self.socks = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                if self.first:
                    s.sendall(self.first)
                self.socks.append(s)
            except OSError:
                pass
            self.stop.wait(HOG_EVERY_S)

    def finish(self):
        """Stop; each connection's bytes until the server closed it."""
        self.stop.set()
        self.join()
        got = []
        for s in self.socks:
            s.settimeout(5)
            try:
                got.append(recv_until_eof(s))
            except ConnectionResetError:
                got.append(b"<reset>")
            except socket.timeout:
                got.append(b"<still open>")
            s.close()
        return got


CASES = {
    "max_clients": ({"max_clients": 2}, BUSY, b""),
    "per_address": ({"max_clients_per_address": 2}, BUSY_ADDR, b""),
    "tls_prefix": ({"max_clients": 2}, BUSY, b"\x16\x03\x01"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_hog_past_the_table_does_not_keep_a_neighbours_link_down(pair, case):
    limits, busy, first = CASES[case]
    h = pair(limits)
    h.start("Bona")
    idle = hold_clients(h.ports["Bona"], 2, b"IDLE")         # the table (or address) is full
    hog = Hog(h.ports["Bona"], first)
    hog.start()
    try:
        assert wait_for(lambda: len(hog.socks) >= 10, 5)     # the hog holds what it can
        t0 = time.time()
        h.start("Bailey")                                     # Bailey dials Bona
        up = wait_for(lambda: "link-up" in h.log("Bona"), LINK_BOUND_S)
        took = time.time() - t0
        assert up, "no link within %.0f s while the hog ran:\n%s" % (LINK_BOUND_S, "\n".join(
            l for l in h.log("Bona").splitlines() if "link" in l or "peer-" in l)[-3000:])
        assert len(hog.socks) >= 10 and hog.is_alive()
    finally:
        got = hog.finish()
    print(f"link up {took:.3f} s after Bailey started; hog connections: {len(got)}")
    want = b"" if first else busy                  # a TLS handshake begun gets no plain line
    wrong = [g for g in got if g != want]
    assert not wrong, f"{len(wrong)} of {len(got)} hog connections got {wrong[:3]!r}"
    assert "link-up peer=Bailey" in h.log("Bona")
    for c in idle:
        c.close()


def test_a_client_cannot_use_the_neighbours_places(pair):
    """With the link up and the table full: a client's line, or a silent
    client, gets the busy line; a client whose first byte is no TLS gets it
    at once, without waiting out the 2 s a neighbour has (its line is not
    finished), so it never holds a place held back for a neighbour."""
    h = pair({"max_clients": 2})
    h.start("Bona")
    h.start("Bailey")
    assert wait_for(lambda: "link-up" in h.log("Bona"), 10)
    idle = hold_clients(h.ports["Bona"], 2, b"IDLE")
    for first, times in ((b"WHATSAT Bailey 1 1\n", 3), (b"WHATS", 3), (b"", 1)):
        for _ in range(times):                    # more than the one link's places
            with connect(h.ports["Bona"]) as c:
                c.settimeout(10)
                t0 = time.time()
                c.sendall(first)
                assert recv_until_eof(c) == BUSY, first
                took = time.time() - t0
                if first:
                    assert took < 1.0, f"{first!r} was held {took:.2f} s"
    for c in idle:
        c.close()


def captured_client_hello(secret):
    """Bailey's first TLS flight towards Bona, as someone on the path would
    record it (its PSK binder verifies every time it is sent again)."""
    import subprocess
    from test_herd import psk_key
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        cl = subprocess.Popen(["openssl", "s_client", "-connect", "127.0.0.1:%d" % ls.getsockname()[1],
                               "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256",
                               "-psk_identity", "proxyherd-v1 Bailey Bona",
                               "-psk", psk_key(secret, "Bailey", "Bona")],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        c, _ = ls.accept()
        data = b""
        while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
            data += c.recv(65536)
        cl.kill()
        cl.wait()
        c.close()
    return data


class SlowPath:
    """A proxy to 'target' that holds each of the client's flights after its
    first for 'delay' seconds: a neighbour far away."""

    def __init__(self, target, delay):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.target, self.delay, self.socks = target, delay, []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        try:
            c, _ = self.ls.accept()
        except OSError:
            return
        u = socket.create_connection(("127.0.0.1", self.target))
        self.socks += [c, u]
        threading.Thread(target=self._pump, args=(c, u, self.delay), daemon=True).start()
        threading.Thread(target=self._pump, args=(u, c, 0), daemon=True).start()

    @staticmethod
    def _pump(src, dst, delay):
        first = True
        try:
            while True:
                d = src.recv(65536)
                if not d:
                    break
                if not first:
                    time.sleep(delay)
                first = False
                dst.sendall(d)
        except OSError:
            pass

    def close(self):
        for s in [self.ls] + self.socks:
            s.close()


def test_a_replayed_client_hello_does_not_push_the_neighbours_handshake_out(herd):
    """A ClientHello recorded on the wire and sent again passes the binder
    check, but only the neighbour can finish the handshake: the replay must
    not take the link's place from the neighbour's own handshake in flight
    (it did: "replaced by a newer handshake", and no link came up)."""
    from test_herd import FakePeer
    herd.start("Bona")
    hello = captured_client_hello(herd.secret)
    path = SlowPath(herd.ports["Bona"], 0.3)
    got = {}

    def neighbour():
        try:
            got["peer"] = FakePeer(path.port, "Bailey", "Bona", herd.secret)
        except AssertionError as e:
            got["error"] = str(e)
    t = threading.Thread(target=neighbour)
    t.start()
    time.sleep(0.1)                       # its ClientHello is in, the rest on its way
    replay = socket.create_connection(("127.0.0.1", herd.ports["Bona"]))
    replay.sendall(hello)
    t.join(15)
    try:
        assert "peer" in got, got
        assert herd.wait_log("Bona", "link-up peer=Bailey"), herd.log("Bona")
        got["peer"].settimeout(3)
        assert got["peer"].recv(65536).startswith(b"AGREE "), "no link bytes"
        assert "replaced by a newer handshake" not in herd.log("Bona")
    finally:
        replay.close()
        if "peer" in got:
            got["peer"].close()
        path.close()
