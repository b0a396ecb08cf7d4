"""Operations without downtime (docs/PROTOCOL.md, "Reloading the config"
and "Rolling restart"): ./start_servers.sh --reload and --restart on a
running herd, as an operator runs them, under load."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

from harness import (BIN_DIR, NO_HANG, exchange, free_port, listens, program, read_metrics,
                     recv_until_eof, value, wait_for, write_config)


class Load:
    """Closed-loop IAMAT clients, 'per_port' connections to each server in
    ports ({name: port}), each cycling over its own 20 client ids.  A reply
    that is not the AT line of its IAMAT is an error; so is a connection
    that closes, unless 'reconnect' names the server (it is being
    restarted): that one connects again.  acked: client -> the time field
    of its newest acknowledged IAMAT."""

    def __init__(self, ports, per_port=2, reconnect=()):
        self.ports, self.reconnect = ports, set(reconnect)
        self.acked, self.errors, self.drops = {}, [], []
        self.count = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(name, i), daemon=True)
                        for name in ports for i in range(per_port)]
        for t in self.threads:
            t.start()

    def _connect(self, name):
        deadline = time.time() + 30
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.ports[name]), timeout=10)
            except OSError:
                if name not in self.reconnect or time.time() > deadline:
                    raise
                time.sleep(0.02)

    def _run(self, name, i):
        n = 0
        try:
            s = self._connect(name)
            f = s.makefile("rb")
            while not self.done.is_set():
                client = f"load-{name}-{i}-{n % 20}"
                t = "%.9f" % time.time()
                try:
                    s.sendall(f"IAMAT {client} +34.068930-118.445127 {t}\n".encode())
                    line = f.readline()
                except OSError as e:
                    line = b"<%s>" % str(e).encode()
                if not line.startswith(b"AT ") or not line.rstrip().endswith(t.encode()):
                    if name in self.reconnect and not line.startswith(b"AT ") \
                            and not line.startswith(b"? "):
                        self.drops.append((name, line))     # restarted under us
                        s.close()
                        s = self._connect(name)
                        f = s.makefile("rb")
                        continue
                    self.errors.append((name, client, line))
                    return
                with self.lock:
                    self.acked[client] = t
                    self.count += 1
                n += 1
            s.close()
        except OSError as e:
            self.errors.append((name, "connect", str(e)))

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(timeout=30)


def held(port, client):
    """The time field of the AT line a server holds for client, or None."""
    reply = exchange(port, b"WHATSAT %s 1 1\n" % client.encode())
    return None if reply.startswith(b"? ") else reply.split(b"\n", 1)[0].split()[-1].decode()


def missing_updates(ports, acked):
    """(server, client, held, acked) for each acknowledged update a server
    does not hold."""
    return [(n, c, held(p, c), t) for n, p in ports.items() for c, t in acked.items()
            if held(p, c) != t]


def links_in_metrics(h, name):
    """{peer: up} from the server's metrics file."""
    try:
        fams = read_metrics(h.dir, name)
    except FileNotFoundError:            # not written yet, or removed at a stop
        return {}
    return {dict(labels)["peer"]: v for labels, v in fams.get("proxyherd_link_up", {}).items()}


def rewrite(h, servers, limits=None):
    """Write h's config anew: servers is {name: [neighbours]} (ports from
    h.ports, a new name gets a free port)."""
    for n in servers:
        h.ports.setdefault(n, free_port())
    write_config(h.dir, {n: (h.ports[n], servers[n]) for n in servers}, limits=limits,
                 extra=NO_HANG)


TRIANGLE = {"Alpha": ["Beta", "Gamma"], "Beta": ["Alpha", "Gamma"], "Gamma": ["Alpha", "Beta"]}


def started(sup_herd, servers=TRIANGLE):
    h = sup_herd(servers)
    h.start()
    wait_for(lambda: all(all(links_in_metrics(h, n).get(p) == 1 for p in servers[n])
                         for n in servers), 10, what="every link up")
    return h


def test_reload_under_load_adds_a_server_drops_a_link_and_changes_a_limit(sup_herd):
    h = started(sup_herd)
    pids = h.pids()
    load = Load({n: h.ports[n] for n in TRIANGLE})
    try:
        wait_for(lambda: load.count > 200, 10, what="the load to run")
        # Delta joins next to Alpha and Beta; the Beta-Gamma link goes; a limit changes
        new = {"Alpha": ["Beta", "Gamma", "Delta"], "Beta": ["Alpha", "Delta"],
               "Gamma": ["Alpha"], "Delta": ["Alpha", "Beta"]}
        rewrite(h, new, limits={"max_clients": 500})
        r = h.script("start_servers.sh", "--reload")
        assert r.returncode == 0, r.stdout + r.stderr
        for line in ("reload: reload Alpha", "reload: reload Beta", "reload: reload Gamma",
                     "reload: start Delta", "4 of 4 servers listening"):
            assert line in r.stdout, r.stdout
        h.local.append("Delta")
        before = load.count
        wait_for(lambda: load.count > before + 200, 10, what="the load to go on")
    finally:
        load.stop()
    assert not load.errors, load.errors[:5]
    assert {n: p for n, p in h.pids().items() if n != "Delta"} == pids, "a server restarted"
    for n in TRIANGLE:
        assert h.wait_log(n, " reloaded ") and \
            re.search(r" reloaded .*max_clients=500 ", h.log(n)), h.log(n)[-2000:]
    # the new topology, in the metrics and the table: the new neighbours only
    want = {n: set(new[n]) for n in new}
    wait_for(lambda: all({p for p, up in links_in_metrics(h, n).items() if up == 1} == want[n]
                         and set(links_in_metrics(h, n)) == want[n] for n in new), 10,
             what="the links of the new config up, and no other")
    table = h.status().stdout
    assert re.search(r"^Beta .* Alpha:up,Delta:up ", table, re.M), table
    assert re.search(r"^Gamma .* Alpha:up ", table, re.M), table
    assert "link-down peer=Gamma reason=no longer a neighbour" in h.log("Beta")
    assert "link-down" not in h.log("Alpha") and "link-down peer=Alpha" not in h.log("Gamma")
    # updates both ways over the new links: Delta to Gamma (through Alpha) and back
    at = exchange(h.ports["Delta"], b"IAMAT via-delta +34.068930-118.445127 1621464827.1\n")
    assert at.startswith(b"AT Delta ")
    exchange(h.ports["Gamma"], b"IAMAT via-gamma +34.068930-118.445127 1621464827.2\n")
    wait_for(lambda: held(h.ports["Gamma"], "via-delta") == "1621464827.1" and
             held(h.ports["Delta"], "via-gamma") == "1621464827.2", 10,
             what="updates both ways between Delta and Gamma")
    # every update acknowledged under the reload, on every server, Delta too
    wait_for(lambda: not missing_updates(h.ports, load.acked), 15,
             what="every acknowledged update everywhere")
    print(f"{load.count} IAMATs acknowledged across the reload, 0 errors")


def test_an_invalid_config_changes_nothing(sup_herd):
    servers = {"Alpha": ["Beta"], "Beta": ["Alpha"]}
    h = started(sup_herd, servers)
    pids = h.pids()
    good = open(h.config).read()
    bad_texts = [good + "limits: [\n",                                  # not YAML
                 good.replace("neighbors: [Beta]", "neighbors: [Nobody]"),  # a bad name
                 good + "limits:\n  max_clients: -3\n"]                  # a bad value
    for bad in bad_texts:
        with open(h.config, "w") as f:
            f.write(bad)
        r = h.script("start_servers.sh", "--reload")
        assert r.returncode == 1, r.stdout + r.stderr
        assert re.search(r"reload refused, nothing changed: .*config\.yml:\d+: ", r.stderr), r.stderr
        assert h.pids() == pids
    for n in servers:
        assert " reload" not in h.log(n), h.log(n)
    assert " reload" not in h.log("supervisor")
    assert exchange(h.ports["Alpha"], b"IAMAT still +34.068930-118.445127 1621464827.5\n").startswith(b"AT ")
    # the server itself refuses a bad file as well (a reload it is sent by hand)
    os.kill(pids["Alpha"], signal.SIGUSR1)
    assert h.wait_log("Alpha", "reload-failed")
    assert re.search(r"ERROR reload-failed .*config\.yml:\d+: .*; nothing changed", h.log("Alpha"))
    fams = read_metrics(h.dir, "Alpha")
    assert value(fams, "proxyherd_config_last_reload_successful") == 0
    assert value(fams, "proxyherd_config_reloads_total") == 0
    assert links_in_metrics(h, "Alpha") == {"Beta": 1}


def test_a_reload_starts_a_given_up_server_again(sup_herd):
    h = sup_herd({"Alpha": ["Beta"], "Beta": ["Alpha"]},
                 extra="  restart_max: 1\n  restart_window_s: 60\n  backoff_initial_ms: 50\n")
    blocker = h.start_with_port_held("Beta")
    try:
        assert h.wait_log("supervisor", "child-given-up server=Beta", timeout=15)
    finally:
        blocker.close()
    alpha = h.pids()["Alpha"]
    r = h.script("start_servers.sh", "--reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reload: start Beta (it was given-up)" in r.stdout, r.stdout
    assert "2 of 2 servers listening" in r.stdout, r.stdout
    assert listens(h.ports["Beta"]) and h.pids()["Alpha"] == alpha


def test_a_new_port_restarts_that_server_alone(sup_herd):
    servers = {"Alpha": ["Beta"], "Beta": ["Alpha"]}
    h = started(sup_herd, servers)
    pids = h.pids()
    exchange(h.ports["Alpha"], b"IAMAT kept +34.068930-118.445127 1621464827.5\n")
    wait_for(lambda: held(h.ports["Beta"], "kept") == "1621464827.5", 10, what="kept at Beta")
    h.ports["Beta"] = free_port()
    rewrite(h, servers)
    r = h.script("start_servers.sh", "--reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"reload: restart Beta pid \d+: its address or port changed", r.stdout), r.stdout
    assert h.pids()["Alpha"] == pids["Alpha"] and h.pids()["Beta"] != pids["Beta"]
    assert listens(h.ports["Beta"])
    wait_for(lambda: links_in_metrics(h, "Alpha") == {"Beta": 1}, 10, what="the link again")
    assert held(h.ports["Beta"], "kept") == "1621464827.5"     # its snapshot


def test_rolling_restart_under_load_loses_no_acknowledged_update(sup_herd):
    h = started(sup_herd)
    pids = h.pids()
    load = Load({n: h.ports[n] for n in TRIANGLE}, reconnect=TRIANGLE)
    try:
        wait_for(lambda: load.count > 200, 10, what="the load to run")
        r = h.script("start_servers.sh", "--restart")
        assert r.returncode == 0, r.stdout + r.stderr
        before = load.count
        wait_for(lambda: load.count > before + 100, 10, what="the load to go on")
    finally:
        load.stop()
    assert not load.errors, load.errors[:5]
    out = r.stdout
    order = [m.group(1) for m in re.finditer(r"^restarting (\w+) \(pid", out, re.M)]
    assert order == list(TRIANGLE), out
    assert re.search(r"^restarting the supervisor \(pid \d+\) in place", out, re.M), out
    assert "  supervisor: pid %d, the new binary runs" % pids["supervisor"] in out, out
    assert len(re.findall(r"links up and caught up in", out)) == 3, out
    assert "restarted 3 servers, one at a time" in out
    now = h.pids()
    assert all(now[n] != pids[n] for n in TRIANGLE) and now["supervisor"] == pids["supervisor"]
    # one at a time: each server was listening again before the next stopped
    sup = h.log("supervisor")
    starts = [m.start() for m in re.finditer(r"child-start server=\w+ pid=\d+ restarts=1", sup)]
    stops = [m.start() for m in re.finditer(r"child-stopped server=\w+ \(restarted as asked\) "
                                            r"exit status 0", sup)]
    assert len(starts) == len(stops) == 3 and stops[0] < starts[0] < stops[1] < starts[1] \
        < stops[2] < starts[2], sup
    wait_for(lambda: not missing_updates(h.ports, load.acked), 15,
             what="every acknowledged update everywhere")
    print(f"{load.count} IAMATs acknowledged, {len(load.drops)} connections closed by the "
          f"restarts and opened again")


def test_restart_refuses_a_name_not_here_and_reload_needs_a_running_herd(sup_herd):
    h = sup_herd({"Alpha": []})
    r = h.script("start_servers.sh", "--reload")
    assert r.returncode == 3 and "cannot reach the supervisor" in r.stderr, r.stdout + r.stderr
    h.start()
    r = h.script("start_servers.sh", "--restart", "Nobody")
    assert r.returncode == 2 and "no server named 'Nobody' runs on this machine" in r.stderr
    pid = h.pids()["Alpha"]
    r = h.script("start_servers.sh", "--restart", "Alpha")
    assert r.returncode == 0, r.stdout + r.stderr
    assert h.pids()["Alpha"] != pid


def test_the_supervisor_restarts_in_place_with_its_new_binary(sup_herd, tmp_path):
    """A new herd-supervisor binary, run without stopping a server: the
    same pid, the same servers, now supervised by the new program."""
    bindir = tmp_path / "bin"
    shutil.copytree(BIN_DIR, bindir)
    h = sup_herd({"Alpha": ["Beta"], "Beta": ["Alpha"]})
    h.env["HERD_BIN_DIR"] = str(bindir)
    r = h.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    pids = h.pids()
    sup = pids["supervisor"]
    # the upgrade: a new file at the program's path (the old one is still mapped)
    fresh = bindir / "herd-supervisor.new"
    shutil.copy2(bindir / "herd-supervisor", fresh)
    os.rename(fresh, bindir / "herd-supervisor")
    new_inode = os.stat(bindir / "herd-supervisor").st_ino
    assert os.stat(f"/proc/{sup}/exe").st_ino != new_inode
    r = h.script("start_servers.sh", "--restart", "supervisor")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"  supervisor: pid {sup}, the new binary runs" in r.stdout, r.stdout
    assert "restarted" not in r.stdout.split("supervisor: pid")[1], r.stdout   # no server
    assert os.stat(f"/proc/{sup}/exe").st_ino == new_inode
    assert h.pids() == pids
    assert h.wait_log("supervisor", " resumed pid=%d " % sup)
    assert re.search(r" resumed pid=%d .* servers=2 adopted \(re-exec 1\)" % sup,
                     h.log("supervisor")), h.log("supervisor")
    # the new image supervises: a server killed is restarted, the table is right
    h.kill(pids["Beta"])
    new_beta = h.wait_restarted("Beta", pids["Beta"])
    assert new_beta != pids["Beta"] and h.pids()["Alpha"] == pids["Alpha"]
    table = h.status().stdout
    assert re.search(r"^Alpha .* yes ", table, re.M) and re.search(r"^Beta .* yes ", table, re.M)
    # a binary that does not run is refused, and the supervisor goes on
    with open(bindir / "herd-supervisor.bad", "w") as f:
        f.write("#!/bin/sh\nexit 7\n")
    os.chmod(bindir / "herd-supervisor.bad", 0o755)
    os.rename(bindir / "herd-supervisor.bad", bindir / "herd-supervisor")
    r = subprocess.run([program("herd-supervisor"), "-c", h.config, "--restart", "supervisor"],
                       capture_output=True, text=True, timeout=60)    # a client that runs
    assert r.returncode == 1 and "exit status 7" in r.stderr, r.stdout + r.stderr
    assert h.pids()["supervisor"] == sup and os.stat(f"/proc/{sup}/exe").st_ino == new_inode
    shutil.copy2(BIN_DIR + "/herd-supervisor", bindir / "herd-supervisor")   # for the stop


def test_a_reload_reads_a_changed_places_file_and_refuses_a_bad_one(sup_herd, tmp_path):
    h = sup_herd({"Alpha": []})
    mine = tmp_path / "places.geojson"
    def place(name, lat, lng):
        return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lng, lat]},
                "properties": {"name": name}}
    def write(*places):
        mine.write_text(json.dumps({"type": "FeatureCollection", "features": list(places)}))
    write(place("First", 34.068930, -118.445127))
    rewrite_places = lambda: write_config(h.dir, {"Alpha": (h.ports["Alpha"], [])},
                                          places={"local_file": str(mine)}, extra=NO_HANG)
    rewrite_places()
    h.start()
    pid = h.pids()["Alpha"]
    c = socket.create_connection(("127.0.0.1", h.ports["Alpha"]))
    f = c.makefile("rb")

    def names():
        c.sendall(b"WHATSAT kiwi 10 5\n")
        f.readline()
        text = b""
        while not text.endswith(b"}\n\n"):
            text += f.readline()
        return [p["name"] for p in json.loads(text)["results"]]

    c.sendall(b"IAMAT kiwi +34.068930-118.445127 1621464827.5\n")
    f.readline()
    assert names() == ["First"]
    write(place("Second", 34.068930, -118.445127), place("Third", 34.06893, -118.4451))
    r = h.script("start_servers.sh", "--reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert names() == ["Second", "Third"]              # the same connection, the new file
    assert h.wait_log("Alpha", "(places file read again)")
    mine.write_text('{"type": "FeatureCollection", "features": [')
    r = h.script("start_servers.sh", "--reload")
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"Alpha refused the reload and runs as before: .* reload-failed .*"
                     r"places\.geojson", r.stdout), r.stdout
    assert names() == ["Second", "Third"] and h.pids()["Alpha"] == pid


def test_a_lower_max_clients_keeps_every_client_of_many_addresses(sup_herd):
    """A reload that lowers max_clients below the clients connected from
    as many addresses, with a per-address cap: nobody is closed, the server
    answers at once (its per-address table once had no room for them all,
    and the reload spun), and new clients are refused until some leave."""
    h = sup_herd({"Alpha": []})
    write_config(h.dir, {"Alpha": (h.ports["Alpha"], [])}, extra=NO_HANG,
                 limits={"max_clients": 100, "max_clients_per_address": 2})
    h.start()
    pid = h.pids()["Alpha"]
    held = []
    for k in range(20):
        c = socket.socket()
        c.bind((f"127.0.0.{k + 2}", 0))
        c.connect(("127.0.0.1", h.ports["Alpha"]))
        c.sendall(b"PING\n")
        assert c.recv(100) == b"? PING\n"
        held.append(c)
    write_config(h.dir, {"Alpha": (h.ports["Alpha"], [])}, extra=NO_HANG,
                 limits={"max_clients": 4, "max_clients_per_address": 2})
    r = h.script("start_servers.sh", "--reload")
    assert r.returncode == 0, r.stdout + r.stderr
    for c in held:                                    # all still served
        c.settimeout(5)
        c.sendall(b"PING\n")
        assert c.recv(100) == b"? PING\n"
    with socket.create_connection(("127.0.0.1", h.ports["Alpha"]), timeout=5) as c:
        assert recv_until_eof(c) == b"? too many connections, try again later\n"   # at once
    assert h.pids()["Alpha"] == pid
    for c in held:
        c.close()


def test_silent_control_clients_neither_stall_the_supervisor_nor_get_servers_killed(sup_herd):
    """Clients of supervisor.sock that connect and say nothing: each is given
    up after a moment, a real request is still answered, and no server is
    taken for hung (the supervisor once waited a second per byte and then
    blamed its own stall on every server's heartbeat)."""
    h = sup_herd({"Alpha": ["Beta"], "Beta": ["Alpha"]})
    write_config(h.dir, {n: (h.ports[n], [m for m in ("Alpha", "Beta") if m != n])
                         for n in ("Alpha", "Beta")},
                 extra="supervisor:\n  hang_timeout_s: 3\n  stop_timeout_s: 5\n")
    h.start()
    pids = h.pids()
    sock = h.path("state", "supervisor.sock")
    silent = []
    for _ in range(25):
        c = socket.socket(socket.AF_UNIX)
        c.connect(sock)
        silent.append(c)
    t0 = time.time()
    r = subprocess.run([program("herd-supervisor"), "-c", h.config, "--restart", "Nobody"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2                     # answered by the client itself: no socket
    c = socket.socket(socket.AF_UNIX)
    c.connect(sock)
    c.sendall(b"ping\n")
    c.settimeout(20)
    assert c.recv(100).startswith(b"ok pid %d " % pids["supervisor"])
    took = time.time() - t0         # behind 25 x 200 ms of silence: past hang_timeout_s
    for s in silent + [c]:
        s.close()
    assert "child-hung" not in h.log("supervisor"), h.log("supervisor")
    assert h.pids() == pids
    print(f"a ping behind 25 silent clients answered in {took:.1f} s")


def reply_lines(r):
    return [l[len("reload: "):] for l in r.stdout.splitlines() if l.startswith("reload: ")]


def control(h, request):
    """One request to the supervisor's control socket; its answer's lines."""
    with socket.socket(socket.AF_UNIX) as c:
        c.connect(h.path("state", "supervisor.sock"))
        c.sendall(request.encode() + b"\n")
        c.settimeout(30)
        return recv_until_eof(c).decode().splitlines()


def test_a_server_removed_and_added_back_before_it_stopped_is_restarted_once(sup_herd):
    """Two reloads in a row, the first removing Gamma and the second putting
    it back while Gamma (stopped by a signal here, as a slow final snapshot
    would be) has not exited: no second Gamma beside it (it would find its
    port taken and crash); Gamma starts again once it exits."""
    h = started(sup_herd)
    gamma = h.pids()["Gamma"]
    os.kill(gamma, signal.SIGSTOP)                    # its stop will wait
    try:
        rewrite(h, {"Alpha": ["Beta"], "Beta": ["Alpha"]})
        assert "stop Gamma" in control(h, "reload")
        rewrite(h, TRIANGLE)
        assert f"restart Gamma pid {gamma} (it was stopping)" in control(h, "reload")
    finally:
        os.kill(gamma, signal.SIGCONT)                # now it stops, and starts again
    new = h.wait_restarted("Gamma", gamma)
    # the supervisor's log reaches its file within logging.flush_ms
    wait_for(lambda: h.log("supervisor").count("child-start server=Gamma") >= 2, 10,
             what="the second child-start of Gamma in the supervisor's log")
    sup = h.log("supervisor")
    assert "child-crash" not in sup and sup.count("child-start server=Gamma") == 2, sup
    wait_for(lambda: links_in_metrics(h, "Gamma") == {"Alpha": 1, "Beta": 1}, 10,
             what="Gamma's links again")
    assert h.pids()["Gamma"] == new


def test_a_reload_starts_a_server_waiting_out_its_back_off_at_once(sup_herd):
    h = sup_herd({"Alpha": []})
    write_config(h.dir, {"Alpha": (h.ports["Alpha"], [])},
                 extra="supervisor:\n  hang_timeout_s: 120\n  stop_timeout_s: 5\n"
                       "  restart_max: 100\n  backoff_initial_ms: 60000\n"
                       "  backoff_max_ms: 60000\n")
    h.start()
    first = h.pids()["Alpha"]
    h.kill(first)                                    # restarted at once
    second = h.wait_restarted("Alpha", first)
    h.kill(second)                                   # now it waits a minute
    assert h.wait_log("supervisor", "restart 2 in 60000 ms")
    r = h.script("start_servers.sh", "--reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "start Alpha (it was waiting)" in reply_lines(r), r.stdout
    assert listens(h.ports["Alpha"])


def test_a_reload_says_which_server_did_not_come_up_and_why(sup_herd):
    h = sup_herd({"Alpha": []})
    h.start()
    h.may_crash.add("Beta")
    with socket.socket() as blocker:                   # Beta's port is taken
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        h.ports["Beta"] = blocker.getsockname()[1]
        write_config(h.dir, {"Alpha": (h.ports["Alpha"], []), "Beta": (h.ports["Beta"], [])},
                     extra=NO_HANG)
        h.env["HERD_START_TIMEOUT"] = "3"
        r = h.script("start_servers.sh", "--reload")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "reload: start Beta" in r.stdout and "1 of 2 servers listening" in r.stdout, r.stdout
    assert re.search(r"--- last lines of .*Beta\.log:", r.stderr), r.stderr
    assert "Address already in use" in r.stderr, r.stderr
