"""herd-supervisor --status, --rates, --init-secret and servers.lock on their
edge paths (docs/PROTOCOL.md, "Processes and files"): lock files it must not
trust, servers that are stopped, zombies, foreign or not listening, metrics
files that are missing, stale, not rewritten or malformed, the uptime and
links columns, and the herd secret the supervisor makes.

Each test checks the exact output, exit status or files; supervisors are
stopped with SIGTERM and must stop cleanly.
"""
import ctypes
import fcntl
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import (program, free_port, read_log, supervised_problems, wait_for, wait_listening,
                      wait_log, write_config)

SECRET = "cov-supervisor-secret-0123456789"
# stopped servers stay stopped for seconds here: no hang restart meanwhile
SUPERVISOR = "supervisor:\n  hang_timeout_s: 120\n  stop_timeout_s: 5\n"


def supervisor_cmd(config, *args, env=None, timeout=30):
    return subprocess.run([program("herd-supervisor"), "-c", config, *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def rows(out):
    """The --status table: {NAME: [its columns]}, from the header on."""
    lines = out.split("\n")
    head = next(i for i, line in enumerate(lines) if line.startswith("NAME "))
    table = {}
    for line in lines[head + 1:]:
        if not line.strip():
            break
        table[line.split()[0]] = line.split()
    return table


def proc_state(pid):
    """The state letter of /proc/PID/stat, or "" when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


class SupHerd:
    """Servers under herd-supervisor, started directly, in one folder.
    servers: {name: [neighbours]}; remote: names whose host is not this
    machine's (a TEST-NET address)."""

    def __init__(self, path, servers, remote=(), extra=""):
        self.dir = str(path)
        self.ports = {n: free_port() for n in servers}
        self.config = write_config(self.dir, {n: (self.ports[n], servers[n]) for n in servers},
                                   extra=SUPERVISOR + extra)
        text = open(self.config).read()
        for n in remote:
            text = text.replace(f"  {n}: {{ host: 127.0.0.1,", f"  {n}: {{ host: 192.0.2.1,")
        open(self.config, "w").write(text)
        self.local = [n for n in servers if n not in remote]
        self.env = dict(os.environ, HERD_SECRET=SECRET)
        self.proc = None
        self.killed = set()

    def start(self, config=None):
        self.proc = subprocess.Popen([program("herd-supervisor"), "-c", config or self.config],
                                     env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for n in self.local:
            assert wait_listening(self.ports[n], self.proc), f"{n} did not start"
        assert wait_for(lambda: set(self.pids()) >= {"supervisor", *self.local}, 10)
        return self

    def pids(self):
        try:
            with open(os.path.join(self.dir, "servers.pid")) as f:
                return {k: int(v) for k, v in (line.split() for line in f)}
        except (FileNotFoundError, ValueError):
            return {}

    def status(self, *args):
        return supervisor_cmd(self.config, "--status", *args)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def stop(self):
        if self.proc is None:
            return
        for pid in self.pids().values():       # nothing may stay stopped
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=20)
        self.proc = None
        assert rc == 0, f"herd-supervisor exited {rc}"
        problems = supervised_problems(self.dir, self.local, self.killed)
        assert not problems, problems


@pytest.fixture
def sup_herd(tmp_path):
    made = []

    def make(servers, sub="h", **kw):
        os.makedirs(tmp_path / sub, exist_ok=True)
        h = SupHerd(tmp_path / sub, servers, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


def status_until(h, pred, *args, timeout=10):
    """--status until pred(result) holds; returns the last result."""
    last = [None]

    def check():
        last[0] = h.status(*args)
        return pred(last[0])
    wait_for(check, timeout, step=0.2)
    return last[0]


# ------------------------------------------------ stopped servers, metrics

libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17


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
                     rows(r.stdout)["Alpha"][6] == "Beta:up" and
                     rows(r.stdout)["Beta"][6] == "Alpha:up", "--wait", "10")
    assert r.stdout.startswith(f"supervisor pid {sup}; 3 of 3 servers listening\n"), r.stdout
    t = rows(r.stdout)
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
        assert rows(r.stdout)["Gamma"][5] == "stopped", r.stdout
    finally:
        libc.ptrace(PTRACE_DETACH, pids["Gamma"], 0, 0)
    r = status_until(h, lambda r: r.returncode == 0, "--wait", "10")
    assert rows(r.stdout)["Gamma"][5] == "yes", r.stdout

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
    t = rows(r.stdout)
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
    assert rows(r.stdout)["Beta"][6] == "Alpha:mismatch", r.stdout

    # a metrics file older than 5 s says nothing, even "up"
    with open(beta_prom, "w") as f:
        f.write('proxyherd_link_up{peer="Alpha"} 1\n')
    r = h.status()
    assert rows(r.stdout)["Beta"][6] == "Alpha:up", r.stdout
    old = time.time() - 10
    os.utime(beta_prom, (old, old))
    r = h.status()
    assert rows(r.stdout)["Beta"][5:7] == ["stopped", "Alpha:?"], r.stdout

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


# ------------------------------- uptime, foreign pids, zombies, taken ports

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
    t = rows(h.status().stdout)
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
        assert rows(r.stdout)["Alpha"][2:4] == ["-", "-"], r.stdout
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
        b = rows(r.stdout)["Beta"]
        assert b[1:3] == [f"127.0.0.1:{taken}", str(pids["Beta"])] and b[5] == "running", b
        # ... or another address: Beta holds the port, but not there
        write_atomic(h.config, text.replace(f"host: 127.0.0.1, port: {h.ports['Beta']},",
                                            f"host: 127.0.0.2, port: {h.ports['Beta']},"))
        r = h.status()
        assert r.returncode == 1 and "1 of 2 servers listening" in r.stdout, r.stdout
        b = rows(r.stdout)["Beta"]
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
        assert rows(r.stdout)["Beta"][2] == "-", r.stdout
    finally:
        os.kill(sup, signal.SIGCONT)
    assert wait_log(h.dir, "supervisor",
                    f"child-crash server=Beta pid={pids['Beta']} killed by signal 9", 10)
    r = status_until(h, lambda r: r.returncode == 0, "--wait", "10")
    assert h.pids()["Beta"] != pids["Beta"]
    assert rows(r.stdout)["Beta"][2] == str(h.pids()["Beta"]), r.stdout


# ---------------------------------------- remote neighbours, long LINKS

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
    t = rows(r.stdout)
    assert set(t) == {"Hub"}, r.stdout
    links = t["Hub"][6]
    assert links == ",".join(f"{n}:down" for n in far)[:1023], links
    assert t["Hub"][7] == h.path("logs", "Hub.log")
    rates = r.stdout.split("over about a second:\n")[1].splitlines()
    assert len(rates) == 2 and rates[1].split()[0] == "Hub", r.stdout
    assert rates[1].split()[5] == "0/17", r.stdout


# ------------------------------------- servers.lock that proves no herd

def one_server(folder, extra=""):
    os.makedirs(folder, exist_ok=True)
    port = free_port()
    return write_config(str(folder), {"Alpha": (port, [])}, extra=extra), port


def hold_lock(folder, text):
    """servers.lock, a new file holding text, locked by this process (as a
    supervisor holds it); returns its descriptor."""
    path = os.path.join(str(folder), "servers.lock")
    if os.path.lexists(path):
        os.remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, text.encode())
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_lock_held_with_no_valid_supervisor_pid(tmp_path):
    """A servers.lock held, but empty, holding garbage, a pid below 1, no
    config line, the pid of a process that is not herd-supervisor, or of no
    process: --status finds no herd (the pid file is stale), and a
    supervisor refuses to start, naming the pid only when there is one."""
    cfg, port = one_server(tmp_path)
    real = os.path.realpath(cfg)
    lock = f"{tmp_path}/servers.lock"
    anyone = f"another process holds {lock}: a supervisor of {cfg} is starting or running"
    stranger = subprocess.Popen(["sleep", "60"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    cases = [("", anyone), ("garbage\n", anyone), (f"-5\n{real}\n", anyone),
             (f"{stranger.pid}",                   # no newline, no config line
              f"another supervisor (pid {stranger.pid}) runs the herd of {cfg} (it holds "
              f"{lock}); stop it first with ./stop_servers.sh"),
             (f"{gone.pid}\n{real}\n",
              f"another supervisor (pid {gone.pid}) runs the herd of {cfg} (it holds "
              f"{lock}); stop it first with ./stop_servers.sh")]
    try:
        for text, refusal in cases:
            fd = hold_lock(tmp_path, text)
            try:
                if os.path.exists(f"{tmp_path}/servers.pid"):
                    os.remove(f"{tmp_path}/servers.pid")
                r = supervisor_cmd(cfg, "--status")
                assert (r.returncode, r.stdout) == (
                    3, f"no herd is running ({tmp_path}/servers.pid: missing)\n"), (text, r)
                pid = text.split("\n")[0]
                pid = pid if pid.lstrip("-").isdigit() else stranger.pid
                with open(f"{tmp_path}/servers.pid", "w") as f:
                    f.write(f"supervisor {pid}\nAlpha {stranger.pid}\n")
                r = supervisor_cmd(cfg, "--status")
                assert (r.returncode, r.stdout) == (
                    3, f"no herd is running ({tmp_path}/servers.pid: stale)\n"), (text, r)
                r = supervisor_cmd(cfg)
                assert (r.returncode, r.stderr) == (1, f"herd-supervisor: {refusal}\n"), (text, r)
                assert open(lock).read() == text, "the refused supervisor wrote the lock"
            finally:
                os.close(fd)
        assert not os.path.exists(f"{tmp_path}/logs/Alpha.log"), "a server was started"
    finally:
        stranger.kill()
        stranger.wait()


def test_status_knows_the_supervisor_by_its_program_name(tmp_path):
    """The pid in a held servers.lock is the supervisor when /proc/PID/exe
    ends in herd-supervisor: also after the program file was removed or
    rebuilt under it ("... (deleted)"), and in a folder whose name holds
    " (deleted)"; not a program of another name.  A lock file without the
    config line (an older supervisor's) names a supervisor of any config.
    (A copy of sleep stands in for the supervisor.)"""
    cfg, port = one_server(tmp_path / "herd")
    real = os.path.realpath(cfg)
    folders = {"gone": tmp_path / "gone", "odd": tmp_path / "bin (deleted) here",
               "other": tmp_path / "other"}
    names = {"gone": "herd-supervisor", "odd": "herd-supervisor", "other": "herd-supervisor.old"}
    procs = {}
    try:
        for k, folder in folders.items():
            folder.mkdir()
            exe = folder / names[k]
            shutil.copy("/bin/sleep", exe)
            procs[k] = subprocess.Popen([str(exe), "60"])
        assert wait_for(lambda: all(os.path.basename(os.readlink(f"/proc/{p.pid}/exe")) ==
                                    names[k] for k, p in procs.items()), 5)
        shutil.rmtree(folders["gone"])
        assert os.readlink(f"/proc/{procs['gone'].pid}/exe").endswith(" (deleted)")
        for k, p in procs.items():
            fd = hold_lock(tmp_path / "herd", f"{p.pid}\n" if k == "odd" else f"{p.pid}\n{real}\n")
            try:
                with open(tmp_path / "herd" / "servers.pid", "w") as f:
                    f.write(f"supervisor {p.pid}\nAlpha 1\n")
                r = supervisor_cmd(cfg, "--status")
                if k == "other":
                    assert (r.returncode, r.stdout) == (
                        3, f"no herd is running ({tmp_path}/herd/servers.pid: stale)\n"), r
                    continue
                assert r.returncode == 1, (k, r)
                assert r.stdout.startswith(f"supervisor pid {p.pid}; 0 of 1 servers listening\n")
                assert rows(r.stdout)["Alpha"] == [
                    "Alpha", f"127.0.0.1:{port}", "-", "-", "0", "no", "-",
                    f"{tmp_path}/herd/logs/Alpha.log"], (k, r.stdout)
            finally:
                os.close(fd)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()


def test_fifo_as_servers_lock_hangs_nothing(tmp_path):
    """A FIFO where servers.lock belongs: --status said nothing and hung
    for ever (open() waited for a writer), and so did stop_servers.sh and
    start_servers.sh.  Now --status finds no herd, the supervisor refuses
    to start, and the scripts end."""
    cfg, port = one_server(tmp_path)
    lock = f"{tmp_path}/servers.lock"
    os.mkfifo(lock, 0o600)
    r = supervisor_cmd(cfg, "--status", timeout=10)
    assert (r.returncode, r.stdout) == (3, f"no herd is running ({tmp_path}/servers.pid: missing)\n")
    with open(f"{tmp_path}/servers.pid", "w") as f:
        f.write("supervisor 4000000\n")
    r = supervisor_cmd(cfg, "--status", timeout=10)
    assert (r.returncode, r.stdout) == (3, f"no herd is running ({tmp_path}/servers.pid: stale)\n")
    r = supervisor_cmd(cfg, timeout=10)
    assert (r.returncode, r.stderr) == (1, f"herd-supervisor: cannot write {lock}: Invalid argument\n")
    env = dict(os.environ, HERD_BIN_DIR=os.path.dirname(program("herd-supervisor")),
               HERD_START_TIMEOUT="3")
    env.pop("HERD_SECRET", None)
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([os.path.join(here, "stop_servers.sh"), "-c", cfg], capture_output=True,
                       text=True, env=env, timeout=15)
    assert (r.returncode, r.stdout) == (
        0, f"the herd is not running (removed a stale {tmp_path}/servers.pid; "
           "signalled no process)\n"), r
    r = subprocess.run([os.path.join(here, "start_servers.sh"), "-c", cfg], capture_output=True,
                       text=True, env=env, timeout=30)
    assert r.returncode == 1, r
    assert f"herd-supervisor: cannot write {lock}: Invalid argument" in r.stderr, r.stderr
    assert os.path.exists(lock) and not os.path.exists(f"{tmp_path}/servers.pid")
    assert not wait_listening(port, type("P", (), {"poll": lambda self: None})(), timeout=0.5)


# ------------------------------------------------ servers.lock taken again

def test_lock_replaced_under_a_running_supervisor(sup_herd):
    """servers.lock renamed over, turned into a folder, held by another
    process, and removed once the config file is gone: the supervisor takes
    a new one within a second when it can ("lock-renewed"), says once why
    when it cannot ("lock-lost"), and names the config as it was given when
    its real path cannot be found any more."""
    h = sup_herd({"Alpha": []})
    link = h.path("herd.yml")
    os.symlink("config.yml", link)
    h.start(config=link)
    sup = h.pids()["supervisor"]
    lock = h.path("servers.lock")
    real = os.path.realpath(h.config)
    mine = f"{sup}\n{real}\n"
    assert open(lock).read() == mine

    def log(what):
        return read_log(h.dir, "supervisor").count(what)

    def renewed(n):
        return wait_for(lambda: log("WARN lock-renewed servers.lock was removed or replaced; "
                                    "this supervisor holds a new one") == n, 10) \
            and open(lock).read() == mine

    # another file renamed over it
    with open(lock + ".new", "w") as f:
        f.write("4000000\n")
    os.rename(lock + ".new", lock)
    assert renewed(1), read_log(h.dir, "supervisor")
    r = h.status()
    assert r.returncode == 0 and r.stdout.startswith(f"supervisor pid {sup}; 1 of 1"), r.stdout

    lost = "ERROR lock-lost servers.lock was removed or replaced and cannot be taken again: "
    # a folder in its place
    os.remove(lock)
    os.mkdir(lock)
    assert wait_for(lambda: log(f"{lost}cannot open {lock}: Is a directory") == 1, 10), \
        read_log(h.dir, "supervisor")
    os.rmdir(lock)
    assert renewed(2), read_log(h.dir, "supervisor")

    # another process holds the new file: said once, however long it lasts
    fd = hold_lock(h.dir, "garbage\n")
    try:
        want = f"{lost}another process holds {lock}: a supervisor of {link} is starting or running"
        assert wait_for(lambda: log(want) == 1, 10), read_log(h.dir, "supervisor")
        time.sleep(2.2)                 # two more tries at least
        assert log(lost) == 2, read_log(h.dir, "supervisor")
        assert open(lock).read() == "garbage\n"
    finally:
        os.close(fd)
    assert renewed(3), read_log(h.dir, "supervisor")

    # the config's real path is gone: the lock names the path as given
    os.rename(h.config, h.config + ".away")
    try:
        os.remove(lock)
        mine = f"{sup}\n{link}\n"
        assert renewed(4), (open(lock).read(), read_log(h.dir, "supervisor"))
    finally:
        os.rename(h.config + ".away", h.config)
    assert log(lost) == 2


# ------------------------------------------------------ the herd secret

def init_secret(cfg, secret=None):
    env = dict(os.environ)
    env.pop("HERD_SECRET", None)
    if secret is not None:
        env["HERD_SECRET"] = secret
    return supervisor_cmd(cfg, "--init-secret", env=env)


def test_init_secret(tmp_path):
    """--init-secret makes the secret (64 hex digits, mode 0600, in a
    folder of mode 0700 it creates) when HERD_SECRET is unset or empty,
    not when HERD_SECRET holds one, keeps a valid file, and refuses a file
    others may read, a folder in its place, and a folder it would have to
    create more than one level of."""
    cfg, _ = one_server(tmp_path / "a")
    path = tmp_path / "a" / "state" / "herd.secret"
    r = init_secret(cfg, secret="")
    assert (r.returncode, r.stdout, r.stderr) == (
        0, f"created the herd secret {path} (mode 0600)\n", ""), r
    text = path.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", text), text
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    r = init_secret(cfg)                           # kept
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "") and path.read_text() == text
    assert sorted(os.listdir(path.parent)) == ["herd.secret"]

    cfg, _ = one_server(tmp_path / "b")
    r = init_secret(cfg, secret="from-the-environment")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert not os.path.exists(tmp_path / "b" / "state")

    os.chmod(path, 0o644)
    r = init_secret(tmp_path / "a" / "config.yml")
    assert r.returncode == 1 and r.stdout == "" and f"chmod 600 {path}" in r.stderr, r
    assert path.read_text() == text
    os.remove(path)
    os.mkdir(path)
    r = init_secret(tmp_path / "a" / "config.yml")
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", f"herd-supervisor: {path} is not a regular file: the herd's secret must be one\n")

    cfg, _ = one_server(tmp_path / "c", extra="herd:\n  secret_file: keys/herd/herd.secret\n")
    r = init_secret(cfg)
    deep = tmp_path / "c" / "keys" / "herd" / "herd.secret"
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", f"herd-supervisor: cannot create {deep}: No such file or directory\n"), r
    assert not os.path.exists(tmp_path / "c" / "keys")


# ------------------------------------------------------- no room to write

def test_lock_file_that_cannot_be_written_whole(tmp_path):
    """A file size limit (as a full disk) cuts the write of servers.lock
    short: the supervisor refuses to start with "File too large", where it
    said a stale, unrelated error before (a short write sets no errno)."""
    folder = str(tmp_path)
    while len(os.path.realpath(folder)) < 3650:      # a config path of about 3.7 KB
        folder = os.path.join(folder, "d" * min(200, 3700 - len(os.path.realpath(folder))))
    cfg, port = one_server(folder)
    lock = os.path.join(folder, "servers.lock")

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3500, 3500))   # above any file it needs
    r = subprocess.run([program("herd-supervisor"), "-c", cfg], capture_output=True, text=True,
                       timeout=30, preexec_fn=small_files)
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", f"herd-supervisor: cannot write {lock}: File too large\n"), r
    assert os.path.getsize(lock) == 3500
    assert not os.path.exists(os.path.join(folder, "servers.pid"))
    assert not os.path.exists(os.path.join(folder, "logs"))
    r = supervisor_cmd(cfg, "--status")     # the lock file is not held
    assert (r.returncode, r.stdout) == (3, f"no herd is running ({folder}/servers.pid: missing)\n")
