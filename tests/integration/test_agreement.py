"""Settings neighbours must share (docs/PROTOCOL.md, "Settings neighbours
must share"): each end of a link says its link protocol version,
limits.max_stored_clients and herd.forwarding in an AGREE line; a
difference is logged as config-mismatch with the key and both values, shown
by --status, and never becomes an endless repair loop."""
import os
import subprocess
import time

from conftest import exchange, free_port, program, wait_listening, wait_log, write_config
from test_metrics import read_metrics, value, wait_metrics

SECRET = "agreement-secret-0123456789"


class Pair:
    """Bailey and Bona linked, each from its own folder and config, so their
    settings may differ."""

    def __init__(self, path, bailey, bona):
        self.ports = {"Bailey": free_port(), "Bona": free_port()}
        self.dirs, self.procs = {}, {}
        for name, settings in (("Bailey", bailey), ("Bona", bona)):
            d = os.path.join(str(path), name)
            os.makedirs(d)
            limits = settings.get("limits")
            herd = {"anti_entropy_ms": 100, **settings.get("herd", {})}
            extra = "herd:\n" + "".join(f"  {k}: {v}\n" for k, v in herd.items())
            write_config(d, {"Bailey": (self.ports["Bailey"], ["Bona"]),
                             "Bona": (self.ports["Bona"], ["Bailey"])},
                         limits=limits, extra=extra)
            self.dirs[name] = d

    def start(self):
        for name, d in self.dirs.items():
            err = open(os.path.join(d, "stderr"), "wb")
            self.procs[name] = subprocess.Popen(
                [program("herd-server"), name, "-c", os.path.join(d, "config.yml")],
                stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, HERD_SECRET=SECRET))
        for name in self.dirs:
            assert wait_listening(self.ports[name], self.procs[name]), name
        for name, peer in (("Bailey", "Bona"), ("Bona", "Bailey")):
            wait_metrics(self.dirs[name], [name],
                         lambda m: value(m[name], "proxyherd_link_up", peer=peer) == 1)
        return self

    def stop(self):
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            p.wait(timeout=20)
        assert all(p.returncode == 0 for p in self.procs.values()), \
            {n: p.returncode for n, p in self.procs.items()}

    def send(self, name, line):
        return exchange(self.ports[name], line)

    def stored(self, name, client):
        reply = self.send(name, b"WHATSAT %s 1 1\n" % client)
        return None if reply.startswith(b"? ") else reply.split(b"\n", 1)[0]

    def counters(self):
        """Link AT lines sent and differing SUMs received, over both servers."""
        m = {n: read_metrics(self.dirs[n], n) for n in self.dirs}
        return (sum(value(m[n], "proxyherd_link_updates_sent_total") for n in m),
                sum(value(m[n], "proxyherd_link_digest_mismatches_total") for n in m))


def settled_counters(pair, seconds):
    """The counters once both metrics files were rewritten after 'seconds'."""
    time.sleep(seconds)
    first = os.stat(os.path.join(pair.dirs["Bona"], "state", "Bona.prom")).st_mtime_ns
    deadline = time.time() + 5
    while time.time() < deadline:
        if os.stat(os.path.join(pair.dirs["Bona"], "state", "Bona.prom")).st_mtime_ns != first:
            break
        time.sleep(0.05)
    time.sleep(1.1)                       # Bailey's file too
    return pair.counters()


def test_neighbours_that_disagree_on_max_stored_clients_fall_quiet(tmp_path):
    """Bailey keeps 1 client, Bona 2: each logs the mismatch, --status shows it,
    updates still travel, and at rest the link carries no AT line and no
    digest exchange (before: each round Bona resent the client Bailey had
    evicted, Bailey evicted it again, for ever)."""
    pair = Pair(tmp_path, {"limits": {"max_stored_clients": 1}},
                {"limits": {"max_stored_clients": 2}}).start()
    try:
        assert wait_log(pair.dirs["Bailey"], "Bailey",
                        "config-mismatch peer=Bona key=max_stored_clients ours=1 theirs=2")
        assert wait_log(pair.dirs["Bona"], "Bona",
                        "config-mismatch peer=Bailey key=max_stored_clients ours=2 theirs=1")
        now = time.time()
        assert pair.send("Bona", b"IAMAT old +1.0+1.0 %.3f\n" % (now - 10)).startswith(b"AT ")
        assert pair.send("Bona", b"IAMAT new +1.0+1.0 %.3f\n" % now).startswith(b"AT ")
        deadline = time.time() + 5
        while pair.stored("Bailey", b"new") is None and time.time() < deadline:
            time.sleep(0.05)
        assert pair.stored("Bailey", b"new") == pair.stored("Bona", b"new") is not None
        assert pair.stored("Bailey", b"old") is None and pair.stored("Bona", b"old")
        sent0, mism0 = settled_counters(pair, 0.5)
        sent1, mism1 = settled_counters(pair, 2.0)   # 20 anti-entropy periods
        assert (sent1 - sent0, mism1 - mism0) == (0, 0), \
            f"at rest the link still carried {sent1 - sent0} AT lines and " \
            f"{mism1 - mism0} digest exchanges"
        # --status shows this gauge as "Bona:mismatch" (test_cov_supervisor.py)
        m = read_metrics(pair.dirs["Bailey"], "Bailey")
        assert value(m, "proxyherd_link_config_mismatch", peer="Bona") == 1
    finally:
        pair.stop()


def test_neighbours_that_agree_say_nothing_of_it(tmp_path):
    pair = Pair(tmp_path, {}, {}).start()
    try:
        assert pair.send("Bailey", b"IAMAT kiwi +1.0+1.0 5\n").startswith(b"AT ")
        deadline = time.time() + 5
        while pair.stored("Bona", b"kiwi") is None and time.time() < deadline:
            time.sleep(0.05)
        assert pair.stored("Bona", b"kiwi") is not None
        m = read_metrics(pair.dirs["Bailey"], "Bailey")
        assert value(m, "proxyherd_link_config_mismatch", peer="Bona") == 0
    finally:
        pair.stop()
    for name in ("Bailey", "Bona"):
        assert "config-mismatch" not in open(
            os.path.join(pair.dirs[name], "logs", f"{name}.log")).read()


def test_a_forwarding_mismatch_is_logged_and_updates_still_reach_both(tmp_path):
    pair = Pair(tmp_path, {"herd": {"forwarding": "tree"}},
                {"herd": {"forwarding": "flood"}}).start()
    try:
        assert wait_log(pair.dirs["Bailey"], "Bailey",
                        "config-mismatch peer=Bona key=forwarding ours=tree theirs=flood")
        assert wait_log(pair.dirs["Bona"], "Bona",
                        "config-mismatch peer=Bailey key=forwarding ours=flood theirs=tree")
        for src, dst, client in (("Bailey", "Bona", b"a"), ("Bona", "Bailey", b"b")):
            assert pair.send(src, b"IAMAT %s +1.0+1.0 5\n" % client).startswith(b"AT ")
            deadline = time.time() + 5
            while pair.stored(dst, client) is None and time.time() < deadline:
                time.sleep(0.05)
            assert pair.stored(dst, client) == pair.stored(src, client)
    finally:
        pair.stop()


def lines_for(peer, seconds):
    """Every line the link carries for 'seconds'."""
    data, end = b"", time.time() + seconds
    while time.time() < end:
        peer.settimeout(max(end - time.time(), 0.01))
        try:
            data += peer.recv(65536)
        except TimeoutError:
            break
    return data.split(b"\n")


def test_a_peer_whose_first_line_is_no_agree_is_an_earlier_version(herd):
    """A server of an earlier version sends no AGREE, and orders a resent
    IAMAT differently (without the whole line): repairing each other would
    resend it for ever.  Bona logs a version mismatch and answers its SUM
    with nothing."""
    from test_herd import fake_peer
    herd.start("Bona")
    peer = fake_peer(herd, "Bailey", "Bona")
    try:
        peer.sendall(b"LINK Bailey 5 Bona\nSUM 7 0123456789abcdef\n")
        assert herd.wait_log("Bona", "config-mismatch peer=Bailey key=version ours=2 "
                                     "theirs=1 (no AGREE) (no anti-entropy")
        peer.sendall(b"SUM 8 0123456789abcdef\n")
        got = lines_for(peer, 1.5)
        assert not [l for l in got if l.startswith(b"SUMS ")], got
    finally:
        peer.close()


def test_an_agree_of_many_keys_is_read_whole(herd):
    """Keys a server does not know are skipped, however many come before the
    ones it knows: a later version's longer AGREE is still compared."""
    from test_herd import fake_peer
    herd.start("Bona")
    peer = fake_peer(herd, "Bailey", "Bona")
    try:
        extra = b" ".join(b"k%d=1" % i for i in range(40))
        peer.sendall(b"AGREE " + extra + b" version=3 max_stored_clients=5 forwarding=tree\n"
                     b"SUM 7 0123456789abcdef\n")
        assert herd.wait_log("Bona", "config-mismatch peer=Bailey key=version ours=2 theirs=3")
        assert herd.wait_log("Bona", "config-mismatch peer=Bailey key=max_stored_clients "
                                     "ours=1000000 theirs=5")
        got = lines_for(peer, 1.5)
        assert not [l for l in got if l.startswith(b"SUMS ")], got
    finally:
        peer.close()
