"""Hosts (docs/PROTOCOL.md, "Hosts", "Local servers"): IPv6 and names as a
server's host, only the local servers of a config run, and herds spread
over network namespaces on a bridge (one server per host, or several hosts
each running the scripts) that survive cut links, stops and a moved host,
with no client location on the wire.  The namespace tests need root and
`ip netns`, and are skipped with the reason otherwise.
"""
import os
import secrets
import signal
import socket
import subprocess
import time

import pytest

from harness import (DEFAULT_LINKS, HOSTS_SECRET, PLACES, TRIO, alive, config_text, exchange,
                     free_port, key_id, kill_all,
                     listens, Namespaces, netns_available, pcap_tcp_packets, program, read_log,
                     read_pids, run_script, script_env, supervisor_problems, wait_for,
                     write_herd_dir)


NAMES = list(DEFAULT_LINKS)


PORT = 10500


class Hosts(Namespaces):
    """The default herd with each server alone on its host (named as the
    server), all on PORT, started directly."""

    def __init__(self, tmp_path):
        super().__init__(NAMES)
        self.dir = str(tmp_path)
        self.procs = {}

    def write_config(self):
        text = "servers:\n"
        for n in NAMES:
            text += (f"  {n}: {{ host: {self.addr[n]}, port: {PORT}, "
                     f"neighbors: [{', '.join(DEFAULT_LINKS[n])}] }}\n")
        text += f"places: {{ local_file: {PLACES} }}\nlogging: {{ dir: logs, flush_ms: 50 }}\n"
        self.config = os.path.join(self.dir, "config.yml")
        with open(self.config, "w") as f:
            f.write(text)

    def start(self):
        env = dict(os.environ, HERD_SECRET="multi-host-secret")
        for n in NAMES:
            err = open(os.path.join(self.dir, f"{n}.stderr"), "wb")
            self.procs[n] = subprocess.Popen(
                [*self.in_ns(n), program("herd-server"), n, "-c", self.config],
                stdout=subprocess.DEVNULL, stderr=err, env=env)
        for n in NAMES:
            wait_for(lambda: listens(PORT, self.addr[n]), 10, what=f"{n} to listen")

    def send(self, n, data):
        return exchange(PORT, data, host=self.addr[n], timeout=5)

    def send_inside(self, n, line):
        """From inside n's namespace (it may be cut off the bridge)."""
        return super().send_inside(n, self.addr[n], PORT, line)[1]

    def stored(self, n, client):
        reply = self.send(n, b"WHATSAT %s 0.001 1\n" % client)
        return None if reply.startswith(b"? ") else reply.split(b"\n", 1)[0]

    def log(self, n):
        return read_log(self.dir, n)

    def down(self):
        """Stop everything; returns what went wrong with the servers."""
        problems = []
        for n, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for n, p in self.procs.items():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            err = open(os.path.join(self.dir, f"{n}.stderr"), errors="replace").read()
            if p.returncode != 0 or "Sanitizer" in err or "runtime error" in err:
                problems.append(f"{n} exited {p.returncode}: {err[-1500:]}")
        super().down()
        return problems


def wait_all(hosts, client, want, timeout=30):
    ok = wait_for(lambda: all(hosts.stored(n, client) == want for n in NAMES), timeout, step=0.2)
    assert ok, {n: hosts.stored(n, client) for n in NAMES}


def wait_lines(hosts, wanted, since, timeout):
    """Until each (server, text) of wanted is in that server's log past the
    offset since[server]: lines of this cut, not of an earlier one."""
    wait_for(lambda: all(text in hosts.log(n)[since[n]:] for n, text in wanted), timeout,
             step=0.2, what=f"each of {wanted} logged")


def wait_any_line(hosts, choices, since, timeout):
    """Until one (server, text) of choices is in that server's log past
    since[server]."""
    wait_for(lambda: any(text in hosts.log(n)[since[n]:] for n, text in choices), timeout,
             step=0.2, what=f"one of {choices} logged")


def test_herd_across_hosts_survives_cut_links(tmp_path, report):
    why = netns_available()
    if why:
        pytest.skip(f"multi-host test skipped: {why}")
    hosts = Hosts(tmp_path)
    try:
        hosts.up()
        hosts.write_config()
        hosts.start()
        deadline = time.time() + 15
        while not all(hosts.log(n).count("link-up") >= len(DEFAULT_LINKS[n]) for n in NAMES):
            assert time.time() < deadline, "links did not come up across hosts"
            time.sleep(0.1)
        at = hosts.send("Bailey", b"IAMAT mh %s 1000\n" % b"+1.0+1.0")[:-1]
        wait_all(hosts, b"mh", at)
        for victim, other in (("Campbell", "Clark"), ("Clark", "Bailey")):
            near = DEFAULT_LINKS[victim]
            before = {n: len(hosts.log(n)) for n in NAMES}
            hosts.cut(victim)                  # off the bridge
            cut_at = time.time()
            t = int(time.time())
            inside = hosts.send_inside(victim, b"IAMAT cut-%s +2.0+2.0 %d.5\n" % (victim.encode(), t))
            outside = hosts.send(other, b"IAMAT out-%s +3.0+3.0 %d\n" % (victim.encode(), t))
            older = hosts.send(other, b"IAMAT both-%s +4.0+4.0 %d\n" % (victim.encode(), t))
            newer = hosts.send_inside(victim, b"IAMAT both-%s +5.0+5.0 %d.9\n" % (victim.encode(), t))
            assert inside.startswith(b"AT %s " % victim.encode()) and outside and older and newer
            # Packets vanish, so only the links' TCP timeouts (15 s with
            # data in flight) can notice: wait until both ends of every link
            # of the victim logged link-down.  The updates sent into the dead
            # links are lost with them; only the catch-up can bring them.
            down = [(victim, f"link-down peer={n} ") for n in near] + \
                   [(n, f"link-down peer={victim} ") for n in near]
            wait_lines(hosts, down, before, timeout=45)
            down_s = time.time() - cut_at
            assert hosts.stored(other, b"cut-%s" % victim.encode()) is None, "the cut did not cut"
            healed = {n: len(hosts.log(n)) for n in NAMES}
            hosts.heal(victim)
            start = time.time()
            # the links come back (the dialer retries every 3.2 s at most), and
            # anti-entropy sends each side what the other lacks: the victim to
            # a neighbour, a neighbour to the victim (the first to find the
            # difference; the others may find none left)
            up = [(victim, f"link-up peer={n} ") for n in near] + \
                 [(n, f"link-up peer={victim} ") for n in near]
            wait_lines(hosts, up, healed, timeout=30)
            wait_any_line(hosts, [(victim, f"catch-up-sent peer={n} ") for n in near],
                          healed, timeout=30)
            wait_any_line(hosts, [(n, f"catch-up-sent peer={victim} ") for n in near],
                          healed, timeout=30)
            wait_all(hosts, b"cut-%s" % victim.encode(), inside[:-1])
            wait_all(hosts, b"out-%s" % victim.encode(), outside[:-1])
            wait_all(hosts, b"both-%s" % victim.encode(), newer[:-1])
            report(f"{victim} cut for {start - cut_at:.0f} s (its links down after "
                   f"{down_s:.0f} s); links up again and all five converged "
                   f"{time.time() - start:.1f} s after healing")
    finally:
        problems = hosts.down()
    assert not problems, problems


@pytest.fixture
def started(tmp_path):
    """Start a herd with start_servers.sh; stopped (and checked) at the end."""
    folders = []

    def start(text):
        folder = str(tmp_path / f"h{len(folders)}")
        cfg = write_herd_dir(folder, text)
        folders.append((folder, cfg))
        return folder, cfg, run_script("start_servers.sh", cfg)

    yield start
    for folder, cfg in folders:
        pids = list(read_pids(folder).values())
        run_script("stop_servers.sh", cfg)
        assert wait_for(lambda: not any(alive(p) for p in pids), 10), "a process survived"
        kill_all(pids)
        assert not supervisor_problems(folder), supervisor_problems(folder)


def status(cfg):
    return subprocess.run([program("herd-supervisor"), "-c", cfg, "--status"],
                          capture_output=True, text=True, env=script_env(), timeout=30)


def links_of(table, name):
    """The LINKS column of a --status row."""
    row = [line for line in table.splitlines() if line.startswith(name + " ")][0]
    return row.split()[6]


def check_links_column(folder, cfg, names):
    """--status shows each local server's links: from the servers' own
    metrics files when they write them (<state_dir>/NAME.prom), else from
    files written here, and '?' without one."""
    prom = {n: os.path.join(folder, "state", f"{n}.prom") for n in names}
    if all(wait_for(lambda n=n: os.path.exists(prom[n]), 3) for n in names):
        assert wait_for(lambda: all(
            links_of(status(cfg).stdout, n) == ",".join(f"{p}:up" for p in TRIO[n])
            for n in names), 10), status(cfg).stdout
        return
    table = status(cfg).stdout
    for n in names:
        assert links_of(table, n) == ",".join(f"{p}:?" for p in TRIO[n]), table
    a, b = TRIO["Bailey"]
    with open(prom["Bailey"], "w") as f:
        f.write("# TYPE proxyherd_link_up gauge\n"
                f'proxyherd_link_up{{peer="{a}"}} 1\nproxyherd_link_up{{peer="{b}"}} 0\n')
    table = status(cfg).stdout
    assert links_of(table, "Bailey") == f"{a}:up,{b}:down", table
    os.unlink(prom["Bailey"])


def exchange_at(host, port, data, timeout=5):
    return exchange(port, data, host=host, timeout=timeout)


def stored(host, port, client):
    reply = exchange_at(host, port, b"WHATSAT %s 0.001 1\n" % client)
    return None if reply.startswith(b"? ") else reply.split(b"\n", 1)[0]


def check_herd(folder, cfg, host, ports, r, report=None):
    assert r.returncode == 0, r.stdout + r.stderr
    for n, port in ports.items():
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        assert shown in r.stdout or f"127.0.0.1:{port}" in r.stdout, r.stdout
    assert "3 of 3 servers listening" in r.stdout, r.stdout
    assert wait_for(lambda: all(read_log(folder, n).count("link-up") >= 2 for n in ports), 15), \
        {n: read_log(folder, n)[-600:] for n in ports}
    dial = host if host != "localhost" else "127.0.0.1"
    at = exchange_at(dial, ports["Bailey"], b"IAMAT v6 +1.0+1.0 %.9f\n" % time.time())[:-1]
    assert at.startswith(b"AT Bailey "), at
    assert wait_for(lambda: all(stored(dial, p, b"v6") == at for p in ports.values()), 10)
    check_links_column(folder, cfg, list(ports))


def test_herd_on_ipv6_loopback(started):
    ports = {n: free_port() for n in TRIO}
    folder, cfg, r = started(config_text({n: ("::1", ports[n], TRIO[n]) for n in TRIO}))
    check_herd(folder, cfg, "::1", ports, r)
    # the listener is IPv6 only, and peers and clients are logged as [v6]:port
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", ports["Bailey"]), timeout=2).close()
    log = read_log(folder, "Bailey")
    assert f"addr=[::1]:{ports['Bailey']} host=::1" in log, log[:2000]
    assert "from=[::1]:" in log, log[:2000]


def test_herd_on_localhost(started):
    """`localhost` is 127.0.0.1 (docs/PROTOCOL.md, "Hosts"): listener and dials agree."""
    ports = {n: free_port() for n in TRIO}
    folder, cfg, r = started(config_text({n: ("localhost", ports[n], TRIO[n]) for n in TRIO}))
    check_herd(folder, cfg, "localhost", ports, r)
    log = read_log(folder, "Bailey")
    assert f"addr=127.0.0.1:{ports['Bailey']} host=localhost" in log, log[:2000]


def test_config_of_remote_servers_is_refused(tmp_path):
    """192.0.2.0/24 and 2001:db8::/32 are documentation ranges: never here."""
    cfg = write_herd_dir(str(tmp_path), config_text({
        "Bailey": ("192.0.2.1", 10400, ["Bona"]), "Bona": ("2001:db8::7", 10400, ["Bailey"])}))
    r = run_script("start_servers.sh", cfg)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "none of its 2 servers has a host that is an address of this machine" in r.stderr, \
        r.stderr
    assert "192.0.2.1, 2001:db8::7" in r.stderr and "started nothing" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(str(tmp_path), "servers.pid"))
    assert not os.path.exists(os.path.join(str(tmp_path), "servers.lock"))
    r = run_script("stop_servers.sh", cfg)
    assert r.returncode != 0 and "none of its servers is on this machine" in r.stderr, r.stderr
    st = status(cfg)
    assert st.returncode == 3 and "none of its 2 servers" in st.stderr, st.stdout + st.stderr
    sup = subprocess.run([program("herd-supervisor"), "-c", cfg], capture_output=True,
                         text=True, timeout=30)
    assert sup.returncode == 1 and "nothing to run here" in sup.stderr, sup.stderr


def test_only_the_local_servers_run(started):
    """A config naming a server elsewhere: the two here run and link, the
    other is left alone (and dialled, as a neighbour)."""
    ports = {"Bailey": free_port(), "Bona": free_port()}
    folder, cfg, r = started(config_text({
        "Bailey": ("127.0.0.1", ports["Bailey"], ["Bona", "Campbell"]),
        "Bona": ("127.0.0.1", ports["Bona"], ["Bailey", "Campbell"]),
        "Campbell": ("192.0.2.1", 10400, ["Bailey", "Bona"])}))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 of 2 servers listening (1 more on other hosts)" in r.stdout, r.stdout
    rows = [line.split()[0] for line in r.stdout.splitlines()[2:] if not line.startswith("logs:")]
    assert rows == ["Bailey", "Bona"], r.stdout
    assert set(read_pids(folder)) == {"supervisor", "Bailey", "Bona"}
    assert wait_for(lambda: "link-up" in read_log(folder, "Bailey"), 10)
    assert not os.path.exists(os.path.join(folder, "logs", "Campbell.log"))


PORTS = {"Bailey": 10601, "Bona": 10602, "Campbell": 10601, "Clark": 10602, "Jaquez": 10601}


LINKS = {"Bailey": ["Bona", "Campbell"], "Bona": ["Bailey", "Clark", "Campbell"],
         "Campbell": ["Bailey", "Bona", "Jaquez"], "Clark": ["Jaquez", "Bona"],
         "Jaquez": ["Clark", "Campbell"]}


# Five servers on three hosts: A runs two, B two, C one.
PLACEMENT = {"Bailey": "A", "Bona": "A", "Campbell": "B", "Clark": "B", "Jaquez": "C"}


class Net(Namespaces):
    """Three hosts A, B and C on a bridge; host X has one address, a name
    for it (host-x.herd), and a folder with its own copy of the same config,
    which names the hosts by those names; each runs the scripts."""

    def __init__(self, tmp_path):
        super().__init__(["A", "B", "C"], names=True)
        self.dir = {h: str(tmp_path / h) for h in self.hosts}
        self.tmp = str(tmp_path)
        self.captures = []

    def up(self):
        super().up()
        text = config_text({n: (self.name[PLACEMENT[n]], PORTS[n], LINKS[n]) for n in LINKS},
                           extra="herd: { snapshot_interval_s: 1 }\n")
        self.config = {h: write_herd_dir(self.dir[h], text) for h in self.hosts}

    def start(self, h):
        return run_script("start_servers.sh", self.config[h], prefix=self.in_ns(h))

    def stop(self, h):
        return run_script("stop_servers.sh", self.config[h], prefix=self.in_ns(h))

    def status(self, h):
        return subprocess.run([*self.in_ns(h), program("herd-supervisor"), "-c",
                               self.config[h], "--status"], capture_output=True, text=True,
                              timeout=30)

    def where(self, n):
        return self.addr[PLACEMENT[n]], PORTS[n]

    def send(self, n, data):
        return exchange_at(*self.where(n), data)

    def stored(self, n, client):
        try:
            return stored(*self.where(n), client)
        except OSError:
            return None

    def send_inside(self, n, line, host_from=None):
        """From inside n's namespace (it may be cut off the bridge), or from
        host host_from's; the reply, or with host_from (the client's port,
        the reply)."""
        port, reply = super().send_inside(host_from or PLACEMENT[n], *self.where(n), line)
        return (port, reply) if host_from else reply

    def wait_all(self, client, want, names=None, timeout=30):
        names = names or list(LINKS)
        ok = wait_for(lambda: all(self.stored(n, client) == want for n in names), timeout, step=0.2)
        assert ok, {n: self.stored(n, client) for n in names}

    def log(self, n):
        return read_log(self.dir[PLACEMENT[n]], n)

    def capture(self):
        """The hook for a capture on the bridge (see the module's text)."""
        c = super().capture(os.path.join(self.tmp, f"bridge{len(self.captures)}.pcap"))
        self.captures.append(c)
        return c

    def down(self):
        """Stop everything; returns what went wrong."""
        problems = []
        for c in self.captures:
            c.stop()
        for h in self.hosts:
            pids = read_pids(self.dir[h])
            if pids:
                r = self.stop(h)
                if r.returncode != 0:
                    problems.append(f"stop_servers.sh on {h}: {r.stdout}{r.stderr}")
            if not wait_for(lambda: not any(alive(p) for p in pids.values()), 10):
                problems.append(f"{h}: a process survived stop_servers.sh")
            problems += [f"{h}: {line}" for line in supervisor_problems(self.dir[h])]
        super().down()
        return problems


@pytest.fixture
def net(tmp_path):
    why = netns_available()
    if why:
        pytest.skip(f"multi-host test skipped: {why}")
    n = Net(tmp_path)
    try:
        n.up()
        for h in n.hosts:
            r = n.start(h)
            assert r.returncode == 0, f"start_servers.sh on {h}: {r.stdout}{r.stderr}"
        assert wait_for(lambda: all(n.log(s).count("link-up") >= len(LINKS[s]) for s in LINKS),
                        20), {s: n.log(s)[-800:] for s in LINKS}
        yield n
    finally:
        problems = n.down()
    assert not problems, problems


def test_each_host_runs_its_own_servers_and_an_iamat_reaches_all(net):
    for h in net.hosts:
        mine = {n for n in LINKS if PLACEMENT[n] == h}
        assert set(read_pids(net.dir[h])) == {"supervisor", *mine}, read_pids(net.dir[h])
        st = net.status(h)
        assert st.returncode == 0, st.stdout + st.stderr
        rows = {line.split()[0] for line in st.stdout.splitlines()[2:]}
        assert rows == mine, st.stdout
        assert f"{len(mine)} of {len(mine)} servers listening ({5 - len(mine)} more" in st.stdout
        local = subprocess.run([*net.in_ns(h), program("herd-supervisor"), "-c",
                                net.config[h], "--local"], capture_output=True, text=True)
        assert set(local.stdout.split()) == mine, local.stdout
    at = net.send("Bailey", b"IAMAT mh +1.0+1.0 %.9f\n" % time.time())[:-1]
    assert at.startswith(b"AT Bailey ")
    net.wait_all(b"mh", at)
    # a server listens on what its name resolves to, and says both
    assert f"addr={net.addr['B']}:{PORTS['Campbell']} host=host-b.herd" in net.log("Campbell")


def test_the_secret_rotates_in_three_reloads_with_no_link_down(net):
    """README, "Rotating the herd secret": on every host install the new
    secret second and reload, make it first and reload, remove the old one
    and reload.  No link goes down on any of the three hosts meanwhile,
    updates flow throughout, and a server restarted at the end links up on
    the new secret alone."""
    new = secrets.token_hex(32)
    old_id, new_id = key_id(HOSTS_SECRET.strip()), key_id(new)
    steps = [("--secret-install", new + "\n"), ("--secret-use", new_id),
             ("--secret-remove", old_id)]
    for k, (cmd, arg) in enumerate(steps):
        for h in net.hosts:
            argv = [program("herd-supervisor"), "-c", net.config[h], cmd]
            if cmd == "--secret-install":
                r = subprocess.run([*net.in_ns(h), *argv], input=arg, capture_output=True,
                                   text=True, timeout=30)
            else:
                r = net.run(h, argv + [arg], timeout=30)
            assert r.returncode == 0, f"{cmd} on {h}: {r.stdout}{r.stderr}"
            r = run_script("start_servers.sh", net.config[h], "--reload", prefix=net.in_ns(h))
            assert r.returncode == 0, f"reload on {h} after {cmd}: {r.stdout}{r.stderr}"
        at = net.send("Jaquez", b"IAMAT rot%d +1.0+1.0 %.9f\n" % (k, time.time()))[:-1]
        net.wait_all(b"rot%d" % k, at)
    for n in LINKS:
        wait_for(lambda: f"secret-ring keys={new_id} reloaded" in net.log(n), 5,
                 what=f"{n}'s log of the last reload")
        log = net.log(n)
        assert "link-down" not in log and "peer-refused" not in log, log[-3000:]
        assert log.count(" INFO reloaded config=") == 3, log[-3000:]
    # the old secret is gone everywhere: a restarted server links on the new one
    r = run_script("start_servers.sh", net.config["C"], "--restart", "Jaquez",
                   prefix=net.in_ns("C"), timeout=90)
    assert r.returncode == 0 and "Jaquez: pid" in r.stdout, r.stdout + r.stderr


def test_a_host_cut_off_and_healed_converges(net, report):
    victim, other = "Jaquez", "Bailey"       # host C; its links go to host B
    net.cut("C")
    try:
        t = int(time.time())
        inside = net.send_inside(victim, b"IAMAT cut +2.0+2.0 %d.5\n" % t)
        outside = net.send(other, b"IAMAT out +3.0+3.0 %d\n" % t)
        older = net.send(other, b"IAMAT both +4.0+4.0 %d\n" % t)
        newer = net.send_inside(victim, b"IAMAT both +5.0+5.0 %d.9\n" % t)
        assert inside.startswith(b"AT Jaquez ") and outside and older and newer
        time.sleep(1.5)
        assert net.stored(other, b"cut") is None, "the cut did not cut"
    finally:
        net.heal("C")
    start = time.time()
    net.wait_all(b"cut", inside[:-1])
    net.wait_all(b"out", outside[:-1])
    net.wait_all(b"both", newer[:-1])
    report(f"host C cut for 1.5 s; all five converged {time.time() - start:.1f} s after healing")


def test_stop_on_one_host_stops_only_its_servers(net):
    pids = {h: read_pids(net.dir[h]) for h in net.hosts}
    r = net.stop("B")
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    assert wait_for(lambda: not any(alive(p) for p in pids["B"].values()), 10)
    for h in ("A", "C"):
        assert all(alive(p) for p in pids[h].values()), h
        assert net.status(h).returncode == 0, net.status(h).stdout
    for n in ("Campbell", "Clark"):
        with pytest.raises(OSError):
            net.send(n, b"WHATSAT x 1 1\n")
    at = net.send("Bona", b"IAMAT after +6.0+6.0 %.9f\n" % time.time())[:-1]
    net.wait_all(b"after", at, names=["Bailey", "Bona"])
    assert net.stored("Jaquez", b"after") is None     # its neighbours are all on B
    st = net.status("B")
    assert st.returncode == 3 and "no herd is running" in st.stdout, st.stdout


def test_a_host_that_moves_is_found(net):
    """Host C gets a new address and /etc/hosts says so; its neighbours on B
    resolve its name again before each dial and link to it there."""
    before = {n: net.log(n).count("link-up") for n in ("Campbell", "Clark")}
    r = net.stop("C")
    assert r.returncode == 0, r.stdout + r.stderr
    net.move("C", 77)
    r = net.start("C")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 of 1 servers listening" in r.stdout, r.stdout
    assert wait_for(lambda: all(net.log(n).count("link-up") > before[n]
                                for n in ("Campbell", "Clark")), 20), net.log("Clark")[-1500:]
    at = net.send("Bailey", b"IAMAT moved +7.0+7.0 %.9f\n" % time.time())[:-1]
    net.wait_all(b"moved", at)
    assert f"addr={net.addr['C']}:" in net.log("Jaquez")


def test_capture_on_the_bridge_finds_no_client_location(net, report):
    """Issue 18: a capture on the bridge while an update floods over the
    links finds no client id or location in the link traffic (every link is
    TLS 1.3, docs/PROTOCOL.md, "Between servers").  The control: the same
    capture and parser find each client's own plain IAMAT line, sent from
    host C to Bailey on host A across the same bridge."""
    cap = net.capture()
    tag = secrets.token_hex(8)
    sent = []                  # (client port, client id, location, IAMAT line)
    ats = []                   # (client id, the AT line Bailey answered)
    for i in range(3):
        client = b"capture-secret-client-%s-%d" % (tag.encode(), i)
        where = b"+12.345678-098.76543%d" % i
        line = b"IAMAT %s %s %.9f\n" % (client, where, time.time())
        port, reply = net.send_inside("Bailey", line, host_from="C")
        assert reply.startswith(b"AT Bailey ") and line[6:] in reply, reply
        sent.append((port, client, where, line))
        ats.append((client, reply.split(b"\n")[0]))
    for client, at in ats:                 # on every server of every host
        net.wait_all(client, at)
    data = cap.stop()
    packets = list(pcap_tcp_packets(data))
    assert packets, f"the capture is empty ({len(data)} bytes): {cap.said!r}"

    hosts = set(net.addr.values())
    servers = {(net.addr[PLACEMENT[n]], PORTS[n]) for n in LINKS}
    clients = {(net.addr["C"], port) for port, *_ in sent}
    flows = {}                 # (from, to) -> the payload bytes, in capture order
    for src, sport, dst, dport, payload in packets:
        flows.setdefault(((src, sport), (dst, dport)), bytearray()).extend(payload)
    link = {}
    for (a, b), payload in flows.items():
        if a[0] in hosts and b[0] in hosts and a[0] != b[0] and (a in servers or b in servers) \
                and a not in clients and b not in clients:
            link[(a, b)] = payload
    link_packets = [p for p in packets if ((p[0], p[1]), (p[2], p[3])) in link and p[4]]

    # the capture holds the links' traffic between the hosts, as TLS records
    assert link_packets, {k: len(v) for k, v in flows.items()}
    pairs = {frozenset((a[0], b[0])) for (a, b), v in link.items() if v}
    assert frozenset((net.addr["A"], net.addr["B"])) in pairs, pairs
    assert frozenset((net.addr["B"], net.addr["C"])) in pairs, pairs
    assert any(p[4].startswith(b"\x17\x03\x03") for p in link_packets), \
        [p[4][:8] for p in link_packets[:10]]
    # and the updates went that way (hosts B and C learnt them over the bridge
    # only): from A to B and from B to C, at least the bytes of the ids and
    # locations crossed, encrypted
    least = sum(len(client) + len(where) for _, client, where, _ in sent)
    for x, y in (("A", "B"), ("B", "C")):
        crossed = sum(len(v) for (a, b), v in link.items()
                      if a[0] == net.addr[x] and b[0] == net.addr[y])
        assert crossed >= least, f"{x} -> {y}: {crossed} bytes on the links, {least} at least"

    # the control: each client's own line is in plain text on its connection
    bailey = net.where("Bailey")
    for port, client, where, line in sent:
        mine = bytes(flows.get(((net.addr["C"], port), bailey), b""))
        assert mine == line, (mine, line)
        assert client in data and where in data

    # and no link carries a client id or location
    for (a, b), payload in link.items():
        for _, client, where, _ in sent:
            assert client not in payload and where not in payload, \
                f"{a} -> {b} carries {client!r} or {where!r} in plain text"
    link_bytes = sum(len(v) for v in link.values())
    report(f"capture {len(data)} bytes, {len(packets)} TCP packets; {len(link)} link flows "
           f"between hosts, {len(link_packets)} packets, {link_bytes} payload bytes: no client "
           f"id or location; the 3 clients' own lines found in their flows")
