"""Stored data is bounded (docs/PROTOCOL.md, IAMAT field limits and "Stored
clients"): a field longer than its limit is a bad line that changes nothing,
and past limits.max_stored_clients every server of a herd keeps the same
newest clients, in memory, in its snapshot and in what it sends a neighbour
that catches up."""
import re
import time
import subprocess

from conftest import DEFAULT_LINKS, Herd, exchange, free_port, program, wait_for, write_config


ALL = tuple(DEFAULT_LINKS)
# 8 KB of leading zeros: a valid latitude once, 8 KB in every server's table
BIG_LOCATION = b"+" + b"0" * 8100 + b"1.0+1.0"


def bounded_herd(path, max_stored):
    h = Herd(path)
    with open(h.config, "a") as f:
        f.write(f"limits:\n  max_stored_clients: {max_stored}\n")
    return h


def stored_set(port, clients):
    """{client: AT line or None} from one pipelined connection of WHATSATs."""
    data = exchange(port, b"".join(b"WHATSAT %s 1 1\n" % c for c in clients))
    out, pos = {}, 0
    for c in clients:
        if data.startswith(b"? ", pos):
            end = data.index(b"\n", pos) + 1
            out[c] = None
        else:            # the AT line, the JSON, an empty line
            end = data.index(b"\n\n", pos) + 2
            out[c] = data[pos:data.index(b"\n", pos)]
        pos = end
    assert pos == len(data), data[pos:pos + 200]
    return out


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


def test_snapshot_load_respects_a_smaller_bound(make_server):
    s = make_server(limits={"max_stored_clients": 100})
    acks = [exchange(s.port, b"IAMAT snap-%d +1.0+1.0 %d\n" % (i, 1000 + i))[:-1]
            for i in range(30)]
    s.stop()
    write_config(s.dir, {s.name: (s.port, [])}, limits={"max_stored_clients": 10})
    s.start()
    got = stored_set(s.port, [b"snap-%d" % i for i in range(30)])
    assert got == {b"snap-%d" % i: (acks[i] if i >= 20 else None) for i in range(30)}
    # the file is in slot order: each of the 20 oldest was evicted or refused
    assert wait_for(lambda: "table-full" in s.read_log(), timeout=5)
    m = re.search(r"table-full .*evicted_total=(\d+) refused_total=(\d+) clients=10 "
                  r"max_stored_clients=10\n", s.read_log())
    assert m and int(m.group(1)) + int(m.group(2)) == 20, s.read_log()[-1000:]


def test_bound_out_of_range_is_refused_with_its_line(tmp_path):
    for bad in ("0", "100000001", "lots"):
        cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])},
                           limits={"max_stored_clients": bad})
        r = subprocess.run([program("herd-server"), "--check", "Alpha", "-c", cfg],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 1 and f"{cfg}:7: limits.max_stored_clients" in r.stderr, r.stderr


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
