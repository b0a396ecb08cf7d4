"""Edge paths of one server's snapshot and links (docs/PROTOCOL.md,
"Snapshots" and "Between servers"), each checked by what it does: the log
line, the exit status, the files left in state/, the replies.

Snapshots: a snapshot child that is slow is waited for, never doubled, and
one that dies is logged and retried; the snapshot at the stop that cannot
be written (disk full, a directory in the way) leaves the old one whole and
no temporary file; leftovers that are no file of a killed child are left.
"""
import os
import resource
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (Server, connect, exchange, free_port, proc_kib, program, recv_until_eof,
                      wait_for, wait_listening, write_config)
from test_trust_server import children, state

LOC = b"+34.068930-118.445127"


def start(tmp_path, name="Bailey", servers=None, extra="", env=None, limits=None, logging=None,
          preexec=None):
    """A herd-server for 'name' in tmp_path/name (config from servers,
    {name: (port, [neighbours])}, by default alone), started with an
    optional preexec_fn; stop it with stop()."""
    sub = tmp_path / name
    sub.mkdir(exist_ok=True)
    s = Server(sub, name=name)
    if servers:
        s.port = servers[name][0]
    s.config = write_config(s.dir, servers or {name: (s.port, [])}, limits=limits,
                            logging=logging, extra=extra)
    s.stderr = open(s.stderr_path, "wb")
    s.proc = subprocess.Popen([program("herd-server"), name, "-c", s.config],
                              stdout=subprocess.DEVNULL, stderr=s.stderr,
                              env=env, preexec_fn=preexec)
    if not wait_listening(s.port, s.proc):
        s.stop(check=False)
        raise AssertionError(f"herd-server did not start: {s.read_stderr()}")
    return s


def stop(s):
    """SIGTERM; the exit status, and stderr checked for sanitizer reports."""
    s.proc.send_signal(signal.SIGTERM)
    try:
        rc = s.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        s.proc.wait()
        rc = "ignored SIGTERM"
    s.proc = None
    s.stderr.close()
    err = s.read_stderr()
    assert "Sanitizer" not in err and "runtime error" not in err, err
    return rc


def fill(port, n, prefix=b"c"):
    """n clients' IAMATs on one connection; waits for every answer."""
    with connect(port) as c:
        c.sendall(b"".join(b"IAMAT %s%d %s %d\n" % (prefix, i, LOC, i + 1) for i in range(n)))
        c.shutdown(socket.SHUT_WR)
        got = recv_until_eof(c)
    assert got.count(b"\n") == n


def state_files(s):
    """The snapshot files in s's state/ (other files live there too)."""
    folder = os.path.join(s.dir, "state")
    return sorted(f for f in os.listdir(folder) if ".snap" in f) if os.path.isdir(folder) else []


# ------------------------------------------------------------- snapshots

def catch_child(pid, seconds):
    """SIGSTOP the first child of pid seen within 'seconds'; its pid or None."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        for cpid in children(pid):
            try:
                os.kill(cpid, signal.SIGSTOP)
            except ProcessLookupError:      # reaped meanwhile
                continue
            if wait_for(lambda: state(cpid) in ("T", "t", "Z", ""), 2) and state(cpid) in ("T", "t"):
                return cpid
    return None


def snapshot_holds(s, n, client=None):
    """True when s's snapshot on disk is whole with n clients (and client)."""
    try:
        data = open(os.path.join(s.dir, "state", "Bailey.snap"), "rb").read()
    except OSError:
        return False
    lines = data.split(b"\n")
    return lines[-1] == b"" and lines[-2] == b"END %d" % n and len(lines) == n + 3 and \
        (client is None or b" %s " % client in data)


def fresh_child(s, clients):
    """With the table on disk (snapshot_holds(clients)), one IAMAT more and
    the child forked for it, stopped.  Returns (its pid, the client count)."""
    for k in range(30):
        assert wait_for(lambda: snapshot_holds(s, clients), 15), f"no snapshot of {clients}"
        assert exchange(s.port, b"IAMAT fresh%d %s 1\n" % (clients, LOC)).startswith(b"AT Bailey ")
        clients += 1
        child = catch_child(s.proc.pid, 2.5)
        if child:
            return child, clients
    raise AssertionError("no snapshot child was caught")


def test_slow_snapshot_child_is_waited_for_and_a_killed_one_retried(tmp_path):
    """A snapshot child killed is logged with its status and the snapshot is
    taken again at the next interval, though nothing changed since.  A
    child that does not finish (stopped here) holds the next snapshot back:
    the server serves on and forks no second child while it lives."""
    s = start(tmp_path, extra="herd:\n  snapshot_interval_s: 1\n",
              logging={"log_lines": False})
    try:
        pid = s.proc.pid
        fill(s.port, 40000)        # a table the child takes a while to write
        killed, clients = fresh_child(s, 40000)
        os.kill(killed, signal.SIGKILL)
        failed = f"snapshot-failed child={killed} status=9"
        assert failed in s.read_log(wait_for=failed, timeout=5)
        assert wait_for(lambda: snapshot_holds(s, clients), 10), "not retried"

        child, clients = fresh_child(s, clients)
        assert exchange(s.port, b"IAMAT late %s 7\n" % LOC).startswith(b"AT Bailey ")
        snap = os.path.join(s.dir, "state", "Bailey.snap")
        before = open(snap, "rb").read()
        time.sleep(2.5)            # two intervals, the table dirty
        assert children(pid) == [child]
        assert open(snap, "rb").read() == before, "a snapshot was written meanwhile"
        assert exchange(s.port, b"WHATSAT late 1 1\n").startswith(b"AT Bailey ")
        os.kill(child, signal.SIGCONT)
        assert wait_for(lambda: snapshot_holds(s, clients + 1, b"late"), 10)
        assert "snapshot-failed" not in s.read_log().split(failed)[1]
    finally:
        assert stop(s) == 0


def test_stop_snapshot_on_a_full_disk_keeps_the_old_one(tmp_path):
    """The files a server may write are capped (RLIMIT_FSIZE, SIGXFSZ
    ignored: the disk is full past 64 KiB).  The snapshot at the stop fails
    with "File too large" and exit status 1; the snapshot there before is
    intact and no temporary file is left."""
    state_dir = tmp_path / "Bailey" / "state"
    state_dir.mkdir(parents=True)
    old = b"HERDSNAP 1 Bailey\nAT Bailey +0.000000001 before +1.0+1.0 5\nEND 1\n"
    (state_dir / "Bailey.snap").write_bytes(old)

    def full_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
    # a long interval: only the stop writes a snapshot; no line logged
    s = start(tmp_path, extra="herd:\n  snapshot_interval_s: 3600\n",
              logging={"log_lines": False}, preexec=full_disk)
    stopped = False
    try:
        assert exchange(s.port, b"WHATSAT before 1 1\n").startswith(b"AT Bailey ")
        fill(s.port, 2000)         # about 120 KB of snapshot
        rc = stop(s)
        stopped = True
        assert rc == 1, rc
        log = s.read_log()
        assert f"snapshot-failed dir={state_dir} reason=File too large" in log, log
        assert (state_dir / "Bailey.snap").read_bytes() == old
        assert state_files(s) == ["Bailey.snap"]
    finally:
        if not stopped:
            stop(s)


def test_stop_snapshot_over_a_directory_fails_and_leaves_it(tmp_path):
    """NAME.snap made a directory while the server runs: the stop's snapshot
    cannot take its place ("Is a directory", exit status 1), the directory
    and what it holds are untouched and no temporary file is left."""
    s = start(tmp_path, extra="herd:\n  snapshot_interval_s: 3600\n")
    stopped = False
    try:
        assert exchange(s.port, b"IAMAT kept %s 5\n" % LOC).startswith(b"AT Bailey ")
        in_the_way = os.path.join(s.dir, "state", "Bailey.snap")
        os.makedirs(in_the_way, exist_ok=True)
        with open(os.path.join(in_the_way, "keep"), "w") as f:
            f.write("mine\n")
        rc = stop(s)
        stopped = True
        assert rc == 1, rc
        assert f"snapshot-failed dir={os.path.join(s.dir, 'state')} reason=Is a directory" \
            in s.read_log(), s.read_log()
        assert state_files(s) == ["Bailey.snap"]
        assert open(os.path.join(in_the_way, "keep")).read() == "mine\n"
    finally:
        if not stopped:
            stop(s)


def test_leftovers_that_are_no_child_file_are_left_alone(tmp_path):
    """At start, NAME.snap.tmp.PID files are removed; "NAME.snap.tmp." (no
    pid) is no child's file and stays unlogged, and a leftover that cannot
    be removed (a directory) is logged with the reason, the server starting
    all the same."""
    state_dir = tmp_path / "Bailey" / "state"
    (state_dir / "Bailey.snap.tmp.77").mkdir(parents=True)
    (state_dir / "Bailey.snap.tmp.77" / "inside").write_text("x")
    (state_dir / "Bailey.snap.tmp.").write_text("no pid")
    (state_dir / "Bailey.snap.tmp.78").write_text("HERDSNAP 1 Bailey\nAT half")
    s = start(tmp_path)
    try:
        log = s.read_log(wait_for="snapshot-leftover-removed")
        assert f"snapshot-leftover file={state_dir}/Bailey.snap.tmp.77 cannot be removed: " \
            "Is a directory" in log, log
        assert f"file={state_dir}/Bailey.snap.tmp.78 (a snapshot child" in log
        assert "Bailey.snap.tmp. " not in log
        assert state_files(s) == ["Bailey.snap.tmp.", "Bailey.snap.tmp.77"]
        assert exchange(s.port, b"WHATSAT nobody 1 1\n") == b"? WHATSAT nobody 1 1\n"
    finally:
        assert stop(s) == 0



def damaged_line(s):
    """The server's snapshot-damaged log line, once it is written."""
    log = s.read_log(wait_for="snapshot-damaged")
    return next(l for l in log.splitlines() if "snapshot-damaged" in l)


def test_snapshot_that_is_a_directory_is_set_aside_as_unreadable(tmp_path):
    """NAME.snap a directory: read, it fails (EISDIR), which is no empty
    file: logged as such, set aside whole as NAME.snap.bad-TIME, and the
    server starts empty; its stop writes a good snapshot in its place."""
    state_dir = tmp_path / "Bailey" / "state"
    (state_dir / "Bailey.snap").mkdir(parents=True)
    (state_dir / "Bailey.snap" / "inside").write_text("mine\n")
    s = start(tmp_path)
    try:
        line = damaged_line(s)
        assert f"file={state_dir}/Bailey.snap line=0 reason=Is a directory moved-to=" \
            f"{state_dir}/Bailey.snap.bad-" in line, line
        bad = line.split("moved-to=")[1]
        assert open(os.path.join(bad, "inside")).read() == "mine\n"
        assert exchange(s.port, b"IAMAT fresh %s 5\n" % LOC).startswith(b"AT Bailey ")
    finally:
        assert stop(s) == 0
    snap = (state_dir / "Bailey.snap").read_bytes()
    assert snap.startswith(b"HERDSNAP 1 Bailey\nAT Bailey ") and snap.endswith(b"\nEND 1\n"), snap

# ------------------------------------------------------------------ links

SECRET = "cov-secret-0123456789"


def with_secret():
    return dict(os.environ, HERD_SECRET=SECRET)


def test_neighbour_that_cannot_be_dialled_is_logged_once(tmp_path):
    """A neighbour whose address no route reaches (the broadcast address:
    connect() fails at once, ENETUNREACH) is retried with back-off and
    logged once, not at each retry; the server serves its clients."""
    sub = tmp_path / "Alpha"
    sub.mkdir()
    s = Server(sub, name="Alpha")
    port, far = s.port, free_port()
    cfg = write_config(str(sub), {"Alpha": (port, ["Zulu"]), "Zulu": (far, ["Alpha"])})
    text = open(cfg).read().replace("Zulu: { host: 127.0.0.1", "Zulu: { host: 255.255.255.255")
    assert "255.255.255.255" in text
    open(cfg, "w").write(text)
    s.stderr = open(s.stderr_path, "wb")
    s.proc = subprocess.Popen([program("herd-server"), "Alpha", "-c", cfg], env=with_secret(),
                              stdout=subprocess.DEVNULL, stderr=s.stderr)
    try:
        assert wait_listening(port, s.proc)
        want = (f"link-dial-failed peer=Zulu reason=connect to 255.255.255.255:{far}: "
                "Network is unreachable (retrying)")
        assert want in s.read_log(wait_for=want), s.read_log()
        time.sleep(2.0)            # past the dials at 0.1, 0.3, 0.7 and 1.5 s
        assert exchange(port, b"IAMAT here %s 5\n" % LOC).startswith(b"AT Alpha ")
        assert s.read_log().count("link-dial-failed") == 1, s.read_log()
        assert "link-up" not in s.read_log()
    finally:
        assert stop(s) == 0


def test_plain_hello_to_a_server_without_links_is_just_a_bad_line(tmp_path):
    """"PEER HELLO" (the old plain-text handshake) at a server with no
    neighbours gets the "? " answer of any bad line; no refusal is logged,
    there being no link to refuse."""
    s = start(tmp_path)
    try:
        line = b"PEER HELLO Bona 0123456789abcdef0123456789abcdef"
        assert exchange(s.port, line + b"\n") == b"? " + line + b"\n"
        assert "conn-close" in s.read_log(wait_for="conn-close")
        assert "peer-refused" not in s.read_log()
    finally:
        assert stop(s) == 0


def s_client(port, identity, dialer, acceptor):
    """openssl s_client offering 'identity' with the herd's key for the link
    dialer -> acceptor; its stderr (the handshake's outcome)."""
    from test_herd import psk_key
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_3",
                        "-brief", "-ciphersuites", "TLS_AES_128_GCM_SHA256",
                        "-psk_identity", identity, "-psk", psk_key(SECRET, dialer, acceptor)],
                       input=b"AT Bailey +0.000000001 sneaked +1.0+1.0 5\n",
                       capture_output=True, timeout=20)
    return p.stderr


def test_tls_identities_that_name_no_link_of_ours_are_refused(tmp_path):
    """Bona (neighbours Bailey, who dials it, and Campbell, whom it dials)
    refuses a TLS peer whose PSK identity names a server that is no
    neighbour, a neighbour that does not dial it, or another acceptor: no
    link, each logged with its reason, the update it sent not stored."""
    ports = {n: free_port() for n in ("Bailey", "Bona", "Campbell")}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]),
               "Bona": (ports["Bona"], ["Bailey", "Campbell"]),
               "Campbell": (ports["Campbell"], ["Bona"])}
    s = start(tmp_path, "Bona", servers=servers, env=with_secret())
    try:
        cases = [("proxyherd-v1 Nobody Bona", "Nobody", "Bona",
                  "PSK identity of a server that does not dial us"),
                 ("proxyherd-v1 Campbell Bona", "Campbell", "Bona",
                  "PSK identity of a server that does not dial us"),
                 ("proxyherd-v1 Bailey Campbell", "Bailey", "Campbell", "unknown PSK identity")]
        for identity, dialer, acceptor, why in cases:
            mark = len(s.read_log())
            err = s_client(s.port, identity, dialer, acceptor)
            assert b"CONNECTION ESTABLISHED" not in err, (identity, err)
            want = f"reason={why}"
            assert wait_for(lambda: want in s.read_log()[mark:], 5), (identity, s.read_log()[mark:])
            refused = [l for l in s.read_log()[mark:].splitlines() if "peer-refused" in l]
            assert len(refused) == 1 and "peer=? addr=127.0.0.1:" in refused[0], refused
        assert "link-up" not in s.read_log()
        assert exchange(s.port, b"WHATSAT sneaked 1 1\n") == b"? WHATSAT sneaked 1 1\n"
    finally:
        assert stop(s) == 0


def client_hello(identity, dialer, acceptor):
    """The first TLS record openssl s_client sends for a link's PSK: its
    ClientHello, caught on a socket of ours that answers nothing."""
    from test_herd import psk_key
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{ls.getsockname()[1]}",
                              "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256",
                              "-psk_identity", identity, "-psk", psk_key(SECRET, dialer, acceptor)],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            ls.settimeout(10)
            c, _ = ls.accept()
            with c:
                c.settimeout(10)
                data = b""
                while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
                    more = c.recv(4096)
                    assert more, data
                    data += more
        finally:
            p.kill()
            p.wait()
    return data


def test_tls_handshake_stalled_after_a_known_identity_names_the_peer(tmp_path):
    """A ClientHello with Bailey's identity and key is answered (the PSK is
    right), then nothing more comes: at the handshake timeout the
    connection is closed and the refusal names Bailey, not "?"."""
    ports = {"Bailey": free_port(), "Bona": free_port()}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]), "Bona": (ports["Bona"], ["Bailey"])}
    s = start(tmp_path, "Bona", servers=servers, env=with_secret())
    try:
        hello = client_hello("proxyherd-v1 Bailey Bona", "Bailey", "Bona")
        assert hello[:1] == b"\x16" and b"proxyherd-v1 Bailey Bona" in hello
        with connect(s.port) as c:
            c.sendall(hello)
            c.settimeout(10)
            assert c.recv(5)[:1] == b"\x16", "no ServerHello: the PSK was refused"
            t0 = time.time()
            try:
                while c.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            took = time.time() - t0
        assert 3.5 <= took < 9, took      # the 5 s handshake timeout, swept each second
        want = "reason=handshake timeout before its TLS handshake was done"
        log = s.read_log(wait_for=want)
        line = next(l for l in log.splitlines() if want in l)
        assert "peer-refused peer=Bailey addr=127.0.0.1:" in line, line
        assert "link-up" not in log
    finally:
        assert stop(s) == 0


# what a stand-in neighbour says first (docs/PROTOCOL.md, "Settings neighbours
# must share"), then all-zero bucket digests: every bucket differs
AGREE = b"AGREE version=2 max_stored_clients=1000000 forwarding=tree\n"
ZERO_SUMS = b"".join(b"SUMS %d %s\n" % (b, b"0" * 512) for b in range(0, 4096, 32))


def at_fields(line):
    """The fields of an AT line on a link, a SYNC line's too; else []."""
    f = line.split()
    f = f[1:] if f[:1] == [b"SYNC"] else f
    return f if len(f) == 6 and f[0] == b"AT" else []


def test_bucket_digests_again_mid_stream_do_not_restart_it(tmp_path):
    """Bailey (our stand-in) says, twice at once, that every bucket differs
    (all-zero "SUMS" digests).  Bona streams its table; the second round,
    when it comes while the stream runs, does not start it over: every
    client arrives exactly as many times as a catch-up was sent."""
    from test_herd import FakePeer
    ports = {"Bailey": free_port(), "Bona": free_port()}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]), "Bona": (ports["Bona"], ["Bailey"])}
    s = start(tmp_path, "Bona", servers=servers, env=with_secret(),
              logging={"log_lines": False})
    peer = None
    try:
        n = 8000                                   # about 600 KB: several rounds of stream
        fill(s.port, n, b"old")
        peer = FakePeer(s.port, "Bailey", "Bona", SECRET)
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
        assert stop(s) == 0


def test_updates_past_the_cap_during_a_stream_follow_as_the_whole_table(tmp_path):
    """Bona streams its table to Bailey (our stand-in, s_client), who reads
    nothing for a moment.  Updates coming meanwhile find the link past its
    output cap: they are not queued, no backlog is logged (a stream is on
    its way), and once the stream is through the whole table follows, so
    Bailey gets every client, the new ones too."""
    from test_herd import FakePeer
    ports = {"Bailey": free_port(), "Bona": free_port()}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]), "Bona": (ports["Bona"], ["Bailey"])}
    s = start(tmp_path, "Bona", servers=servers, env=with_secret(),
              limits={"max_output_bytes": 65536}, logging={"log_lines": False})
    peer = None
    try:
        # 7 MB of AT lines: more than the sockets on the way hold (the
        # sender's buffer grows to 4 MB on loopback)
        old, new, pad = 24000, 300, b"x" * 200
        fill(s.port, old, b"old" + pad)
        peer = FakePeer(s.port, "Bailey", "Bona", SECRET)
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
        assert stop(s) == 0


def test_snapshot_that_is_a_fifo_is_set_aside_unread(tmp_path):
    """NAME.snap a FIFO (an operator's mistake): opened for reading, it held
    the server's start until some writer opened it, so the server never
    listened.  It is set aside unread, and the server starts empty."""
    state_dir = tmp_path / "Bailey" / "state"
    state_dir.mkdir(parents=True)
    os.mkfifo(state_dir / "Bailey.snap")
    s = start(tmp_path)
    try:
        line = damaged_line(s)
        assert f"file={state_dir}/Bailey.snap line=0 reason=not a regular file moved-to=" \
            f"{state_dir}/Bailey.snap.bad-" in line, line
        assert exchange(s.port, b"IAMAT fresh %s 5\n" % LOC).startswith(b"AT Bailey ")
    finally:
        assert stop(s) == 0


@pytest.mark.parametrize("body,why", [
    (b"NUL", "NUL byte"),            # 256 MiB of NUL bytes (a hole), then a newline
    (b"x" * 5000 + b"\n", "line too long"),
], ids=["hole", "long-line"])
def test_snapshot_with_a_huge_line_is_set_aside_in_bounded_memory(tmp_path, body, why):
    """A damaged snapshot whose second line never ends (a hole of NUL bytes,
    as a crash on some file systems leaves) or is longer than any AT line:
    the loader reads no more than one bounded line of it, sets it aside
    with the reason, and starts empty; it did read the whole line into
    memory (256 MiB for a 256 MiB hole)."""
    state_dir = tmp_path / "Bailey" / "state"
    state_dir.mkdir(parents=True)
    with open(state_dir / "Bailey.snap", "wb") as f:
        f.write(b"HERDSNAP 1 Bailey\n")
        if body == b"NUL":
            f.seek(256 << 20, os.SEEK_CUR)
            f.write(b"\nEND 0\n")
        else:
            f.write(body + b"END 0\n")
    s = start(tmp_path)
    try:
        line = damaged_line(s)
        peak = proc_kib(s.proc.pid, "VmHWM")
        assert peak < 64 << 10, f"{peak} KiB at its peak"
        assert f"file={state_dir}/Bailey.snap line=2 reason={why} moved-to=" in line, line
        assert exchange(s.port, b"IAMAT fresh %s 5\n" % LOC).startswith(b"AT Bailey ")
    finally:
        assert stop(s) == 0
