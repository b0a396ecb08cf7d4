"""Forwarding along trees (docs/PROTOCOL.md, "Forwarding along trees"): the
LINK states that build them, at most N-1 sends per update in a settled
herd, flooding while link states change, trees that follow a stop, a death
and a return, and big random herds that converge after cuts and kills.
"""
import os
import random
import re
import signal
import socket
import subprocess
import time

from harness import (DEFAULT_LINKS, FLUX_S, exchange, FakePeer, forwarded_only, free_port, Herd,
                     LinkLines, links_up, load_ratio, program, read_log, send_updates,
                     slow_repair_herd, stats, totals, wait_for, wait_listening, write_config)


ALL = tuple(DEFAULT_LINKS)


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
        assert st["link_updates_sent"] == 40 * (n - 1), st
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
