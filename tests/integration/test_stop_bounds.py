"""A graceful stop ends in bounded time with its final snapshot whole
(docs/PROTOCOL.md, "Snapshots"): a snapshot child that does not end
(stopped here, as one stuck in the kernel would be) is waited for a few
seconds only, then killed, and the stopping server writes the snapshot
itself.  It waited for the child without bound, so the supervisor's
SIGKILL after stop_timeout_s took the final snapshot with it.
"""
import os
import signal
import subprocess
import time

from conftest import exchange, wait_for
from test_cov_server import LOC, fill, fresh_child, snapshot_holds, start, stop
from test_trust_server import alive


def test_a_stopped_snapshot_child_does_not_hold_the_stop(tmp_path):
    s = start(tmp_path, extra="herd:\n  snapshot_interval_s: 1\n",
              logging={"log_lines": False})
    child = None
    try:
        fill(s.port, 40000)        # a table the child takes a while to write
        child, clients = fresh_child(s, 40000)
        # stored after the fork: only a snapshot written at the stop has it
        assert exchange(s.port, b"IAMAT late %s 7\n" % LOC).startswith(b"AT Bailey ")
        t0 = time.time()
        s.proc.send_signal(signal.SIGTERM)
        try:
            rc = s.proc.wait(timeout=8)   # the supervisor's default stop timeout is 10 s
        except subprocess.TimeoutExpired:
            rc = None
        took = time.time() - t0
        assert rc is not None, "the stop waited for the stopped snapshot child"
        assert rc == 0, rc
        assert took < 6, f"the stop took {took:.1f} s"
        assert snapshot_holds(s, clients + 1, b"late"), "the final snapshot misses updates"
        assert wait_for(lambda: not alive(child), 5), "the snapshot child lives on"
        log = s.read_log(wait_for=f"snapshot-child-killed child={child} ")
        assert f"snapshot-child-killed child={child} did not end in 3000 ms" in log, log
        state = os.listdir(os.path.join(s.dir, "state"))
        assert not [f for f in state if ".tmp" in f], state
    finally:
        if child and alive(child):
            os.kill(child, signal.SIGKILL)
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
        s.stderr.close()
    err = s.read_stderr()
    assert "Sanitizer" not in err and "runtime error" not in err, err


def test_a_second_start_by_hand_touches_no_state_file(tmp_path):
    """`herd-server NAME` started by hand while NAME runs fails on its
    port, saying so, before it looks at the state folder: it removed the
    running server's snapshot temporary file (NAME.snap.tmp.PID, the
    child's, being written) on its way to the failed bind."""
    s = start(tmp_path)
    try:
        state = os.path.join(s.dir, "state")
        os.makedirs(state, exist_ok=True)
        tmp = os.path.join(state, "Bailey.snap.tmp.%d" % (s.proc.pid + 1))
        with open(tmp, "w") as f:
            f.write("HERDSNAP 1 Bailey\n")     # a child's snapshot half written
        before = sorted(os.listdir(state))
        r = subprocess.run([s.proc.args[0], "Bailey", "-c", s.config], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1
        assert r.stderr == (f"herd-server: Bailey: cannot listen on 127.0.0.1:{s.port}: "
                            "Address already in use\n"), r.stderr
        assert sorted(os.listdir(state)) == before
        assert open(tmp).read() == "HERDSNAP 1 Bailey\n"
        assert exchange(s.port, b"IAMAT c1 %s 1\n" % LOC).startswith(b"AT Bailey ")
    finally:
        assert stop(s) == 0
