"""Defects a hostile review of the trust fixes found (secrets, snapshots,
scripts, logs), each pinned by the test that reproduced it."""
import os
import subprocess

import pytest

from conftest import program
from test_supervisor import ScriptHerd
from test_trust_supervisor import run_server, write_secret


@pytest.fixture
def files(tmp_path):
    """A herd's config in tmp_path; nothing is started."""
    return ScriptHerd(tmp_path)


def supervisor(h, *args, env=None, timeout=10):
    return subprocess.run([program("herd-supervisor"), "-c", h.config, *args],
                          env=env or h.env, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------- secrets

def test_white_space_herd_secret_is_refused_like_an_empty_file(files):
    """HERD_SECRET of blanks trimmed to nothing turned every link off
    without a word, where an empty secret file is refused."""
    env = dict(files.env, HERD_SECRET="  \t ")
    files.env = env
    rc, err = run_server(files, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with a blank HERD_SECRET (no links)"
    assert "HERD_SECRET" in err and "white space" in err, err
    r = supervisor(files)
    assert r.returncode != 0 and "HERD_SECRET" in r.stderr, r.stdout + r.stderr


def test_secret_that_is_a_fifo_is_refused_at_once(files):
    """open() of a FIFO secret blocked forever, with TERM already caught:
    the server hung at start and ignored TERM."""
    files.env.pop("HERD_SECRET", None)
    os.makedirs(os.path.join(files.dir, "state"))
    path = os.path.join(files.dir, "state", "herd.secret")
    os.mkfifo(path, 0o600)
    p = subprocess.Popen([program("herd-server"), "Bailey", "-c", files.config], env=files.env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rc = p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()   # TERM does not reach a server blocked in that open()
        p.wait()
        rc = None
    err = p.stderr.read()
    assert rc not in (None, 0), "herd-server hung on a FIFO secret"
    assert "not a regular file" in err, err
    r = supervisor(files, "--init-secret")
    assert r.returncode != 0 and "not a regular file" in r.stderr, r.stdout + r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_secret_owned_by_another_user_is_refused(files):
    """A 0600 secret owned by another user passed the mode check, yet that
    user may read and change it."""
    files.env.pop("HERD_SECRET", None)
    path = write_secret(files, "s3cret-of-the-herd\n", 0o600)
    os.chown(path, 65534, 65534)
    rc, err = run_server(files, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with another user's secret"
    assert "belongs to uid 65534" in err, err
    r = supervisor(files, "--init-secret")
    assert r.returncode != 0 and "belongs to uid 65534" in r.stderr, r.stdout + r.stderr


def test_init_secret_through_a_dangling_link_says_no(files):
    """--init-secret on a symbolic link to a missing file printed "created the
    herd secret" and exited 0; nothing was created and the herd ran without
    links."""
    files.env.pop("HERD_SECRET", None)
    os.makedirs(os.path.join(files.dir, "state"))
    path = os.path.join(files.dir, "state", "herd.secret")
    os.symlink(os.path.join(files.dir, "nowhere", "secret"), path)
    r = supervisor(files, "--init-secret")
    assert "created" not in r.stdout, r.stdout
    assert r.returncode != 0 and "symbolic link" in r.stderr, r.stdout + r.stderr


# ------------------------------------------------------------- snapshots

def test_snapshot_is_never_readable_by_others(tmp_path):
    """The snapshot's temporary file was created 0666 & ~umask and only then
    chmod'ed 0600 (another user could open it in between and read every
    client's location), in a state folder the server created 0755."""
    import shutil
    import signal
    import socket
    import time
    from conftest import free_port, wait_listening, write_config
    port = free_port()
    cfg = write_config(str(tmp_path), {"Snap": (port, [])})
    trace = str(tmp_path / "trace")
    strace = shutil.which("strace")
    cmd = [program("herd-server"), "Snap", "-c", cfg]
    if strace:
        cmd = [strace, "-f", "-qq", "-o", trace, "-e", "trace=openat,open,creat"] + cmd
    env = dict(os.environ, HERD_SECRET="review16-secret")
    if strace:   # LeakSanitizer cannot run under ptrace
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    old = os.umask(0o022)
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    finally:
        os.umask(old)
    try:
        assert wait_listening(port, p, timeout=20)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"IAMAT kiwi +34.068930-118.445127 1621464827.959498503\n")
            assert s.recv(4096).startswith(b"AT ")
        server = p.pid
        if strace:   # the server is strace's child
            deadline = time.time() + 10
            while time.time() < deadline:
                kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
                if kids:
                    server = int(kids[0])
                    break
                time.sleep(0.05)
        os.kill(server, signal.SIGTERM)   # a graceful stop writes the snapshot
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    state = tmp_path / "state"
    assert oct(os.stat(state / "Snap.snap").st_mode & 0o777) == "0o600"
    assert oct(os.stat(state).st_mode & 0o777) == "0o700", "state folder open to others"
    if strace:
        opens = [ln for ln in open(trace) if ".snap.tmp." in ln and "O_CREAT" in ln]
        assert opens, open(trace).read()[-2000:]
        assert all(ln.rstrip().split(", ")[-1].startswith("0600)") for ln in opens), opens


# ---------------------------------------------- two configs in one folder

def test_stop_with_another_config_of_the_folder_stops_nothing(tmp_path):
    """servers.lock and servers.pid are per folder: stop_servers.sh -c b.yml
    stopped the herd of a.yml, beside it, and --status -c b.yml showed a.yml's
    supervisor as b.yml's."""
    from conftest import ROOT, free_port, write_config
    from test_supervisor import alive, wait_gone
    a = ScriptHerd(tmp_path)
    port = free_port()
    other = os.path.join(a.dir, "other.yml")
    os.rename(write_config(a.dir, {"Other": (port, [])}), other)
    a = ScriptHerd(tmp_path)   # config.yml again, with the five servers
    r = a.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    first = a.pids()
    try:
        b = subprocess.run([os.path.join(ROOT, "stop_servers.sh"), "-c", other],
                           capture_output=True, text=True, env=a.env, timeout=60)
        assert all(alive(p) for p in first.values()), \
            f"stop_servers.sh -c other.yml stopped config.yml's herd: {b.stdout}{b.stderr}"
        assert b.returncode != 0 and "another config" in b.stderr, b.stdout + b.stderr
        st = subprocess.run([program("herd-supervisor"), "-c", other, "--status"],
                            capture_output=True, text=True, env=a.env, timeout=30)
        assert st.returncode == 3, st.stdout
        sup = subprocess.run([program("herd-supervisor"), "-c", other], capture_output=True,
                             text=True, env=a.env, timeout=30)
        assert sup.returncode != 0 and "another config" in sup.stderr \
            and os.path.realpath(a.config) in sup.stderr, sup.stderr
    finally:
        r = a.script("stop_servers.sh")
        assert wait_gone(first.values())
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------ logs

def test_failing_rotation_keeps_the_log_bounded_and_says_why(tmp_path):
    """While rotation fails (NAME.log.1 is a folder), every batch of dropped
    lines still added a "log-dropped" line past the 2 x max_file_bytes bound,
    so the file grew without end, and each said "File too large" while the
    real reason (the failed rename) was dropped with the batch."""
    import socket
    import time
    from conftest import Server
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


# ---------------------------------------------------- a deleted lock file

def test_removed_lock_file_does_not_orphan_the_herd(tmp_path):
    """rm servers.lock while the herd runs: stop_servers.sh says "not
    running", removes servers.pid and leaves every process running, with
    nothing left that names them (README says never to do it; an operator
    cleaning up "stale" files will)."""
    import signal
    import time
    from test_supervisor import alive, wait_gone
    h = ScriptHerd(tmp_path)
    r = h.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    first = h.pids()
    try:
        os.unlink(os.path.join(h.dir, "servers.lock"))
        time.sleep(1.5)   # time enough for a supervisor that checks once a second
        r = h.script("stop_servers.sh")
        assert wait_gone(first.values(), timeout=5), f"the herd outlived stop_servers.sh: {r.stdout}"
        assert "lock-renewed" in h.log("supervisor")
    finally:
        if alive(first["supervisor"]):
            os.kill(first["supervisor"], signal.SIGTERM)
            wait_gone(first.values())


def test_lock_file_that_is_a_link_is_refused_and_its_target_kept(files):
    """servers.lock was opened with O_CREAT through a symbolic link and then
    truncated: a link planted in the config folder made the supervisor
    truncate whatever it pointed to."""
    target = os.path.join(files.dir, "precious.txt")
    with open(target, "w") as f:
        f.write("keep me\n")
    os.symlink(target, os.path.join(files.dir, "servers.lock"))
    r = supervisor(files)
    assert r.returncode != 0 and "symbolic link" in r.stderr, r.stdout + r.stderr
    with open(target) as f:
        assert f.read() == "keep me\n"


def test_leftover_cleanup_takes_only_its_own_pid_files(tmp_path):
    """Leftovers are NAME.snap.tmp.PID; a file that only begins the same way
    (another server's, whose name has dots) is not this server's to remove."""
    from test_trust_server import configured
    from conftest import free_port
    s = configured(tmp_path, "Bailey", {"Bailey": (free_port(), [])})
    state = os.path.join(s.dir, "state")
    os.makedirs(state)
    for name in ("Bailey.snap.tmp.41", "Bailey.snap.tmp.x.snap.tmp.7"):
        with open(os.path.join(state, name), "w") as f:
            f.write("x")
    s.start()
    try:
        s.read_log(wait_for="snapshot-leftover-removed")
        assert sorted(n for n in os.listdir(state) if ".snap" in n) == \
            ["Bailey.snap.tmp.x.snap.tmp.7"]
    finally:
        s.stop()
