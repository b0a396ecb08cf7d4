"""Connections and hangs, bounded (docs/PROTOCOL.md, README "Operations"):
links never count against max_clients, a neighbour is let in past a full
client table, the descriptor limit lowers max_clients instead of breaking
connections, the per-address cap, and the supervisor replacing a server
whose loop stopped."""
import os
import resource
import signal
import socket
import subprocess
import time

import pytest

from conftest import (DEFAULT_LINKS, connect, wait_for, exchange, free_port, program,
                      read_log, recv_exact_lines, recv_until_eof, wait_listening, wait_log,
                      write_config)
from test_supervisor import ScriptHerd, alive

SECRET = "test-secret-0123456789"
BUSY = b"? too many connections, try again later\n"
BUSY_ADDR = b"? too many connections from your address, try again later\n"


def hold_clients(port, n, tag):
    """n idle clients, each proven accepted by one answered line."""
    socks = []
    for i in range(n):
        c = connect(port)
        c.settimeout(5)
        c.sendall(b"%s%d\n" % (tag, i))
        reply = recv_exact_lines(c, 1)
        assert reply == b"? %s%d\n" % (tag, i), f"client {i} of {n}: {reply!r}"
        socks.append(c)
    return socks


class Pair:
    """Bailey and Bona, linked; Bailey dials (its name sorts first)."""

    def __init__(self, path, limits):
        self.dir = str(path)
        self.ports = {"Bailey": free_port(), "Bona": free_port()}
        self.config = write_config(self.dir, {"Bailey": (self.ports["Bailey"], ["Bona"]),
                                              "Bona": (self.ports["Bona"], ["Bailey"])},
                                   limits=limits, extra="herd:\n  snapshot_interval_s: 1\n")
        self.procs = {}

    def start(self, name):
        err = open(os.path.join(self.dir, f"{name}.stderr"), "ab")
        p = subprocess.Popen([program("herd-server"), name, "-c", self.config],
                             stdout=subprocess.DEVNULL, stderr=err,
                             env=dict(os.environ, HERD_SECRET=SECRET))
        err.close()
        self.procs[name] = p
        assert wait_listening(self.ports[name], p), f"{name} did not start"

    def log(self, name):
        return read_log(self.dir, name)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture
def pair(tmp_path):
    made = []

    def make(limits):
        made.append(Pair(tmp_path, limits))
        return made[-1]
    yield make
    for p in made:
        p.stop()


def test_neighbour_restarts_while_idle_clients_fill_max_clients(pair):
    """Bona holds max_clients idle clients: the link to Bailey does not take
    one of their places, a stranger past the table still gets its "? "
    line, and Bailey, killed and started again, gets its link back."""
    h = pair({"max_clients": 8})
    h.start("Bona")
    h.start("Bailey")
    assert wait_for(lambda: "link-up" in h.log("Bona"), 10), "the link did not come up"
    idle = hold_clients(h.ports["Bona"], 8, b"IDLE")     # all 8: the link is no client
    with connect(h.ports["Bona"]) as stranger:           # past the table: on probation,
        stranger.settimeout(10)                          # then its line
        assert recv_until_eof(stranger) == BUSY
    for first in (b"IAMAT x +1.0+1.0 1\n", b""):       # a line, or a bare half-close
        with connect(h.ports["Bona"]) as stranger:
            stranger.settimeout(10)
            stranger.sendall(first)
            stranger.shutdown(socket.SHUT_WR)
            assert recv_until_eof(stranger) == BUSY, first
    h.procs["Bailey"].kill()
    h.procs["Bailey"].wait()
    assert wait_for(lambda: "link-down" in h.log("Bona"), 10)
    h.start("Bailey")
    assert wait_for(lambda: h.log("Bona").count("link-up") >= 2, 15), \
        "Bailey's link did not come back: " + \
        "\n".join(l for l in h.log("Bona").splitlines() if "conn-refused" in l or "link" in l)
    # the link carries updates: Bailey's IAMAT reaches Bona
    at = exchange(h.ports["Bailey"], b"IAMAT back +1.0+1.0 %.9f\n" % time.time())[:-1]
    assert at.startswith(b"AT Bailey ")
    idle.pop().close()
    assert wait_for(lambda: exchange(h.ports["Bona"], b"WHATSAT back 1 1\n").startswith(at), 10)
    for c in idle:
        c.close()
    assert "reason=max_clients reached and no neighbour's TLS handshake" in h.log("Bona")


def test_low_descriptor_limit_lowers_max_clients_and_every_refusal_has_its_line(tmp_path):
    """Started with RLIMIT_NOFILE 64 (soft and hard), the server lowers
    max_clients to fit, says so, and every connection past it gets the "? "
    line; the reserve still lets snapshots be written with the table full."""
    port = free_port()
    cfg = write_config(str(tmp_path), {"Bailey": (port, [])},
                       extra="herd:\n  snapshot_interval_s: 1\n")
    err = open(os.path.join(str(tmp_path), "stderr"), "wb")

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen([program("herd-server"), "Bailey", "-c", cfg],
                            stdout=subprocess.DEVNULL, stderr=err, preexec_fn=low_limit)
    socks = []
    try:
        assert wait_listening(port, proc)
        time.sleep(0.3)      # the start-up probe's connection is closed
        served, refused = 0, 0
        for i in range(80):
            c = connect(port)
            c.settimeout(10)
            socks.append(c)
            try:
                c.sendall(b"IAMAT fd%d +1.0+1.0 %d\n" % (i, i))
            except (BrokenPipeError, ConnectionResetError):
                pass         # refused before it spoke: its line is still there
            try:
                line = recv_exact_lines(c, 1)
            except ConnectionResetError:
                line = b"(reset)"
            if line == BUSY:
                refused += 1
                assert recv_until_eof(c) == b""
            else:
                assert line.startswith(b"AT Bailey ") and line.endswith(b" fd%d +1.0+1.0 %d\n"
                                                                         % (i, i)), \
                    f"connection {i} after {served} served: {line!r} (closed without a '? ' line)"
                served += 1
        log = read_log(str(tmp_path), "Bailey")
        assert "max-clients-lowered max_clients=32 configured=20000 fd_limit=64" in log, log
        assert served == 32 and refused == 48, (served, refused)
        # the table full of clients: the reserve still writes the snapshot
        snap = os.path.join(str(tmp_path), "state", "Bailey.snap")
        assert wait_for(lambda: os.path.exists(snap) and b"fd31" in open(snap, "rb").read(), 10)
        assert "snapshot-failed" not in read_log(str(tmp_path), "Bailey")
        # and so does a log rotation
        logs = os.path.join(str(tmp_path), "logs")
        os.rename(os.path.join(logs, "Bailey.log"), os.path.join(logs, "Bailey.log.1"))
        proc.send_signal(signal.SIGHUP)
        assert wait_log(str(tmp_path), "Bailey", "log-reopen path=", 5)
    finally:
        for c in socks:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        err.close()


def test_per_address_cap_refuses_with_a_line(make_server):
    s = make_server(limits={"max_clients_per_address": 3})
    time.sleep(0.3)          # the start-up probe's connection is closed
    held = hold_clients(s.port, 3, b"HOLD")
    with connect(s.port) as extra:
        extra.settimeout(5)
        extra.sendall(b"IAMAT four +1.0+1.0 1\n")
        assert recv_until_eof(extra) == BUSY_ADDR
    held.pop().close()       # a place frees up once one closes
    assert wait_for(lambda: exchange(s.port, b"PING\n") == b"? PING\n", 5)
    for c in held:
        c.close()
    assert "reason=max_clients_per_address 3 reached" in s.read_log(wait_for="reason=max_clients_per_address")


# ---------------------------------------------------------------- hangs

HANG_S = 3
SUPERVISOR = "supervisor:\n  restart_max: 3\n  restart_window_s: 60\n" \
             "  backoff_initial_ms: 100\n  backoff_max_ms: 400\n  stop_timeout_s: 5\n" \
             f"  hang_timeout_s: {HANG_S}\n"


@pytest.fixture
def sherd(tmp_path):
    h = ScriptHerd(tmp_path, extra=SUPERVISOR)
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


def test_stopped_server_is_replaced_within_hang_timeout(sherd):
    h, stopped = sherd
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
