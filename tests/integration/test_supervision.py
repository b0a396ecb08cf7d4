"""The supervisor and the start/stop scripts (docs/PROTOCOL.md, "Processes
and files"): start, status and stop, restarts after a crash, a kill or a
clean exit, restart_max and its window, hung servers replaced, the stop's
timeout, and signals to the supervisor.
"""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from harness import (alive, DEFAULT_LINKS, ephemeral_port, ephemeral_warning, exchange, free_port,
                     program, read_log, read_pids, RESTARTS, ROOT, status_rows, SupervisedHerd,
                     wait_for, wait_gone, wait_listening, wait_log, write_config)


HANG_S = 3


HANG_SUPERVISOR = RESTARTS + f"  hang_timeout_s: {HANG_S}\n"


@pytest.fixture
def hang_herd(tmp_path):
    """The default herd under the supervisor with hang_timeout_s HANG_S, and
    the pids a test SIGSTOPped (killed at the end)."""
    h = SupervisedHerd(tmp_path, extra=HANG_SUPERVISOR)
    stopped = []
    yield h, stopped
    for pid in stopped:                  # a SIGSTOPped server left behind
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    if os.path.exists(h.pidfile):
        pids = list(h.pids().values())
        h.script("stop_servers.sh")
        for p in pids:
            if alive(p):
                os.kill(p, signal.SIGKILL)


def test_stopped_server_is_replaced_within_hang_timeout(hang_herd):
    h, stopped = hang_herd
    r = h.script("start_servers.sh")
    assert r.returncode == 0, r.stderr + r.stdout
    for n in DEFAULT_LINKS:
        assert wait_log(h.dir, n, "link-up", 10), n
    at = exchange(h.ports["Bailey"], b"IAMAT hung +1.0+1.0 %.9f\n" % time.time())[:-1]
    assert wait_for(lambda: exchange(h.ports["Clark"], b"WHATSAT hung 1 1\n").startswith(at), 10)
    old = h.pids()["Clark"]
    time.sleep(1.5)                      # beating for a while: a steady herd
    os.kill(old, signal.SIGSTOP)
    stopped.append(old)
    t0 = time.time()

    def status():
        return subprocess.run([program("herd-supervisor"), "-c", h.config, "--status"],
                              capture_output=True, text=True, env=h.env)
    # make status tells, until the supervisor acts (at least 2 s from here)
    assert wait_for(lambda: " stopped " in [l for l in status().stdout.splitlines()
                                            if l.startswith("Clark ")][0], 1.5), status().stdout
    assert status().returncode == 1

    def answers_again():
        new = h.pids().get("Clark")
        if not new or new == old:
            return False
        try:
            return exchange(h.ports["Clark"], b"WHATSAT hung 1 1\n").startswith(at)
        except OSError:
            return False
    # the stopped process still holds the port: only a new pid answering counts
    assert wait_for(answers_again, HANG_S + 2 + 10, step=0.02), \
        "the stopped server was not replaced: " + read_log(h.dir, "supervisor")[-1500:]
    took = time.time() - t0
    print(f"Clark: SIGSTOP to replaced and answering in {took * 1000:.0f} ms")
    assert took <= HANG_S + 2, f"replaced after {took:.1f} s, over hang_timeout_s + 2 s"
    assert wait_log(h.dir, "supervisor", f"child-hung server=Clark pid={old}", 5)
    assert wait_for(lambda: not alive(old), 5)
    # the others were never taken for hung
    assert read_log(h.dir, "supervisor").count("child-hung") == 1
    assert wait_for(lambda: status().returncode == 0, 5), status().stdout


def test_start_status_stop(sherd):
    """The start's table shows every link between the servers up (it waits
    for them: they come up after the servers listen), and no warning for
    ports outside the ephemeral range."""
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "created the herd secret" in r.stdout
    assert "warning" not in r.stderr, r.stderr
    rows = status_rows(r.stdout)
    for name, peers in DEFAULT_LINKS.items():
        assert rows[name][6] == ",".join(f"{p}:up" for p in peers), r.stdout
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


def test_a_port_in_the_ephemeral_range_is_warned_of_at_start(tmp_path):
    """A server port inside net.ipv4.ip_local_port_range: one WARN line in
    the supervisor's log and on its stderr, which start_servers.sh shows; a
    warning, not a refusal (the herd starts)."""
    h = SupervisedHerd(tmp_path, {"Alpha": []})
    port = ephemeral_port()
    with open(h.config) as f:
        text = f.read().replace(f"port: {h.ports['Alpha']},", f"port: {port},")
    with open(h.config, "w") as f:
        f.write(text)
    h.ports["Alpha"] = port
    warning = ephemeral_warning("Alpha", port)
    try:
        r = h.script("start_servers.sh")
        assert r.returncode == 0, r.stderr + r.stdout
        assert r.stderr.count(f"herd-supervisor: warning: {warning}\n") == 1, r.stderr
        assert h.log("supervisor").count(f"WARN ephemeral-port {warning}\n") == 1, \
            h.log("supervisor")
        assert exchange(port, b"PING\n") == b"? PING\n"
    finally:
        h.stop_by_script()


def test_the_logs_hint_can_be_pasted_from_a_folder_with_a_space(tmp_path):
    """start_servers.sh ends with "logs: tail -f DIR/*.log": DIR is quoted,
    so the command works as printed when the herd's folder has a space (or
    a quote) in its name.  It printed the path's last word only."""
    folder = tmp_path / "my herd's folder"
    folder.mkdir()
    h = SupervisedHerd(folder)
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
    new = sherd.wait_restarted("Clark", old)        # a new pid, listening
    assert alive(new)
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


def test_server_that_exits_cleanly_is_started_again(sherd):
    """A server stopped from outside (SIGTERM to it, not the supervisor)
    exits 0; the supervisor logs it and starts it again, as no crash."""
    sup, kids = sherd.start_supervisor()
    try:
        old = sherd.pids()["Campbell"]
        sherd.may_crash.add("Campbell")
        os.kill(old, signal.SIGTERM)
        assert sherd.wait_log("supervisor", "child-exit server=Campbell exited cleanly")
        # its pid is in servers.pid from the fork on, before it listens (the
        # old one is gone: child-exit): wait for both
        sherd.wait_restarted("Campbell", old)
        assert sup.poll() is None
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


def test_supervisor_stops_its_servers_gracefully(supervised):
    """TERM to the supervisor is passed on as TERM, so each server logs its
    stop and writes its snapshot; SIGKILL after stop_timeout_s is for the
    stuck ones only."""
    exchange(supervised.port, b"IAMAT kept +1.0+1.0 1\n")
    start = time.time()
    assert supervised.stop(check=False) == 0
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
    second = supervised.wait_restarted("Bailey", first)
    assert wait_listening(supervised.port, supervised.proc)
    time.sleep(1.5)                  # longer than restart_window_s
    os.kill(second, signal.SIGKILL)
    assert wait_log(supervised.dir, "supervisor", f"child-crash server=Bailey pid={second}")
    assert wait_listening(supervised.port, supervised.proc), "the server was not restarted"
    assert "child-given-up" not in read_log(supervised.dir, "supervisor")


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


def test_hup_burst_while_servers_restart_kills_none(tmp_path):
    ports = {"Hup": free_port()}
    cfg = write_config(str(tmp_path), {"Hup": (ports["Hup"], [])},
                       extra="supervisor:\n  restart_max: 1000\n  restart_window_s: 1\n"
                             "  backoff_initial_ms: 1\n  backoff_max_ms: 1\n")
    sup = subprocess.Popen([program("herd-supervisor"), "-c", cfg],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = threading.Event()

    def hups():
        while not done.is_set():
            sup.send_signal(signal.SIGHUP)
            time.sleep(0.002)

    def server_pid():
        return read_pids(str(tmp_path)).get("Hup")

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


def test_stop_script_kills_a_supervisor_that_does_not_exit(sherd):
    """docs/PROTOCOL.md, Processes: stop_servers.sh sends SIGTERM, waits,
    "SIGKILL after a timeout, removes servers.pid".  A supervisor that cannot
    act on TERM (SIGSTOPped): after HERD_STOP_TIMEOUT the script says so,
    kills it and every server, removes servers.pid and exits 0."""
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stderr + r.stdout
    pids = sherd.pids()
    assert set(pids) == {"supervisor", *DEFAULT_LINKS}
    os.kill(pids["supervisor"], signal.SIGSTOP)
    env = dict(sherd.env, HERD_STOP_TIMEOUT="1")
    start = time.time()
    try:
        r = subprocess.run([os.path.join(ROOT, "stop_servers.sh"), "-c", sherd.config],
                           capture_output=True, text=True, env=env, timeout=20)
    except subprocess.TimeoutExpired:
        for p in pids.values():
            if alive(p):
                os.kill(p, signal.SIGKILL)
        raise AssertionError("stop_servers.sh still waits for a supervisor that does not exit")
    took = time.time() - start
    assert r.returncode == 0, r.stderr + r.stdout
    assert "still running after 1s; sending SIGKILL" in r.stderr, r.stderr
    assert r.stdout == f"the herd is stopped (supervisor pid {pids['supervisor']})\n", r.stdout
    assert 1.0 <= took < 10, took
    assert wait_gone(pids.values(), 5), {n: p for n, p in pids.items() if alive(p)}
    assert not os.path.exists(sherd.pidfile)
    for port in sherd.ports.values():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                raise AssertionError(f"port {port} still served")
        except ConnectionRefusedError:
            pass
