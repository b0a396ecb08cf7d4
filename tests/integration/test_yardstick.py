"""The asyncio yardstick (benchmark/asyncio_herd.py), so that it does not
rot: it answers IAMAT and WHATSAT with the C server's bytes, reads the
herd's config.yml, and floods an update to its neighbour, on the standard
event loop and on uvloop (skipped when uvloop is not installed).
"""
import os
import re
import subprocess

import pytest

from harness import ROOT, exchange, free_port, wait_for, wait_listening, write_config

ASYNCIO_HERD = os.path.join(ROOT, "benchmark", "asyncio_herd.py")
DIFF = re.compile(rb"^(AT \S+ )[+-]\d+\.\d{9}( )", re.M)

# A few queries, good and bad, with the same bytes expected from both.
QUERIES = (b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n"
           b"IAMAT near +34.07-118.44 1621464827\n"
           b"WHATSAT kiwi.cs.ucla.edu 10 5\n"
           b"WHATSAT kiwi.cs.ucla.edu 1 20\n"
           b"WHATSAT near 0.001 3\n"
           b"WHATSAT near 50 020\n"
           b"WHATSAT near 50.1 2\n"
           b"WHATSAT nobody 1 1\n"
           b"  \n"
           b"foo bar\r\n"
           b"iamat x\n"
           b"IAMAT a +91.0+0.0 1\n"
           b"IAMAT pole +90.0-180.0 1.5\n"
           b"WHATSAT pole 0.5 1\n"
           b"IAMAT b +0.0+0.0 99999999999999\n"
           b"  IAMAT\tc\t+1.0+1.0   5  \n"
           b"WHATSAT c 1e1 1\n"
           b"WHATSAT c 0 1\n"
           b"WHATSAT near 5")                       # last line, no LF


@pytest.fixture
def yardstick(tmp_path):
    """yardstick(name, servers, loop): one asyncio_herd.py server of a
    config in tmp_path/name, listening; every one is stopped at the end."""
    started = []

    def start(name, servers, loop="asyncio"):
        folder = tmp_path / f"y-{name}"
        folder.mkdir()
        cfg = write_config(str(folder), servers)
        p = subprocess.Popen(["/usr/bin/python3", ASYNCIO_HERD, name, "-c", cfg, "--loop", loop],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(p)
        assert wait_listening(servers[name][0], p), p.stderr.read() if p.poll() is not None else ""
        return p

    yield start
    for p in started:
        p.terminate()
    for p in started:
        assert p.wait(timeout=10) == 0, p.stderr.read()


def whatsat_reply(port, client):
    return exchange(port, b"WHATSAT %s 0.001 1\n" % client)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_yardstick_answers_as_the_c_server_and_floods(server, yardstick, loop):
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    # Named like the C server, so only the time difference may differ.
    port = free_port()
    yardstick("Bailey", {"Bailey": (port, [])}, loop)
    want, got = exchange(server.port, QUERIES), exchange(port, QUERIES)
    assert b'"status" : "OK"' in want and b"? foo bar\n" in want
    assert DIFF.sub(rb"\1D\2", got) == DIFF.sub(rb"\1D\2", want)

    # Two servers of one config, linked: an update given to one reaches the other.
    a, b = free_port(), free_port()
    servers = {"Bona": (a, ["Clark"]), "Clark": (b, ["Bona"])}
    yardstick("Bona", servers, loop)
    yardstick("Clark", servers, loop)
    at = exchange(a, b"IAMAT flood +34.068930-118.445127 1700000000.5\n")
    assert at.startswith(b"AT Bona +") and at.endswith(b" flood +34.068930-118.445127 1700000000.5\n")
    wait_for(lambda: whatsat_reply(b, b"flood").startswith(at), 10, "the update at Clark")
    # and back the other way, newer
    at2 = exchange(b, b"IAMAT flood +34.1-118.4 1700000001\n")
    wait_for(lambda: whatsat_reply(a, b"flood").startswith(at2), 10, "the newer update at Bona")
