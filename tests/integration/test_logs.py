"""Logs (docs/PROTOCOL.md, "Logs"): what each line holds and how it is
escaped, flushing, reopening on SIGHUP, rotation by size with its bounds
(also when it fails or the disk is full), file modes, and log and stderr
files never written through a link.
"""
import errno
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time

import pytest

from harness import (DEFAULT_LINKS, NO_HANG, PRECIOUS, SUP_HERD_SECRET, connect, exchange,
                     free_port, one_server_config, outside_target, program, read_log,
                     recv_exact_lines, run_with_secret, Server, SupervisedHerd, wait_for, wait_log)


def test_failing_rotation_keeps_the_log_bounded_and_says_why(tmp_path):
    """While rotation fails (NAME.log.1 is a folder), every batch of dropped
    lines still added a "log-dropped" line past the 2 x max_file_bytes bound,
    so the file grew without end, and each said "File too large" while the
    real reason (the failed rename) was dropped with the batch."""
    import socket
    import time
    s = Server(tmp_path, logging={"max_file_bytes": 4096, "keep_files": 1, "flush_ms": 10})
    os.makedirs(os.path.join(s.dir, "logs", "Bailey.log.1", "in-the-way"))
    s.start()
    try:
        end = time.time() + 2
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            while time.time() < end:
                c.sendall(b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n")
                assert c.recv(4096).startswith(b"AT ")
                time.sleep(0.002)
        time.sleep(0.2)
        size = os.path.getsize(s.log_path)
        text = s.read_log()
    finally:
        s.stop()
    assert size <= 2 * 4096, f"Bailey.log is {size} bytes, past twice max_file_bytes"
    assert "Is a directory" in text, text[-1500:]


def test_sighup_reopens_every_log(sherd):
    assert sherd.script("start_servers.sh").returncode == 0
    logs = os.path.join(sherd.dir, "logs")
    assert sherd.wait_log("Bailey", "listening")
    for f in os.listdir(logs):
        os.rename(os.path.join(logs, f), os.path.join(logs, f + ".1"))
    os.kill(sherd.pids()["supervisor"], signal.SIGHUP)
    for n in ("supervisor", *DEFAULT_LINKS):
        assert sherd.wait_log(n, "reopen"), n
    exchange(sherd.ports["Bailey"], b"AFTER-HUP\n")
    assert sherd.wait_log("Bailey", "AFTER-HUP")
    assert "AFTER-HUP" not in open(os.path.join(logs, "Bailey.log.1")).read()


def test_link_at_the_log_refuses_the_start(tmp_path):
    target = outside_target(tmp_path)
    cfg = one_server_config(tmp_path, free_port())
    (tmp_path / "logs").mkdir(mode=0o750)
    log = tmp_path / "logs" / "Bailey.log"
    os.symlink(target, log)
    r = run_with_secret([program("herd-server"), "Bailey", "-c", cfg])
    assert r.returncode != 0, r
    assert f"cannot open {log}: a symbolic link" in r.stderr, r.stderr
    assert open(target, "rb").read() == PRECIOUS
    os.symlink(target, tmp_path / "logs" / "supervisor.log")
    r = run_with_secret([program("herd-supervisor"), "-c", cfg])
    assert r.returncode != 0, r
    assert f"cannot open {tmp_path / 'logs' / 'supervisor.log'}: a symbolic link" in r.stderr
    assert open(target, "rb").read() == PRECIOUS


def test_link_at_the_log_on_reopen_is_never_written_through(tmp_path):
    """A link put in place of NAME.log while the server runs: the HUP's
    reopen refuses it and the old file keeps taking lines."""
    target = outside_target(tmp_path)
    (tmp_path / "s0").mkdir()
    s = Server(tmp_path / "s0")
    try:
        s.start()
        assert wait_for(lambda: "listening" in s.read_log(), 5)
        old = s.log_path + ".moved"
        os.rename(s.log_path, old)
        os.symlink(target, s.log_path)
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "log-reopen cannot open" in open(old).read(), 5), open(old).read()
        assert "a symbolic link" in open(old).read()
    finally:
        s.stop()
    assert open(target, "rb").read() == PRECIOUS


def test_link_at_the_server_stderr_is_never_written_through(tmp_path):
    """NAME.stderr, which the supervisor opens for each server: a server
    that cannot bind writes its error to stderr; through a link planted
    at NAME.stderr it reached the link's target."""
    target = outside_target(tmp_path)
    h = SupervisedHerd(tmp_path, {"Bailey": []}, secret=SUP_HERD_SECRET,
                       extra=NO_HANG + "  restart_max: 1\n  backoff_initial_ms: 50\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", h.ports["Bailey"]))
    busy.listen()
    (tmp_path / "logs").mkdir(mode=0o750)
    os.symlink(target, tmp_path / "logs" / "Bailey.stderr")
    p = subprocess.Popen([program("herd-supervisor"), "-c", h.config], env=h.env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_log(h.dir, "supervisor", "child-given-up", timeout=15), \
            read_log(h.dir, "supervisor")
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=20)
        busy.close()
    assert open(target, "rb").read() == PRECIOUS
    assert "Bailey.stderr: a symbolic link, never written through" in err, err
    assert "herd-server: Bailey:" in err, err


STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) \S+")


def test_log_holds_input_output_and_connections(server):
    reply = exchange(server.port, b"IAMAT logme +1.0+1.0 1\nHELLO there\n")
    at_line = reply.split(b"\n")[0].decode()
    log = server.read_log(wait_for="HELLO there\"\n", timeout=3)
    m = re.search(r'recv id=(\d+) "IAMAT logme \+1\.0\+1\.0 1"', log)
    assert m, log
    cid = m.group(1)
    # the close is logged when the server reads the client's end, which may
    # be a round after the last reply: wait for it, not for the reply
    log = server.read_log(wait_for=f"conn-close id={cid} ", timeout=3)
    assert f'send id={cid} "{at_line}"' in log
    assert f'send id={cid} "? HELLO there"' in log
    assert f"conn-open id={cid} from=127.0.0.1:" in log
    assert re.search(f"conn-close id={cid} from=127.0.0.1:\\d+ reason=client closed", log)
    for line in log.splitlines():
        assert STAMP.match(line), line


def test_log_escapes_control_bytes(server):
    exchange(server.port, b"EVIL\x1b[31m\x00\x7f\"q\" \\ x\r\n")
    log_bytes = open(server.log_path, "rb").read() if os.path.exists(server.log_path) else b""
    deadline = time.time() + 3
    while b"EVIL" not in log_bytes and time.time() < deadline:
        time.sleep(0.05)
        log_bytes = open(server.log_path, "rb").read()
    assert b'"EVIL\\x1b[31m\\x00\\x7f\\x22q\\x22 \\x5c x"' in log_bytes
    for line in log_bytes.split(b"\n"):
        assert not any(b < 0x20 for b in line), line


def test_log_reaches_file_within_a_second(server):
    exchange(server.port, b"PROMPT\n")
    start = time.time()
    log = server.read_log(wait_for="PROMPT", timeout=2)
    assert "PROMPT" in log and time.time() - start < 1.5


def test_log_reopened_on_sighup(server):
    exchange(server.port, b"BEFORE\n")
    server.read_log(wait_for="BEFORE")
    rotated = server.log_path + ".1"
    os.rename(server.log_path, rotated)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 3
    while not os.path.exists(server.log_path) and time.time() < deadline:
        exchange(server.port, b"WAIT\n")
        time.sleep(0.05)
    exchange(server.port, b"AFTER\n")
    log = server.read_log(wait_for="AFTER")
    assert "AFTER" in log and "BEFORE" not in log
    assert "BEFORE" in open(rotated).read()


def test_log_summarises_whatsat_json(server):
    exchange(server.port, b"IAMAT sum +34.068930-118.445127 1\n")
    reply = exchange(server.port, b"WHATSAT sum 50 3\n")
    at_line, rest = reply.split(b"\n", 1)
    json_bytes = len(rest) - 2
    log = server.read_log(wait_for="json_bytes=")
    want = f'"{at_line.decode()}" json_bytes={json_bytes} results=3 status=OK'
    assert want in log, log[-500:]


def test_log_lines_off_keeps_connections_but_no_data(make_server):
    """logging.log_lines: false -- connections and events are still logged,
    what clients send and receive is not; the replies are unchanged."""
    s = make_server(logging={"log_lines": False})
    at = exchange(s.port, b"IAMAT quiet +34.068930-118.445127 1\n")
    assert at.startswith(b"AT Bailey ") and at.endswith(b" quiet +34.068930-118.445127 1\n")
    reply = exchange(s.port, b"WHATSAT quiet 1 2\nWHATSAT nobody 1 2\nIAMAT bad\nHELLO\n")
    assert reply.startswith(at + b"{\n")
    assert reply.endswith(b"\n\n? WHATSAT nobody 1 2\n? IAMAT bad\n? HELLO\n")
    s.stop()
    log = open(s.log_path).read()
    assert "conn-open" in log and "reason=client closed" in log
    for word in ("recv ", "send ", "invalid ", "quiet", "nobody", "HELLO"):
        assert word not in log, word


@pytest.fixture
def started(tmp_path):
    """Make and start Servers; stop every one at the end, pass or fail."""
    servers = []

    def make(sub, **kw):
        path = tmp_path / sub
        path.mkdir(exist_ok=True)
        s = Server(path, **kw)
        servers.append(s)
        return s
    yield make
    errors = []
    for s in servers:
        try:
            s.stop()          # a sanitizer report or a bad exit fails the test
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors


def log_files(folder, name="Bailey"):
    """{file name: size} of NAME.log and every NAME.log.* in folder."""
    return {f: os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
            if f == f"{name}.log" or f.startswith(f"{name}.log.")}


def test_load_run_leaves_at_most_keep_plus_one_files(tmp_path, started):
    size, keep = 65536, 2
    s = started("a", logging={"max_file_bytes": size, "keep_files": keep}).start()
    out = tmp_path / "bench.json"
    r = subprocess.run([program("herd-benchmark"), "--quiet", "--json", str(out),
                        "--target", f"127.0.0.1:{s.port}", "--requests", "8000",
                        "--concurrency", "4", "--warmup", "0", "--mix", "iamat=50,whatsat=50"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    js = json.loads(out.read_text())
    assert js["errors"] == 0 and js["requests"] >= 8000, js
    s.stop()
    logs = os.path.join(s.dir, "logs")
    files = log_files(logs)
    # 8000 requests log about 2 MB: the live file and exactly K old ones
    assert set(files) == {"Bailey.log"} | {f"Bailey.log.{i}" for i in range(1, keep + 1)}, files
    for f, n in files.items():
        assert n <= size, (f, n)
        text = open(os.path.join(logs, f), errors="replace").read()
        assert text.endswith("\n"), f
        for line in text.splitlines():
            assert STAMP.match(line), (f, line)       # no line cut in two
        mode = stat.S_IMODE(os.stat(os.path.join(logs, f)).st_mode)
        assert mode & 0o137 == 0, (f, oct(mode))
    for f in ("Bailey.log.1", "Bailey.log.2"):
        assert files[f] > size - 4096, files          # rotated when full, not early
    everything = "".join(open(os.path.join(logs, f)).read() for f in files)
    assert "listening" not in everything              # the oldest file was removed
    assert "stopped server=Bailey" in open(os.path.join(logs, "Bailey.log")).read()


LOC = "+34.068930-118.445127"


def ask(sock, client, t):
    """One IAMAT on an open connection; checks the AT line field by field."""
    sock.sendall(f"IAMAT {client} {LOC} {t}\n".encode())
    data = b""
    while not data.endswith(b"\n"):
        b = sock.recv(4096)
        assert b, f"connection closed after {data!r}"
        data += b
    f = data.decode().split()
    assert len(f) == 6 and f[0] == "AT" and f[1] == "Bailey" and f[3:] == [client, LOC, t], data
    assert re.fullmatch(r"[+-]\d+\.\d{9}", f[2]), data
    return data


@pytest.mark.parametrize("keep", [0, 1])
def test_a_line_longer_than_the_size_is_written_whole(started, keep):
    s = started("a", logging={"max_file_bytes": 4096, "keep_files": keep}).start()
    with connect(s.port) as c:
        for k in range(40):
            ask(c, f"zero-{k}", f"7.{k:04d}")
        long_id = "L" * 6000            # its recv and send lines are each past 4096 bytes
        c.sendall(f"{long_id}\n".encode())
        assert recv_exact_lines(c, 1) == f"? {long_id}\n".encode()
        ask(c, "after-long", "9.0")
        s.read_log(wait_for="after-long")
    with open(s.log_path) as f:
        text = f.read()
    assert len(text) <= 4096 and "after-long" in text and long_id not in text, len(text)
    want = {"Bailey.log"} | ({"Bailey.log.1"} if keep else set())
    assert log_files(os.path.dirname(s.log_path)).keys() == want
    if keep:
        # each long line went whole into a file of its own
        lines = open(s.log_path + ".1").read().splitlines()
        assert len(lines) == 1 and STAMP.match(lines[0]) and f'"? {long_id}"' in lines[0], lines


def test_tail_F_follows_rotation(started):
    s = started("a", logging={"max_file_bytes": 8192, "keep_files": 1}).start()
    s.read_log(wait_for="listening")
    out_path = os.path.join(s.dir, "tail.out")
    with open(out_path, "wb") as out:
        tail = subprocess.Popen(["tail", "-F", "-n", "+1", "--sleep-interval=0.05", s.log_path],
                                stdout=out, stderr=subprocess.PIPE)
    try:
        with connect(s.port) as c:
            for i in range(5):
                # about 12 KiB of log per round: at least one rotation each
                for k in range(50):
                    ask(c, f"filler-{i}-{k}", f"{i}.{k:04d}")
                ask(c, f"mark-{i}", "1.5")
                wait_for(lambda: f"mark-{i}".encode() in open(out_path, "rb").read(), 5.0,
                         what=f"tail -F to show mark-{i}")
    finally:
        tail.terminate()
        err = tail.communicate(timeout=5)[1].decode()
    assert os.path.exists(s.log_path + ".1") and not os.path.exists(s.log_path + ".2")
    assert "has been replaced" in err or "following new file" in err, err


def test_rotation_needs_no_spare_descriptor(started):
    """At the descriptor limit the log still rotates: the old descriptor is
    given up for the new file, never one more."""
    s = started("a", logging={"max_file_bytes": 4096, "keep_files": 2},
                limits={"max_clients": 1000}).start()
    limit = 48
    subprocess.run(["prlimit", f"--pid={s.proc.pid}", f"--nofile={limit}:{limit}"], check=True)
    held = []
    try:
        for _ in range(limit + 10):
            held.append(connect(s.port))
        s.read_log(wait_for="reason=out of file descriptors", timeout=5)
        wait_for(lambda: len(os.listdir(f"/proc/{s.proc.pid}/fd")) == limit, 5.0, what="a full fd table")
        c = held[0]                 # accepted first, so still served
        for k in range(120):        # about 30 KiB of log: several rotations
            ask(c, f"full-{k}", f"2.{k:04d}")
        ask(c, "last-mark", "3.0")
        s.read_log(wait_for="last-mark", timeout=5)
        assert len(os.listdir(f"/proc/{s.proc.pid}/fd")) == limit
    finally:
        for h in held:
            h.close()
    files = log_files(os.path.dirname(s.log_path))
    assert set(files) == {"Bailey.log", "Bailey.log.1", "Bailey.log.2"}, files
    assert all(n <= 4096 for n in files.values()), files
    assert "full-119" in open(s.log_path).read() + open(s.log_path + ".1").read()
    assert "log-rotate-failed" not in open(s.log_path).read()


def test_logs_are_not_world_readable(started):
    s = started("a")
    os.makedirs(os.path.dirname(s.log_path))
    moved = os.path.join(os.path.dirname(s.log_path), "moved.log")
    with open(s.log_path, "w") as f:          # left by an older version
        f.write("2026-01-01T00:00:00.000Z INFO old line\n")
    os.chmod(s.log_path, 0o666)
    old = os.umask(0)                          # the mode must not rely on the umask
    try:
        s.start()
    finally:
        os.umask(old)
    s.read_log(wait_for="listening")
    assert stat.S_IMODE(os.stat(s.log_path).st_mode) == 0o640
    # a file the server creates itself
    os.rename(s.log_path, moved)
    s.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: os.path.exists(s.log_path), 5.0, what="the reopened log")
    mode = stat.S_IMODE(os.stat(s.log_path).st_mode)
    assert mode & 0o137 == 0, oct(mode)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs under tmp_path, unmounted at the end; skips without root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (tests run as root in CI)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield str(mnt)      # ask for it before 'started', so the server stops first
    finally:
        if subprocess.run(["umount", str(mnt)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)])


def fill(path):
    """Write path until the file system is full, down to the last byte."""
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 1):
            block = b"x" * chunk
            while True:
                try:
                    if f.write(block) < chunk:
                        break
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break


def test_full_disk_never_stops_serving(small_tmpfs, started):
    logs = os.path.join(small_tmpfs, "logs")
    s = started("a", logging={"dir": logs}).start()
    s.log_path = os.path.join(logs, "Bailey.log")
    s.read_log(wait_for="listening")
    filler = os.path.join(small_tmpfs, "filler")
    fill(filler)
    n = 300
    with connect(s.port) as c:
        t0 = time.time()
        for k in range(n):            # about 70 KiB of log: far past any free space
            ask(c, f"full-{k}", f"4.{k:04d}")
        ask(c, "lost-mark", "5.0")
        took = time.time() - t0
    time.sleep(0.3)                   # past flush_ms: the batches met the full disk
    size_full = os.path.getsize(s.log_path)
    assert took < 10, took
    assert s.proc.poll() is None
    # the herd still answers new connections, exactly
    assert exchange(s.port, b"IAMAT probe +1.0+1.0 7\n").startswith(b"AT Bailey ")
    assert "lost-mark" not in s.read_log()

    os.unlink(filler)
    with connect(s.port) as c:
        ask(c, "back-mark", "6.0")
    log = s.read_log(wait_for="back-mark", timeout=5)
    assert "back-mark" in log, log[-2000:]
    assert "lost-mark" not in log                 # dropped, not held back
    m = re.search(r"WARN log-dropped lines=(\d+) bytes=(\d+) reason=No space left on device\n", log)
    assert m, log[-2000:]
    assert int(m.group(1)) >= n and int(m.group(2)) > 100 * n, m.group(0)
    assert size_full < m.start() < log.index("back-mark")
    assert len(re.findall("log-dropped", log)) == 1
