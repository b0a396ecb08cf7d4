"""--status, --rates and the metrics files (docs/PROTOCOL.md, "Processes and
files", "Metrics"): the counters and gauges of NAME.prom, the file replaced
whole, the status table's rows, uptime, links and rates columns for
stopped, foreign, remote or given-up servers, and a port shared by many
listeners.
"""
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from harness import (ALL, connect, DEFAULT_LINKS, exchange, FakePlaces, outside_target, parse_prom,
                     PRECIOUS, proc_state, program, prom_path, read_metrics, recv_exact_lines,
                     Server, status_rows, value, wait_for, wait_log, wait_metrics, write_config)


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


def status_until(h, pred, *args, timeout=10):
    """--status until pred(result) holds; returns the last result."""
    last = [None]

    def check():
        last[0] = h.status(*args)
        return pred(last[0])
    wait_for(check, timeout, step=0.2)
    return last[0]


PTRACE_ATTACH, PTRACE_DETACH = 16, 17


PTRACE_ATTACH, PTRACE_DETACH = 16, 17


libc = ctypes.CDLL(None, use_errno=True)


def test_status_stopped_servers_and_their_metrics_files(sup_herd):
    """A server held by a debugger (state t) or by SIGSTOP (T) shows as
    "stopped"; its links show "?" when its metrics file is stale (older than
    5 s) and the valid lines only of a malformed one count; a server without
    neighbours shows "-".  --rates says "no metrics file" and "metrics file
    not rewritten" for the stopped ones."""
    h = sup_herd({"Alpha": ["Beta"], "Beta": ["Alpha"], "Gamma": []}).start()
    pids = h.pids()
    sup = pids["supervisor"]
    r = status_until(h, lambda r: r.returncode == 0 and
                     status_rows(r.stdout)["Alpha"][6] == "Beta:up" and
                     status_rows(r.stdout)["Beta"][6] == "Alpha:up", "--wait", "10")
    assert r.stdout.startswith(f"supervisor pid {sup}; 3 of 3 servers listening\n"), r.stdout
    t = status_rows(r.stdout)
    assert t["Gamma"][:3] == ["Gamma", f"127.0.0.1:{h.ports['Gamma']}", str(pids["Gamma"])]
    assert t["Gamma"][4:] == ["0", "yes", "-", h.path("logs", "Gamma.log")], t["Gamma"]
    assert t["Alpha"][6] == "Beta:up" and t["Beta"][6] == "Alpha:up", r.stdout

    # a debugger holds Gamma: tracing stop, 't'
    assert libc.ptrace(PTRACE_ATTACH, pids["Gamma"], 0, 0) == 0, ctypes.get_errno()
    try:
        assert wait_for(lambda: proc_state(pids["Gamma"]) == "t", 5)
        r = h.status()
        assert r.returncode == 1, r.stdout
        assert r.stdout.startswith(f"supervisor pid {sup}; 2 of 3 servers listening\n")
        assert status_rows(r.stdout)["Gamma"][5] == "stopped", r.stdout
    finally:
        libc.ptrace(PTRACE_DETACH, pids["Gamma"], 0, 0)
    r = status_until(h, lambda r: r.returncode == 0, "--wait", "10")
    assert status_rows(r.stdout)["Gamma"][5] == "yes", r.stdout

    # SIGSTOP: Beta and Gamma rewrite their metrics files no more
    for n in ("Beta", "Gamma"):
        os.kill(pids[n], signal.SIGSTOP)
    assert wait_for(lambda: proc_state(pids["Beta"]) == proc_state(pids["Gamma"]) == "T", 5)
    time.sleep(0.3)                       # a rewrite under way has ended
    beta_prom = h.path("state", "Beta.prom")
    os.remove(h.path("state", "Gamma.prom"))
    # the valid line says down; each malformed one would say up if it counted
    with open(beta_prom, "w") as f:
        f.write('# TYPE proxyherd_link_up gauge\n'
                'proxyherd_link_up{peer="Alpha"} 0\n'
                'proxyherd_link_up{peer="Alpha" 1\n'             # no '}'
                'proxyherd_link_up{role="Alpha"} 1\n'            # no peer label
                'proxyherd_link_up{role="a"} 1 peer="Alpha"\n'   # peer after the '}'
                'proxyherd_link_up{peer="Alpha"} x1\n'           # no value
                'proxyherd_link_up{peer="Zed"} 1\n'              # not a neighbour
                'garbage\n')
    r = h.status("--rates")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith(f"supervisor pid {sup}; 1 of 3 servers listening\n"), r.stdout
    t = status_rows(r.stdout)
    assert t["Beta"][2] == str(pids["Beta"]) and t["Beta"][5:7] == ["stopped", "Alpha:down"], \
        r.stdout
    assert t["Gamma"][5:7] == ["stopped", "-"], r.stdout
    assert t["Alpha"][5] == "yes", r.stdout
    rates = r.stdout.split(f"\nrates from {h.path('state')}/NAME.prom, over about a second:\n")
    assert len(rates) == 2, r.stdout
    lines = rates[1].splitlines()
    assert lines[0].split() == ["NAME", "CLIENTS", "UPDATES/S", "LINK-SENT/S", "REQUESTS/S",
                                "LINKS-UP"]
    rr = {line.split()[0]: line for line in lines[1:]}
    assert set(rr) == {"Alpha", "Beta", "Gamma"}, r.stdout
    assert rr["Beta"] == f"{'Beta':<12} {'-':>9} {'-':>10} {'-':>12} {'-':>11} {'-':>9}  " \
                         "(metrics file not rewritten)", r.stdout
    assert rr["Gamma"] == f"{'Gamma':<12} {'-':>9} {'-':>10} {'-':>12} {'-':>11} {'-':>9}  " \
                          "(no metrics file)", r.stdout
    alpha = rr["Alpha"].split()
    assert len(alpha) == 6 and alpha[5] in ("0/1", "1/1"), r.stdout
    assert all(float(v) >= 0 for v in alpha[1:5]), r.stdout

    # a link up whose ends disagree on a setting that must agree
    with open(beta_prom, "w") as f:
        f.write('proxyherd_link_up{peer="Alpha"} 1\n'
                'proxyherd_link_config_mismatch{peer="Alpha"} 1\n')
    r = h.status()
    assert status_rows(r.stdout)["Beta"][6] == "Alpha:mismatch", r.stdout

    # a metrics file older than 5 s says nothing, even "up"
    with open(beta_prom, "w") as f:
        f.write('proxyherd_link_up{peer="Alpha"} 1\n')
    r = h.status()
    assert status_rows(r.stdout)["Beta"][6] == "Alpha:up", r.stdout
    old = time.time() - 10
    os.utime(beta_prom, (old, old))
    r = h.status()
    assert status_rows(r.stdout)["Beta"][5:7] == ["stopped", "Alpha:?"], r.stdout

    # Beta's file goes between the two readings of --rates: the second counts
    p = subprocess.Popen([program("herd-supervisor"), "-c", h.config, "--status", "--rates"],
                         stdout=subprocess.PIPE, text=True)
    time.sleep(1.5)       # the first reading is done; the second waits for Beta's rewrite
    os.remove(beta_prom)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 1, out
    rr = {line.split()[0]: line for line in out.split("over about a second:\n")[1].splitlines()}
    assert rr["Beta"] == f"{'Beta':<12} {'-':>9} {'-':>10} {'-':>12} {'-':>11} {'-':>9}  " \
                         "(no metrics file)", out

    for n in ("Beta", "Gamma"):
        os.kill(pids[n], signal.SIGCONT)
    r = status_until(h, lambda r: r.returncode == 0, "--wait", "10")
    assert "3 of 3 servers listening" in r.stdout, r.stdout
    assert h.pids() == pids


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def test_status_uptime_foreign_pids_taken_port_and_a_zombie(sup_herd, make_server):
    h = sup_herd({"Alpha": [], "Beta": []}).start()
    pids = h.pids()
    sup = pids["supervisor"]
    r = status_until(h, lambda r: r.returncode == 0, "--wait", "10")
    assert r.stdout.startswith(f"supervisor pid {sup}; 2 of 2 servers listening\n"), r.stdout

    # uptimes of minutes and of hours (supervisor.state: NAME PID STARTED_MS RESTARTS STATE)
    state = h.path("state", "supervisor.state")
    lines = open(state).read().split("\n")
    now_ms = int(time.time() * 1000)
    ago = {"Alpha": 150_500, "Beta": 7_290_000}
    write_atomic(state, "".join(
        f"{f[0]} {f[1]} {now_ms - ago[f[0]]} {f[3]} {f[4]}\n"
        for f in (line.split() for line in lines if line)))
    t = status_rows(h.status().stdout)
    assert re.fullmatch(r"2m3[0-4]s", t["Alpha"][3]), t["Alpha"]
    assert t["Beta"][3] == "2h01m", t["Beta"]

    # servers.pid naming a herd-server that is not the supervisor's child
    stray = make_server(name="Alpha")
    pidfile = h.path("servers.pid")
    original = open(pidfile).read()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        write_atomic(pidfile, f"supervisor {sup}\nAlpha {stray.proc.pid}\nBeta {pids['Beta']}\n")
        r = h.status()
        assert r.returncode == 1 and "1 of 2 servers listening" in r.stdout, r.stdout
        assert status_rows(r.stdout)["Alpha"][2:4] == ["-", "-"], r.stdout
        # ... or another supervisor than the one holding servers.lock
        write_atomic(pidfile, f"supervisor {stranger.pid}\nAlpha {pids['Alpha']}\n")
        r = h.status()
        assert r.returncode == 3, r.stdout
        assert r.stdout == f"no herd is running ({h.dir}/servers.pid: stale)\n"
    finally:
        write_atomic(pidfile, original)
        stranger.kill()
        stranger.wait()

    # the config now gives Beta a port another program listens on: a
    # connection succeeds, but Beta does not hold that port
    # (17 listeners there: more than the 16 the status looks at)
    others = []
    for _ in range(17):
        o = socket.socket()
        o.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        o.bind(("127.0.0.1", others[0].getsockname()[1] if others else 0))
        o.listen()
        others.append(o)
    taken = others[0].getsockname()[1]
    text = open(h.config).read()
    try:
        write_atomic(h.config, text.replace(f"port: {h.ports['Beta']},", f"port: {taken},"))
        r = h.status()
        assert r.returncode == 1 and "1 of 2 servers listening" in r.stdout, r.stdout
        b = status_rows(r.stdout)["Beta"]
        assert b[1:3] == [f"127.0.0.1:{taken}", str(pids["Beta"])] and b[5] == "running", b
        # ... or another address: Beta holds the port, but not there
        write_atomic(h.config, text.replace(f"host: 127.0.0.1, port: {h.ports['Beta']},",
                                            f"host: 127.0.0.2, port: {h.ports['Beta']},"))
        r = h.status()
        assert r.returncode == 1 and "1 of 2 servers listening" in r.stdout, r.stdout
        b = status_rows(r.stdout)["Beta"]
        assert b[1:3] == [f"127.0.0.2:{h.ports['Beta']}", str(pids["Beta"])] and \
            b[5] == "running", b
    finally:
        write_atomic(h.config, text)
        for o in others:
            o.close()

    # Beta dies while the supervisor is stopped: a zombie is no server
    os.kill(sup, signal.SIGSTOP)
    try:
        h.killed.add(pids["Beta"])
        os.kill(pids["Beta"], signal.SIGKILL)
        assert wait_for(lambda: proc_state(pids["Beta"]) == "Z", 5)
        r = h.status()
        assert r.returncode == 1, r.stdout
        assert r.stdout.startswith(f"supervisor pid {sup}; 1 of 2 servers listening\n")
        assert status_rows(r.stdout)["Beta"][2] == "-", r.stdout
    finally:
        os.kill(sup, signal.SIGCONT)
    assert wait_log(h.dir, "supervisor",
                    f"child-crash server=Beta pid={pids['Beta']} killed by signal 9", 10)
    r = status_until(h, lambda r: r.returncode == 0, "--wait", "10")
    assert h.pids()["Beta"] != pids["Beta"]
    assert status_rows(r.stdout)["Beta"][2] == str(h.pids()["Beta"]), r.stdout


def test_status_rates_with_remote_servers_and_a_long_links_column(sup_herd):
    """17 neighbours on another host: "(17 more on other hosts)", no rates
    row for them, and the LINKS column cut at 1023 characters."""
    far = [f"Far{i:02d}" + "x" * 55 for i in range(17)]
    servers = {"Hub": far, **{n: ["Hub"] for n in far}}
    h = sup_herd(servers, remote=far).start()
    sup = h.pids()["supervisor"]
    r = h.status("--wait", "10", "--rates")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"supervisor pid {sup}; 1 of 1 servers listening "
                               "(17 more on other hosts)\n"), r.stdout
    t = status_rows(r.stdout)
    assert set(t) == {"Hub"}, r.stdout
    links = t["Hub"][6]
    assert links == ",".join(f"{n}:down" for n in far)[:1023], links
    assert t["Hub"][7] == h.path("logs", "Hub.log")
    rates = r.stdout.split("over about a second:\n")[1].splitlines()
    assert len(rates) == 2 and rates[1].split()[0] == "Hub", r.stdout
    assert rates[1].split()[5] == "0/17", r.stdout


def test_a_link_being_dialled_reads_connecting_then_down(sup_herd):
    """Alpha dials Zulu (its name sorts first), whose port a socket of this
    test holds and never answers: the link's TLS handshake waits, so Alpha's
    proxyherd_link_connecting{peer="Zulu"} is 1 (link_up 0) and --status
    shows Zulu:connecting, not down.  Once the socket is gone every dial is
    refused: 0, and Zulu:down."""
    h = sup_herd({"Alpha": ["Zulu"], "Zulu": ["Alpha"]},
                 extra="  restart_max: 1\n  restart_window_s: 60\n")
    blocker = h.start_with_port_held("Zulu")

    def gauges(m):
        return tuple(value(m["Alpha"], f"proxyherd_link_{g}", peer="Zulu")
                     for g in ("up", "connecting"))

    def links(r):
        rows = status_rows(r.stdout)
        return rows["Alpha"][6] if "Alpha" in rows else None
    try:
        h.wait_listening("Alpha")
        assert h.wait_log("supervisor", "child-given-up server=Zulu", timeout=15)
        wait_metrics(h.dir, ["Alpha"], lambda m: gauges(m) == (0, 1))
        status_until(h, lambda r: links(r) == "Zulu:connecting")
    finally:
        blocker.close()
    wait_metrics(h.dir, ["Alpha"], lambda m: gauges(m) == (0, 0))
    status_until(h, lambda r: links(r) == "Zulu:down")


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


FIXED = {"proxyherd_client_updates_total": "counter",
         "proxyherd_link_updates_sent_total": "counter",
         "proxyherd_clients": "gauge",
         "proxyherd_link_up": "gauge"}


@pytest.mark.parametrize("forwarding", ["flood", "tree"])
def test_counters_match_what_was_sent(herd, forwarding):
    with open(herd.config, "a") as f:          # herd: is the config's last section
        f.write(f"  forwarding: {forwarding}\n")
    herd.start().wait_links()
    # every server starts with a file: no update yet, every link up
    first = wait_metrics(herd.dir, ALL, lambda m: all(
        value(m[n], "proxyherd_link_up", peer=p) == 1 for n in ALL for p in DEFAULT_LINKS[n]))
    for n in ALL:
        fams = read_metrics(herd.dir, n)
        for name, kind in FIXED.items():
            assert name in fams, (n, name)
            assert f"# TYPE {name} {kind}\n" in open(prom_path(herd.dir, n)).read()
        assert set(fams["proxyherd_link_up"]) == {(("peer", p),) for p in DEFAULT_LINKS[n]}
        assert value(first[n], "proxyherd_client_updates_total") == 0
        assert value(fams, "proxyherd_up") == 1
        assert value(fams, "proxyherd_evictions_total") == 0

    if forwarding == "tree":
        time.sleep(2.5)       # link states settled: trees, not the flood of a change
    k = 30
    port = herd.ports["Bailey"]
    with socket.create_connection(("127.0.0.1", port)) as s:
        for i in range(k):
            s.sendall(b"IAMAT metric-%d +1.0+1.0 %d.5\n" % (i, 2000 + i))
        for i in range(5):                    # older than what is stored: not stored
            s.sendall(b"IAMAT metric-%d +2.0+2.0 %d.5\n" % (i, 1000 + i))
        s.sendall(b"WHATSAT metric-0 1 1\nno such command\n")
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass

    # each update is stored once at each of the other four servers.  Flooding:
    # each server that stores it sends it on every link but the one it came
    # in on; trees: it crosses each of the N-1 tree links once.  With every
    # link up and nothing else happening, the count is exact.
    edges = sum(len(v) for v in DEFAULT_LINKS.values()) // 2
    per_update = 2 * edges - (len(ALL) - 1) if forwarding == "flood" else len(ALL) - 1

    def settled(m):
        total = lambda name: sum(value(m[n], name) for n in ALL)   # noqa: E731
        return (all(value(m[n], "proxyherd_clients") == k for n in ALL)
                and total("proxyherd_link_updates_stored_total") == k * (len(ALL) - 1)
                and total("proxyherd_link_updates_received_total")
                == total("proxyherd_link_updates_sent_total"))
    m = wait_metrics(herd.dir, ALL, settled)
    assert value(m["Bailey"], "proxyherd_client_updates_total") == k
    for n in ALL:
        if n != "Bailey":
            assert value(m[n], "proxyherd_client_updates_total") == 0, n
        assert value(m[n], "proxyherd_link_updates_stored_total") == (0 if n == "Bailey" else k)
    sent = {n: value(m[n], "proxyherd_link_updates_sent_total") for n in ALL}
    assert sum(sent.values()) == k * per_update, sent
    assert sent["Bailey"] == k * len(DEFAULT_LINKS["Bailey"]), sent
    assert value(m["Bailey"], "proxyherd_requests_total", command="IAMAT") == k + 5
    assert value(m["Bailey"], "proxyherd_requests_total", command="WHATSAT") == 1
    assert value(m["Bailey"], "proxyherd_requests_total", command="invalid") == 1
    assert value(m["Bailey"], "proxyherd_connections_accepted_total") >= 1
    for n in ALL:
        assert value(m[n], "proxyherd_start_time_seconds") <= time.time()


def test_link_up_follows_a_neighbour_and_a_stop_removes_the_file(herd):
    herd.start().wait_links()
    up = lambda m, n, p: value(m[n], "proxyherd_link_up", peer=p)   # noqa: E731
    wait_metrics(herd.dir, ALL, lambda m: all(up(m, n, p) == 1 for n in ALL
                                              for p in DEFAULT_LINKS[n]))
    herd.kill("Clark")                        # neighbours: Bona and Jaquez
    rest = [n for n in ALL if n != "Clark"]
    m = wait_metrics(herd.dir, rest, lambda m: up(m, "Bona", "Clark") == 0
                     and up(m, "Jaquez", "Clark") == 0, timeout=5)
    assert all(up(m, n, p) == 1 for n in rest for p in DEFAULT_LINKS[n] if p != "Clark")
    # a killed server's file stays (its age shows it); it comes back to life
    assert os.path.exists(prom_path(herd.dir, "Clark"))
    herd.start("Clark")
    wait_metrics(herd.dir, ["Bona", "Jaquez", "Clark"], lambda m: up(m, "Bona", "Clark") == 1
                 and up(m, "Jaquez", "Clark") == 1 and up(m, "Clark", "Bona") == 1, timeout=10)
    # a graceful stop removes the file: no frozen figures left behind
    herd.stop("Jaquez")
    assert not os.path.exists(prom_path(herd.dir, "Jaquez"))
    wait_metrics(herd.dir, ["Campbell"], lambda m: up(m, "Campbell", "Jaquez") == 0, timeout=5)


def test_file_is_replaced_whole_under_load(server):
    """Under a steady load the file is read whole every time (never empty,
    never a part), its counter never goes back, and once the load ends it
    adds up.  Client ids repeat after 50,000, each IAMAT newer than the last
    of its client: a fast machine sent past limits.max_stored_clients
    (1,000,000) in the 3.5 s, and the table's eviction broke the count."""
    stop = threading.Event()
    sent = [0]
    ids = 50_000

    def load():
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            i = 0
            while not stop.is_set():
                batch = b"".join(b"IAMAT load-%d +1.0+1.0 %d.5\n" % ((i + j) % ids, 1000 + i + j)
                                 for j in range(200))
                s.sendall(batch)
                got = b""
                while got.count(b"\n") < 200:
                    got += s.recv(65536)
                i += 200
                sent[0] = i

    t = threading.Thread(target=load)
    t.start()
    path = prom_path(server.dir, server.name)
    versions, reads, last = set(), 0, -1
    try:
        deadline = time.time() + 3.5
        while time.time() < deadline:
            try:
                with open(path) as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            fams = parse_prom(text)     # never empty, never a part
            n = value(fams, "proxyherd_client_updates_total")
            assert n >= last, "counter went back"
            last = n
            versions.add(text)
            reads += 1
    finally:
        stop.set()
        t.join()
    assert len(versions) >= 3 and reads > 100, (len(versions), reads)
    m = wait_metrics(server.dir, [server.name], lambda m: value(
        m[server.name], "proxyherd_client_updates_total") == sent[0])
    assert value(m[server.name], "proxyherd_clients") == min(sent[0], ids)


def test_unwritable_state_dir_is_logged_once_and_retried(tmp_path):
    # the state folder's name taken by a file: nothing can be written there
    folder = tmp_path / "s0"
    folder.mkdir()
    blocker = folder / "state"
    blocker.write_text("not a folder\n")
    srv = Server(folder)
    write_config(str(folder), {srv.name: (srv.port, [])}, extra="herd:\n  secret_file: no-secret\n")
    srv.start()
    try:
        time.sleep(2.5)                       # two rewrites or more
        reply = exchange(srv.port, b"IAMAT still-serving +1.0+1.0 1\n")
        assert reply.startswith(b"AT Bailey "), reply
        log = srv.read_log(wait_for="metrics-failed")
        assert log.count("metrics-failed") == 1, log
        os.remove(blocker)                    # the server creates the folder
        assert "metrics-written" in srv.read_log(wait_for="metrics-written", timeout=5)
        fams = read_metrics(str(folder), "Bailey")
        assert value(fams, "proxyherd_client_updates_total") == 1
    finally:
        srv.stop()


def test_status_rates(sherd):  # noqa: F811
    r = sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stderr + r.stdout
    plain = subprocess.run([program("herd-supervisor"), "-c", sherd.config, "--status"],
                           capture_output=True, text=True)
    assert plain.returncode == 0 and "UPDATES/S" not in plain.stdout   # the scripts parse it
    stop = threading.Event()

    def load():
        i = 0
        while not stop.is_set():
            exchange(sherd.ports["Bona"], b"".join(
                b"IAMAT rate-%d +1.0+1.0 %d.5\n" % (i + j, 1000 + i + j) for j in range(50)))
            i += 50

    t = threading.Thread(target=load)
    t.start()
    try:
        st = subprocess.run([program("herd-supervisor"), "-c", sherd.config, "--status",
                             "--rates"], capture_output=True, text=True, timeout=30)
    finally:
        stop.set()
        t.join()
    assert st.returncode == 0, st.stdout + st.stderr
    out = st.stdout.split("\n")
    # the table --status prints comes first, unchanged in shape
    assert out[:2 + len(ALL)] == plain.stdout.split("\n")[:2] + out[2:2 + len(ALL)]
    assert all(len(line.split()) == 8 for line in out[2:2 + len(ALL)]), st.stdout
    head = out.index(next(line for line in out if line.startswith("NAME ") and "UPDATES/S" in line))
    assert out[head].split() == ["NAME", "CLIENTS", "UPDATES/S", "LINK-SENT/S", "REQUESTS/S",
                                 "LINKS-UP"]
    rows = {line.split()[0]: line.split() for line in out[head + 1:] if line.strip()}
    assert set(rows) == set(ALL), st.stdout
    for n in ALL:
        d = len(DEFAULT_LINKS[n])
        assert rows[n][5] == f"{d}/{d}", st.stdout
        assert float(rows[n][3]) >= 0
    assert float(rows["Bona"][2]) > 0 and float(rows["Bona"][4]) > 0, st.stdout
    assert float(rows["Bona"][3]) > 0, st.stdout        # Bona floods what it stores
    assert float(rows["Jaquez"][2]) == 0, st.stdout     # no client spoke to Jaquez


def iamat(port, client, t):
    reply = exchange(port, b"IAMAT %s +34.068930-118.445127 %s\n" % (client, t))
    assert reply.startswith(b"AT "), reply


def test_upstream_requests_by_status(make_server):
    fake = FakePlaces()
    try:
        s = make_server(places={"provider": "google", "base_url": fake.base, "api_key": "k",
                                "timeout_ms": 1000, "cache_ttl_s": 60})
        iamat(s.port, b"kiwi", b"%.9f" % time.time())
        for bound in (b"2", b"2", b"3"):      # a call, the cache, another call
            assert exchange(s.port, b"WHATSAT kiwi 10 %s\n" % bound).endswith(b"}\n\n")
        fake.mode, fake.http_status = "http", 429
        assert b"OVER_QUERY_LIMIT" in exchange(s.port, b"WHATSAT kiwi 10 4\n")
        assert len(fake.requests) == 3
        want = {"OK": 2, "OVER_QUERY_LIMIT": 1, "ZERO_RESULTS": 0, "UNKNOWN_ERROR": 0}
        m = wait_metrics(s.dir, [s.name], lambda m: all(
            value(m[s.name], "proxyherd_upstream_requests_total", status=k) == v
            for k, v in want.items()))
        assert value(m[s.name], "proxyherd_upstream_cache_hits_total") == 1
        assert value(m[s.name], "proxyherd_requests_total", command="WHATSAT") == 4
    finally:
        fake.close()


def test_connections_accepted_refused_and_open(make_server):
    s = make_server(limits={"max_clients": 2})
    # the fixture's one probe that the server listens: accepted, then closed
    wait_metrics(s.dir, [s.name], lambda m: value(
        m[s.name], "proxyherd_connections_accepted_total") == 1
        and value(m[s.name], "proxyherd_connections") == 0)
    held = []
    try:
        for _ in range(2):
            held.append(socket.create_connection(("127.0.0.1", s.port)))
            held[-1].sendall(b"IAMAT c +1.0+1.0 1\n")
            assert held[-1].recv(4096).startswith(b"AT ")
        assert exchange(s.port, b"").startswith(b"? too many connections")
        m = wait_metrics(s.dir, [s.name], lambda m: value(
            m[s.name], "proxyherd_connections_refused_total") == 1)
        assert value(m[s.name], "proxyherd_connections_accepted_total") == 3
        assert value(m[s.name], "proxyherd_connections") == 2
    finally:
        for c in held:
            c.close()


def test_server_label_on_request(herd):
    """herd.metrics_server_label: every sample also says which server wrote
    it, so several servers' files can share one textfile-collector folder;
    without it the samples carry exactly the fixed labels."""
    with open(herd.config, "a") as f:
        f.write("  metrics_server_label: true\n")
    herd.start().wait_links()
    path = prom_path(herd.dir, "Bailey")
    deadline = time.time() + 15
    while True:
        try:
            with open(path) as f:
                text = f.read()
            fams = parse_prom(text, "Bailey")
            if value(fams, "proxyherd_link_up", peer="Bona") == 1:
                break
        except (FileNotFoundError, KeyError):
            pass
        assert time.time() < deadline, "no labelled metrics file"
        time.sleep(0.1)
    assert 'proxyherd_link_up{peer="Bona",server="Bailey"} 1\n' in text
    assert 'proxyherd_clients{server="Bailey"} 0\n' in text


OTHERS = 500   # listeners of another program on the port: 127.0.x.y, never 127.0.0.1


def test_status_sees_the_server_among_many_listeners_on_its_port(sup_herd):
    h = sup_herd({"Bailey": []}).start()
    port = h.ports["Bailey"]
    addrs = [f"127.0.{x // 250}.{x % 250 + 2}" for x in range(OTHERS)]
    others = []
    try:
        for a in addrs:
            s = socket.socket()
            others.append(s)
            s.bind((a, port))
            s.listen(1)
        with open("/proc/net/tcp") as f:
            listening = sum(line.split()[1].endswith(":%04X" % port) and line.split()[3] == "0A"
                            for line in f.readlines()[1:])
        assert listening == OTHERS + 1, listening
        last = [None]

        def up():
            last[0] = h.status()
            return last[0].returncode == 0
        assert wait_for(up, 10, step=0.2), last[0].stdout + last[0].stderr
        assert status_rows(last[0].stdout)["Bailey"][5] == "yes", last[0].stdout
        assert "1 of 1 servers listening" in last[0].stdout
    finally:
        for s in others:
            s.close()


def lint_ready(texts, server_label):
    """True when each file (parsed as parse_prom does) has a sample in
    every family: a stored client for each server, an invalid request, and
    every link up."""
    for n, text in texts.items():
        m = parse_prom(text, n if server_label else None)
        if (value(m, "proxyherd_clients") != len(ALL)
                or value(m, "proxyherd_requests_total", command="invalid") != 1
                or any(value(m, "proxyherd_link_up", peer=p) != 1 for p in DEFAULT_LINKS[n])):
            return False
    return True


@pytest.mark.parametrize("server_label", [False, True])
def test_files_pass_promtool(herd, server_label):
    """Every server's file, with links up, stored clients, requests of each
    kind and (herd.metrics_server_label) the server label, passes
    `promtool check metrics` (Prometheus' own linter: HELP and TYPE,
    counter and unit names) without a single remark, besides parse_prom."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus: make deps)"
    if server_label:
        with open(herd.config, "a") as f:       # herd: is the config's last section
            f.write("  metrics_server_label: true\n")
    herd.start().wait_links()
    for i, n in enumerate(ALL):
        iamat(herd.ports[n], b"lint-%d" % i, b"%.9f" % time.time())
        reply = herd.send(n, b"WHATSAT lint-%d 10 2\nno such command\n" % i)
        assert reply.startswith(b"AT ") and reply.endswith(b"\n? no such command\n"), reply
    deadline = time.time() + 15
    while True:                 # the files are rewritten once a second
        texts = {}
        for n in ALL:
            with open(prom_path(herd.dir, n)) as f:
                texts[n] = f.read()
        if lint_ready(texts, server_label):
            break
        assert time.time() < deadline, f"metrics never settled: {texts}"
        time.sleep(0.1)
    for n, text in texts.items():
        r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), \
            f"{n}: promtool exited {r.returncode}:\n{r.stdout}{r.stderr}\n{text}"


# ------------------------------------------------------------ metrics

def gauge(folder, name, metric):
    """The value of a sample without labels in <folder>/state/NAME.prom, or None."""
    try:
        with open(os.path.join(folder, "state", f"{name}.prom")) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    m = re.search(r"^%s (\S+)$" % re.escape(metric), text, re.M)
    return float(m.group(1)) if m else None


def test_parked_clients_show_in_the_idle_gauge(server):
    """docs/PROTOCOL.md, Metrics: proxyherd_connections_idle, "idle client
    connections (parked out of the poll set)": quiet ones count, one with an
    unfinished line does not, and closed ones leave it."""
    quiet = [connect(server.port) for _ in range(3)]
    for i, c in enumerate(quiet):
        c.sendall(b"IAMAT idle%d +1.0+1.0 1\n" % i)
        assert recv_exact_lines(c, 1).startswith(b"AT ")
    partial = connect(server.port)
    partial.sendall(b"IAMAT unfinished")
    assert wait_for(lambda: gauge(server.dir, "Bailey", "proxyherd_connections_idle") == 3
                    and gauge(server.dir, "Bailey", "proxyherd_connections") == 4, 6), \
        open(os.path.join(server.dir, "state", "Bailey.prom")).read()
    for c in quiet + [partial]:
        c.close()
    assert wait_for(lambda: gauge(server.dir, "Bailey", "proxyherd_connections_idle") == 0
                    and gauge(server.dir, "Bailey", "proxyherd_connections") == 0, 6)
