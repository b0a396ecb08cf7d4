"""servers.lock, servers.pid and the state folder (docs/PROTOCOL.md,
"Processes and files"): a second supervisor refused, stale and foreign pid
files never trusted or signalled, lock files that are held, replaced,
removed, links or FIFOs, and the folder's owner and mode checked before
anything is written there.
"""
import fcntl
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from harness import (alive, DEFAULT_LINKS, free_port, NO_HANG, one_server, one_server_config,
                     outside_target, plant, PRECIOUS, program, read_log, ROOT, ROOT_ONLY,
                     run_with_secret, Server, status_rows, SUP_HERD_SECRET, SupervisedHerd,
                     supervisor_cmd, wait_for, wait_gone, wait_listening, write_config, write_pids)


def test_stop_with_another_config_of_the_folder_stops_nothing(tmp_path):
    """servers.lock and servers.pid are per folder: stop_servers.sh -c b.yml
    stopped the herd of a.yml, beside it, and --status -c b.yml showed a.yml's
    supervisor as b.yml's."""
    a = SupervisedHerd(tmp_path)
    port = free_port()
    other = os.path.join(a.dir, "other.yml")
    os.rename(write_config(a.dir, {"Other": (port, [])}), other)
    a = SupervisedHerd(tmp_path)   # config.yml again, with the five servers
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


def test_removed_lock_file_does_not_orphan_the_herd(tmp_path):
    """rm servers.lock while the herd runs: stop_servers.sh says "not
    running", removes servers.pid and leaves every process running, with
    nothing left that names them (README says never to do it; an operator
    cleaning up "stale" files will)."""
    import signal
    import time
    h = SupervisedHerd(tmp_path)
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
    r = supervisor_cmd(files.config, env=files.env, timeout=10)
    assert r.returncode != 0 and "symbolic link" in r.stderr, r.stdout + r.stderr
    with open(target) as f:
        assert f.read() == "keep me\n"


def test_start_twice_refuses_and_stale_pidfile_is_cleared(sherd):
    with open(sherd.pidfile, "w") as f:
        f.write("supervisor 999999\nBailey 999998\n")
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0 and "stale" in r.stdout
    r = sherd.script("start_servers.sh")
    assert r.returncode != 0 and "already running" in r.stderr


def status(cfg):
    return subprocess.run([program("herd-supervisor"), "-c", cfg, "--status"],
                          capture_output=True, text=True, timeout=30)


def test_status_with_a_stale_pid_file(tmp_path):
    """--status (make status, start_servers.sh) must not trust a servers.pid
    whose supervisor is gone: exit 3, "no herd is running", "stale"."""
    cfg = write_config(str(tmp_path), {"Bailey": (free_port(), [])})
    r = status(cfg)
    assert r.returncode == 3 and "no herd is running" in r.stdout and "missing" in r.stdout, r
    dead = subprocess.Popen(["true"])
    dead.wait()                      # a pid that was just released
    with open(tmp_path / "servers.pid", "w") as f:
        f.write(f"supervisor {dead.pid}\nBailey {dead.pid}\n")
    r = status(cfg)
    assert r.returncode == 3, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    assert "no herd is running" in r.stdout and "stale" in r.stdout, r.stdout


@pytest.fixture
def sleepers():
    """Unrelated processes whose pids a stale pid file may name."""
    procs = []

    def make(n=1):
        new = [subprocess.Popen(["sleep", "120"]) for _ in range(n)]
        procs.extend(new)
        return [p.pid for p in new]

    yield make
    for p in procs:
        p.kill()
        p.wait()


def test_stop_with_a_stale_pidfile_signals_nothing(loose_sherd, sleepers):
    a, b = sleepers(2)
    write_pids(loose_sherd.dir, [("supervisor", 4000000), ("Bailey", a)])
    r = loose_sherd.script("stop_servers.sh")
    assert r.returncode == 0, r.stderr
    assert "not running" in r.stdout and "stale" in r.stdout
    assert alive(a), "stop_servers.sh killed an unrelated process"
    assert not os.path.exists(loose_sherd.pidfile)
    # the supervisor's own pid reused by an unrelated process
    write_pids(loose_sherd.dir, [("supervisor", b), ("Bailey", a)])
    r = loose_sherd.script("stop_servers.sh")
    assert r.returncode == 0 and "not running" in r.stdout, r.stdout + r.stderr
    time.sleep(0.3)
    assert alive(a) and alive(b), "stop_servers.sh killed an unrelated process"
    assert not os.path.exists(loose_sherd.pidfile)


def test_status_does_not_trust_a_stale_pidfile(loose_sherd, sleepers):
    a, b = sleepers(2)
    write_pids(loose_sherd.dir, [("supervisor", a), ("Bailey", b)])
    st = subprocess.run([program("herd-supervisor"), "-c", loose_sherd.config, "--status"],
                        capture_output=True, text=True, timeout=30)
    assert st.returncode == 3 and "no herd is running" in st.stdout and "stale" in st.stdout, \
        st.stdout


def test_start_over_a_stale_pidfile_with_a_live_pid(loose_sherd, sleepers):
    a, b = sleepers(2)
    write_pids(loose_sherd.dir, [("supervisor", a), ("Bailey", b)])
    r = loose_sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stale" in r.stdout
    pids = loose_sherd.pids()
    assert pids["supervisor"] != a and "5 of 5 servers listening" in r.stdout
    r = loose_sherd.script("stop_servers.sh")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert wait_gone(pids.values())
    assert alive(a) and alive(b)


def second_supervisor_refuses(sherd, first):
    second = subprocess.Popen([program("herd-supervisor"), "-c", sherd.config], env=sherd.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rc = second.wait(timeout=10)
        err = second.stderr.read()
    except subprocess.TimeoutExpired:
        rc, err = None, ""
    finally:
        if second.poll() is None:
            second.terminate()
            second.wait(timeout=15)
    assert rc not in (None, 0), "a second supervisor ran on the same config"
    assert f"pid {first['supervisor']}" in err, err
    assert sherd.pids() == first
    r = sherd.script("start_servers.sh")
    assert r.returncode != 0 and f"pid {first['supervisor']}" in r.stderr
    r = sherd.script("stop_servers.sh")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert wait_gone(first.values()), "the first herd still runs after 'stopped'"
    for port in sherd.ports.values():
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()


def ours(h, pid):
    """True when pid runs a program of the herd on h's config."""
    try:
        return h.config in open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        return False


def test_second_supervisor_refuses_and_stop_stops_the_first(loose_sherd):
    r = loose_sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    first = loose_sherd.pids()
    try:
        second_supervisor_refuses(loose_sherd, first)
    finally:   # without the fix, the first herd outlives stop_servers.sh
        if ours(loose_sherd, first["supervisor"]):
            os.kill(first["supervisor"], signal.SIGTERM)
            wait_gone(first.values())


def test_supervisor_leaves_a_pidfile_that_is_not_its_own(loose_sherd):
    sup, kids = loose_sherd.start_supervisor()
    try:
        write_pids(loose_sherd.dir, [("supervisor", 4000001)])
        # nothing changed in the herd: the supervisor must not write its files
        # again (it did once more a round after the start, replacing this one,
        # and then removed it at exit: a flake in CI)
        time.sleep(1.5)
        assert open(loose_sherd.pidfile).read() == "supervisor 4000001\n"
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    assert wait_gone(kids)
    assert open(loose_sherd.pidfile).read() == "supervisor 4000001\n"
    assert loose_sherd.wait_log("supervisor", "left alone")


def hold_lock(folder, text):
    """servers.lock, a new file holding text, locked by this process (as a
    supervisor holds it); returns its descriptor."""
    path = os.path.join(str(folder), "servers.lock")
    if os.path.lexists(path):
        os.remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, text.encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_lock_held_with_no_valid_supervisor_pid(tmp_path):
    """A servers.lock held, but empty, holding garbage, a pid below 1, no
    config line, the pid of a process that is not herd-supervisor, or of no
    process: --status finds no herd (the pid file is stale), and a
    supervisor refuses to start, naming the pid only when there is one."""
    cfg, port = one_server(tmp_path)
    real = os.path.realpath(cfg)
    lock = f"{tmp_path}/servers.lock"
    anyone = f"another process holds {lock}: a supervisor of {cfg} is starting or running"
    stranger = subprocess.Popen(["sleep", "60"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    cases = [("", anyone), ("garbage\n", anyone), (f"-5\n{real}\n", anyone),
             (f"{stranger.pid}",                   # no newline, no config line
              f"another supervisor (pid {stranger.pid}) runs the herd of {cfg} (it holds "
              f"{lock}); stop it first with ./stop_servers.sh"),
             (f"{gone.pid}\n{real}\n",
              f"another supervisor (pid {gone.pid}) runs the herd of {cfg} (it holds "
              f"{lock}); stop it first with ./stop_servers.sh")]
    try:
        for text, refusal in cases:
            fd = hold_lock(tmp_path, text)
            try:
                if os.path.exists(f"{tmp_path}/servers.pid"):
                    os.remove(f"{tmp_path}/servers.pid")
                r = supervisor_cmd(cfg, "--status")
                assert (r.returncode, r.stdout) == (
                    3, f"no herd is running ({tmp_path}/servers.pid: missing)\n"), (text, r)
                pid = text.split("\n")[0]
                pid = pid if pid.lstrip("-").isdigit() else stranger.pid
                with open(f"{tmp_path}/servers.pid", "w") as f:
                    f.write(f"supervisor {pid}\nAlpha {stranger.pid}\n")
                r = supervisor_cmd(cfg, "--status")
                assert (r.returncode, r.stdout) == (
                    3, f"no herd is running ({tmp_path}/servers.pid: stale)\n"), (text, r)
                r = supervisor_cmd(cfg)
                assert (r.returncode, r.stderr) == (1, f"herd-supervisor: {refusal}\n"), (text, r)
                assert open(lock).read() == text, "the refused supervisor wrote the lock"
            finally:
                os.close(fd)
        assert not os.path.exists(f"{tmp_path}/logs/Alpha.log"), "a server was started"
    finally:
        stranger.kill()
        stranger.wait()


def test_status_knows_the_supervisor_by_its_program_name(tmp_path):
    """The pid in a held servers.lock is the supervisor when /proc/PID/exe
    ends in herd-supervisor: also after the program file was removed or
    rebuilt under it ("... (deleted)"), and in a folder whose name holds
    " (deleted)"; not a program of another name.  A lock file without the
    config line (an older supervisor's) names a supervisor of any config.
    (A copy of sleep stands in for the supervisor.)"""
    cfg, port = one_server(tmp_path / "herd")
    real = os.path.realpath(cfg)
    folders = {"gone": tmp_path / "gone", "odd": tmp_path / "bin (deleted) here",
               "other": tmp_path / "other"}
    names = {"gone": "herd-supervisor", "odd": "herd-supervisor", "other": "herd-supervisor.old"}
    procs = {}
    try:
        for k, folder in folders.items():
            folder.mkdir()
            exe = folder / names[k]
            shutil.copy("/bin/sleep", exe)
            procs[k] = subprocess.Popen([str(exe), "60"])
        assert wait_for(lambda: all(os.path.basename(os.readlink(f"/proc/{p.pid}/exe")) ==
                                    names[k] for k, p in procs.items()), 5)
        shutil.rmtree(folders["gone"])
        assert os.readlink(f"/proc/{procs['gone'].pid}/exe").endswith(" (deleted)")
        for k, p in procs.items():
            fd = hold_lock(tmp_path / "herd", f"{p.pid}\n" if k == "odd" else f"{p.pid}\n{real}\n")
            try:
                with open(tmp_path / "herd" / "servers.pid", "w") as f:
                    f.write(f"supervisor {p.pid}\nAlpha 1\n")
                r = supervisor_cmd(cfg, "--status")
                if k == "other":
                    assert (r.returncode, r.stdout) == (
                        3, f"no herd is running ({tmp_path}/herd/servers.pid: stale)\n"), r
                    continue
                assert r.returncode == 1, (k, r)
                assert r.stdout.startswith(f"supervisor pid {p.pid}; 0 of 1 servers listening\n")
                assert status_rows(r.stdout)["Alpha"] == [
                    "Alpha", f"127.0.0.1:{port}", "-", "-", "0", "no", "-",
                    f"{tmp_path}/herd/logs/Alpha.log"], (k, r.stdout)
            finally:
                os.close(fd)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_fifo_as_servers_lock_hangs_nothing(tmp_path):
    """A FIFO where servers.lock belongs: --status said nothing and hung
    for ever (open() waited for a writer), and so did stop_servers.sh and
    start_servers.sh.  Now --status finds no herd, the supervisor refuses
    to start, and the scripts end."""
    cfg, port = one_server(tmp_path)
    lock = f"{tmp_path}/servers.lock"
    os.mkfifo(lock, 0o600)
    r = supervisor_cmd(cfg, "--status", timeout=10)
    assert (r.returncode, r.stdout) == (3, f"no herd is running ({tmp_path}/servers.pid: missing)\n")
    with open(f"{tmp_path}/servers.pid", "w") as f:
        f.write("supervisor 4000000\n")
    r = supervisor_cmd(cfg, "--status", timeout=10)
    assert (r.returncode, r.stdout) == (3, f"no herd is running ({tmp_path}/servers.pid: stale)\n")
    r = supervisor_cmd(cfg, timeout=10)
    assert (r.returncode, r.stderr) == (1, f"herd-supervisor: cannot write {lock}: Invalid argument\n")
    env = dict(os.environ, HERD_BIN_DIR=os.path.dirname(program("herd-supervisor")),
               HERD_START_TIMEOUT="3")
    env.pop("HERD_SECRET", None)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([os.path.join(here, "stop_servers.sh"), "-c", cfg], capture_output=True,
                       text=True, env=env, timeout=15)
    assert (r.returncode, r.stdout) == (
        0, f"the herd is not running (removed a stale {tmp_path}/servers.pid; "
           "signalled no process)\n"), r
    r = subprocess.run([os.path.join(here, "start_servers.sh"), "-c", cfg], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 1, r
    assert f"herd-supervisor: cannot write {lock}: Invalid argument" in r.stderr, r.stderr
    assert os.path.exists(lock) and not os.path.exists(f"{tmp_path}/servers.pid")
    assert not wait_listening(port, type("P", (), {"poll": lambda self: None})(), timeout=0.5)


def test_lock_replaced_under_a_running_supervisor(sup_herd):
    """servers.lock renamed over, turned into a folder, held by another
    process, and removed once the config file is gone: the supervisor takes
    a new one within a second when it can ("lock-renewed"), says once why
    when it cannot ("lock-lost"), and names the config as it was given when
    its real path cannot be found any more."""
    h = sup_herd({"Alpha": []})
    link = h.path("herd.yml")
    os.symlink("config.yml", link)
    h.start(config=link)
    sup = h.pids()["supervisor"]
    lock = h.path("servers.lock")
    real = os.path.realpath(h.config)
    mine = f"{sup}\n{real}\n"
    assert open(lock).read() == mine

    def log(what):
        return read_log(h.dir, "supervisor").count(what)

    def renewed(n):
        return wait_for(lambda: log("WARN lock-renewed servers.lock was removed or replaced; "
                                    "this supervisor holds a new one") == n, 10) \
            and open(lock).read() == mine

    # another file renamed over it
    with open(lock + ".new", "w") as f:
        f.write("4000000\n")
    os.rename(lock + ".new", lock)
    assert renewed(1), read_log(h.dir, "supervisor")
    r = h.status()
    assert r.returncode == 0 and r.stdout.startswith(f"supervisor pid {sup}; 1 of 1"), r.stdout

    lost = "ERROR lock-lost servers.lock was removed or replaced and cannot be taken again: "
    # a folder in its place
    os.remove(lock)
    os.mkdir(lock)
    assert wait_for(lambda: log(f"{lost}cannot open {lock}: Is a directory") == 1, 10), \
        read_log(h.dir, "supervisor")
    os.rmdir(lock)
    assert renewed(2), read_log(h.dir, "supervisor")

    # another process holds the new file: said once, however long it lasts
    fd = hold_lock(h.dir, "garbage\n")
    try:
        want = f"{lost}another process holds {lock}: a supervisor of {link} is starting or running"
        assert wait_for(lambda: log(want) == 1, 10), read_log(h.dir, "supervisor")
        time.sleep(2.2)                 # two more tries at least
        assert log(lost) == 2, read_log(h.dir, "supervisor")
        assert open(lock).read() == "garbage\n"
    finally:
        os.close(fd)
    assert renewed(3), read_log(h.dir, "supervisor")

    # the config's real path is gone: the lock names the path as given
    os.rename(h.config, h.config + ".away")
    try:
        os.remove(lock)
        mine = f"{sup}\n{link}\n"
        assert renewed(4), (open(lock).read(), read_log(h.dir, "supervisor"))
    finally:
        os.rename(h.config + ".away", h.config)
    assert log(lost) == 2


def test_lock_file_that_cannot_be_written_whole(tmp_path):
    """A file size limit (as a full disk) cuts the write of servers.lock
    short: the supervisor refuses to start with "File too large", where it
    said a stale, unrelated error before (a short write sets no errno)."""
    folder = str(tmp_path)
    while len(os.path.realpath(folder)) < 3650:      # a config path of about 3.7 KB
        folder = os.path.join(folder, "d" * min(200, 3700 - len(os.path.realpath(folder))))
    cfg, port = one_server(folder)
    lock = os.path.join(folder, "servers.lock")

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3500, 3500))   # above any file it needs
    r = subprocess.run([program("herd-supervisor"), "-c", cfg], capture_output=True, text=True,
                       timeout=30, preexec_fn=small_files)
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", f"herd-supervisor: cannot write {lock}: File too large\n"), r
    assert os.path.getsize(lock) == 3500
    assert not os.path.exists(os.path.join(folder, "servers.pid"))
    assert not os.path.exists(os.path.join(folder, "logs"))
    r = supervisor_cmd(cfg, "--status")     # the lock file is not held
    assert (r.returncode, r.stdout) == (3, f"no herd is running ({folder}/servers.pid: missing)\n")


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
        r = run_with_secret(args, env={"HERD_BIN_DIR": os.path.dirname(program(prog))})
        assert r.returncode == 1, (prog, r)
        assert f"{setting} {folder} is writable by" in r.stderr, (prog, r.stderr)
        assert f"chmod go-w {folder}" in r.stderr, (prog, r.stderr)
        assert os.listdir(folder) == [], (prog, os.listdir(folder))
        # nothing started: no pid file
        assert not os.path.exists(tmp_path / "servers.pid"), prog
    with socket.socket() as s:                  # nobody listens on the port
        assert s.connect_ex(("127.0.0.1", port)) != 0


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
        r = run_with_secret(args)
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


def test_links_at_the_supervisors_temporary_files_are_never_written_through(tmp_path):
    """servers.pid and supervisor.state are rewritten through FILE.tmp.<pid>
    whenever a server starts again."""
    target = outside_target(tmp_path)
    h = SupervisedHerd(tmp_path, {"Bailey": []}, extra=NO_HANG, secret=SUP_HERD_SECRET)
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


# ------------------------------------------------------- the supervisor's files

def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_of_a_running_herd_have_their_documented_modes(sherd):
    """README, Operations: servers.pid "mode 0644: pids only", the metrics
    files 0644, a server's NAME.stderr "(mode 0640)"; under umask 0, so the
    modes are the programs' own."""
    old = os.umask(0)
    try:
        r = sherd.script("start_servers.sh")
    finally:
        os.umask(old)
    assert r.returncode == 0, r.stderr + r.stdout
    state, logs = os.path.join(sherd.dir, "state"), os.path.join(sherd.dir, "logs")
    assert mode(sherd.pidfile) == 0o644
    for n in DEFAULT_LINKS:
        prom = os.path.join(state, f"{n}.prom")
        assert wait_for(lambda: os.path.exists(prom), 5), prom
        assert mode(prom) == 0o644, (prom, oct(mode(prom)))
        err = os.path.join(logs, f"{n}.stderr")
        assert mode(err) == 0o640, (err, oct(mode(err)))
    assert sherd.script("stop_servers.sh").returncode == 0
