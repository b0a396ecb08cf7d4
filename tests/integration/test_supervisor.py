"""The supervisor and the start/stop scripts (docs/PROTOCOL.md, "Processes and files")."""
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import (BIN_DIR, DEFAULT_LINKS, ROOT, exchange, free_port, program, read_log,
                      supervised_problems, wait_for, wait_listening, wait_log, write_config)

SUPERVISOR = "supervisor:\n  restart_max: 3\n  restart_window_s: 60\n" \
             "  backoff_initial_ms: 100\n  backoff_max_ms: 400\n  stop_timeout_s: 5\n"


class ScriptHerd:
    """The five servers under herd-supervisor, through start_servers.sh;
    'extra' is the config's supervisor section."""

    def __init__(self, path, extra=SUPERVISOR):
        self.dir = str(path)
        self.ports = {n: free_port() for n in DEFAULT_LINKS}
        self.config = write_config(self.dir, {n: (self.ports[n], DEFAULT_LINKS[n])
                                              for n in DEFAULT_LINKS}, extra=extra)
        self.pidfile = os.path.join(self.dir, "servers.pid")
        self.env = dict(os.environ, HERD_BIN_DIR=BIN_DIR, HERD_START_TIMEOUT="10")
        self.env.pop("HERD_SECRET", None)
        self.killed = set()          # pids the test sent SIGKILL
        self.may_crash = set()       # servers the test makes crash

    def kill(self, pid):
        """SIGKILL a server, remembered: the check at the end expects its crash."""
        self.killed.add(pid)
        os.kill(pid, signal.SIGKILL)

    def problems(self):
        """Unexpected crashes, unclean stops, sanitizer reports (see conftest)."""
        return supervised_problems(self.dir, DEFAULT_LINKS, self.killed, self.may_crash)

    def script(self, name, *args):
        return subprocess.run([os.path.join(ROOT, name), "-c", self.config, *args],
                              capture_output=True, text=True, env=self.env, timeout=60)

    def pids(self):
        """{name: pid} from servers.pid; {} when it is missing or half-written."""
        try:
            with open(self.pidfile) as f:
                return {k: int(v) for k, v in (line.split() for line in f)}
        except (FileNotFoundError, ValueError):
            return {}

    def log(self, name):
        return read_log(self.dir, name)

    def wait_log(self, name, text, timeout=10):
        return wait_log(self.dir, name, text, timeout)

    def start_supervisor(self):
        """The supervisor without the script; returns (process, child pids)."""
        sup = subprocess.Popen([program("herd-supervisor"), "-c", self.config], env=self.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports.values():
            assert wait_listening(port, sup)
        assert wait_for(lambda: set(self.pids()) >= {"supervisor", *DEFAULT_LINKS}, 10), \
            "servers.pid does not name every server"
        return sup, [p for n, p in self.pids().items() if n != "supervisor"]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:      # a zombie is gone for our purpose
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_gone(pids, timeout=10):
    deadline = time.time() + timeout
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


@pytest.fixture
def sherd(tmp_path):
    h = ScriptHerd(tmp_path)
    yield h
    if os.path.exists(h.pidfile):
        pids = list(h.pids().values())
        h.script("stop_servers.sh")
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)
        assert wait_gone(pids), "a process of the herd survived its stop"
    problems = h.problems()
    assert not problems, problems


def test_start_status_stop(sherd):
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "created the herd secret" in r.stdout
    secret = os.path.join(sherd.dir, "state", "herd.secret")
    assert os.stat(secret).st_mode & 0o777 == 0o600
    pids = sherd.pids()
    assert set(pids) == {"supervisor", *DEFAULT_LINKS}
    assert all(alive(p) for p in pids.values())
    for name, port in sherd.ports.items():
        assert f"{name}" in r.stdout and f"127.0.0.1:{port}" in r.stdout
        reply = exchange(port, b"IAMAT s +1.0+1.0 1\n")
        assert reply.startswith(b"AT %s " % name.encode())
    st = subprocess.run([program("herd-supervisor"), "-c", sherd.config, "--status"],
                        capture_output=True, text=True)
    assert st.returncode == 0 and "5 of 5 servers listening" in st.stdout
    r = sherd.script("stop_servers.sh")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert not os.path.exists(sherd.pidfile)
    assert wait_gone(pids.values())
    r = sherd.script("stop_servers.sh")
    assert r.returncode == 0 and "not running" in r.stdout


def test_the_logs_hint_can_be_pasted_from_a_folder_with_a_space(tmp_path):
    """start_servers.sh ends with "logs: tail -f DIR/*.log": DIR is quoted,
    so the command works as printed when the herd's folder has a space (or
    a quote) in its name.  It printed the path's last word only."""
    folder = tmp_path / "my herd's folder"
    folder.mkdir()
    h = ScriptHerd(folder)
    try:
        r = h.script("start_servers.sh")
        assert r.returncode == 0, r.stderr + r.stdout
        hint = r.stdout.rstrip("\n").split("\n")[-1]
        assert hint.startswith("logs: tail -f "), r.stdout
        # the printed command's arguments, as a shell reads them
        ls = subprocess.run(["sh", "-c", "ls -d " + hint[len("logs: tail -f "):]],
                            capture_output=True, text=True, cwd="/")
        assert ls.returncode == 0, ls.stderr
        logs = os.path.join(h.dir, "logs")
        want = sorted(os.path.join(logs, f"{n}.log") for n in [*DEFAULT_LINKS, "supervisor"])
        assert sorted(ls.stdout.splitlines()) == want, ls.stdout
    finally:
        pids = list(h.pids().values())
        h.script("stop_servers.sh")
        assert wait_gone(pids), "a process of the herd survived its stop"
    problems = h.problems()
    assert not problems, problems


def test_kill_child_is_restarted_and_catches_up(sherd):
    assert sherd.script("start_servers.sh").returncode == 0
    for n in DEFAULT_LINKS:
        assert sherd.wait_log(n, "link-up")
    old = sherd.pids()["Clark"]
    at = exchange(sherd.ports["Bailey"], b"IAMAT rs +1.0+1.0 %.9f\n" % time.time())[:-1]
    t0 = time.time()
    sherd.kill(old)
    deadline = time.time() + 10
    while time.time() < deadline:
        new = sherd.pids().get("Clark")
        if new and new != old:
            break
        time.sleep(0.01)
    assert new and new != old and alive(new)
    proc = type("P", (), {"poll": lambda self: None})()
    assert wait_listening(sherd.ports["Clark"], proc)
    took = time.time() - t0
    print(f"Clark: kill -9 to listening again in {took * 1000:.0f} ms")
    deadline = time.time() + 5
    while time.time() < deadline:
        if exchange(sherd.ports["Clark"], b"WHATSAT rs 1 1\n").startswith(at):
            break
        time.sleep(0.05)
    assert exchange(sherd.ports["Clark"], b"WHATSAT rs 1 1\n").startswith(at)
    assert sherd.wait_log("supervisor", f"child-crash server=Clark pid={old} killed by signal 9")


def test_crashing_child_is_given_up_others_keep_serving(sherd):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", sherd.ports["Jaquez"]))
    blocker.listen()
    sherd.may_crash.add("Jaquez")
    sup = subprocess.Popen([program("herd-supervisor"), "-c", sherd.config],
                           env=sherd.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sherd.wait_log("supervisor", "child-given-up server=Jaquez", timeout=15)
        log = sherd.log("supervisor")
        assert log.count("child-crash server=Jaquez") == 3
        assert "restart 1 in 0 ms" in log and "restart 2 in 100 ms" in log \
            and "restart 3 in 200 ms" in log
        for n in ("Bailey", "Bona", "Campbell", "Clark"):
            assert exchange(sherd.ports[n], b"PING\n") == b"? PING\n"
        assert "Jaquez" not in sherd.pids()
        assert "Address already in use" in sherd.log("Jaquez")
    finally:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 0
        blocker.close()
    assert not os.path.exists(sherd.pidfile)


def test_start_failure_explains_itself(sherd):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", sherd.ports["Bona"]))
    blocker.listen()
    sherd.may_crash.add("Bona")
    sherd.env["HERD_START_TIMEOUT"] = "3"
    try:
        r = sherd.script("start_servers.sh")
    finally:
        blocker.close()
    assert r.returncode != 0
    assert "did not start" in r.stderr and "Bona.log" in r.stderr
    assert "Address already in use" in r.stderr
    assert not os.path.exists(sherd.pidfile)


def test_sigterm_and_sigkill_of_the_supervisor(sherd):
    sup, kids = sherd.start_supervisor()
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    assert wait_gone(kids) and not os.path.exists(sherd.pidfile)
    # SIGKILL: the children go too
    sup, kids = sherd.start_supervisor()
    sup.kill()
    sup.wait()
    assert wait_gone(kids), "children outlived a SIGKILLed supervisor"
    r = sherd.script("stop_servers.sh")        # the stale pid file is cleared
    assert r.returncode == 0 and "not running" in r.stdout


def test_start_twice_refuses_and_stale_pidfile_is_cleared(sherd):
    with open(sherd.pidfile, "w") as f:
        f.write("supervisor 999999\nBailey 999998\n")
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0 and "stale" in r.stdout
    r = sherd.script("start_servers.sh")
    assert r.returncode != 0 and "already running" in r.stderr


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


def status(sherd, *args):
    return subprocess.run([program("herd-supervisor"), "-c", sherd.config, "--status", *args],
                          capture_output=True, text=True, timeout=30)


def test_status_shows_a_given_up_server(sherd):
    """--status with one server given up: its row says so, the count says
    4 of 5, the exit status is 1 (after --wait has waited in vain)."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", sherd.ports["Clark"]))
    blocker.listen()
    sherd.may_crash.add("Clark")
    sup = subprocess.Popen([program("herd-supervisor"), "-c", sherd.config],
                           env=sherd.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sherd.wait_log("supervisor", "child-given-up server=Clark", timeout=15)
        start = time.time()
        r = status(sherd, "--wait", "1")
        assert 0.9 <= time.time() - start < 5
        assert r.returncode == 1 and "4 of 5 servers listening" in r.stdout, r.stdout
        row = next(l for l in r.stdout.splitlines() if l.startswith("Clark "))
        assert row.split()[2:] == ["-", "-", "3", "given-up", "-", f"{sherd.dir}/logs/Clark.log"], row
        row = next(l for l in r.stdout.splitlines() if l.startswith("Bailey "))
        assert row.split()[4] == "0" and row.split()[5] == "yes", row
        assert row.split()[3].endswith("s"), "uptime in seconds"
    finally:
        sup.send_signal(signal.SIGINT)             # INT stops the herd as TERM does
        assert sup.wait(timeout=15) == 0
        blocker.close()
    assert "stopping signal=INT" in sherd.log("supervisor")


def test_server_that_exits_cleanly_is_started_again(sherd):
    """A server stopped from outside (SIGTERM to it, not the supervisor)
    exits 0; the supervisor logs it and starts it again, as no crash."""
    sup, kids = sherd.start_supervisor()
    try:
        old = sherd.pids()["Campbell"]
        sherd.may_crash.add("Campbell")
        os.kill(old, signal.SIGTERM)
        assert sherd.wait_log("supervisor", "child-exit server=Campbell exited cleanly")
        deadline = time.time() + 10
        while sherd.pids().get("Campbell", old) == old and time.time() < deadline:
            time.sleep(0.05)
        new = sherd.pids().get("Campbell", old)
        assert new != old
        # its pid is in servers.pid from the fork on, before it listens (the
        # old one is gone: child-exit)
        assert wait_listening(sherd.ports["Campbell"], sup), "the new Campbell does not listen"
        assert exchange(sherd.ports["Campbell"], b"PING\n") == b"? PING\n"
        assert "child-crash server=Campbell" not in sherd.log("supervisor")
    finally:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=15) == 0


def test_server_that_ignores_the_stop_is_killed(sherd):
    """stop_timeout_s: a server that does not stop (SIGSTOPped here) is
    SIGKILLed after it, and the supervisor still exits 0."""
    text = open(sherd.config).read().replace("stop_timeout_s: 5", "stop_timeout_s: 1")
    open(sherd.config, "w").write(text)
    sup, kids = sherd.start_supervisor()
    frozen = sherd.pids()["Jaquez"]
    sherd.may_crash.add("Jaquez")
    os.kill(frozen, signal.SIGSTOP)
    start = time.time()
    sup.send_signal(signal.SIGTERM)
    assert sup.wait(timeout=15) == 0
    assert 0.9 <= time.time() - start < 8
    log = sherd.log("supervisor")
    assert "stop-timeout 1 servers did not stop in 1 s: SIGKILL" in log
    assert "child-stopped server=Jaquez killed by signal 9" in log
    assert wait_gone(kids)
