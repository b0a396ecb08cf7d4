"""The supervisor and the scripts trust no stale pid, run one herd per config,
survive signals while servers start, and keep the herd's files private.

Each test here failed on the code before these fixes: a stale servers.pid
made stop_servers.sh kill whatever process had the pid; a second supervisor
ran beside the first; restart_max >= 64 never gave a server up; a HUP while
a server started killed it; snapshots and state were world-readable and the
secret file's mode and emptiness went unchecked.
"""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port, program, read_log, wait_for, wait_listening, wait_log, write_config
from test_supervisor import ScriptHerd, alive, wait_gone


@pytest.fixture
def sherd(tmp_path):
    h = ScriptHerd(tmp_path)
    yield h
    h.script("stop_servers.sh")


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


def write_pidfile(h, lines):
    with open(h.pidfile, "w") as f:
        f.write("".join(f"{name} {pid}\n" for name, pid in lines))


def still_running(pid):
    return alive(pid)


# ------------------------------------------------- item 1: stale pid files

def test_stop_with_a_stale_pidfile_signals_nothing(sherd, sleepers):
    a, b = sleepers(2)
    write_pidfile(sherd, [("supervisor", 4000000), ("Bailey", a)])
    r = sherd.script("stop_servers.sh")
    assert r.returncode == 0, r.stderr
    assert "not running" in r.stdout and "stale" in r.stdout
    assert still_running(a), "stop_servers.sh killed an unrelated process"
    assert not os.path.exists(sherd.pidfile)
    # the supervisor's own pid reused by an unrelated process
    write_pidfile(sherd, [("supervisor", b), ("Bailey", a)])
    r = sherd.script("stop_servers.sh")
    assert r.returncode == 0 and "not running" in r.stdout, r.stdout + r.stderr
    time.sleep(0.3)
    assert still_running(a) and still_running(b), "stop_servers.sh killed an unrelated process"
    assert not os.path.exists(sherd.pidfile)


def test_status_does_not_trust_a_stale_pidfile(sherd, sleepers):
    a, b = sleepers(2)
    write_pidfile(sherd, [("supervisor", a), ("Bailey", b)])
    st = subprocess.run([program("herd-supervisor"), "-c", sherd.config, "--status"],
                        capture_output=True, text=True, timeout=30)
    assert st.returncode == 3 and "no herd is running" in st.stdout and "stale" in st.stdout, \
        st.stdout


def test_start_over_a_stale_pidfile_with_a_live_pid(sherd, sleepers):
    a, b = sleepers(2)
    write_pidfile(sherd, [("supervisor", a), ("Bailey", b)])
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stale" in r.stdout
    pids = sherd.pids()
    assert pids["supervisor"] != a and "5 of 5 servers listening" in r.stdout
    r = sherd.script("stop_servers.sh")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert wait_gone(pids.values())
    assert still_running(a) and still_running(b)


# ---------------------------------------- item 2: one supervisor per config

def ours(h, pid):
    """True when pid runs a program of the herd on h's config."""
    try:
        return h.config in open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        return False


def test_second_supervisor_refuses_and_stop_stops_the_first(sherd):
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    first = sherd.pids()
    try:
        second_supervisor_refuses(sherd, first)
    finally:   # without the fix, the first herd outlives stop_servers.sh
        if ours(sherd, first["supervisor"]):
            os.kill(first["supervisor"], signal.SIGTERM)
            wait_gone(first.values())


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


def test_supervisor_leaves_a_pidfile_that_is_not_its_own(sherd):
    sup, kids = sherd.start_supervisor()
    try:
        write_pidfile(sherd, [("supervisor", 4000001)])
        # nothing changed in the herd: the supervisor must not write its files
        # again (it did once more a round after the start, replacing this one,
        # and then removed it at exit: a flake in CI)
        time.sleep(1.5)
        assert open(sherd.pidfile).read() == "supervisor 4000001\n"
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 0
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait()
    assert wait_gone(kids)
    assert open(sherd.pidfile).read() == "supervisor 4000001\n"
    assert sherd.wait_log("supervisor", "left alone")


# --------------------------------------------- item 8: restart_max >= 64

def test_restart_max_64_still_gives_up(tmp_path):
    port = free_port()
    cfg = write_config(str(tmp_path), {"Alone": (port, [])},
                       extra="supervisor:\n  restart_max: 64\n  restart_window_s: 3600\n"
                             "  backoff_initial_ms: 1\n  backoff_max_ms: 1\n")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    sup = subprocess.Popen([program("herd-supervisor"), "-c", cfg],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def log():
            return read_log(str(tmp_path), "supervisor")
        assert wait_for(lambda: "child-given-up" in log() or
                        log().count("child-crash server=Alone") >= 70, timeout=120)
        assert "child-given-up server=Alone" in log(), \
            f"{log().count('child-crash')} crashes and never given up"
        assert log().count("child-crash server=Alone") == 64
    finally:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=20) == 0
        blocker.close()


# ------------------------------- item 9: HUP while a server (re)starts

def test_hup_burst_while_servers_restart_kills_none(tmp_path):
    ports = {"Hup": free_port()}
    cfg = write_config(str(tmp_path), {"Hup": (ports["Hup"], [])},
                       extra="supervisor:\n  restart_max: 1000\n  restart_window_s: 1\n"
                             "  backoff_initial_ms: 1\n  backoff_max_ms: 1\n")
    pidfile = os.path.join(str(tmp_path), "servers.pid")
    sup = subprocess.Popen([program("herd-supervisor"), "-c", cfg],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = threading.Event()

    def hups():
        while not done.is_set():
            sup.send_signal(signal.SIGHUP)
            time.sleep(0.002)

    def server_pid():
        try:
            return dict(line.split() for line in open(pidfile)).get("Hup")
        except (OSError, ValueError):
            return None

    try:
        assert wait_listening(ports["Hup"], sup)
        assert wait_log(str(tmp_path), "supervisor", "child-start", timeout=10)
        t = threading.Thread(target=hups)
        t.start()
        killed = 0
        end = time.time() + 4
        while time.time() < end:
            pid = server_pid()
            if pid:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.03)
        done.set()
        t.join()
        assert killed >= 10
        assert wait_listening(ports["Hup"], sup, timeout=20)
        log = read_log(str(tmp_path), "supervisor")
        assert "killed by signal 9" in log
        assert "killed by signal 1 " not in log, \
            [ln for ln in log.splitlines() if "signal 1 " in ln][:3]
        assert "child-given-up" not in log
        assert sup.poll() is None
    finally:
        done.set()
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=20) == 0


# --------------------------------------------- item 10: files and secrets

def test_snapshots_and_state_are_private(sherd):
    state = os.path.join(sherd.dir, "state")
    old = os.umask(0o022)
    try:
        assert sherd.script("start_servers.sh").returncode == 0
        modes = {"supervisor.state": os.stat(os.path.join(state, "supervisor.state")).st_mode}
        assert sherd.script("stop_servers.sh").returncode == 0
    finally:
        os.umask(old)
    snaps = [f for f in os.listdir(state) if f.endswith(".snap")]
    assert len(snaps) == 5
    modes.update({f: os.stat(os.path.join(state, f)).st_mode for f in snaps})
    modes = {f: oct(m & 0o777) for f, m in modes.items()}
    assert modes == {f: "0o600" for f in modes}


def write_secret(h, text, mode):
    os.makedirs(os.path.join(h.dir, "state"), exist_ok=True)
    path = os.path.join(h.dir, "state", "herd.secret")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def run_server(h, name, timeout=10):
    """herd-server NAME on h's config: (exit status or None if it kept running, stderr)."""
    p = subprocess.Popen([program("herd-server"), name, "-c", h.config], env=h.env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait(timeout=15)
        rc = None
    return rc, p.stderr.read()


def test_secret_readable_by_others_is_refused(sherd):
    path = write_secret(sherd, "s3cret-of-the-herd\n", 0o644)
    rc, err = run_server(sherd, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with a world-readable secret"
    assert f"chmod 600 {path}" in err, err
    r = sherd.script("start_servers.sh")
    assert r.returncode != 0 and f"chmod 600 {path}" in r.stderr, r.stdout + r.stderr
    assert not os.path.exists(sherd.pidfile)
    sup = subprocess.run([program("herd-supervisor"), "-c", sherd.config], env=sherd.env,
                         capture_output=True, text=True, timeout=30)
    assert sup.returncode != 0 and f"chmod 600 {path}" in sup.stderr
    os.chmod(path, 0o600)
    assert open(path).read() == "s3cret-of-the-herd\n"


def test_empty_secret_is_refused_and_init_secret_replaces_it(sherd):
    path = write_secret(sherd, "\n", 0o600)
    rc, err = run_server(sherd, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with an empty secret"
    assert "is empty" in err and "--init-secret" in err, err
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "replaced the herd secret" in r.stdout
    assert len(open(path).read().strip()) == 64
    assert os.stat(path).st_mode & 0o777 == 0o600
    for n in sherd.ports:
        assert sherd.wait_log(n, "link-up", timeout=10), n
    assert "links-disabled" not in sherd.log("Bailey")
