"""Forwarding and anti-entropy (docs/PROTOCOL.md, "Between servers",
"Forwarding along trees", "Anti-entropy"): an update reaches every server,
routes around a stopped one and heals a partition to the newest value; the
LINK states that build the trees, at most N-1 sends per update in a settled
herd, flooding while link states change, trees that follow a stop, a death
and a return, big random herds that converge after cuts and kills; and
SUM/SUMS/SYNC repairing what forwarding missed, in two rounds, cheaply at
rest and under load, the catch-up after a restart being the only repair.
"""
import datetime
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time

from harness import (ALL, DEFAULT_LINKS, SERVER_SECRET, exchange, fake_peer, FakePeer, fill_clients,
                     free_port, Herd, herd_iamat, LinkLines, program, read_log, read_metrics,
                     snapshot_count, start_server, stop_server, value, wait_for, wait_listening,
                     wait_metrics, with_secret, write_config)


def slow_repair_herd(tmp_path):
    """The default herd with anti-entropy every 60 s: during a test, only a
    link coming up triggers a digest round."""
    h = Herd(tmp_path)
    with open(h.config, "a") as f:          # herd: is the config's last section
        f.write("  anti_entropy_ms: 60000\n")
    return h


def links_up(h, names):
    """Until every link among 'names' shows up in both ends' metrics."""
    def up(got):
        return all(value(got[n], "proxyherd_link_up", peer=p) == 1
                   for n in names for p in DEFAULT_LINKS[n] if p in names)
    wait_metrics(h.dir, names, up, timeout=20)


FLUX_S = 2.5        # trees fall back to flooding for 2 s after a link state changed


def send_updates(h, origins, tag, per=4):
    """'per' new clients at each origin: {client: (origin, stored AT line)}."""
    sent = {}
    for i in range(per):
        for o in origins:
            c = b"%s-%s-%d" % (tag.encode(), o.encode(), i)
            reply = exchange(h.ports[o], b"IAMAT %s +1.0+2.0 %.9f\n" % (c, time.time()))
            assert reply.startswith(b"AT %s " % o.encode()), reply
            sent[c.decode()] = (o, reply[:-1].decode())
    return sent


COUNTERS = ("proxyherd_client_updates_total", "proxyherd_link_updates_sent_total",
            "proxyherd_link_updates_received_total", "proxyherd_link_updates_stored_total",
            "proxyherd_link_updates_repaired_total", "proxyherd_link_repairs_sent_total",
            "proxyherd_link_digest_mismatches_total")


def totals(h, names):
    """Each counter of COUNTERS summed over the servers' metrics files."""
    got = {n: read_metrics(h.dir, n) for n in names}
    return {k: sum(value(got[n], k) for n in names) for k in COUNTERS}


SETTLE_S = 5        # an arrival later than this would be a bug well past REACH_MS


def ms(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


RECV = re.compile(r'^(\S+) INFO recv id=\d+ "IAMAT (\S+) ', re.M)


UPDATE = re.compile(r'^(\S+) INFO update from=(\S+) "(AT \S+ \S+ (\S+) .*)"$', re.M)


def arrivals(h, names, sent):
    """Milliseconds from each update's IAMAT at its origin to its store at
    every other server of 'names', read from their logs once all are there:
    {(client, server): ms}."""
    deadline = time.time() + SETTLE_S
    while True:
        logs = {n: h.log(n) for n in names}
        recv = {n: {c: ms(t) for t, c in RECV.findall(logs[n])} for n in names}
        got = {n: {c: (ms(t), line) for t, _, line, c in UPDATE.findall(logs[n])}
               for n in names}
        missing = [(c, n) for c, (o, _) in sent.items() for n in names
                   if n != o and c not in got[n]]
        if not missing and all(c in recv[o] for c, (o, _) in sent.items()):
            break
        assert time.time() < deadline, \
            f"never forwarded (anti-entropy is 60 s away): {sorted(missing)[:10]}"
        time.sleep(0.1)
    delays = {}
    for c, (o, line) in sent.items():
        for n in names:
            if n != o:
                assert got[n][c][1] == line, (n, got[n][c], line)
                delays[(c, n)] = got[n][c][0] - recv[o][c]
    return delays


REACH_MS = 500      # see the docstring


def forwarded_only(h, names, base, sent, report, what):
    """Every update of 'sent' reached every server of 'names' by forwarding
    within REACH_MS, with len(names) - 1 link AT lines each and no repair
    anywhere; returns the counters after."""
    delays = arrivals(h, names, sent)
    u, n = len(sent), len(names)

    def done(got):
        t = {k: sum(value(got[m], k) for m in names) for k in COUNTERS}
        return (t["proxyherd_client_updates_total"] - base["proxyherd_client_updates_total"] == u
                and t["proxyherd_link_updates_stored_total"]
                - base["proxyherd_link_updates_stored_total"] == (n - 1) * u
                and t["proxyherd_link_updates_received_total"]
                - base["proxyherd_link_updates_received_total"]
                == t["proxyherd_link_updates_sent_total"]
                - base["proxyherd_link_updates_sent_total"])
    wait_metrics(h.dir, names, done)
    time.sleep(1.2)                 # one more rewrite of every file: nothing more came
    after = totals(h, names)
    delta = {k: after[k] - base[k] for k in COUNTERS}
    worst = max(delays.values())
    report(f"{what}: {u} updates at {n} servers, each everywhere within {worst:.0f} ms "
           f"(allowed {REACH_MS}); {delta['proxyherd_link_updates_sent_total']} link AT lines "
           f"({n - 1} per update), repaired {delta['proxyherd_link_updates_repaired_total']}")
    assert delta["proxyherd_link_updates_repaired_total"] == 0, delta
    assert delta["proxyherd_link_repairs_sent_total"] == 0, delta
    assert delta["proxyherd_link_digest_mismatches_total"] == 0, delta
    assert delta["proxyherd_link_updates_sent_total"] == (n - 1) * u, delta
    late = {k: round(v) for k, v in delays.items() if v > REACH_MS}
    assert not late, f"later than {REACH_MS} ms: {late}"
    return after


def stats(folder, names):
    """Sums of the last forward-stats line of each server's log."""
    total = {"client_updates": 0, "link_updates_sent": 0, "tree": 0, "flood": 0,
             "ctl_lines": 0, "ctl_bytes": 0, "announced": 0, "repairs_sent": 0}
    for n in names:
        lines = [l for l in read_log(folder, n).splitlines() if "forward-stats" in l]
        assert lines, f"{n} logged no forward-stats"
        for k in total:
            total[k] += int(re.search(r"\b%s=(\d+)" % k, lines[-1]).group(1))
    return total


def load_ratio(tmp_path, mode, clients=2000, duration=2):
    """The default herd under benchmark load: link AT lines per client update."""
    tmp_path.mkdir()
    h = Herd(tmp_path, logging={"log_lines": "false"})
    with open(h.config, "a") as f:
        f.write(f"  forwarding: {mode}\n")
    try:
        h.start().wait_links()
        time.sleep(FLUX_S)
        r = subprocess.run([program("herd-benchmark"), "-c", h.config, "--quiet",
                            "--concurrency", "20", "--duration", str(duration), "--warmup", "0",
                            "--mix", "iamat=100,whatsat=0", "--clients", str(clients)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        time.sleep(1.5)                   # the metrics files, rewritten after the load
        prom = {n: read_metrics(h.dir, n) for n in DEFAULT_LINKS}
    finally:
        h.stop()
    st = stats(h.dir, DEFAULT_LINKS)
    assert st["client_updates"] > 1000, st
    updates = sum(value(prom[n], "proxyherd_client_updates_total") for n in DEFAULT_LINKS)
    sent = sum(value(prom[n], "proxyherd_link_updates_sent_total") for n in DEFAULT_LINKS)
    assert updates == st["client_updates"], (updates, st)   # the same counters
    st["metrics_ratio"] = round(sent / updates, 3)
    st["repairs_sent"] = sum(value(prom[n], "proxyherd_link_repairs_sent_total")
                             for n in DEFAULT_LINKS)
    st["repaired"] = sum(value(prom[n], "proxyherd_link_updates_repaired_total")
                         for n in DEFAULT_LINKS)
    st["digest_mismatches"] = sum(value(prom[n], "proxyherd_link_digest_mismatches_total")
                                  for n in DEFAULT_LINKS)
    return sent / updates, st


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


def digests_asked(peer):
    """Our fake end of a link to Bona: its AGREE read, ours sent, then a SUM
    that differs, which Bona answers with its 4096 bucket digests (SUMS
    lines, 32 a line) and its own SUM.  Returns the link's reader, each SUMS
    line as (first bucket, its hex digits), the SUM lines and every other
    line, in order, once SUMS lines for all 4096 buckets and a SUM came."""
    link = LinkLines(peer)
    assert link.next().startswith(b"AGREE ")
    peer.sendall(AGREE + b"SUM 1 0123456789abcdef\n")
    sums, firsts, sum_lines, other = [], set(), [], []
    while len(firsts) < 4096 // 32 or not sum_lines:
        line = link.next()
        if line.startswith(b"SUMS "):
            first, hexes = line.split()[1:]
            sums.append((int(first), hexes))
            firsts.add(int(first))
        elif line.startswith(b"SUM "):
            sum_lines.append(line)
        else:
            other.append(line)
    return link, sums, sum_lines, other


def test_bucket_digests_add_up_to_the_sum(herd):
    """Bona's SUMS lines carry its 4096 bucket digests as 16 lowercase hex
    digits each, in the form its SUM line carries the root: the digests
    XOR to the root (each is the XOR of its bucket's entries' hashes), so a
    digest written any other way, which a neighbour would read as a
    difference, fails here."""
    herd.start("Bona")
    for i in range(40):
        herd.send("Bona", b"IAMAT digest%d +1.0+2.0 %d.5\n" % (i, 100 + i))
    peer = fake_peer(herd, "Bailey", "Bona")
    try:
        _, sums, sum_lines, _ = digests_asked(peer)
        digests = {}
        for first, hexes in sums:
            assert len(hexes) == 32 * 16 and hexes == hexes.lower(), (first, hexes)
            for i in range(32):
                digests[first + i] = int(hexes[16 * i:16 * i + 16], 16)
        for line in sum_lines:
            assert line.split()[1] == b"40", line
        root = sum_lines[-1].split()[2]
        xor = 0
        for d in digests.values():
            xor ^= d
        assert b"%016x" % xor == root, (xor, root)
        assert sum(1 for d in digests.values() if d) >= 20     # the clients' buckets
    finally:
        peer.close()


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
        link, lines, sum_lines, other = digests_asked(peer)
        assert not [line for line in other if line.startswith(b"SYNC ")], other
        digests = {first + i: hexes[16 * i:16 * i + 16]
                   for first, hexes in lines for i in range(32)}
        sums, syncs = len(sum_lines), []
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


def test_update_reaches_every_server(herd):
    herd.start().wait_links()
    at = herd_iamat(herd, "Bailey", b"kiwi")
    took = herd.wait_stored(ALL, b"kiwi", at)
    print(f"an update at Bailey was visible at all five servers after {took * 1000:.1f} ms")
    # the WHATSAT reply at a far server carries the line Bailey produced
    reply = herd.send("Jaquez", b"WHATSAT kiwi 1 2\n")
    assert reply.startswith(at + b"\n{\n")


def test_flood_routes_around_a_stopped_server(herd):
    herd.start().wait_links()
    herd.stop("Bona")
    at = herd_iamat(herd, "Bailey", b"detour")
    herd.wait_stored(["Campbell", "Jaquez", "Clark"], b"detour", at)
    # Bona comes back empty and catches up with no client sending again
    os.remove(herd.snap_path("Bona"))
    later = [herd_iamat(herd, "Clark", b"while-down-%d" % i) for i in range(20)]
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
    west = herd_iamat(herd, "Bailey", b"split", b"+1.0+1.0", b"200")
    east = herd_iamat(herd, "Jaquez", b"split", b"+2.0+2.0", b"100")
    herd_iamat(herd, "Clark", b"split2", b"+3.0+3.0", b"300")
    east2 = herd.stored("Clark", b"split2")
    old2 = herd_iamat(herd, "Bailey", b"split2", b"+4.0+4.0", b"250")
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
    # cores, 0.63 once with both cores loaded by stress-ng (where counted,
    # none stored anything: they resend updates still in flight, and load
    # keeps them in flight longer); sending every bucket that differs once
    # (no two-round rule) measured 0.71 to 1.41.  Load and that defect
    # overlap, so this bound only says anti-entropy does not resend every
    # update: test_a_bucket_that_differs_in_one_round_only_is_not_repaired
    # checks the two-round rule line by line, without load
    assert repairs <= 1.0, st


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
        fill_clients(s.port, n, b"old")
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
        fill_clients(s.port, old, b"old" + pad)
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
            fill_clients(s.port, new, b"new")
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


# ------------------------------------------------------------------ trees

def test_settled_herd_forwards_every_update_without_repair(tmp_path, report):
    """Every link up and none changed for longer than the flux window: an
    update from any server reaches the four others along its origin's tree,
    N-1 = 4 link AT lines, within REACH_MS, and nothing is repaired."""
    h = slow_repair_herd(tmp_path)
    try:
        h.start()
        links_up(h, ALL)
        time.sleep(FLUX_S)                  # the trees are in use (flux window over)
        base = totals(h, ALL)
        assert base["proxyherd_link_updates_repaired_total"] == 0, base
        forwarded_only(h, ALL, base, send_updates(h, ALL, "settled"), report, "settled herd")
    finally:
        h.stop()


def test_a_stopped_middle_server_leaves_trees_that_reach_everyone(tmp_path, report):
    """Campbell stops (SIGTERM): its neighbours see the link close at once
    and announce; FLUX_S later (the 2 s flux window and a margin) the four
    others, now a chain Bailey-Bona-Clark-Jaquez, forward every update along
    trees of the links that are really live: 3 lines each, no repair."""
    h = slow_repair_herd(tmp_path)
    rest = ("Bailey", "Bona", "Clark", "Jaquez")
    try:
        h.start()
        links_up(h, ALL)
        time.sleep(FLUX_S)
        forwarded_only(h, ALL, totals(h, ALL), send_updates(h, ALL, "before", per=2),
                       report, "before the stop")
        h.stop("Campbell")
        for n in ("Bailey", "Bona", "Jaquez"):
            assert h.wait_log(n, "link-down peer=Campbell"), n
        time.sleep(FLUX_S)
        forwarded_only(h, rest, totals(h, rest), send_updates(h, rest, "without"), report,
                       "Campbell stopped")
    finally:
        h.stop()


class FakeNeighbours:
    """Max, a real server, whose neighbours Ann, Ben and Cat are fakes (each
    sorts before Max, so it dials), so a test sees what Max sends to each
    and decides what each announces.  Links Ann-Ben, Ann-Max, Ben-Max,
    Cat-Max: in Ann's tree (breadth-first in name order) Ann's children are
    Ben and Max, and Max's only child is Cat."""
    NEIGH = {"Ann": ["Ben", "Max"], "Ben": ["Ann", "Max"], "Cat": ["Max"],
             "Max": ["Ann", "Ben", "Cat"]}

    def __init__(self, tmp_path):
        self.h = Herd(tmp_path)
        self.h.ports = {n: free_port() for n in self.NEIGH}
        self.h.config = write_config(self.h.dir,
                                     {n: (self.h.ports[n], self.NEIGH[n]) for n in self.NEIGH},
                                     extra="herd:\n  anti_entropy_ms: 60000\n")
        self.fakes = {}
        try:
            self.h.start("Max")
            for n in ("Ann", "Ben", "Cat"):
                self.fakes[n] = FakePeer(self.h.ports["Max"], n, "Max", self.h.secret)
            self.link = {n: LinkLines(p) for n, p in self.fakes.items()}
            for n in self.fakes:
                self.fakes[n].sendall(b"AGREE version=2 max_stored_clients=1000000 "
                                      b"forwarding=tree\n")
                self.announce(n, 1, self.NEIGH[n])
            self.until("Cat", b"LINK Ann 1 ", b"LINK Ben 1 ")   # Max knows every state...
        except BaseException:
            self.close()
            raise
        time.sleep(FLUX_S)                     # ...and no link changed for 2 s

    def announce(self, n, seq, up):
        self.fakes[n].sendall(b"LINK %s %d %s\n" % (n.encode(), seq, ",".join(up).encode()))

    def until(self, n, *wants, timeout=3):
        """Lines Max sends n from here, up to the one where each of 'wants'
        has been in a line."""
        seen = []
        while not all(any(w in line for line in seen) for w in wants):
            try:
                seen.append(self.link[n].next(timeout=timeout))
            except socket.timeout:
                raise AssertionError(f"Max sent {n} no {wants!r}, only {seen}") from None
        return seen

    def update(self, client, origin="Ann"):
        self.fakes[origin].sendall(b"AT %s +0.100000000 %s +1.0+2.0 %.9f\n"
                                   % (origin.encode(), client, time.time()))

    def close(self):
        for p in self.fakes.values():
            p.close()
        self.h.stop()


def test_updates_are_flooded_while_link_states_change(tmp_path, report):
    """A server floods for 2 s after it learns any link state change, and
    uses its trees again once they hold still (docs/PROTOCOL.md, "Forwarding
    along trees"): the other servers may not know the change yet, so their trees
    and ours may differ."""
    f = FakeNeighbours(tmp_path)
    try:
        f.update(b"tree1")
        f.until("Cat", b" tree1 ")             # Max's child in Ann's tree
        f.announce("Ben", 2, ["Ann", "Max"])   # a newer state: a change
        f.until("Cat", b"LINK Ben 2 ")         # Max has it, and floods it on
        f.update(b"flux1")
        got = f.until("Ben", b" flux1 ")       # flooded: to Ben as well
        assert not any(b" tree1 " in l for l in got), got
        f.until("Cat", b" flux1 ")
        time.sleep(FLUX_S)
        f.update(b"tree2")
        f.update(b"back", origin="Cat")        # Cat's tree: Max sends to Ann and Ben
        got = f.until("Ben", b" back ")
        assert not any(b" tree2 " in l for l in got), f"not a tree again: {got}"
        f.until("Cat", b" tree2 ")
        report("Max forwarded Ann's update to its tree child only, flooded it within 2 s "
               "of a link state change, and used the tree again after")
    finally:
        f.close()


def test_a_link_only_one_end_says_is_up_is_not_in_the_trees(tmp_path, report):
    """A link is live only when both ends say it is up (docs/PROTOCOL.md,
    "Forwarding along trees"): while Ben says its link to Ann is down and
    Ann still says up (or the other way round), Ann's tree reaches Ben
    through Max, and Max must send Ann's updates to Ben."""
    f = FakeNeighbours(tmp_path)
    try:
        for seq, says_down, still_up in ((2, "Ben", "Ann"), (3, "Ann", "Ben")):
            f.announce(says_down, seq, ["Max"])
            f.announce(still_up, seq, [says_down, "Max"])
            f.until("Cat", b"LINK %s %d " % (says_down.encode(), seq),
                    b"LINK %s %d " % (still_up.encode(), seq))
            time.sleep(FLUX_S)                 # trees, not flooding
            c = b"half-%s" % says_down.encode()
            f.update(c)
            f.until("Ben", b" %s " % c)        # Max's child now
            f.until("Cat", b" %s " % c)
        report("with the link Ann-Ben up at one end only, Max sent Ann's updates to Ben")
    finally:
        f.close()


def test_default_herd_under_load_sends_at_most_4_2_per_update(tmp_path, report):
    tree, st = load_ratio(tmp_path / "tree", "tree")
    flood, fst = load_ratio(tmp_path / "flood", "flood")
    report(f"default herd, c=20 IAMAT: {tree:.3f} link AT lines per stored client update "
           f"with trees ({st}), {flood:.3f} with flooding ({fst})")
    assert tree <= 4.2
    assert flood > 6           # the same count sees flooding's duplicates


def test_trees_follow_a_death_and_a_return(tmp_path, report):
    """Bailey stops: the four others form a ring (Bona, Clark, Jaquez,
    Campbell), where flooding costs 5 messages per update and a tree 3.
    Bailey comes back: 4 again.  Bailey's catch-up (anti-entropy, counted in
    its neighbours' catch-up-sent lines) is counted apart."""
    h = Herd(tmp_path, logging={"log_lines": "false"})
    try:
        h.start().wait_links()
        h.stop("Bailey")
        time.sleep(FLUX_S)
        want = {}
        for i in range(50):
            c = b"ring%d" % i
            want[c] = exchange(h.ports["Bona"], b"IAMAT %s +1.0+1.0 %d.5\n" % (c, 100 + i))[:-1]
        for c, line in want.items():
            h.wait_stored(["Bona", "Campbell", "Clark", "Jaquez"], c, line)
        h.start("Bailey")
        wait_for(lambda: h.log("Bailey").count("link-up") >= 4, 10, "Bailey's links again")
        for c, line in want.items():
            h.wait_stored(["Bailey"], c, line)          # caught up
        time.sleep(FLUX_S)
        for i in range(50):
            c = b"back%d" % i
            want[c] = exchange(h.ports["Clark"], b"IAMAT %s +1.0+1.0 %d.5\n" % (c, 200 + i))[:-1]
        for c, line in want.items():
            h.wait_stored(DEFAULT_LINKS, c, line)
    finally:
        h.stop()
    others = ("Bona", "Campbell", "Clark", "Jaquez")
    st = stats(h.dir, others)
    bailey = stats(h.dir, ["Bailey"])    # its last line: its second life
    catch_up = sum(int(m) for n in ("Bona", "Campbell")
                   for m in re.findall(r"catch-up-sent peer=Bailey updates=(\d+)", h.log(n)))
    forwarded = st["link_updates_sent"] - catch_up
    report(f"50 updates without Bailey, 50 after its return: the other four forwarded "
           f"{forwarded} AT lines (trees: 50 x 3 + 50 x 4 = 350; flooding: 50 x 5 + 50 x 8 "
           f"= 650) and sent {catch_up} to catch Bailey up; Bailey, flooding what it "
           f"caught up while its links were in flux, sent {bailey['link_updates_sent']}")
    assert st["client_updates"] == 100, st
    assert forwarded == 350, (forwarded, catch_up, st)
    assert catch_up <= 2 * 50, catch_up
    assert bailey["link_updates_sent"] <= 50, bailey     # to its other neighbour only


def random_topology(n, seed):
    """A connected graph on n nodes, every degree from 3 to 6."""
    rnd = random.Random(seed)
    adj = {i: set() for i in range(n)}
    for i in range(1, n):                                   # a random spanning tree
        j = rnd.choice([k for k in range(i) if len(adj[k]) < 5])
        adj[i].add(j)
        adj[j].add(i)
    for i in range(n):
        while len(adj[i]) < 3:
            j = rnd.choice([k for k in range(n) if k != i and k not in adj[i] and len(adj[k]) < 6])
            adj[i].add(j)
            adj[j].add(i)
    assert all(3 <= len(a) <= 6 for a in adj.values())
    return adj


class BigHerd:
    def __init__(self, path, n, seed):
        self.dir = str(path)
        self.names = ["S%02d" % i for i in range(n)]
        adj = random_topology(n, seed)
        self.neigh = {self.names[i]: sorted(self.names[j] for j in adj[i]) for i in range(n)}
        self.links = sum(len(a) for a in adj.values()) // 2
        self.ports = {name: free_port() for name in self.names}
        self.config = write_config(self.dir, {m: (self.ports[m], self.neigh[m]) for m in self.names},
                                   logging={"log_lines": "false"},
                                   extra="herd:\n  snapshot_interval_s: 1\n  anti_entropy_ms: 500\n")
        self.procs = {}

    def start(self, *names):
        env = dict(os.environ, HERD_SECRET="test-secret-0123456789")
        for m in names or self.names:
            err = open(os.path.join(self.dir, f"{m}.stderr"), "ab")
            self.procs[m] = subprocess.Popen([program("herd-server"), m, "-c", self.config],
                                             stdout=subprocess.DEVNULL, stderr=err, env=env)
            err.close()
        for m in names or self.names:
            assert wait_listening(self.ports[m], self.procs[m], timeout=30), f"{m} did not start"

    def kill(self, m):
        p = self.procs.pop(m)
        p.kill()
        p.wait()

    def stop_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        bad = []
        for m, p in self.procs.items():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            err = open(os.path.join(self.dir, f"{m}.stderr"), errors="replace").read()
            if p.returncode != 0 or "Sanitizer" in err or "runtime error" in err:
                bad.append(f"{m} exited {p.returncode}: {err[-1000:]}")
        self.procs = {}
        assert not bad, bad

    def links_up(self):
        return all(read_log(self.dir, m).count("link-up") >= len(self.neigh[m]) for m in self.names)

    def iamat(self, m, client, t):
        reply = exchange(self.ports[m], b"IAMAT %s +1.0+2.0 %s\n" % (client, t))
        assert reply.startswith(b"AT %s " % m.encode()), reply
        return reply[:-1]

    def stored(self, m, client):
        reply = exchange(self.ports[m], b"WHATSAT %s 1 1\n" % client)
        return None if reply.startswith(b"? ") else reply.split(b"\n", 1)[0]

    def converged(self, want):
        """Every server holds want[client] for every client."""
        for m in self.names:
            for c, line in want.items():
                if self.stored(m, c) != line:
                    return False
        return True


def test_big_herd_n_minus_1_per_update_and_converges_after_cuts_and_kills(tmp_path, report):
    n = 32
    h = BigHerd(tmp_path, n, seed=19)
    rnd = random.Random(19)
    try:
        h.start()
        wait_for(h.links_up, 60, "every link up")
        time.sleep(FLUX_S)
        # quiet herd: each update crosses exactly N-1 links
        want = {}
        for i in range(40):
            c = b"big%d" % i
            want[c] = h.iamat(rnd.choice(h.names), c, b"%d.5" % (1000 + i))
        t0 = time.time()
        wait_for(lambda: h.converged(want), 60, "the first updates everywhere")
        took = time.time() - t0
        h.stop_all()
        st = stats(h.dir, h.names)
        per = st["link_updates_sent"] / st["client_updates"]
        report(f"{n} servers, {h.links} links: {per:.2f} link AT lines per update "
               f"(N-1 = {n - 1}, flooding would cost {2 * h.links - (n - 1)}); {st}; "
               f"all held after {took:.2f} s")
        assert st["client_updates"] == 40
        # forwarded along the trees: exactly N-1 each.  Anti-entropy may
        # resend an update still on its way when a loaded machine makes it
        # take more than a period (SYNC lines, counted apart): seen 2 and 5
        # of 1240 with both cores busy; never more than one per update.
        assert st["link_updates_sent"] - st["repairs_sent"] == 40 * (n - 1), st
        assert st["repairs_sent"] <= 40, st
        assert st["flood"] == 0, st

        # now cut links and kill servers under updates: kill -9 a few servers
        # (every link of each goes down), update elsewhere, restart them,
        # again; then every server must end with the newest value of each
        h.start()
        wait_for(h.links_up, 60, "every link up again")
        seq = 2000
        for rnd_round in range(3):
            victims = rnd.sample(h.names, 4)
            for v in victims:
                h.kill(v)
            for i in range(40):
                c = b"big%d" % rnd.randrange(60)
                m = rnd.choice([x for x in h.names if x in h.procs])
                seq += 1
                want[c] = h.iamat(m, c, b"%d.5" % seq)
            h.start(*victims)
            for i in range(20):                       # while links come back
                c = b"big%d" % rnd.randrange(60)
                seq += 1
                want[c] = h.iamat(rnd.choice(h.names), c, b"%d.5" % seq)
        t0 = time.time()
        wait_for(lambda: h.converged(want), 90, "convergence after cuts and kills")
        took = time.time() - t0
        report(f"{n} servers: after 3 rounds of 4 kills and restarts, all {len(want)} clients "
               f"held everywhere {took:.2f} s after the last update")
    finally:
        h.stop_all()


def test_an_update_reaches_every_server_before_anti_entropy_could(herd):
    """Forwarding, not anti-entropy, carries a new update: it is everywhere
    well within a second, while a repair needs two digest rounds (a bucket
    must differ twice, herd.anti_entropy_ms apart)."""
    herd.start().wait_links()
    time.sleep(FLUX_S)                  # link states settled: the trees are in use
    at = exchange(herd.ports["Bailey"], b"IAMAT swift +1.0+1.0 %.9f\n" % time.time())[:-1]
    herd.wait_stored(DEFAULT_LINKS, b"swift", at, timeout=0.8)
