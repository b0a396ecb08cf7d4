"""Behaviour no other test pinned down, found by `make test-mutation`
(tests/mutation/mutations.py names the mutation each test catches)."""
import os
import signal
import subprocess
import time

import pytest

from conftest import (BIN_DIR, exchange, free_port, program, read_log, wait_listening, wait_log,
                      write_config)


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


SUPERVISED = "supervisor:\n  restart_max: 1\n  restart_window_s: 1\n" \
             "  backoff_initial_ms: 100\n  backoff_max_ms: 400\n  stop_timeout_s: 5\n"


class Supervised:
    """herd-supervisor over one server, started directly (no setsid)."""

    def __init__(self, tmp_path):
        self.dir = str(tmp_path)
        self.port = free_port()
        self.config = write_config(self.dir, {"Bailey": (self.port, [])}, extra=SUPERVISED)
        env = dict(os.environ, HERD_BIN_DIR=BIN_DIR)
        env.pop("HERD_SECRET", None)
        self.proc = subprocess.Popen([program("herd-supervisor"), "-c", self.config], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_listening(self.port, self.proc), "the supervised server did not start"

    def child(self, timeout=10):
        """The server's pid in servers.pid, once there is one."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with open(os.path.join(self.dir, "servers.pid")) as f:
                    pids = dict(line.split() for line in f)
                if "Bailey" in pids:
                    return int(pids["Bailey"])
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.02)
        raise AssertionError("no pid for Bailey in servers.pid")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def supervised(tmp_path):
    s = Supervised(tmp_path)
    yield s
    s.stop()


def test_supervisor_stops_its_servers_gracefully(supervised):
    """TERM to the supervisor is passed on as TERM, so each server logs its
    stop and writes its snapshot; SIGKILL after stop_timeout_s is for the
    stuck ones only."""
    exchange(supervised.port, b"IAMAT kept +1.0+1.0 1\n")
    start = time.time()
    assert supervised.stop() == 0
    took = time.time() - start
    assert took < 4, f"the supervisor needed {took:.1f} s: its servers were not asked to stop"
    assert wait_log(supervised.dir, "Bailey", "stopping signal=TERM")
    assert "stop-timeout" not in read_log(supervised.dir, "supervisor")
    with open(os.path.join(supervised.dir, "state", "Bailey.snap")) as f:
        assert " kept +1.0+1.0 1\n" in f.read()


def test_crashes_older_than_the_window_are_forgotten(supervised):
    """restart_max counts crashes within restart_window_s only: a server
    that crashes once, runs longer than the window and crashes again is
    restarted, not given up."""
    first = supervised.child()
    os.kill(first, signal.SIGKILL)
    deadline = time.time() + 10
    while supervised.child() == first and time.time() < deadline:
        time.sleep(0.02)
    second = supervised.child()
    assert second != first
    assert wait_listening(supervised.port, supervised.proc)
    time.sleep(1.5)                  # longer than restart_window_s
    os.kill(second, signal.SIGKILL)
    assert wait_log(supervised.dir, "supervisor", f"child-crash server=Bailey pid={second}")
    assert wait_listening(supervised.port, supervised.proc), "the server was not restarted"
    assert "child-given-up" not in read_log(supervised.dir, "supervisor")
