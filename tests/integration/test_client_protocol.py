"""What a client sees of IAMAT and WHATSAT (docs/PROTOCOL.md, "Lines", "IAMAT",
"Stored clients", "WHATSAT", "Anything else"): the exact AT line and its time
difference in integer nanoseconds, the WHATSAT reply's shape and places,
"? " for every invalid line, pipelining, half-closes, and which of two
updates of a client is kept.
"""
import json
import math
import os
import re
import time

import pytest

from harness import (connect, exchange, LOC, PLACES, places_opts, recv_exact_lines, wait_for)


def iamat(port, client, loc=LOC, t=None):
    t = t if t is not None else b"%.9f" % time.time()
    reply = exchange(port, b"IAMAT %s %s %s\n" % (client, loc, t))
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1, reply
    return reply[:-1]


AT_RE = re.compile(rb"^AT (\S+) ([+-])(\d+)\.(\d{9}) (\S+) (\S+) (\S+)$")


def test_iamat_reply_is_exact(server):
    client = b"kiwi.cs.ucla.edu"
    t = b"1621464827.959498503"
    before = time.time()
    line = iamat(server.port, client, LOC, t)
    after = time.time()
    m = AT_RE.match(line)
    assert m, line
    assert m.group(1) == b"Bailey"
    assert m.group(5) == client and m.group(6) == LOC and m.group(7) == t
    assert m.group(2) == b"+"
    diff = int(m.group(3)) + int(m.group(4)) / 1e9
    assert before - 1621464827.959498503 - 0.01 <= diff <= after - 1621464827.959498503 + 0.01


def test_iamat_diff_is_exact_integer_arithmetic(server):
    # A time with more than 9 fraction digits: the echo keeps them all, the
    # diff ignores those past the ninth, so sec + nsec of the diff plus the
    # client's time is a receive time within the test's window.
    t = b"%d.123456789999999" % int(time.time())
    before = time.time_ns()
    line = iamat(server.port, b"frac", LOC, t)
    after = time.time_ns()
    m = AT_RE.match(line)
    assert m and m.group(7) == t
    sign = -1 if m.group(2) == b"-" else 1
    diff_ns = sign * (int(m.group(3)) * 10**9 + int(m.group(4)))
    sec, frac = t.split(b".")
    t_ns = int(sec) * 10**9 + int(frac[:9])
    assert before <= t_ns + diff_ns <= after + 1_000_000


def test_iamat_diff_keeps_every_nanosecond(server):
    """The diff is now - t in exact integer nanoseconds.  Through a double
    (about 1.7e9 s: steps of 2**-22 s, 238.4 ns) every diff would fall on
    that grid; real clock readings land on it once in ~240 tries."""
    step = 2 ** -22 * 1e9
    on_grid = 0
    n = 20
    with connect(server.port) as s:
        for i in range(n):
            t = time.time_ns() - 10**9 * i
            tstr = b"%d.%09d" % (t // 10**9, t % 10**9)
            s.sendall(b"IAMAT grid %s %s\n" % (LOC, tstr))
            m = AT_RE.match(recv_exact_lines(s, 1)[:-1])
            assert m and m.group(2) == b"+" and m.group(7) == tstr
            diff_ns = int(m.group(3)) * 10**9 + int(m.group(4))
            assert 10**9 * i <= diff_ns < 10**9 * i + 10**9, diff_ns
            on_grid += abs(diff_ns - round(diff_ns / step) * step) <= 0.51
    assert on_grid < n, "every diff is a multiple of 2**-22 s: computed through a double"


def test_iamat_future_time_gives_negative_diff(server):
    t = b"%d.5" % (int(time.time()) + 1000)
    m = AT_RE.match(iamat(server.port, b"skewed", LOC, t))
    assert m and m.group(2) == b"-" and 998 <= int(m.group(3)) <= 1000


@pytest.mark.parametrize("client", ["kiwi", "héllo-wörld", "🥝🍋‍🟩", "a" * 256, "🥝" * 64])
def test_iamat_utf8_ids_echo_verbatim(server, client):
    c = client.encode()
    m = AT_RE.match(iamat(server.port, c, b"-90.0+180.0", b"0"))
    assert m and m.group(5) == c and m.group(6) == b"-90.0+180.0" and m.group(7) == b"0"


def test_whitespace_forms_and_crlf(server):
    reply = exchange(server.port, b" \t IAMAT\t\x0bws\x0c +1.0+2.0   5  \r\n")
    m = AT_RE.match(reply[:-1])
    assert m and m.group(5) == b"ws" and m.group(6) == b"+1.0+2.0" and m.group(7) == b"5"


def whatsat(port, client, radius=b"10", bound=b"5"):
    return exchange(port, b"WHATSAT %s %s %s\n" % (client, radius, bound))


def split_whatsat(reply):
    first, rest = reply.split(b"\n", 1)
    assert rest.endswith(b"}\n\n") and not rest.endswith(b"\n\n\n"), rest[-20:]
    body = rest[:-2]
    assert b"\n\n" not in body, "the JSON must have no empty line"
    return first, json.loads(body)


def test_whatsat_reply_shape(server):
    at = iamat(server.port, b"ucla", LOC)
    reply = whatsat(server.port, b"ucla", b"10", b"5")
    first, js = split_whatsat(reply)
    assert first == at
    assert js["status"] == "OK" and js["html_attributions"] == []
    assert 1 <= len(js["results"]) <= 5
    for r in js["results"]:
        for key in ("name", "place_id", "vicinity", "types"):
            assert key in r
        assert isinstance(r["geometry"]["location"]["lat"], float)


def haversine(lat1, lng1, lat2, lng2):
    r = math.radians
    a = (math.sin(r(lat2 - lat1) / 2) ** 2
         + math.cos(r(lat1)) * math.cos(r(lat2)) * math.sin(r(lng2 - lng1) / 2) ** 2)
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def test_whatsat_nearest_first_within_radius(server):
    iamat(server.port, b"near", LOC)
    for radius, bound in ((b"0.5", b"20"), (b"2", b"20"), (b"50", b"20"), (b"1", b"3")):
        _, js = split_whatsat(whatsat(server.port, b"near", radius, bound))
        dists = [haversine(34.068930, -118.445127, r["geometry"]["location"]["lat"],
                           r["geometry"]["location"]["lng"]) for r in js["results"]]
        assert len(dists) <= int(bound)
        assert dists == sorted(dists)
        assert all(d <= float(radius) + 1e-6 for d in dists)
    _, js = split_whatsat(whatsat(server.port, b"near", b"50", b"20"))
    assert len(js["results"]) == 20, "the sample has at least 20 places within 50 km"


def sample_places():
    with open(PLACES) as f:
        return [(p["geometry"]["coordinates"][1], p["geometry"]["coordinates"][0],
                 p["properties"]["place_id"]) for p in json.load(f)["features"]]


@pytest.mark.parametrize("radius", ["0.15", "0.2", "0.3", "0.42", "1", "5", "50"])
def test_whatsat_returns_exactly_the_places_within_the_radius(server, radius):
    """Every sample place within the radius, nearest first, up to the bound;
    no place outside it.  (The 20 nearest lie within 0.45 km of LOC, so
    only small radii tell a radius from twice that radius.)"""
    lat, lng = 34.068930, -118.445127
    iamat(server.port, b"exact", LOC)
    r = float(radius)
    places = sorted((haversine(lat, lng, plat, plng), pid) for plat, plng, pid in sample_places())
    assert all(abs(d - r) > 0.002 for d, _ in places), "a place lies on the radius: pick another"
    for bound in (20, 3):
        _, js = split_whatsat(whatsat(server.port, b"exact", radius.encode(), b"%d" % bound))
        want = [pid for d, pid in places if d <= r][:bound]
        assert [p["place_id"] for p in js["results"]] == want, (radius, bound)
        assert js["status"] == ("OK" if want else "ZERO_RESULTS")


def test_whatsat_zero_results(server):
    iamat(server.port, b"ocean", b"-40.0-140.0")
    first, js = split_whatsat(whatsat(server.port, b"ocean", b"50", b"20"))
    assert js == {"html_attributions": [], "results": [], "status": "ZERO_RESULTS"}


def test_whatsat_reply_arrives_in_one_piece(server):
    iamat(server.port, b"onewrite", LOC)
    with connect(server.port) as s:
        s.sendall(b"WHATSAT onewrite 50 20\n")
        time.sleep(0.3)
        data = s.recv(1 << 20)   # everything is there at once
        assert data.endswith(b"}\n\n"), len(data)


INVALID = [
    b"HELLO",
    b"iamat kiwi +34.068930-118.445127 1621464827.959498503",
    b"IAMAT kiwi +34.068930-118.445127",
    b"IAMAT kiwi +34.068930-118.445127 1 extra",
    b"IAMAT kiwi +34-118 1621464827.959498503",
    b"IAMAT kiwi 34.06-118.44 1621464827.959498503",
    b"IAMAT kiwi +34.0 1621464827.959498503",
    b"IAMAT kiwi +34.-118. 1621464827.959498503",
    b"IAMAT kiwi +90.1+0.0 1",
    b"IAMAT kiwi +0.0-180.000001 1",
    b"IAMAT kiwi +34.068930-118.445127 -1",
    b"IAMAT kiwi +34.068930-118.445127 1e9",
    b"IAMAT kiwi +34.068930-118.445127 nan",
    b"IAMAT kiwi +34.068930-118.445127 1234567890123456789",
    b"IAMAT " + b"x" * 257 + b" +1.0+1.0 1",
    b"WHATSAT nobody-knows-me 10 5",
    b"WHATSAT kiwi 0 5",
    b"WHATSAT kiwi 50.5 5",
    b"WHATSAT kiwi 10 0",
    b"WHATSAT kiwi 10 21",
    b"WHATSAT kiwi 10",
    b"AT Bona +0.1 kiwi +1.0+1.0 1",
    b"FOO\ttab  and  spaces \t",
    b"\x01\x02 control \x7f bytes",
]


@pytest.mark.parametrize("line", INVALID)
def test_invalid_line_echoed(server, line):
    assert exchange(server.port, line + b"\n") == b"? " + line + b"\n"


def test_invalid_line_crlf_is_stripped(server):
    assert exchange(server.port, b"FOO bar\r\n") == b"? FOO bar\n"


def test_empty_lines_get_no_reply(server):
    assert exchange(server.port, b"\n   \n\t\r\n\x0b\nFOO\n\n") == b"? FOO\n"


def test_whatsat_known_client_but_bad_args(server):
    iamat(server.port, b"kiwi")
    assert exchange(server.port, b"WHATSAT kiwi 51 5\n") == b"? WHATSAT kiwi 51 5\n"


def test_pipelined_commands_in_order(server):
    lines = []
    for i in range(500):
        lines.append(b"IAMAT p%d +1.%d+2.0 %d" % (i, i, i))
        lines.append(b"BAD %d" % i)
    reply = exchange(server.port, b"\n".join(lines) + b"\n")
    out = reply.split(b"\n")[:-1]
    assert len(out) == 1000
    for i in range(500):
        m = AT_RE.match(out[2 * i])
        assert m and m.group(5) == b"p%d" % i
        assert out[2 * i + 1] == b"? BAD %d" % i


def read_reply(sock):
    data = b""
    while not data.endswith(b"\n\n"):
        b = sock.recv(65536)
        assert b, f"connection closed mid-reply: {data!r}"
        data += b
    return data


def test_many_commands_one_connection_interactive(server):
    with connect(server.port) as s:
        for i in range(50):
            s.sendall(b"IAMAT inter +1.0+1.0 %d\n" % i)
            assert AT_RE.match(recv_exact_lines(s, 1)[:-1])
        s.sendall(b"WHATSAT inter 50 1\n")
        first, js = split_whatsat(read_reply(s))
        assert first.endswith(b" inter +1.0+1.0 49")


def test_half_close_serves_last_unterminated_line(server):
    reply = exchange(server.port, b"FOO\nIAMAT last +1.0+1.0 7")
    lines = reply.split(b"\n")
    assert lines[0] == b"? FOO"
    m = AT_RE.match(lines[1])
    assert m and m.group(7) == b"7" and lines[2] == b""


def test_half_close_unterminated_invalid_line(server):
    assert exchange(server.port, b"just words") == b"? just words\n"


def stored_line(port, client):
    first, _ = split_whatsat(whatsat(port, client, b"1", b"1"))
    return first


def test_older_iamat_leaves_store_unchanged(server):
    newer = iamat(server.port, b"order", b"+10.0+10.0", b"200")
    older = iamat(server.port, b"order", b"+20.0+20.0", b"100")
    assert older.endswith(b" order +20.0+20.0 100"), "the reply is always for this IAMAT"
    assert stored_line(server.port, b"order") == newer


def test_newer_iamat_replaces(server):
    iamat(server.port, b"upd", b"+10.0+10.0", b"100")
    newer = iamat(server.port, b"upd", b"+20.0+20.0", b"100.000000001")
    assert stored_line(server.port, b"upd") == newer


def test_equal_time_larger_location_wins(server):
    big = iamat(server.port, b"tie", b"+20.0+20.0", b"100.5")
    iamat(server.port, b"tie", b"+10.0+10.0", b"100.500000000")
    assert stored_line(server.port, b"tie") == big
    bigger = iamat(server.port, b"tie", b"+30.0+20.0", b"100.5000000009")  # same time past 9 digits
    assert stored_line(server.port, b"tie") == bigger


def test_same_update_again_keeps_the_larger_line(server):
    """The same IAMAT twice makes two lines (another diff); equal in time,
    location and origin, the larger line's bytes win (docs/PROTOCOL.md,
    IAMAT), on every server alike, whichever came first."""
    first = iamat(server.port, b"dup", b"+1.0+1.0", b"50")
    second = iamat(server.port, b"dup", b"+1.0+1.0", b"50")
    assert stored_line(server.port, b"dup") == max(first, second)


def test_iamat_behind_a_slow_whatsat_keeps_its_receive_time(make_server, fake):
    s = make_server(places=places_opts(fake, "google"))
    exchange(s.port, b"IAMAT kiwi %s %.9f\n" % (LOC, time.time()))
    fake.delay = 1.5
    t0 = time.time()
    reply = exchange(s.port, b"WHATSAT kiwi 10 2\nIAMAT held %s %.9f\n" % (LOC, time.time()))
    took = time.time() - t0
    assert took >= 1.4, f"the fake answered in {took:.2f} s: the test proves nothing"
    assert reply.startswith(b"AT Bailey ") and reply.count(b"\n") > 3, reply
    last = reply.rstrip(b"\n").rsplit(b"\n", 1)[1].split()
    assert last[0] == b"AT" and last[3] == b"held", reply
    diff = float(last[2])
    assert diff < 0.5, f"diff {diff} counts from when the IAMAT was processed, not read"


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
