"""The herd: flooding, authentication, catch-up and snapshots (docs/PROTOCOL.md, "Between servers")."""
import os
import socket
import subprocess
import time

import pytest

from conftest import DEFAULT_LINKS, proc_kib, program

ALL = tuple(DEFAULT_LINKS)


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


def test_clients_cannot_forge_updates(herd):
    herd.start().wait_links()
    at = iamat(herd, "Bailey", b"victim", b"+1.0+1.0", b"100")
    herd.wait_stored(ALL, b"victim", at)
    forged = [
        b"AT Bona +0.000000001 victim +9.0+9.0 999",
        b"PEER HELLO Bona 0123456789abcdef0123456789abcdef",   # Bona does not dial Bailey
        b"PEER HELLO Nobody 0123456789abcdef0123456789abcdef",
        b"PEER PROOF " + b"0" * 64,
        b"PEER WELCOME Bona 0123456789abcdef0123456789abcdef " + b"0" * 64,
    ]
    for line in forged:
        assert herd.send("Bailey", line + b"\n") == b"? " + line + b"\n"
    # the old plain-text handshake of a configured neighbour is a bad line too
    line = b"PEER HELLO Bailey 0123456789abcdef0123456789abcdef"
    assert herd.send("Bona", line + b"\n") == b"? " + line + b"\n"
    # a TLS peer offering the link's identity without the secret gets no link
    key = psk_key("not-the-herd-secret", "Bailey", "Bona")
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{herd.ports['Bona']}",
                        "-tls1_3", "-brief", "-ciphersuites", "TLS_AES_128_GCM_SHA256",
                        "-psk_identity", "proxyherd-v1 Bailey Bona", "-psk", key],
                       input=b"AT Bailey +0.1 victim +9.0+9.0 999\n", capture_output=True,
                       timeout=10)
    assert b"CONNECTION ESTABLISHED" not in p.stderr and p.stdout == b"", p
    time.sleep(0.3)
    for n in ALL:
        assert herd.stored(n, b"victim") == at
    assert herd.wait_log("Bona", "the PSK does not match (wrong secret?)")


def test_wrong_secret_never_gets_a_link(herd):
    herd.start().wait_links()
    herd.stop("Bailey")
    herd.start("Bailey", secret="not-the-herd-secret")
    time.sleep(1.0)
    at = iamat(herd, "Bailey", b"outsider")
    time.sleep(0.5)
    for n in ("Bona", "Campbell"):
        assert herd.stored(n, b"outsider") is None
        assert herd.wait_log(n, "peer-refused")
    assert herd.wait_log("Bailey", "the neighbour refused our PSK (wrong secret?)")
    assert herd.stored("Bailey", b"outsider") == at


def snapshot_count(path):
    """The client count in a snapshot's END line, or None while there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64))
            tail = f.read().splitlines()
    except FileNotFoundError:
        return None
    return int(tail[-1].split()[1]) if tail and tail[-1].startswith(b"END ") else None


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


def test_snapshot_survives_restart_of_the_whole_herd(herd):
    herd.start().wait_links()
    at = iamat(herd, "Clark", b"persist")
    herd.wait_stored(ALL, b"persist", at)
    herd.stop()
    herd.start()            # each loads its own snapshot, links or not
    for n in ALL:
        assert herd.stored(n, b"persist") == at
        assert herd.wait_log(n, "snapshot-loaded")


def test_damaged_snapshot_is_set_aside(herd):
    herd.start("Bailey")
    iamat(herd, "Bailey", b"x1")
    herd.stop("Bailey")
    path = herd.snap_path("Bailey")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 5])      # cut short
    herd.start("Bailey")
    assert herd.stored("Bailey", b"x1") is None
    assert herd.wait_log("Bailey", "snapshot-damaged")
    assert any(f.startswith("Bailey.snap.bad-") for f in os.listdir(os.path.dirname(path)))
    bad = [f for f in os.listdir(os.path.dirname(path)) if f.startswith("Bailey.snap.bad-")]
    assert open(os.path.join(os.path.dirname(path), bad[0]), "rb").read() == data[:-5]
    herd.stop("Bailey")
    assert snapshot_count(path) == 0, "the table the stop wrote is empty"
    for f in bad:
        os.remove(os.path.join(os.path.dirname(path), f))
    # a snapshot of another server is not loaded either, however sound
    other = b"HERDSNAP 1 Bona\n" + at_line(b"x2") + b"\nEND 1\n"
    open(path, "wb").write(other)
    mark = herd.mark("Bailey")
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "reason=another server's snapshot", since=mark)
    assert herd.stored("Bailey", b"x2") is None
    assert not os.path.exists(path), "the damaged snapshot must be moved away"
    assert set_aside(path) == [other]


def at_line(client, t=b"100"):
    return b"AT Bailey +0.000000001 %s +1.0+1.0 %s" % (client, t)


def set_aside(path):
    """The contents of every NAME.snap.bad-* beside path."""
    folder = os.path.dirname(path)
    return [open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))
            if f.startswith(os.path.basename(path) + ".bad-")]


@pytest.mark.parametrize("body,why", [
    (b"HERDSNAP 1 Bailey\n%s\n%s\nEND 1\n", "count does not match"),
    (b"HERDSNAP 1 Bailey\n%s\n%s\nEND 3\n", "count does not match"),
    (b"HERDSNAP 1 Bailey\n%s\n%s\nEND 2\nEND 2\n", "data after END"),
    (b"HERDSNAP 1 Bailey\n%s\n%s\n", "no END line"),
    (b"HERDSNAP 2 Bailey\n%s\n%s\nEND 2\n", "another server's snapshot"),
    (b"SNAP 1 Bailey\n%s\n%s\nEND 2\n", "not a snapshot"),
    (b"HERDSNAP 1 Bailey\n%s\nAT Bailey\nEND 2\n", "reason="),
])
def test_snapshot_that_does_not_add_up_is_not_loaded(herd, body, why):
    """Every line parses, but the file is not whole: nothing of it is loaded,
    it is set aside, and the server starts empty."""
    os.makedirs(os.path.dirname(herd.snap_path("Bailey")), exist_ok=True)
    path = herd.snap_path("Bailey")
    if body.count(b"%s") == 2:
        data = body % (at_line(b"a1"), at_line(b"a2"))
    else:
        data = body % at_line(b"a1")
    open(path, "wb").write(data)
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "snapshot-damaged")
    assert why in herd.log("Bailey")
    assert herd.stored("Bailey", b"a1") is None and herd.stored("Bailey", b"a2") is None
    assert not os.path.exists(path) and set_aside(path) == [data]
    herd.stop("Bailey")
    assert snapshot_count(path) == 0


def test_periodic_snapshot_is_written_while_running(herd):
    """The forked snapshot (every second here) reaches the disk with no stop:
    a server killed with SIGKILL comes back with what it had acknowledged."""
    herd.start("Bailey")
    first = iamat(herd, "Bailey", b"periodic1")
    second = iamat(herd, "Bailey", b"periodic2")
    path = herd.snap_path("Bailey")
    deadline = time.time() + 10
    while snapshot_count(path) != 2 and time.time() < deadline:
        time.sleep(0.05)
    assert snapshot_count(path) == 2, "no periodic snapshot within 10 s"
    lines = open(path, "rb").read().splitlines()
    assert lines[0] == b"HERDSNAP 1 Bailey" and sorted(lines[1:-1]) == sorted([first, second])
    herd.kill("Bailey")
    mark = herd.mark("Bailey")
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "snapshot-loaded", since=mark)
    assert "clients=2" in herd.log("Bailey")[mark:]
    assert herd.stored("Bailey", b"periodic1") == first
    assert herd.stored("Bailey", b"periodic2") == second


def psk_key(secret, dialer, acceptor):
    """The link's TLS key, as docs/PROTOCOL.md gives it, in hex."""
    import hashlib
    import hmac
    return hmac.new(secret.encode(), f"proxyherd-v1 psk {dialer} {acceptor}".encode(),
                    hashlib.sha256).hexdigest()


class FakePeer:
    """A neighbour's end of a TLS link, played by openssl s_client (Python's
    ssl module has TLS 1.3 external PSKs only from 3.13): sendall() goes
    into the link, recv() comes out of it, and a peer that stops reading
    stops s_client reading the socket, as a slow server would."""

    def __init__(self, port, me, them, secret):
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3", "-brief",
             "-ciphersuites", "TLS_AES_128_GCM_SHA256",
             "-psk_identity", f"proxyherd-v1 {me} {them}", "-psk", psk_key(secret, me, them)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.timeout = None
        # -brief: the handshake's outcome on stderr, only the link's bytes on stdout
        import select
        said, deadline = b"", time.time() + 10
        while b"CONNECTION ESTABLISHED" not in said:
            left = deadline - time.time()
            r, _, _ = select.select([self.proc.stderr], [], [], max(left, 0))
            more = os.read(self.proc.stderr.fileno(), 4096) if r else b""
            if not more:
                self.close()
                raise AssertionError(f"no TLS link: {said!r}")
            said += more

    def sendall(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def settimeout(self, t):
        self.timeout = t

    def recv(self, n):
        import select
        r, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not r:
            raise socket.timeout()
        return os.read(self.proc.stdout.fileno(), n)

    def close(self):
        """What was sent goes out, then the link closes."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def fake_peer(herd, me, them):
    """Server 'me' towards 'them' over TLS; returns it once the link is up
    (the first bytes of the catch-up may still be on their way)."""
    return FakePeer(herd.ports[them], me, them, herd.secret)


def sanitized(pid):
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def test_slow_peer_backlog_is_bounded_and_nothing_is_lost(herd):
    herd.start().wait_links()
    herd.stop("Bailey")                     # we play Bailey towards Bona
    peer = fake_peer(herd, "Bailey", "Bona")
    rss_before = proc_kib(herd.procs["Bona"].pid)
    n, clients = 200_000, 100              # every update newer: each one floods
    with socket.create_connection(("127.0.0.1", herd.ports["Clark"])) as s:
        s.sendall(b"".join(b"IAMAT slow%d +1.0+1.0 %d\n" % (i % clients, i + 1)
                           for i in range(n)))
        s.shutdown(socket.SHUT_WR)
        while s.recv(1 << 20):
            pass
    last = {b"slow%d" % c: herd.stored("Clark", b"slow%d" % c) for c in range(clients)}
    herd.wait_stored(["Bona"], b"slow0", last[b"slow0"])
    grown = proc_kib(herd.procs["Bona"].pid) - rss_before
    # (under ASan freed entries sit in its quarantine, so RSS says little there)
    if not sanitized(herd.procs["Bona"].pid):
        assert grown < 8 * 1024, f"Bona grew {grown} KiB for a peer that does not read"
    assert herd.wait_log("Bona", "link-backlog peer=Bailey")
    # now read everything: the newest value of every client must be there
    newest = {}
    peer.settimeout(1.0)
    buf = b""
    try:
        while True:
            b = peer.recv(1 << 20)
            if not b:
                break
            buf += b
    except socket.timeout:
        pass
    peer.close()
    for line in buf.split(b"\n"):
        f = line.split()
        if len(f) == 6 and f[0] == b"AT":
            newest[f[3]] = max(newest.get(f[3], 0), int(f[5]))
    for client, at in last.items():
        assert newest.get(client) == int(at.split()[5]), client
    print(f"slow peer: Bona grew {grown} KiB; {len(buf)} bytes reached the peer for {n} updates")


BAD_AT = [
    (b"AT Bailey +0.000000001 c1 +1.0+1.0", "not an AT line"),
    (b"ATX Bailey +0.000000001 c2 +1.0+1.0 5", "not an AT line"),
    (b"AT " + b"B" * 64 + b" +0.000000001 c3 +1.0+1.0 5", "bad origin"),
    (b"AT Bailey 0.0000000001 c4 +1.0+1.0 5", "bad diff"),
    (b"AT Bailey +0.00000001 c5 +1.0+1.0 5", "bad diff"),
    (b"AT Bailey +.0000000012 c6 +1.0+1.0 5", "bad diff"),
    (b"AT Bailey +12345678901234567890.000000001 c7 +1.0+1.0 5", "bad diff"),
    (b"AT Bailey +1x000000001 c8 +1.0+1.0 5", "bad diff"),
    (b"AT Bailey +1.00000000a c9 +1.0+1.0 5", "bad diff"),
    (b"AT Bailey -1.0000000012 c10 +1.0+1.0 5", "bad diff"),
    (b"AT Bailey +0.000000001 " + b"c" * 257 + b" +1.0+1.0 5", "client id too long"),
    (b"AT Bailey +0.000000001 c11 +1.0 5", "bad location"),
    (b"AT Bailey +0.000000001 c12 +1.0+1.0 five", "bad time"),
]


def test_bad_lines_from_a_peer_are_logged_and_dropped(herd):
    """A linked peer's lines that are no valid AT line change nothing: each
    is logged with its reason, other lines are ignored without an answer,
    and the link carries on."""
    herd.start("Bona")
    peer = fake_peer(herd, "Bailey", "Bona")
    assert herd.wait_log("Bona", "link-up peer=Bailey")
    peer.sendall(b"".join(line + b"\n" for line, _ in BAD_AT) + b"PING\nAT\nHELLO there\n"
                 b"AT Bailey -0.000000001 good +1.0+1.0 5\n")
    herd.wait_stored(["Bona"], b"good", b"AT Bailey -0.000000001 good +1.0+1.0 5")
    assert herd.wait_log("Bona", "reason=bad time")
    log = herd.log("Bona")
    reasons = [l.split("reason=", 1)[1] for l in log.splitlines() if "peer-bad-line peer=Bailey" in l]
    assert reasons == [why for _, why in BAD_AT], reasons
    for i in range(1, 13):
        assert herd.stored("Bona", b"c%d" % i) is None
    peer.settimeout(0.5)
    try:
        got = peer.recv(65536)
    except socket.timeout:
        got = None
    assert got is None or not got.startswith(b"?"), "a peer is never answered '? '"
    peer.close()
    assert herd.wait_log("Bona", "link-down peer=Bailey")


def test_a_new_link_replaces_the_old_one(herd):
    herd.start("Bona")
    first = fake_peer(herd, "Bailey", "Bona")
    assert herd.wait_log("Bona", "link-up peer=Bailey")
    second = fake_peer(herd, "Bailey", "Bona")
    assert herd.wait_log("Bona", "link-down peer=Bailey reason=replaced by a new link")
    first.settimeout(5)
    while first.recv(4096):           # what it was sent before (LINK, SUM), then the end
        pass
    second.sendall(b"AT Bailey +0.000000001 via-second +1.0+1.0 5\n")
    herd.wait_stored(["Bona"], b"via-second", b"AT Bailey +0.000000001 via-second +1.0+1.0 5")
    first.close()
    second.close()


def stop_one(herd, name):
    """SIGTERM one server; its exit status (Herd.stop would fail on 1)."""
    p = herd.procs.pop(name)
    p.terminate()
    p.wait(timeout=20)
    herd.stderr.pop(name).close()
    return p.returncode


def test_snapshot_that_cannot_be_written(herd):
    """state_dir is a file: the periodic snapshot fails and is retried, the
    server keeps serving, and the stop says so with exit status 1."""
    open(os.path.join(herd.dir, "state"), "w").close()
    herd.start("Bailey")
    at = iamat(herd, "Bailey", b"unsaved")
    assert herd.wait_log("Bailey", "snapshot-failed child=", timeout=5)
    assert herd.stored("Bailey", b"unsaved") == at
    assert stop_one(herd, "Bailey") == 1
    assert "snapshot-failed dir=" in herd.log("Bailey") and "Not a directory" in herd.log("Bailey")


def test_snapshot_that_cannot_be_read_or_is_empty(herd):
    os.makedirs(os.path.join(herd.dir, "state"))
    path = herd.snap_path("Bailey")
    os.symlink(os.path.basename(path), path)          # a loop: open fails with ELOOP
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "snapshot-unreadable")
    assert "Too many levels of symbolic links" in herd.log("Bailey")
    herd.stop("Bailey")                             # the stop's snapshot replaces the link
    open(path, "w").close()
    mark = herd.mark("Bailey")
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "reason=empty file", since=mark)
    assert set_aside(path) == [b""]


def test_secret_from_the_file_trimmed(herd):
    """Without HERD_SECRET the servers read herd.secret_file; trailing
    blanks and line ends are not part of the secret.  A secret file that
    cannot be read stops the server with a message naming it."""
    os.makedirs(os.path.join(herd.dir, "state"))
    secret = os.path.join(herd.dir, "state", "herd.secret")
    with open(secret, "w") as f:
        f.write(herd.secret + " \t\r\n")
    os.chmod(secret, 0o600)                          # the owner's alone, or refused
    herd.start("Bona")                               # HERD_SECRET: the plain secret
    herd.start("Bailey", secret_from_file=True)
    assert herd.wait_log("Bailey", "link-up peer=Bona", timeout=10)
    herd.stop("Bailey")
    os.remove(secret)
    os.symlink("herd.secret", secret)
    env = {k: v for k, v in os.environ.items() if k != "HERD_SECRET"}
    r = subprocess.run([program("herd-server"), "Bailey", "-c", herd.config], env=env,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "herd.secret" in r.stderr and "symbolic links" in r.stderr
