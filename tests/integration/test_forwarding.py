"""Forwarding carries every update; anti-entropy only repairs (docs/PROTOCOL.md,
"Forwarding along trees", "Anti-entropy").

Anti-entropy repairs what forwarding misses within about two seconds, so a
test that just waits for an update everywhere cannot tell a forwarding bug
(an update sent along a tree the servers do not agree on, a dead link taken
as live) from a working tree.  These tests take repair out of the picture:
the herd runs with herd.anti_entropy_ms of 60 s, so after the links' first
catch-up no digest round happens during a test, and every server counts the
updates it stores from SYNC lines apart from forwarded ones
(proxyherd_link_updates_repaired_total).  An update that arrives arrived by
forwarding, and must do so within REACH_MS.

REACH_MS, derived: an update d hops from its origin is forwarded once per hop,
each hop one poll() round of the receiver (read the line, store it, queue it
to its children) and one write over a loopback TLS link: under a millisecond
per hop on an idle machine.  The default herd is at most 2 hops across, 3
with a middle server stopped (a chain of four).  500 ms leaves room for a
machine shared with other work and is still half an anti-entropy period at
the default 1000 ms: a repair needs two digest rounds, so an arrival within
REACH_MS at the default setting could not be a repair either.  Arrival times
are read from the servers' own logs (the origin's `recv` of the IAMAT, each
other server's `update from=...`), so polling does not count.
"""
import datetime
import re
import time

from conftest import DEFAULT_LINKS, Herd, exchange
from test_metrics import read_metrics, value, wait_metrics

ALL = tuple(DEFAULT_LINKS)
REACH_MS = 500      # see the docstring
FLUX_S = 2.5        # trees fall back to flooding for 2 s after a link state changed
SETTLE_S = 5        # an arrival later than this would be a bug well past REACH_MS
COUNTERS = ("proxyherd_client_updates_total", "proxyherd_link_updates_sent_total",
            "proxyherd_link_updates_received_total", "proxyherd_link_updates_stored_total",
            "proxyherd_link_updates_repaired_total", "proxyherd_link_repairs_sent_total",
            "proxyherd_link_digest_mismatches_total")
RECV = re.compile(r'^(\S+) INFO recv id=\d+ "IAMAT (\S+) ', re.M)
UPDATE = re.compile(r'^(\S+) INFO update from=(\S+) "(AT \S+ \S+ (\S+) .*)"$', re.M)


def slow_repair_herd(tmp_path):
    """The default herd with anti-entropy every 60 s: during a test, only a
    link coming up triggers a digest round."""
    h = Herd(tmp_path)
    with open(h.config, "a") as f:          # herd: is the config's last section
        f.write("  anti_entropy_ms: 60000\n")
    return h


def ms(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def totals(h, names):
    """Each counter of COUNTERS summed over the servers' metrics files."""
    got = {n: read_metrics(h.dir, n) for n in names}
    return {k: sum(value(got[n], k) for n in names) for k in COUNTERS}


def links_up(h, names):
    """Until every link among 'names' shows up in both ends' metrics."""
    def up(got):
        return all(value(got[n], "proxyherd_link_up", peer=p) == 1
                   for n in names for p in DEFAULT_LINKS[n] if p in names)
    wait_metrics(h.dir, names, up, timeout=20)


def relinked(h, name, marks):
    """Until 'name', restarted after marks (log_mark of every server), and
    each of its running neighbours logged the link between them up."""
    for p in DEFAULT_LINKS[name]:
        if p in h.procs:
            assert h.wait_log(p, f"link-up peer={name}", timeout=20, since=marks[p]), p
            assert h.wait_log(name, f"link-up peer={p}", timeout=20, since=marks[name]), p


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
        base = forwarded_only(h, ALL, totals(h, ALL), send_updates(h, ALL, "before", per=2),
                              report, "before the stop")
        h.stop("Campbell")
        for n in ("Bailey", "Bona", "Jaquez"):
            assert h.wait_log(n, "link-down peer=Campbell"), n
        time.sleep(FLUX_S)
        forwarded_only(h, rest, totals(h, rest), send_updates(h, rest, "without"), report,
                       "Campbell stopped")
    finally:
        h.stop()


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
