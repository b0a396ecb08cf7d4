"""Forwarding along trees of live links, with anti-entropy (docs/PROTOCOL.md,
"Between servers").

The link messages are counted by the servers themselves, in their metrics
files (proxyherd_client_updates_total, proxyherd_link_updates_sent_total) and
in the `forward-stats` line each logs when it stops, with the same
`client_updates` (client updates it stored) and `link_updates_sent` (AT lines
it put on links, anti-entropy included) beside the tree and flood counts.
Their ratio over the herd is the link messages per update.
"""
import os
import random
import re
import signal
import socket
import subprocess
import time

from conftest import DEFAULT_LINKS, Herd, exchange, free_port, program, read_log, \
    wait_listening, write_config
from test_metrics import read_metrics, value

FLUX_S = 2.5   # a server floods for 2 s after any link state changed (forward.c)


def stats(folder, names):
    """Sums of the last forward-stats line of each server's log."""
    total = {"client_updates": 0, "link_updates_sent": 0, "tree": 0, "flood": 0,
             "ctl_lines": 0, "ctl_bytes": 0, "announced": 0}
    for n in names:
        lines = [l for l in read_log(folder, n).splitlines() if "forward-stats" in l]
        assert lines, f"{n} logged no forward-stats"
        for k in total:
            total[k] += int(re.search(r"\b%s=(\d+)" % k, lines[-1]).group(1))
    return total


def wait_until(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


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
        wait_until(lambda: h.log("Bailey").count("link-up") >= 4, 10, "Bailey's links again")
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
            wait_until(lambda: h.log(n).count("link-down peer=Bona") > downs[n], 10,
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


# ------------------------------------------------------------ a big herd

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
        wait_until(h.links_up, 60, "every link up")
        time.sleep(FLUX_S)
        # quiet herd: each update crosses exactly N-1 links
        want = {}
        for i in range(40):
            c = b"big%d" % i
            want[c] = h.iamat(rnd.choice(h.names), c, b"%d.5" % (1000 + i))
        t0 = time.time()
        wait_until(lambda: h.converged(want), 60, "the first updates everywhere")
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
        wait_until(h.links_up, 60, "every link up again")
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
        wait_until(lambda: h.converged(want), 90, "convergence after cuts and kills")
        took = time.time() - t0
        report(f"{n} servers: after 3 rounds of 4 kills and restarts, all {len(want)} clients "
               f"held everywhere {took:.2f} s after the last update")
    finally:
        h.stop_all()


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
    # (test_forwarding.py tests that rule line by line, without load)
    assert repairs <= 0.6, st


def read_lines(sock, want, timeout=5):
    """Lines from a link until want(lines) holds; returns them."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = data.split(b"\n")[:-1]
        if want(lines):
            return lines
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    raise AssertionError(f"link lines so far: {data[-2000:]!r}")


def test_link_messages_as_documented_and_bad_ones_ignored(herd):
    """A fake Bailey links to Bona: Bona's first line is its AGREE, then it
    sends its LINK state and a SUM (docs/PROTOCOL.md, "Between servers"), answers a differing SUM with its
    bucket digests, and shrugs off malformed LINK, SUM and SUMS lines."""
    from test_herd import fake_peer
    herd.start("Bona")
    peer = fake_peer(herd, "Bailey", "Bona")
    try:
        agree = b"AGREE version=2 max_stored_clients=1000000 forwarding=tree"
        lines = read_lines(peer, lambda ls: any(l.startswith(b"SUM ") for l in ls))
        assert lines[0] == agree, lines
        link = [l for l in lines if l.startswith(b"LINK Bona ")]
        assert link and re.fullmatch(rb"LINK Bona \d+ Bailey", link[-1]), lines
        assert b"SUM 0 0000000000000000" in lines, lines
        peer.sendall(agree + b"\n")
        bad = [b"LINK", b"LINK Nobody 5 Bona", b"LINK Bailey 99999999999999999999999 Bona",
               b"LINK Bailey x Bona", b"LINK Bailey 5 Nobody,,Clark,Bona,", b"LINK Bona 1 -",
               b"SUM", b"SUM zz 0123456789abcdef", b"SUM 1 zz", b"SUMS 7 abc",
               b"SUMS 0 " + b"g" * 512, b"SUMS 99999 " + b"0" * 512, b"SUMS 32 " + b"0" * 511,
               b"SUMS -32 " + b"0" * 512, b"HELLO there", b"\x00\xff"]
        peer.sendall(b"\n".join(bad) + b"\n")
        at = b"AT Bailey +0.100000000 fine +1.0+1.0 100"
        peer.sendall(at + b"\nSUM 7 0123456789abcdef\n")
        lines = read_lines(peer, lambda ls: sum(l.startswith(b"SUMS ") for l in ls) >= 128)
        sums = [l for l in lines if l.startswith(b"SUMS ")]
        assert [int(l.split()[1]) for l in sums] == list(range(0, 4096, 32)), sums[:3]
        assert all(re.fullmatch(rb"SUMS \d+ [0-9a-f]{512}", l) for l in sums)
        assert sum(int(l.split()[2], 16) != 0 for l in sums) == 1   # one client, one bucket
        assert herd.stored("Bona", b"fine") == at
    finally:
        peer.close()


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


def test_an_update_reaches_every_server_before_anti_entropy_could(herd):
    """Forwarding, not anti-entropy, carries a new update: it is everywhere
    well within a second, while a repair needs two digest rounds (a bucket
    must differ twice, herd.anti_entropy_ms apart)."""
    herd.start().wait_links()
    time.sleep(FLUX_S)                  # link states settled: the trees are in use
    at = exchange(herd.ports["Bailey"], b"IAMAT swift +1.0+1.0 %.9f\n" % time.time())[:-1]
    herd.wait_stored(DEFAULT_LINKS, b"swift", at, timeout=0.8)
