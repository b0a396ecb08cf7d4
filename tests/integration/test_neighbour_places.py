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
