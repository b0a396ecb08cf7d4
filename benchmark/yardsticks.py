#!/usr/bin/python3
"""The yardsticks the herd is measured against (docs/BENCHMARKS.md, docs/report.md).

    benchmark/yardsticks.py [--out DIR] [--only replicated|asyncio] [--repeat N] [--duration S]

replicated.json: the default five-server herd taking IAMAT at c=20 (the
connections spread over the five servers), against redis-server doing the
same job, a master and four replicas (--replicaof) taking inline
`SET k{key} LOCATION` at c=20, a key per request.  After each redis run every
replica's offset must reach the master's (INFO replication) and hold as many
keys; after each herd run every server must hold the newest update of every
client (--converge).  CPU per write is utime+stime (/proc/PID/stat) summed
over the five processes of each side, read before and after (after the
replicas caught up).  Each round also sends PING to the master, the
reference of report_data.py, which stores and replicates nothing.

asyncio.json: the same herd against benchmark/asyncio_herd.py, the classic
Python design, on the standard event loop and on uvloop: IAMAT and WHATSAT
at c=20 with CPU per request, propagation, memory per stored client, lines
of code.

Rounds are interleaved (every side once per round), the medians kept; the
machine is shared, so read the ratios, not the absolutes.  Every process it
starts is stopped when it ends.
"""
import argparse
import glob
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_data import (BIN, ROOT, TOPOLOGY, bench, cpu_of, fill_clients, free_port,  # noqa: E402
                         machine, median, rss_kib, stop_all, wait_port, write_config)

TICK = os.sysconf("SC_CLK_TCK")
ASYNCIO_HERD = os.path.join(ROOT, "benchmark", "asyncio_herd.py")
LOCATION = "+34.068930-118.445127"
ONE_ENTRY = "Bona"      # three links: the nearest the default herd has to a master


def ticks(pids):
    """utime + stime of some processes, summed (clock ticks)."""
    _, _, user, system = cpu_of(pids)
    return user + system


def redis_command(port, line):
    """One inline command to redis on port; its reply's text."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(line.encode() + b"\r\n")
        data = b""
        while True:
            data += s.recv(65536)
            head, sep, rest = data.partition(b"\r\n")
            if not sep:
                continue
            if head[:1] != b"$":
                return head[1:].decode()
            if len(rest) >= int(head[1:]):
                return rest[:int(head[1:])].decode()


def replication(port):
    """INFO replication of the redis on port as a dict."""
    text = redis_command(port, "INFO replication")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def command():
    """How this run was started, for the JSON."""
    return " ".join(["benchmark/yardsticks.py"] + sys.argv[1:])


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"yardsticks: {what} not within {timeout} s")
        time.sleep(0.02)


def replicas_caught_up(master, replicas):
    """True when every replica's offset is the master's."""
    want = int(replication(master)["master_repl_offset"])
    return all(int(replication(p).get("slave_repl_offset", -1)) == want for p in replicas)


def code_lines(paths):
    """Lines that are neither blank nor only a comment (C or Python)."""
    n = 0
    for path in paths:
        with open(path) as f:
            for line in f:
                s = line.strip()
                if s and not s.startswith(("#", "//", "/*", "*")):
                    n += 1
    return n


class Procs:
    """Processes started on free ports, each waited for until it listens."""

    def __init__(self, tmp):
        self.tmp, self.all = tmp, []
        self.env = dict(os.environ, HERD_SECRET="yardsticks-secret")

    def start(self, argv, port, cwd=None):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=self.env, cwd=cwd)
        self.all.append(p)
        wait_port(port, p)
        return p.pid

    def herd(self, kind, servers=TOPOLOGY, log_lines=True, bin_dir=BIN):
        """A herd in its own folder: kind c (bin_dir's herd-server), asyncio
        or uvloop (benchmark/asyncio_herd.py).  Returns (config path, [pids])."""
        d = tempfile.mkdtemp(prefix=f"{kind}-", dir=self.tmp)
        ports = {n: free_port() for n in servers}
        cfg = write_config(d, {n: (ports[n], servers[n]) for n in servers})
        if not log_lines:
            with open(cfg, "a") as f:      # logging: is the last section
                f.write("  log_lines: false\n")
        pids = []
        for n in servers:
            argv = ([os.path.join(bin_dir, "herd-server"), n, "-c", cfg] if kind == "c" else
                    ["/usr/bin/python3", ASYNCIO_HERD, n, "-c", cfg, "--loop", kind])
            pids.append(self.start(argv, ports[n]))
        return cfg, pids

    def redis(self, replicas):
        """A redis master and its replicas; (master port, replica ports, pids)."""
        exe = shutil.which("redis-server")
        if not exe:
            raise SystemExit("yardsticks: redis-server is not installed (make report-data installs it)")
        d = os.path.join(self.tmp, "redis")
        os.makedirs(d, exist_ok=True)
        base = [exe, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1", "--dir", d]
        master = free_port()
        pids = [self.start(base + ["--port", str(master)], master)]
        ports = [free_port() for _ in range(replicas)]
        for p in ports:
            pids.append(self.start(base + ["--port", str(p), "--replicaof", "127.0.0.1",
                                           str(master)], p))
        wait_until(lambda: all(replication(p).get("master_link_status") == "up" for p in ports)
                   and int(replication(master)["connected_slaves"]) == replicas, 30,
                   "every redis replica linked")
        return master, ports, pids


def redis_caught_up(master, replicas):
    """Wait until every replica holds what the master holds; what it took."""
    t = time.monotonic()
    wait_until(lambda: replicas_caught_up(master, replicas), 30, "replicas caught up")
    keys = [int(redis_command(p, "DBSIZE")) for p in [master] + replicas]
    if len(set(keys)) != 1:
        raise SystemExit(f"yardsticks: redis key counts differ: {keys}")
    return {"catch_up_ms": (time.monotonic() - t) * 1e3, "keys": keys[0],
            "master_repl_offset": int(replication(master)["master_repl_offset"])}


def run_costed(pids, args, scratch, after=None):
    """One benchmark run and the CPU it cost the processes pids, per request
    (read after `after` returns, when given), and the time they waited for a
    CPU while runnable (/proc/PID/schedstat), per request too."""
    t0, w0 = ticks(pids), cpu_of(pids)[1]
    js = bench(args, scratch)
    extra = after() if after else {}
    used, waited = ticks(pids) - t0, cpu_of(pids)[1] - w0
    if js["errors"]:
        raise SystemExit(f"yardsticks: {js['errors']} errors in {js['command']}")
    return dict(extra, rps=js["rps"], requests=js["requests"], p50_us=js["latency_us"]["p50"],
                p99_us=js["latency_us"]["p99"], cpu_us=used / TICK * 1e6 / js["requests"],
                runq_wait_us=waited / 1e3 / js["requests"],
                converged=js.get("converged"), command=js["command"])


def medians(rounds):
    """Per side and figure, the median over the rounds."""
    out = {}
    for side in rounds[0]:
        keys = [k for k, v in rounds[0][side].items() if isinstance(v, (int, float))
                and not isinstance(v, bool)]
        out[side] = {k: median([r[side][k] for r in rounds]) for k in keys}
    return out


def replicated(procs, a, scratch):
    cfg, herd_pids = procs.herd("c")
    master, replicas, redis_pids = procs.redis(4)
    time.sleep(3)            # links up, and past the 2 s of flooding after link changes
    common = ["--concurrency", "20", "--duration", str(a.duration), "--warmup", "0"]

    rounds = []
    for r in range(a.repeat):
        herd = run_costed(herd_pids, ["-c", cfg, "--mix", "iamat=100", "--converge"] + common,
                          scratch)
        # every write into one server, as every write goes to redis's master
        one = run_costed(herd_pids, ["-c", cfg, "--mix", "iamat=100", "--converge", "--servers",
                                     ONE_ENTRY] + common, scratch)
        if not (herd["converged"] and one["converged"]):
            raise SystemExit("yardsticks: the herd did not converge after a run")
        redis = run_costed(redis_pids, ["--reference", f"SET k{{key}} {LOCATION}", "--target",
                                        f"127.0.0.1:{master}"] + common, scratch,
                           lambda: redis_caught_up(master, replicas))
        ping = run_costed(redis_pids, ["--reference", "PING", "--target", f"127.0.0.1:{master}"]
                          + common, scratch)
        rounds.append({"herd_iamat": herd, "herd_iamat_one_entry": one,
                       "redis_replicated_set": redis, "redis_ping": ping})
        print(f"replicated round {r + 1}: herd {herd['rps']:.0f}/s {herd['cpu_us']:.1f} us CPU/write "
              f"p99 {herd['p99_us']:.0f} us; herd, all on {ONE_ENTRY}, {one['rps']:.0f}/s "
              f"{one['cpu_us']:.1f} us CPU/write; redis {redis['rps']:.0f}/s {redis['cpu_us']:.1f} us "
              f"CPU/write p99 {redis['p99_us']:.0f} us (replicas caught up in "
              f"{redis['catch_up_ms']:.0f} ms); redis PING {ping['rps']:.0f}/s", flush=True)
    return {"command": command(),
            "machine": machine(), "concurrency": 20, "duration_s": a.duration, "repeat": a.repeat,
            "redis_version": subprocess.run(["redis-server", "--version"], capture_output=True,
                                            text=True).stdout.split()[2].removeprefix("v="),
            "rounds": rounds, "median": medians(rounds)}


def memory(procs, kind, clients):
    """Resident bytes per stored client of one fresh server with no neighbours."""
    cfg, (pid,) = procs.herd(kind, {"Mem": []}, log_lines=False)
    port = int(open(cfg).read().split("port: ")[1].split(",")[0])
    before = rss_kib(pid)
    fill_clients(port, clients)
    after = rss_kib(pid)
    return {"clients": clients, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_client": (after - before) * 1024 / clients}


def asyncio_herds(procs, a, scratch):
    kinds = ["c", "asyncio"]
    if importlib.util.find_spec("uvloop"):
        kinds.append("uvloop")
    else:
        print("yardsticks: python3-uvloop is not installed; no uvloop figures", file=sys.stderr)
    herds = {k: procs.herd(k) for k in kinds}
    time.sleep(3)
    common = ["--concurrency", "20", "--duration", str(a.duration), "--warmup", "0"]
    rounds = []
    for r in range(a.repeat):
        got = {}
        for mix in ("iamat", "whatsat"):
            for k in kinds:
                cfg, pids = herds[k]
                got[f"{k}_{mix}"] = run_costed(pids, ["-c", cfg, "--mix", f"{mix}=100"] + common,
                                               scratch)
        rounds.append(got)
        print(f"asyncio round {r + 1}: " + ", ".join(f"{n} {v['rps']:.0f}/s {v['cpu_us']:.0f} us"
                                                     for n, v in got.items()), flush=True)
    out = {"command": command(),
           "machine": machine(), "concurrency": 20, "duration_s": a.duration, "repeat": a.repeat,
           "kinds": kinds,
           "python": sys.version.split()[0], "rounds": rounds, "median": medians(rounds),
           "propagation": {}, "memory": {}}
    for k in kinds:
        js = bench(["-c", herds[k][0], "--propagation", str(a.propagation)], scratch)
        out["propagation"][k] = js["servers_us"]["all"]
        out["memory"][k] = memory(procs, k, a.clients)
        print(f"{k}: propagation p50 {js['servers_us']['all']['p50']:.0f} us p99 "
              f"{js['servers_us']['all']['p99']:.0f} us; "
              f"{out['memory'][k]['bytes_per_client']:.0f} bytes per client", flush=True)
    c_files = sorted(glob.glob(os.path.join(ROOT, "server", "*.[ch]")) +
                     glob.glob(os.path.join(ROOT, "common", "*.[ch]")))
    out["lines_of_code"] = {"c": code_lines(c_files), "asyncio": code_lines([ASYNCIO_HERD]),
                            "c_files": "server/*.[ch] common/*.[ch]",
                            "asyncio_files": "benchmark/asyncio_herd.py"}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "data"))
    ap.add_argument("--only", choices=("replicated", "asyncio"))
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--duration", type=float, default=4, help="seconds per run (default 4)")
    ap.add_argument("--propagation", type=int, default=500, help="updates timed (default 500)")
    ap.add_argument("--clients", type=int, default=200_000,
                    help="clients stored for the memory figure (default 200000)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="yardsticks-")
    procs = Procs(tmp)
    scratch = os.path.join(tmp, "run.json")
    try:
        for part, fn in (("replicated", replicated), ("asyncio", asyncio_herds)):
            if a.only in (None, part):
                js = fn(procs, a, scratch)
                with open(os.path.join(a.out, f"{part}.json"), "w") as f:
                    json.dump(js, f, indent=1)
                print(f"yardsticks: wrote {part}.json in {a.out}", flush=True)
                stop_all(procs.all)
                procs.all.clear()
    finally:
        stop_all(procs.all)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
