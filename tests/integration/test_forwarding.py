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

Two rules of forwarding only show while servers disagree about the links,
which between real servers lasts a millisecond: flooding for 2 s after a
link state changed, and a link being live only when both ends say so.  Those
are tested on one real server whose three neighbours are fakes
(FakeNeighbours), as is anti-entropy's rule that a bucket is repaired only
when it differed two rounds in a row.
"""
import datetime
import re
import socket
import time

from conftest import DEFAULT_LINKS, Herd, exchange, free_port, write_config
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


class LinkLines:
    """Lines from a fake peer's link, one at a time."""

    def __init__(self, peer):
        self.peer, self.buf = peer, b""

    def next(self, timeout=5):
        deadline = time.time() + timeout
        while b"\n" not in self.buf:
            self.peer.settimeout(max(deadline - time.time(), 0.01))
            chunk = self.peer.recv(65536)       # socket.timeout past the deadline
            assert chunk, f"the link closed: {self.buf[-200:]!r}"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


def test_a_bucket_that_differs_in_one_round_only_is_not_repaired(herd, report):
    """The two-round rule of anti-entropy, line by line: a fake Bailey
    answers each of Bona's SUMs with Bona's own bucket digests but one, that
    of a bucket holding a client, a different one each round (what an
    update in flight does under load).  Bona sends no SYNC line for those;
    once the same bucket differs two rounds in a row, it sends that
    bucket's entries as SYNC lines (docs/PROTOCOL.md, "Anti-entropy")."""
    from test_herd import fake_peer
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


class FakeNeighbours:
    """Max, a real server, whose neighbours Ann, Ben and Cat are fakes (each
    sorts before Max, so it dials), so a test sees what Max sends to each
    and decides what each announces.  Links Ann-Ben, Ann-Max, Ben-Max,
    Cat-Max: in Ann's tree (breadth-first in name order) Ann's children are
    Ben and Max, and Max's only child is Cat."""
    NEIGH = {"Ann": ["Ben", "Max"], "Ben": ["Ann", "Max"], "Cat": ["Max"],
             "Max": ["Ann", "Ben", "Cat"]}

    def __init__(self, tmp_path):
        from test_herd import FakePeer
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
