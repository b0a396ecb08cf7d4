"""Metrics: each server's <state_dir>/NAME.prom (docs/PROTOCOL.md, "Metrics").

The files are parsed with a strict reader of the Prometheus text format, and
their counters compared with what the test sent.
"""
import os
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import DEFAULT_LINKS, Server, exchange, program, write_config
from fake_places import FakePlaces
from test_supervisor import sherd  # noqa: F401  (the fixture: a herd run by the scripts)

ALL = tuple(DEFAULT_LINKS)
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"({NAME})(?:\{{({LABEL}(?:,{LABEL})*)?\}})? (\S+)")
FIXED = {"proxyherd_client_updates_total": "counter",
         "proxyherd_link_updates_sent_total": "counter",
         "proxyherd_clients": "gauge",
         "proxyherd_link_up": "gauge"}


def parse_prom(text, server=None):
    """{name: {labels (sorted tuple, without server): value}}, or an
    AssertionError naming the bad line.  Every sample has its family's HELP
    and TYPE before it; the label server="<server>" when 'server' is given
    (herd.metrics_server_label), else none; a counter ends in _total; no
    series twice; the text ends with a newline."""
    assert text.endswith("\n"), f"not ending in a newline: {text[-80:]!r}"
    families, helps, types = {}, set(), {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and doc and name not in helps, line
            helps.add(name)
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and name not in types, line
            assert kind in ("counter", "gauge"), line
            assert name not in families, f"TYPE after samples: {line}"
            types[name] = kind
        else:
            assert not line.startswith("#") and line, f"stray line {line!r}"
            m = SAMPLE.fullmatch(line)
            assert m, f"not a sample line: {line!r}"
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            assert name in helps and name in types, f"no HELP or TYPE before {line!r}"
            assert (types[name] == "counter") == name.endswith("_total"), line
            pairs = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels))
            assert pairs.pop("server", None) == server, f"server label: {line!r}"
            key = tuple(sorted(pairs.items()))
            series = families.setdefault(name, {})
            assert key not in series, f"series twice: {line!r}"
            series[key] = value
    return families


def prom_path(folder, name):
    return os.path.join(folder, "state", f"{name}.prom")


def read_metrics(folder, name):
    with open(prom_path(folder, name)) as f:
        return parse_prom(f.read())


def value(fams, name, **labels):
    return fams[name][tuple(sorted(labels.items()))]


def wait_metrics(folder, names, check, timeout=15):
    """Poll the files of 'names' until check({name: families}) is true;
    returns the last reading.  The files are rewritten once a second."""
    deadline = time.time() + timeout
    while True:
        try:
            got = {n: read_metrics(folder, n) for n in names}
        except FileNotFoundError:
            got = None
        if got is not None and check(got):
            return got
        if time.time() > deadline:
            raise AssertionError(f"metrics never matched: {got}")
        time.sleep(0.1)


def iamat(port, client, t):
    reply = exchange(port, b"IAMAT %s +34.068930-118.445127 %s\n" % (client, t))
    assert reply.startswith(b"AT "), reply


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
    stop = threading.Event()
    sent = [0]

    def load():
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            i = 0
            while not stop.is_set():
                batch = b"".join(b"IAMAT load-%d +1.0+1.0 %d.5\n" % (i + j, 1000 + i + j)
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
    assert value(m[server.name], "proxyherd_clients") == sent[0]


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
