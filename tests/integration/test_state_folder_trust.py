"""The state and log folders must be the herd's user's alone, and no file in
them is written through a symbolic link (docs/PROTOCOL.md, "Processes and
files").

Before this, a state or log folder anyone could write in was used as it
was: a link planted at NAME.prom.tmp, at NAME.log, at NAME.stderr or at the
supervisor's temporary files made the herd overwrite the link's target, and
a NAME.snap that was a link (or another user's file) was loaded.  Now both
programs refuse such a folder before they write anything, and every file
is opened so that a link is never followed.
"""
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import Server, exchange, free_port, program, read_log, wait_for, wait_log, write_config
from test_cov_supervisor import SECRET, SupHerd

PRECIOUS = b"precious: the herd must never write here\n"
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a folder away")


def outside_target(tmp_path):
    """A file outside the herd's folders that a planted link points to."""
    path = tmp_path / "outside.txt"
    path.write_bytes(PRECIOUS)
    return str(path)


def one_server_config(folder, port):
    return write_config(str(folder), {"Bailey": (port, [])})


def run(args, env=None, timeout=20):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, HERD_SECRET=SECRET, **(env or {})))


# ------------------------------------------------ folders others may write

@pytest.mark.parametrize("which", ["state", "logs"])
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_open_folder_is_refused_by_server_and_supervisor(tmp_path, which, mode):
    port = free_port()
    cfg = one_server_config(tmp_path, port)
    folder = tmp_path / which
    folder.mkdir()
    os.chmod(folder, mode)                       # whatever the umask
    setting = "herd.state_dir" if which == "state" else "logging.dir"
    for prog in ("herd-server", "herd-supervisor"):
        args = [program(prog), "Bailey", "-c", cfg] if prog == "herd-server" \
            else [program(prog), "-c", cfg]
        r = run(args, env={"HERD_BIN_DIR": os.path.dirname(program(prog))})
        assert r.returncode == 1, (prog, r)
        assert f"{setting} {folder} is writable by" in r.stderr, (prog, r.stderr)
        assert f"chmod go-w {folder}" in r.stderr, (prog, r.stderr)
        assert os.listdir(folder) == [], (prog, os.listdir(folder))
        # nothing started: no pid file
        assert not os.path.exists(tmp_path / "servers.pid"), prog
    with socket.socket() as s:                  # nobody listens on the port
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_the_folder_check_comes_before_the_secret_is_made(tmp_path):
    """--init-secret (start_servers.sh runs it first) refuses the same way."""
    cfg = one_server_config(tmp_path, free_port())
    folder = tmp_path / "state"
    folder.mkdir()
    os.chmod(folder, 0o777)
    r = subprocess.run([program("herd-supervisor"), "-c", cfg, "--init-secret"],
                       capture_output=True, text=True, timeout=20,
                       env={k: v for k, v in os.environ.items() if k != "HERD_SECRET"})
    assert r.returncode != 0 and f"chmod go-w {folder}" in r.stderr, r
    assert os.listdir(folder) == []


@ROOT_ONLY
@pytest.mark.parametrize("linked", [False, True])
def test_another_users_folder_is_refused(tmp_path, linked):
    """Owned by uid 65534 (directly, or behind a symbolic link, which is
    followed): refused with the chown that fixes it."""
    cfg = one_server_config(tmp_path, free_port())
    theirs = tmp_path / ("theirs" if linked else "state")
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    if linked:
        os.symlink(theirs, tmp_path / "state")
    state = tmp_path / "state"
    for args in ([program("herd-server"), "Bailey", "-c", cfg], [program("herd-supervisor"), "-c", cfg]):
        r = run(args)
        assert r.returncode != 0, r
        assert f"herd.state_dir {state} belongs to uid 65534" in r.stderr, r.stderr
        assert f"chown {os.geteuid()} {state}" in r.stderr, r.stderr
        assert os.listdir(theirs) == []


def test_a_link_to_an_own_folder_is_followed(tmp_path):
    """The rule is about the folder a link names: our own, 0700, is fine."""
    real = tmp_path / "s0" / "real-state"
    real.mkdir(parents=True, mode=0o700)
    os.symlink(real, tmp_path / "s0" / "state")
    s = Server(tmp_path / "s0")
    try:
        s.start()
        assert wait_for(lambda: os.path.exists(real / "Bailey.prom"), 5)
    finally:
        s.stop()


# ------------------------------------------------------- links planted

def plant(target, link):
    """A symbolic link at 'link' (False while the name is taken)."""
    try:
        os.symlink(target, link)
        return True
    except FileExistsError:
        return False


def prom_written_after(path, t0, seconds):
    """NAME.prom is a regular file written at least 'seconds' after t0."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return not os.path.islink(path) and st.st_mtime >= t0 + seconds


def test_link_at_metrics_temp_file_is_never_written_through(tmp_path):
    target = outside_target(tmp_path)
    (tmp_path / "s0").mkdir()
    s = Server(tmp_path / "s0")
    state = tmp_path / "s0" / "state"
    state.mkdir(mode=0o700)
    os.symlink(target, state / "Bailey.prom.tmp")
    t0 = time.time()
    try:
        s.start()
        prom = str(state / "Bailey.prom")
        assert wait_for(lambda: prom_written_after(prom, t0, 1.1), 5), os.listdir(state)
        assert b"proxyherd_up 1\n" in open(prom, "rb").read()
    finally:
        s.stop()
    assert open(target, "rb").read() == PRECIOUS


def test_link_at_snapshot_temp_file_is_never_written_through(tmp_path):
    """The snapshot at a graceful stop is written in process, to
    NAME.snap.tmp.<server pid>: a link planted there is replaced."""
    target = outside_target(tmp_path)
    (tmp_path / "s0").mkdir()
    s = Server(tmp_path / "s0")
    state = tmp_path / "s0" / "state"
    try:
        s.start()
        assert wait_for(lambda: os.path.exists(state / "Bailey.prom"), 5)
        os.symlink(target, state / f"Bailey.snap.tmp.{s.proc.pid}")
    finally:
        s.stop()
    assert open(target, "rb").read() == PRECIOUS
    snap = state / "Bailey.snap"
    assert not os.path.islink(snap) and snap.read_bytes() == b"HERDSNAP 1 Bailey\nEND 0\n"


def test_link_at_the_log_refuses_the_start(tmp_path):
    target = outside_target(tmp_path)
    cfg = one_server_config(tmp_path, free_port())
    (tmp_path / "logs").mkdir(mode=0o750)
    log = tmp_path / "logs" / "Bailey.log"
    os.symlink(target, log)
    r = run([program("herd-server"), "Bailey", "-c", cfg])
    assert r.returncode != 0, r
    assert f"cannot open {log}: a symbolic link" in r.stderr, r.stderr
    assert open(target, "rb").read() == PRECIOUS
    os.symlink(target, tmp_path / "logs" / "supervisor.log")
    r = run([program("herd-supervisor"), "-c", cfg])
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
    h = SupHerd(tmp_path, {"Bailey": []},
                extra="  restart_max: 1\n  backoff_initial_ms: 50\n")
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


def test_links_at_the_supervisors_temporary_files_are_never_written_through(tmp_path):
    """servers.pid and supervisor.state are rewritten through FILE.tmp.<pid>
    whenever a server starts again."""
    target = outside_target(tmp_path)
    h = SupHerd(tmp_path, {"Bailey": []})
    try:
        h.start()
        sup = h.proc.pid
        for link in (tmp_path / f"servers.pid.tmp.{sup}",
                     tmp_path / "state" / f"supervisor.state.tmp.{sup}"):
            assert wait_for(lambda: plant(target, link), 5), link   # not while it writes
        old = h.pids()["Bailey"]
        os.kill(old, signal.SIGKILL)
        h.killed.add(old)
        assert wait_for(lambda: h.pids().get("Bailey", old) != old, 10), h.pids()
        state = (tmp_path / "state" / "supervisor.state")
        assert wait_for(lambda: " 1 running" in state.read_text(), 5), state.read_text()
        assert not os.path.islink(state) and not os.path.islink(tmp_path / "servers.pid")
    finally:
        h.stop()
    assert open(target, "rb").read() == PRECIOUS


# ---------------------------------------------- state files loaded at start

def write_outside_snapshot(tmp_path):
    path = tmp_path / "outside.snap"
    path.write_bytes(b"HERDSNAP 1 Bailey\n"
                     b"AT Bailey +0.000000001 planted +34.068930-118.445127 1700000000.5\n"
                     b"END 1\n")
    return path


def start_with_snapshot(tmp_path, plant):
    (tmp_path / "s0").mkdir()
    state = tmp_path / "s0" / "state"
    state.mkdir(mode=0o700)
    plant(state / "Bailey.snap")
    s = Server(tmp_path / "s0")
    s.start()
    return s, state


def test_snapshot_that_is_a_link_is_not_followed(tmp_path):
    """Logged, not loaded; the stop's snapshot replaces the link itself."""
    outside = write_outside_snapshot(tmp_path)
    before = outside.read_bytes()
    s, state = start_with_snapshot(tmp_path, lambda p: os.symlink(outside, p))
    try:
        log = s.read_log(wait_for="snapshot-unreadable")
        assert "(a symbolic link, never followed): starting empty" in log, log
        assert "snapshot-loaded" not in log, log
        reply = exchange(s.port, b"WHATSAT planted 10 1\n")
        assert reply.startswith(b"? "), "the linked snapshot was loaded"
    finally:
        s.stop()
    assert outside.read_bytes() == before
    snap = state / "Bailey.snap"
    assert not os.path.islink(snap) and snap.read_bytes() == b"HERDSNAP 1 Bailey\nEND 0\n"


@ROOT_ONLY
def test_snapshot_of_another_user_is_set_aside_unread(tmp_path):
    outside = write_outside_snapshot(tmp_path)

    def plant(path):
        os.rename(outside, path)
        os.chown(path, 65534, 65534)
    s, state = start_with_snapshot(tmp_path, plant)
    try:
        log = s.read_log(wait_for="snapshot-damaged")
        assert "reason=another user's file" in log, log
        reply = exchange(s.port, b"WHATSAT planted 10 1\n")
        assert reply.startswith(b"? "), "another user's snapshot was loaded"
    finally:
        s.stop()
