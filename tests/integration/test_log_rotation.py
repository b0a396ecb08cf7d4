"""Bounded logs (docs/PROTOCOL.md, logging.max_file_bytes and keep_files):
rotation under load, tail -F across rotations, rotation with no descriptor
to spare, a full disk that never stops serving, and file modes."""
import errno
import os
import json
import re
import signal
import stat
import subprocess
import time

import pytest

from conftest import Server, connect, exchange, program, recv_exact_lines

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) \S+")
LOC = "+34.068930-118.445127"


def log_files(folder, name="Bailey"):
    """{file name: size} of NAME.log and every NAME.log.* in folder."""
    return {f: os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
            if f == f"{name}.log" or f.startswith(f"{name}.log.")}


def wait_until(cond, timeout=5.0, what="condition"):
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


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
                wait_until(lambda: f"mark-{i}".encode() in open(out_path, "rb").read(),
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
        wait_until(lambda: len(os.listdir(f"/proc/{s.proc.pid}/fd")) == limit, what="a full fd table")
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
    wait_until(lambda: os.path.exists(s.log_path), what="the reopened log")
    mode = stat.S_IMODE(os.stat(s.log_path).st_mode)
    assert mode & 0o137 == 0, oct(mode)


# ---------------------------------------------------------------- full disk

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
