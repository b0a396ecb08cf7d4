"""Snapshots and durability (docs/PROTOCOL.md, "Processes and files"): the
periodic forked snapshot and the one at a stop, what a restart loads,
damaged, partial, oversized, unreadable or foreign snapshot files set
aside, leftovers of earlier runs removed, and snapshot files that are
private and never written through a link.
"""
import os
import re
import resource
import signal
import socket
import subprocess
import time

import pytest

from harness import (ALL, LOC, PRECIOUS, ROOT_ONLY, alive, children, configured_server, connect,
                     exchange, fill_clients, free_port, herd_iamat, outside_target, proc_kib,
                     proc_state, program, recv_until_eof, Server, snapshot_count, start_server,
                     stop_server, stored_set, wait_for, wait_listening, write_config)


def test_snapshot_load_respects_a_smaller_bound(make_server):
    s = make_server(limits={"max_stored_clients": 100})
    acks = [exchange(s.port, b"IAMAT snap-%d +1.0+1.0 %d\n" % (i, 1000 + i))[:-1]
            for i in range(30)]
    s.stop()
    write_config(s.dir, {s.name: (s.port, [])}, limits={"max_stored_clients": 10})
    s.start()
    got = stored_set(s.port, [b"snap-%d" % i for i in range(30)])
    assert got == {b"snap-%d" % i: (acks[i] if i >= 20 else None) for i in range(30)}
    # the file is in slot order: each of the 20 oldest was evicted or refused
    assert wait_for(lambda: "table-full" in s.read_log(), timeout=5)
    m = re.search(r"table-full .*evicted_total=(\d+) refused_total=(\d+) clients=10 "
                  r"max_stored_clients=10\n", s.read_log())
    assert m and int(m.group(1)) + int(m.group(2)) == 20, s.read_log()[-1000:]


def test_snapshot_survives_restart_of_the_whole_herd(herd):
    herd.start().wait_links()
    at = herd_iamat(herd, "Clark", b"persist")
    herd.wait_stored(ALL, b"persist", at)
    herd.stop()
    herd.start()            # each loads its own snapshot, links or not
    for n in ALL:
        assert herd.stored(n, b"persist") == at
        assert herd.wait_log(n, "snapshot-loaded")


def set_aside(path):
    """The contents of every NAME.snap.bad-* beside path."""
    folder = os.path.dirname(path)
    return [open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))
            if f.startswith(os.path.basename(path) + ".bad-")]


def at_line(client, t=b"100"):
    return b"AT Bailey +0.000000001 %s +1.0+1.0 %s" % (client, t)


def test_damaged_snapshot_is_set_aside(herd):
    herd.start("Bailey")
    herd_iamat(herd, "Bailey", b"x1")
    herd.stop("Bailey")
    path = herd.snap_path("Bailey")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) - 5])      # cut short
    herd.start("Bailey")
    assert herd.stored("Bailey", b"x1") is None
    assert herd.wait_log("Bailey", "snapshot-damaged")
    assert any(f.startswith("Bailey.snap.bad-") for f in os.listdir(os.path.dirname(path)))
    bad = [f for f in os.listdir(os.path.dirname(path)) if f.startswith("Bailey.snap.bad-")]
    assert open(os.path.join(os.path.dirname(path), bad[0]), "rb").read() == data[:-5]
    herd.stop("Bailey")
    assert snapshot_count(path) == 0, "the table the stop wrote is empty"
    for f in bad:
        os.remove(os.path.join(os.path.dirname(path), f))
    # a snapshot of another server is not loaded either, however sound
    other = b"HERDSNAP 1 Bona\n" + at_line(b"x2") + b"\nEND 1\n"
    open(path, "wb").write(other)
    mark = herd.mark("Bailey")
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "reason=another server's snapshot", since=mark)
    assert herd.stored("Bailey", b"x2") is None
    assert not os.path.exists(path), "the damaged snapshot must be moved away"
    assert set_aside(path) == [other]


@pytest.mark.parametrize("body,why", [
    (b"HERDSNAP 1 Bailey\n%s\n%s\nEND 1\n", "count does not match"),
    (b"HERDSNAP 1 Bailey\n%s\n%s\nEND 3\n", "count does not match"),
    (b"HERDSNAP 1 Bailey\n%s\n%s\nEND 2\nEND 2\n", "data after END"),
    (b"HERDSNAP 1 Bailey\n%s\n%s\n", "no END line"),
    (b"HERDSNAP 2 Bailey\n%s\n%s\nEND 2\n", "another server's snapshot"),
    (b"SNAP 1 Bailey\n%s\n%s\nEND 2\n", "not a snapshot"),
    (b"HERDSNAP 1 Bailey\n%s\nAT Bailey\nEND 2\n", "reason="),
])
def test_snapshot_that_does_not_add_up_is_not_loaded(herd, body, why):
    """Every line parses, but the file is not whole: nothing of it is loaded,
    it is set aside, and the server starts empty."""
    os.makedirs(os.path.dirname(herd.snap_path("Bailey")), exist_ok=True)
    path = herd.snap_path("Bailey")
    if body.count(b"%s") == 2:
        data = body % (at_line(b"a1"), at_line(b"a2"))
    else:
        data = body % at_line(b"a1")
    open(path, "wb").write(data)
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "snapshot-damaged")
    assert why in herd.log("Bailey")
    assert herd.stored("Bailey", b"a1") is None and herd.stored("Bailey", b"a2") is None
    assert not os.path.exists(path) and set_aside(path) == [data]
    herd.stop("Bailey")
    assert snapshot_count(path) == 0


def test_periodic_snapshot_is_written_while_running(herd):
    """The forked snapshot (every second here) reaches the disk with no stop:
    a server killed with SIGKILL comes back with what it had acknowledged."""
    herd.start("Bailey")
    first = herd_iamat(herd, "Bailey", b"periodic1")
    second = herd_iamat(herd, "Bailey", b"periodic2")
    path = herd.snap_path("Bailey")
    deadline = time.time() + 10
    while snapshot_count(path) != 2 and time.time() < deadline:
        time.sleep(0.05)
    assert snapshot_count(path) == 2, "no periodic snapshot within 10 s"
    lines = open(path, "rb").read().splitlines()
    assert lines[0] == b"HERDSNAP 1 Bailey" and sorted(lines[1:-1]) == sorted([first, second])
    herd.kill("Bailey")
    mark = herd.mark("Bailey")
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "snapshot-loaded", since=mark)
    assert "clients=2" in herd.log("Bailey")[mark:]
    assert herd.stored("Bailey", b"periodic1") == first
    assert herd.stored("Bailey", b"periodic2") == second


def stop_one(herd, name):
    """SIGTERM one server; its exit status (Herd.stop would fail on 1)."""
    p = herd.procs.pop(name)
    p.terminate()
    p.wait(timeout=20)
    herd.stderr.pop(name).close()
    return p.returncode


def test_snapshot_that_cannot_be_written(herd):
    """state_dir is a file: the periodic snapshot fails and is retried, the
    server keeps serving, and the stop says so with exit status 1."""
    open(os.path.join(herd.dir, "state"), "w").close()
    herd.start("Bailey")
    at = herd_iamat(herd, "Bailey", b"unsaved")
    assert herd.wait_log("Bailey", "snapshot-failed child=", timeout=5)
    assert herd.stored("Bailey", b"unsaved") == at
    assert stop_one(herd, "Bailey") == 1
    assert "snapshot-failed dir=" in herd.log("Bailey") and "Not a directory" in herd.log("Bailey")


def test_snapshot_that_cannot_be_read_or_is_empty(herd):
    os.makedirs(os.path.join(herd.dir, "state"))
    path = herd.snap_path("Bailey")
    os.symlink(os.path.basename(path), path)          # a loop: open fails with ELOOP
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "snapshot-unreadable")
    assert "Too many levels of symbolic links" in herd.log("Bailey")
    herd.stop("Bailey")                             # the stop's snapshot replaces the link
    open(path, "w").close()
    mark = herd.mark("Bailey")
    herd.start("Bailey")
    assert herd.wait_log("Bailey", "reason=empty file", since=mark)
    assert set_aside(path) == [b""]


def catch_child(pid, seconds):
    """SIGSTOP the first child of pid seen within 'seconds'; its pid or None."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        for cpid in children(pid):
            try:
                os.kill(cpid, signal.SIGSTOP)
            except ProcessLookupError:      # reaped meanwhile
                continue
            if wait_for(lambda: proc_state(cpid) in ("T", "t", "Z", ""), 2) and proc_state(cpid) in ("T", "t"):
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
    s = start_server(tmp_path, extra="herd:\n  snapshot_interval_s: 1\n",
              logging={"log_lines": False})
    try:
        pid = s.proc.pid
        fill_clients(s.port, 40000)        # a table the child takes a while to write
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
        assert stop_server(s) == 0


def state_files(s):
    """The snapshot files in s's state/ (other files live there too)."""
    folder = os.path.join(s.dir, "state")
    return sorted(f for f in os.listdir(folder) if ".snap" in f) if os.path.isdir(folder) else []


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
    s = start_server(tmp_path, extra="herd:\n  snapshot_interval_s: 3600\n",
              logging={"log_lines": False}, preexec=full_disk)
    stopped = False
    try:
        assert exchange(s.port, b"WHATSAT before 1 1\n").startswith(b"AT Bailey ")
        fill_clients(s.port, 2000)         # about 120 KB of snapshot
        rc = stop_server(s)
        stopped = True
        assert rc == 1, rc
        log = s.read_log()
        assert f"snapshot-failed dir={state_dir} reason=File too large" in log, log
        assert (state_dir / "Bailey.snap").read_bytes() == old
        assert state_files(s) == ["Bailey.snap"]
    finally:
        if not stopped:
            stop_server(s)


def test_stop_snapshot_over_a_directory_fails_and_leaves_it(tmp_path):
    """NAME.snap made a directory while the server runs: the stop's snapshot
    cannot take its place ("Is a directory", exit status 1), the directory
    and what it holds are untouched and no temporary file is left."""
    s = start_server(tmp_path, extra="herd:\n  snapshot_interval_s: 3600\n")
    stopped = False
    try:
        # in the way before the first update: a change is snapshotted at
        # once (then once an interval), and that one must not come first
        in_the_way = os.path.join(s.dir, "state", "Bailey.snap")
        os.makedirs(in_the_way)
        with open(os.path.join(in_the_way, "keep"), "w") as f:
            f.write("mine\n")
        assert exchange(s.port, b"IAMAT kept %s 5\n" % LOC).startswith(b"AT Bailey ")
        rc = stop_server(s)
        stopped = True
        assert rc == 1, rc
        assert f"snapshot-failed dir={os.path.join(s.dir, 'state')} reason=Is a directory" \
            in s.read_log(), s.read_log()
        assert state_files(s) == ["Bailey.snap"]
        assert open(os.path.join(in_the_way, "keep")).read() == "mine\n"
    finally:
        if not stopped:
            stop_server(s)


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
    s = start_server(tmp_path)
    try:
        log = s.read_log(wait_for="snapshot-leftover-removed")
        assert f"snapshot-leftover file={state_dir}/Bailey.snap.tmp.77 cannot be removed: " \
            "Is a directory" in log, log
        assert f"file={state_dir}/Bailey.snap.tmp.78 (a snapshot child" in log
        assert "Bailey.snap.tmp. " not in log
        assert state_files(s) == ["Bailey.snap.tmp.", "Bailey.snap.tmp.77"]
        assert exchange(s.port, b"WHATSAT nobody 1 1\n") == b"? WHATSAT nobody 1 1\n"
    finally:
        assert stop_server(s) == 0


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
    s = start_server(tmp_path)
    try:
        line = damaged_line(s)
        assert f"file={state_dir}/Bailey.snap line=0 reason=Is a directory moved-to=" \
            f"{state_dir}/Bailey.snap.bad-" in line, line
        bad = line.split("moved-to=")[1]
        assert open(os.path.join(bad, "inside")).read() == "mine\n"
        assert exchange(s.port, b"IAMAT fresh %s 5\n" % LOC).startswith(b"AT Bailey ")
    finally:
        assert stop_server(s) == 0
    snap = (state_dir / "Bailey.snap").read_bytes()
    assert snap.startswith(b"HERDSNAP 1 Bailey\nAT Bailey ") and snap.endswith(b"\nEND 1\n"), snap


def test_snapshot_that_is_a_fifo_is_set_aside_unread(tmp_path):
    """NAME.snap a FIFO (an operator's mistake): opened for reading, it held
    the server's start until some writer opened it, so the server never
    listened.  It is set aside unread, and the server starts empty."""
    state_dir = tmp_path / "Bailey" / "state"
    state_dir.mkdir(parents=True)
    os.mkfifo(state_dir / "Bailey.snap")
    s = start_server(tmp_path)
    try:
        line = damaged_line(s)
        assert f"file={state_dir}/Bailey.snap line=0 reason=not a regular file moved-to=" \
            f"{state_dir}/Bailey.snap.bad-" in line, line
        assert exchange(s.port, b"IAMAT fresh %s 5\n" % LOC).startswith(b"AT Bailey ")
    finally:
        assert stop_server(s) == 0


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
    s = start_server(tmp_path)
    try:
        line = damaged_line(s)
        peak = proc_kib(s.proc.pid, "VmHWM")
        assert peak < 64 << 10, f"{peak} KiB at its peak"
        assert f"file={state_dir}/Bailey.snap line=2 reason={why} moved-to=" in line, line
        assert exchange(s.port, b"IAMAT fresh %s 5\n" % LOC).startswith(b"AT Bailey ")
    finally:
        assert stop_server(s) == 0


def holds_sockets(pid):
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                return True
        except OSError:
            pass
    return False


def test_snapshot_child_holds_no_socket_and_dies_with_the_server(tmp_path, started_servers):
    port = free_port()
    s = configured_server(tmp_path, "Bailey", {"Bailey": (port, [])},
                   extra="herd:\n  snapshot_interval_s: 1\n")
    s.start()
    started_servers.append(s)      # stopped at the end, whatever fails first
    pid = s.proc.pid
    # a table big enough that writing it takes a moment; kept dirty so a
    # child is forked every second until one is caught and stopped
    with connect(port) as c:
        c.sendall(b"".join(b"IAMAT bulk%d %s %d\n" % (i, LOC, i + 1) for i in range(60000)))
        c.shutdown(socket.SHUT_WR)
        recv_until_eof(c)
    # A child caught in its first microseconds has not closed the server's
    # descriptors yet: let it go on and catch the next one.  Past the
    # deadline, go on with whatever was caught (the defect: all of them).
    child = None
    deadline = time.time() + 10
    k = 0
    while time.time() < deadline + 10:
        for cpid in children(pid):
            try:
                os.kill(cpid, signal.SIGSTOP)
            except ProcessLookupError:
                break                           # it finished since the listing
            if not wait_for(lambda: proc_state(cpid) != "R", timeout=2, step=0.01) or proc_state(cpid) != "T":
                break                           # it finished first
            if not holds_sockets(cpid) or time.time() > deadline:
                child = cpid
            else:
                os.kill(cpid, signal.SIGCONT)
            break
        else:
            k += 1
            if k % 2000 == 0:
                exchange(port, b"IAMAT dirty%d %s 1\n" % (k, LOC))
        if child:
            break
    assert child is not None, "no snapshot child was seen"
    try:
        os.kill(pid, signal.SIGKILL)
        s.proc.wait()
        s.proc = None
        s.stderr.close()
        # the port is free at once: a second server binds it first time
        again = configured_server(tmp_path, "Bailey", {"Bailey": (port, [])})
        again.stderr = open(again.stderr_path, "wb")
        again.proc = subprocess.Popen([program("herd-server"), "Bailey", "-c", again.config],
                                      stdout=subprocess.DEVNULL, stderr=again.stderr)
        # (a stopped child's listener still completes connects: ask the
        # new server itself, by its pid in the log)
        mine = f"listening server=Bailey addr=127.0.0.1:{port} "
        wait_for(lambda: again.proc.poll() is not None or
                 f"pid={again.proc.pid}" in s.read_log(), timeout=10)
        if again.proc.poll() is not None or not any(
                mine in l and f"pid={again.proc.pid}" in l for l in s.read_log().splitlines()):
            again.stop(check=False)
            raise AssertionError(f"restart failed while the snapshot child lived: "
                                 f"{again.read_stderr()}")
        started_servers.append(again)
        assert wait_for(lambda: not alive(child), timeout=5), \
            "the snapshot child outlived its server"
    finally:
        if alive(child):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:      # it ended since
                pass


def test_leftover_snapshot_files_are_removed_at_start(tmp_path, started_servers):
    port = free_port()
    s = configured_server(tmp_path, "Bailey", {"Bailey": (port, [])})
    state = os.path.join(s.dir, "state")
    os.makedirs(state)
    for name in ("Bailey.snap.tmp.12345", "Bailey.snap.tmp.999"):
        with open(os.path.join(state, name), "w") as f:
            f.write("HERDSNAP 1 Bailey\nAT half")
    with open(os.path.join(state, "Bona.snap.tmp.5"), "w") as f:     # not ours
        f.write("x")
    started_servers.append(s.start())
    assert sorted(n for n in os.listdir(state) if ".snap" in n) == ["Bona.snap.tmp.5"]
    log = s.read_log(wait_for="Bailey.snap.tmp.999")
    assert "snapshot-leftover-removed" in log and "Bailey.snap.tmp.12345" in log, log


def test_a_stopped_snapshot_child_does_not_hold_the_stop(tmp_path):
    s = start_server(tmp_path, extra="herd:\n  snapshot_interval_s: 1\n",
              logging={"log_lines": False})
    child = None
    try:
        fill_clients(s.port, 40000)        # a table the child takes a while to write
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
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:      # it ended since
                pass
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
    s = start_server(tmp_path)
    try:
        state = os.path.join(s.dir, "state")
        os.makedirs(state, exist_ok=True)
        tmp = os.path.join(state, "Bailey.snap.tmp.%d" % (s.proc.pid + 1))
        with open(tmp, "w") as f:
            f.write("HERDSNAP 1 Bailey\n")     # a child's snapshot half written
        def files():     # but the running server's metrics, rewritten every second
            return sorted(f for f in os.listdir(state) if not f.startswith("Bailey.prom"))
        before = files()
        r = subprocess.run([s.proc.args[0], "Bailey", "-c", s.config], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1
        assert r.stderr == (f"herd-server: Bailey: cannot listen on 127.0.0.1:{s.port}: "
                            f"Address already in use (held by pid {s.proc.pid} (herd-server))\n"), \
            r.stderr
        assert files() == before
        assert open(tmp).read() == "HERDSNAP 1 Bailey\n"
        assert exchange(s.port, b"IAMAT c1 %s 1\n" % LOC).startswith(b"AT Bailey ")
    finally:
        assert stop_server(s) == 0


def test_snapshot_is_never_readable_by_others(tmp_path):
    """The snapshot's temporary file was created 0666 & ~umask and only then
    chmod'ed 0600 (another user could open it in between and read every
    client's location), in a state folder the server created 0755."""
    import shutil
    import signal
    import socket
    import time
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
        # the mode follows the flags; a call strace saw interrupted by another
        # process's ("... 0600 <unfinished ...>") ends differently
        modes = [re.search(r"O_CREAT[|A-Z_]*, (0[0-7]+)", ln) for ln in opens]
        assert all(m and m.group(1) == "0600" for m in modes), opens


def test_leftover_cleanup_takes_only_its_own_pid_files(tmp_path):
    """Leftovers are NAME.snap.tmp.PID; a file that only begins the same way
    (another server's, whose name has dots) is not this server's to remove."""
    s = configured_server(tmp_path, "Bailey", {"Bailey": (free_port(), [])})
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


def test_snapshots_and_state_are_private(loose_sherd):
    state = os.path.join(loose_sherd.dir, "state")
    old = os.umask(0o022)
    try:
        assert loose_sherd.script("start_servers.sh").returncode == 0
        modes = {"supervisor.state": os.stat(os.path.join(state, "supervisor.state")).st_mode}
        assert loose_sherd.script("stop_servers.sh").returncode == 0
    finally:
        os.umask(old)
    snaps = [f for f in os.listdir(state) if f.endswith(".snap")]
    assert len(snaps) == 5
    modes.update({f: os.stat(os.path.join(state, f)).st_mode for f in snaps})
    modes = {f: oct(m & 0o777) for f, m in modes.items()}
    assert modes == {f: "0o600" for f in modes}


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
