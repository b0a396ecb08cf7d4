"""Forwarding and anti-entropy (docs/PROTOCOL.md, "Between servers",
"Anti-entropy"): an update reaches every server, routes around a stopped
one and heals a partition to the newest value; SUM/SUMS/SYNC repair what
forwarding missed, in two rounds, cheaply at rest and under load, and the
catch-up after a restart is the only repair.
"""
import os
import re
import socket
import threading
import time

from harness import (DEFAULT_LINKS, FLUX_S, SERVER_SECRET, connect, exchange, fake_peer, FakePeer,
                     forwarded_only, free_port, Herd, LinkLines, links_up, load_ratio,
                     recv_until_eof, send_updates, slow_repair_herd, snapshot_count, start_server,
                     stats, stop_server, totals, wait_for, with_secret, write_config)


ALL = tuple(DEFAULT_LINKS)


def relinked(h, name, marks):
    """Until 'name', restarted after marks (log_mark of every server), and
    each of its running neighbours logged the link between them up."""
    for p in DEFAULT_LINKS[name]:
        if p in h.procs:
            assert h.wait_log(p, f"link-up peer={name}", timeout=20, since=marks[p]), p
            assert h.wait_log(name, f"link-up peer={p}", timeout=20, since=marks[name]), p


def test_after_a_kill_and_restart_only_the_catch_up_is_a_repair(tmp_path, report):
    """Campbell is killed (-9) and restarted: it catches up what it missed
    (a repair, over SYNC lines, when its links come up), and then new
    updates reach all five by forwarding again, with no further repair."""
    h = slow_repair_herd(tmp_path)
    try:
        h.start()
        links_up(h, ALL)
        time.sleep(FLUX_S)
        send_updates(h, ALL, "old", per=2)
        h.kill("Campbell")
        for n in ("Bailey", "Bona", "Jaquez"):
            assert h.wait_log(n, "link-down peer=Campbell"), n
        missed = send_updates(h, ("Bailey", "Bona", "Clark", "Jaquez"), "missed", per=2)
        marks = {n: h.mark(n) for n in ALL}
        h.start("Campbell")
        relinked(h, "Campbell", marks)
        for c, (_, line) in missed.items():
            h.wait_stored(["Campbell"], c.encode(), line.encode())    # caught up
        time.sleep(FLUX_S)
        base = totals(h, ALL)
        assert base["proxyherd_link_updates_repaired_total"] >= len(missed), base
        forwarded_only(h, ALL, base, send_updates(h, ALL, "again"), report,
                       "after Campbell's kill and restart")
    finally:
        h.stop()


def test_a_bucket_that_differs_in_one_round_only_is_not_repaired(herd, report):
    """The two-round rule of anti-entropy, line by line: a fake Bailey
    answers each of Bona's SUMs with Bona's own bucket digests but one, that
    of a bucket holding a client, a different one each round (what an
    update in flight does under load).  Bona sends no SYNC line for those;
    once the same bucket differs two rounds in a row, it sends that
    bucket's entries as SYNC lines (docs/PROTOCOL.md, "Anti-entropy")."""
    herd.start("Bona")
    held = {}
    for i in range(3):
        c = b"round%d" % i
        held[c] = herd.send("Bona", b"IAMAT %s +1.0+2.0 %d.5\n" % (c, 100 + i))[:-1]
    peer = fake_peer(herd, "Bailey", "Bona")
    try:
        link = LinkLines(peer)
        assert link.next().startswith(b"AGREE ")
        # ours, then a SUM that differs: Bona answers with its digests
        peer.sendall(b"AGREE version=2 max_stored_clients=1000000 forwarding=tree\n"
                     b"SUM 1 0123456789abcdef\n")
        digests, sums, syncs = {}, 0, []
        while len(digests) < 4096 or not sums:
            line = link.next()
            if line.startswith(b"SUMS "):
                first, hexes = line.split()[1:]
                for i in range(32):
                    digests[int(first) + i] = hexes[16 * i:16 * i + 16]
            sums += line.startswith(b"SUM ")
            assert not line.startswith(b"SYNC "), line
        full = sorted(b for b, d in digests.items() if int(d, 16))
        assert len(full) >= 2, full
        x1, x2 = full[:2]
        # Bona's SUMs: the first (at link-up) answered with its own digests,
        # then x1, x2, x1 flipped (each differs once), then x1 again (twice)
        plan = [None, x1, x2, x1, x1]
        answered = 0
        while answered < len(plan) or len(syncs) == 0:
            if sums and answered < len(plan):
                flip = plan[answered]
                for first in range(0, 4096, 32):
                    hexes = b"".join(
                        b"%016x" % (int(digests[b], 16) ^ 1) if b == flip else digests[b]
                        for b in range(first, first + 32))
                    peer.sendall(b"SUMS %d %s\n" % (first, hexes))
                sums -= 1
                answered += 1
                continue
            line = link.next(timeout=5)
            sums += line.startswith(b"SUM ")
            if line.startswith(b"SYNC "):
                assert answered == len(plan), \
                    f"SYNC after a bucket differed in one round only (round {answered}): {line}"
                syncs.append(line[5:])
        deadline = time.time() + 1.5        # the rest of the bucket, if it holds more
        while time.time() < deadline:
            try:
                line = link.next(timeout=0.2)
            except socket.timeout:
                continue
            if line.startswith(b"SYNC "):
                syncs.append(line[5:])
        report(f"buckets differing once in three rounds: no SYNC line; one differing twice: "
               f"{len(syncs)} SYNC line(s)")
        assert syncs and all(s in held.values() for s in syncs), syncs
        assert len(syncs) < len(held), syncs        # that bucket only
    finally:
        peer.close()


def iamat(herd, name, client, loc=b"+34.068930-118.445127", t=None):
    t = t if t is not None else b"%.9f" % time.time()
    reply = herd.send(name, b"IAMAT %s %s %s\n" % (client, loc, t))
    assert reply.startswith(b"AT %s " % name.encode()), reply
    return reply[:-1]


def test_update_reaches_every_server(herd):
    herd.start().wait_links()
    at = iamat(herd, "Bailey", b"kiwi")
    took = herd.wait_stored(ALL, b"kiwi", at)
    print(f"an update at Bailey was visible at all five servers after {took * 1000:.1f} ms")
    # the WHATSAT reply at a far server carries the line Bailey produced
    reply = herd.send("Jaquez", b"WHATSAT kiwi 1 2\n")
    assert reply.startswith(at + b"\n{\n")


def test_flood_routes_around_a_stopped_server(herd):
    herd.start().wait_links()
    herd.stop("Bona")
    at = iamat(herd, "Bailey", b"detour")
    herd.wait_stored(["Campbell", "Jaquez", "Clark"], b"detour", at)
    # Bona comes back empty and catches up with no client sending again
    os.remove(herd.snap_path("Bona"))
    later = [iamat(herd, "Clark", b"while-down-%d" % i) for i in range(20)]
    marks = {n: herd.mark(n) for n in ALL}
    herd.start("Bona")
    herd.wait_stored(["Bona"], b"detour", at, timeout=5)
    for i, line in enumerate(later):
        herd.wait_stored(["Bona"], b"while-down-%d" % i, line, timeout=5)
    # its links came up again, and a neighbour sent it what differed (by
    # anti-entropy: the first to find the difference; the others may then
    # find none): lines of this start, not of the first one
    for n in ("Bailey", "Clark", "Campbell"):
        assert herd.wait_log(n, "link-up peer=Bona", since=marks[n]), n
    assert any(herd.wait_log(n, "catch-up-sent peer=Bona", since=marks[n], timeout=1)
               for n in ("Bailey", "Clark", "Campbell"))


def test_partition_heals_to_the_newest_value(herd):
    herd.start().wait_links()
    herd.stop("Campbell", "Bona")     # Bailey | Clark, Jaquez
    west = iamat(herd, "Bailey", b"split", b"+1.0+1.0", b"200")
    east = iamat(herd, "Jaquez", b"split", b"+2.0+2.0", b"100")
    iamat(herd, "Clark", b"split2", b"+3.0+3.0", b"300")
    east2 = herd.stored("Clark", b"split2")
    old2 = iamat(herd, "Bailey", b"split2", b"+4.0+4.0", b"250")
    assert herd.stored("Clark", b"split") == east and herd.stored("Bailey", b"split2") == old2
    herd.start("Campbell", "Bona")
    herd.wait_stored(ALL, b"split", west)
    herd.wait_stored(ALL, b"split2", east2)


def test_equal_times_converge_on_larger_location(herd):
    herd.start().wait_links()
    t = b"%d.5" % int(time.time())
    a = socket.create_connection(("127.0.0.1", herd.ports["Bailey"]))
    b = socket.create_connection(("127.0.0.1", herd.ports["Jaquez"]))
    a.sendall(b"IAMAT tie -10.0+10.0 " + t + b"\n")
    b.sendall(b"IAMAT tie +10.0+10.0 " + t + b"\n")
    ra, rb = a.recv(4096), b.recv(4096)
    a.close()
    b.close()
    winner = ra[:-1] if b"-10.0+10.0" in ra else rb[:-1]   # '-' sorts after '+'
    herd.wait_stored(ALL, b"tie", winner)


def test_catch_up_of_100k_clients(herd):
    herd.start().wait_links()
    herd.stop("Jaquez")
    os.remove(herd.snap_path("Jaquez"))
    n = 100_000
    with socket.create_connection(("127.0.0.1", herd.ports["Bailey"])) as s:
        data = b"".join(b"IAMAT bulk%d +1.%d+2.0 %d\n" % (i, i % 1000, i + 1) for i in range(n))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            got += b.count(b"\n")
    assert got == n
    start = time.time()
    herd.start("Jaquez")
    last = herd.stored("Bailey", b"bulk%d" % (n - 1))
    herd.wait_stored(["Jaquez", "Clark"], b"bulk%d" % (n - 1), last, timeout=60)
    # The stream follows hash slots, not arrival order: the last client can
    # land early.  Jaquez started empty, so its periodic snapshot (every
    # second when changed) counting n clients means the catch-up is complete.
    deadline = time.time() + 60
    while snapshot_count(herd.snap_path("Jaquez")) != n and time.time() < deadline:
        time.sleep(0.1)
    print(f"catch-up of {n} clients: {time.time() - start:.2f} s")
    # every table matches: compare the snapshots written at a graceful stop
    herd.stop()
    tables = {}
    for name in ALL:
        with open(herd.snap_path(name)) as f:
            lines = f.read().splitlines()
        assert lines[0] == f"HERDSNAP 1 {name}" and lines[-1] == f"END {len(lines) - 2}"
        tables[name] = sorted(lines[1:-1])
    assert len(tables["Bailey"]) == n
    for name in ALL:
        assert tables[name] == tables["Bailey"], name


def test_anti_entropy_at_rest_costs_one_sum_per_link_and_second(tmp_path, report):
    """An idle herd: after the LINK states at start, one SUM line per link
    direction per herd.anti_entropy_ms, and nothing else (a server's own
    state echoed back to it must not make it announce again)."""
    h = Herd(tmp_path, logging={"log_lines": "false"})
    try:
        h.start().wait_links()
        time.sleep(4)
    finally:
        h.stop()
    st = stats(h.dir, DEFAULT_LINKS)
    report(f"idle default herd, about 4.5 s: {st['ctl_lines']} LINK/SUM/SUMS lines, "
           f"{st['ctl_bytes']} bytes")
    # 12 link directions x ~5 s of SUMs, plus each server's few states sent
    # to each link at start
    assert st["ctl_lines"] <= 12 * 6 + 150, st
    # a server announces when one of its links comes up or goes down: the
    # herd's 6 links, each end, up once and maybe down at the stop
    for n in DEFAULT_LINKS:
        one = stats(h.dir, [n])
        assert one["announced"] <= 2 * len(DEFAULT_LINKS[n]), (n, one)
    assert st["link_updates_sent"] == 0, st


def test_catch_up_sends_little_when_little_differs(tmp_path, report):
    """A server back from a stop is sent what it missed, not the table."""
    h = Herd(tmp_path, logging={"log_lines": "false"})
    try:
        h.start().wait_links()
        with socket.create_connection(("127.0.0.1", h.ports["Bailey"])) as c:
            c.sendall(b"".join(b"IAMAT many%d +1.0+1.0 %d.5\n" % (i, 1000 + i)
                               for i in range(3000)))
            got = b""
            while got.count(b"\n") < 3000:
                got += c.recv(1 << 16)
        h.wait_stored(DEFAULT_LINKS, b"many2999", got.rstrip(b"\n").rsplit(b"\n", 1)[1])
        h.stop("Bona")                                   # saves its snapshot
        missed = {}
        for i in range(5):
            c = b"missed%d" % i
            missed[c] = exchange(h.ports["Clark"], b"IAMAT %s +2.0+2.0 %d.5\n" % (c, 5000 + i))[:-1]
        h.start("Bona")
        for c, line in missed.items():
            h.wait_stored(["Bona"], c, line)
        assert h.stored("Bona", b"many0") is not None
        time.sleep(1.5)                     # a SUM round more: nothing else is sent
        downs = {n: h.log(n).count("link-down peer=Bona") for n in ("Bailey", "Campbell", "Clark")}
        h.stop("Bona")
        # each neighbour's link-down line counts the AT lines it sent Bona
        sent = {}
        for n in ("Bailey", "Campbell", "Clark"):
            wait_for(lambda: h.log(n).count("link-down peer=Bona") > downs[n], 10,
                       f"{n}'s link-down")
            line = [l for l in h.log(n).splitlines() if "link-down peer=Bona" in l][-1]
            sent[n] = int(re.search(r"sent=(\d+)", line).group(1))
        # what Bona missed came by catch-up, and is counted as repaired
        # (its forward-stats line at the stop), not as forwarded
        stats = [l for l in h.log("Bona").splitlines() if "forward-stats" in l][-1]
        assert int(re.search(r"stored_repaired=(\d+)", stats).group(1)) >= 5, stats
    finally:
        h.stop()
    report(f"Bona back after 5 updates it missed, of 3005 clients: its neighbours sent it "
           f"{sent} AT lines by catch-up")
    assert all(v <= 100 for v in sent.values()), sent


def test_anti_entropy_under_load_on_a_large_table(tmp_path, report):
    """Many clients, each updated about once: most entries are older than a
    period while updates are still in flight along the trees, so digests
    differ every round.  Anti-entropy must not resend the table for that, nor
    every bucket that differs once: SYNC lines (proxyherd_link_repairs_sent_total)
    stay under 0.6 per client update (docs/PROTOCOL.md, "Anti-entropy")."""
    ratio, st = load_ratio(tmp_path / "big", "tree", clients=500000, duration=4)
    repairs = st["repairs_sent"] / st["client_updates"]
    report(f"default herd, c=20 IAMAT over 500,000 client ids for 4 s: {ratio:.3f} link AT "
           f"lines per update, {repairs:.3f} of them repairs ({st})")
    # 4.00 to 4.04 on a quiet machine, 4.36 once on a loaded one (repairs of
    # updates slowed in flight); resending the table costs 8.26 (before the
    # two-round rule), which this still catches
    assert ratio <= 5.0, st
    # SYNC lines per update: 0.008 to 0.34 over seven runs on two shared
    # cores (where counted, none stored anything: they resend updates still
    # in flight); sending every bucket that differs once (no two-round rule)
    # measured 0.71 to 1.41, which the total above let pass in four of six
    # (test_a_bucket_that_differs_in_one_round_only_is_not_repaired checks that rule line by line)
    assert repairs <= 0.6, st


def test_catch_up_with_a_small_max_line_bytes(tmp_path):
    """SUMS and LINK lines are longer than a small limits.max_line_bytes: a
    link takes them anyway (the limit bounds clients' lines), so catch-up
    works and the link stays up instead of being closed as "line too long"."""
    h = Herd(tmp_path)
    h.config = write_config(
        h.dir, {n: (h.ports[n], DEFAULT_LINKS[n]) for n in DEFAULT_LINKS},
        limits={"max_line_bytes": 64}, extra="herd:\n  snapshot_interval_s: 1\n")
    try:
        h.start("Bailey")
        assert h.send("Bailey", b"IAMAT kiwi +34.06-118.44 1.5\n").startswith(b"AT ")
        want = h.stored("Bailey", b"kiwi")
        h.start("Bona")
        h.wait_stored(["Bona"], b"kiwi", want)
        time.sleep(2.5)   # a few anti-entropy rounds with tables that agree
        for n in ("Bailey", "Bona"):
            log = h.log(n)
            assert "line-too-long" not in log, n
            assert "link-down" not in log, n
    finally:
        h.stop()


LOC = b"+34.068930-118.445127"


def fill(port, n, prefix=b"c"):
    """n clients' IAMATs on one connection; waits for every answer."""
    with connect(port) as c:
        c.sendall(b"".join(b"IAMAT %s%d %s %d\n" % (prefix, i, LOC, i + 1) for i in range(n)))
        c.shutdown(socket.SHUT_WR)
        got = recv_until_eof(c)
    assert got.count(b"\n") == n


ZERO_SUMS = b"".join(b"SUMS %d %s\n" % (b, b"0" * 512) for b in range(0, 4096, 32))


def at_fields(line):
    """The fields of an AT line on a link, a SYNC line's too; else []."""
    f = line.split()
    f = f[1:] if f[:1] == [b"SYNC"] else f
    return f if len(f) == 6 and f[0] == b"AT" else []


# what a stand-in neighbour says first (docs/PROTOCOL.md, "Settings neighbours
# must share"), then all-zero bucket digests: every bucket differs
AGREE = b"AGREE version=2 max_stored_clients=1000000 forwarding=tree\n"


def test_bucket_digests_again_mid_stream_do_not_restart_it(tmp_path):
    """Bailey (our stand-in) says, twice at once, that every bucket differs
    (all-zero "SUMS" digests).  Bona streams its table; the second round,
    when it comes while the stream runs, does not start it over: every
    client arrives exactly as many times as a catch-up was sent."""
    ports = {"Bailey": free_port(), "Bona": free_port()}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]), "Bona": (ports["Bona"], ["Bailey"])}
    s = start_server(tmp_path, "Bona", servers=servers, env=with_secret(),
              logging={"log_lines": False})
    peer = None
    try:
        n = 8000                                   # about 600 KB: several rounds of stream
        fill(s.port, n, b"old")
        peer = FakePeer(s.port, "Bailey", "Bona", SERVER_SECRET)
        assert "link-up peer=Bailey" in s.read_log(wait_for="link-up peer=Bailey")
        got = []
        reader = threading.Thread(target=lambda: got.extend(iter(
            lambda: os.read(peer.proc.stdout.fileno(), 1 << 16), b"")), daemon=True)
        reader.start()
        peer.sendall(AGREE + ZERO_SUMS + ZERO_SUMS)
        assert "catch-up-sent peer=Bailey" in s.read_log(wait_for="catch-up-sent peer=Bailey")
        time.sleep(1.0)                            # a second one, if the round came after
        sent = s.read_log().count("catch-up-sent peer=Bailey")
        peer.close()                               # its output ends: the reader stops
        reader.join(10)
        counts = {}
        for line in b"".join(got).split(b"\n"):
            f = at_fields(line)
            if f:
                counts[f[3]] = counts.get(f[3], 0) + 1
        peer = None
        assert set(counts) == {b"old%d" % i for i in range(n)}
        assert set(counts.values()) == {sent}, (sent, sorted(set(counts.values())))
    finally:
        if peer:
            peer.close()
        assert stop_server(s) == 0


def test_updates_past_the_cap_during_a_stream_follow_as_the_whole_table(tmp_path):
    """Bona streams its table to Bailey (our stand-in, s_client), who reads
    nothing for a moment.  Updates coming meanwhile find the link past its
    output cap: they are not queued, no backlog is logged (a stream is on
    its way), and once the stream is through the whole table follows, so
    Bailey gets every client, the new ones too."""
    ports = {"Bailey": free_port(), "Bona": free_port()}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]), "Bona": (ports["Bona"], ["Bailey"])}
    s = start_server(tmp_path, "Bona", servers=servers, env=with_secret(),
              limits={"max_output_bytes": 65536}, logging={"log_lines": False})
    peer = None
    try:
        # 7 MB of AT lines: more than the sockets on the way hold (the
        # sender's buffer grows to 4 MB on loopback)
        old, new, pad = 24000, 300, b"x" * 200
        fill(s.port, old, b"old" + pad)
        peer = FakePeer(s.port, "Bailey", "Bona", SERVER_SECRET)
        assert "link-up peer=Bailey" in s.read_log(wait_for="link-up peer=Bailey")
        got, gate = [], threading.Event()

        def read():
            gate.wait()
            got.extend(iter(lambda: os.read(peer.proc.stdout.fileno(), 1 << 16), b""))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            peer.sendall(AGREE + ZERO_SUMS)
            time.sleep(1.0)                        # the stream starts and backs up
            fill(s.port, new, b"new")
            time.sleep(0.2)
            assert "catch-up-sent" not in s.read_log(), "the stream was not held back"
        finally:
            gate.set()
        assert "catch-up-sent" in s.read_log(wait_for="catch-up-sent", timeout=15), s.read_log()
        time.sleep(0.5)
        peer.close()
        reader.join(10)
        peer = None
        clients = set()
        for line in b"".join(got).split(b"\n"):
            f = at_fields(line)
            if f:
                clients.add(f[3])
        assert clients == {b"old%s%d" % (pad, i) for i in range(old)} | \
            {b"new%d" % i for i in range(new)}
        # one catch-up logged, when the whole table that followed the stream
        # was through: every old client twice, each new one once
        log = s.read_log()
        assert log.count("catch-up-sent peer=Bailey") == 1, log
        assert f"catch-up-sent peer=Bailey updates={2 * old + new} clients={old + new} whole=1" \
            in log, log
        assert "link-backlog" not in log
    finally:
        if peer:
            peer.close()
        assert stop_server(s) == 0
