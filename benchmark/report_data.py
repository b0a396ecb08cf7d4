#!/usr/bin/python3
"""Measure what the report plots and write it to docs/data/ as JSON.

    benchmark/report_data.py [--out DIR] [--duration S] [--repeat N] [--levels 1,2,5,...]

Starts, on free loopback ports: the default five-server topology, one
server with no neighbours ("Solo"), and redis-server as the reference (when
installed); then runs bin/herd-benchmark at each concurrency level against
each, and the propagation test on the idle herd.  Every process it starts
is stopped when it ends.  Each JSON file records the command that made it.
"""
import argparse
import json
import operator
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("HERD_BIN_DIR", os.path.join(ROOT, "bin"))
TOPOLOGY = {
    "Bailey": ["Bona", "Campbell"],
    "Bona": ["Bailey", "Clark", "Campbell"],
    "Campbell": ["Bailey", "Bona", "Jaquez"],
    "Clark": ["Jaquez", "Bona"],
    "Jaquez": ["Clark", "Campbell"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"report_data: a process on port {port} exited at start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"report_data: nothing listens on port {port}")


def write_config(folder, servers):
    lines = ["servers:"]
    for name, (port, neigh) in servers.items():
        lines.append(f"  {name}: {{host: 127.0.0.1, port: {port}, neighbors: [{', '.join(neigh)}]}}")
    lines += ["places:", "  provider: local", f"  local_file: {ROOT}/data/places.geojson",
              "herd:", f"  state_dir: {folder}/state", "logging:", f"  dir: {folder}/logs"]
    path = os.path.join(folder, "config.yml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def stop_all(procs, timeout=20):
    """SIGTERM every process still running, then wait for each; one that
    does not stop in timeout seconds is killed."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def bench(args, out_json):
    cmd = [os.path.join(BIN, "herd-benchmark"), "--quiet", "--json", out_json] + args
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise SystemExit(f"report_data: {' '.join(cmd)} failed:\n{r.stdout}")
    with open(out_json) as f:
        js = json.load(f)
    js["command"] = "herd-benchmark " + " ".join(a if not a.startswith("/") else os.path.basename(a)
                                                 for a in args)
    return js


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def median(items, key=lambda x: x):
    """The middle item by key (the upper one of an even count)."""
    return sorted(items, key=key)[len(items) // 2]


def cpu_of(pids):
    """CPU time, run-queue wait (ns, /proc/PID/schedstat) and user, system time
    (clock ticks, /proc/PID/stat) of some processes, summed."""
    cpu = wait = user = system = 0
    for pid in pids:
        with open(f"/proc/{pid}/schedstat") as f:
            a = f.read().split()
        cpu, wait = cpu + int(a[0]), wait + int(a[1])
        with open(f"/proc/{pid}/stat") as f:
            b = f.read().rsplit(")", 1)[1].split()
        user, system = user + int(b[11]), system + int(b[12])
    return cpu, wait, user, system


def cpu_per_request(pids, args, out_json):
    """One benchmark run; what it cost the servers and the client per request."""
    s0, r0 = cpu_of(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    js = bench(args, out_json)
    s1, r1 = cpu_of(pids), resource.getrusage(resource.RUSAGE_CHILDREN)
    n = js["requests"]
    ticks = (s1[2] - s0[2]) + (s1[3] - s0[3])
    return {"rps": js["rps"], "p99_us": js["latency_us"]["p99"],
            "server_cpu_us": (s1[0] - s0[0]) / 1e3 / n,
            "server_wait_us": (s1[1] - s0[1]) / 1e3 / n,
            "server_kernel_share": (s1[3] - s0[3]) / ticks if ticks else None,
            "client_cpu_us": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * 1e6 / n}


def fill_clients(port, n, prefix=b"mem"):
    """n IAMATs for distinct ids (prefix and a number) over one pipelined
    connection; every reply read."""
    import threading
    sock = socket.create_connection(("127.0.0.1", port))
    got = [0]

    def reader():
        while got[0] < n:
            data = sock.recv(1 << 20)
            if not data:
                break
            got[0] += data.count(b"\n")
    t = threading.Thread(target=reader)
    t.start()
    chunk = 10_000
    for base in range(0, n, chunk):
        sock.sendall(b"".join(b"IAMAT %s%d +34.068930-118.445127 %d.5\n" % (prefix, i, 1700000000 + i)
                              for i in range(base, min(n, base + chunk))))
    t.join()
    sock.close()
    if got[0] != n:
        raise SystemExit(f"report_data: {got[0]} replies for {n} IAMATs")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "data"),
                    help="where the JSON files go (default: docs/data)")
    ap.add_argument("--duration", type=float, default=2.0, help="seconds per run (default 2)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per point; the one with the median rate is kept (default 3)")
    ap.add_argument("--levels", default="1,2,5,10,20,50,100",
                    help="concurrency levels (default 1,2,5,10,20,50,100)")
    ap.add_argument("--propagation", type=int, default=1000,
                    help="updates timed on the idle herd (default 1000)")
    ap.add_argument("--clients", type=int, default=1_000_000,
                    help="clients stored for the memory figure (default 1000000)")
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="herd-report-")
    procs = []
    env = dict(os.environ, HERD_SECRET="report-data-secret")

    def start(argv, port):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(p)
        wait_port(port, p)

    try:
        ports = {n: free_port() for n in TOPOLOGY}
        herd_dir = os.path.join(tmp, "herd")
        os.makedirs(herd_dir)
        herd_cfg = write_config(herd_dir, {n: (ports[n], TOPOLOGY[n]) for n in TOPOLOGY})
        for n in TOPOLOGY:
            start([os.path.join(BIN, "herd-server"), n, "-c", herd_cfg], ports[n])
        pids = {"herd_iamat": [p.pid for p in procs]}
        solo_dir = os.path.join(tmp, "solo")
        os.makedirs(solo_dir)
        solo_port = free_port()
        solo_cfg = write_config(solo_dir, {"Solo": (solo_port, [])})
        start([os.path.join(BIN, "herd-server"), "Solo", "-c", solo_cfg], solo_port)
        pids["solo_iamat"] = pids["solo_whatsat"] = [procs[-1].pid]
        redis = shutil.which("redis-server")
        redis_port = free_port()
        if redis:
            start([redis, "--port", str(redis_port), "--save", "", "--appendonly", "no"], redis_port)
            pids["redis_ping"] = [procs[-1].pid]
        else:
            print("report_data: redis-server is not installed; no reference runs", file=sys.stderr)
        time.sleep(1.5)   # links up, catch-up done

        common = ["--duration", str(a.duration), "--warmup", "0.5"]
        series = {
            "redis_ping": lambda c: (["--reference", "PING", "--target", f"127.0.0.1:{redis_port}",
                                      "--concurrency", str(c)] if redis else None),
            "solo_iamat": lambda c: ["-c", solo_cfg, "--mix", "iamat=100", "--concurrency", str(c)],
            "solo_whatsat": lambda c: ["-c", solo_cfg, "--mix", "whatsat=100", "--concurrency", str(c)],
            "herd_iamat": lambda c: ["-c", herd_cfg, "--mix", "iamat=100", "--converge",
                                     "--concurrency", str(c)],
        }
        result = {"machine": machine(), "duration_s": a.duration, "repeat": a.repeat,
                  "levels": levels, "series": {}}
        scratch = os.path.join(tmp, "run.json")
        # Interleaved, series within level within repeat, so drift and a
        # neighbour's burst of load hit every series alike; each point keeps
        # the run with the median rate (and that run's latencies).
        runs = {}
        for r in range(a.repeat):
            for c in levels:
                for name, argv in series.items():
                    args = argv(c)
                    if args is not None:
                        runs.setdefault((name, c), []).append(bench(args + common, scratch))
            print(f"report_data: sweep {r + 1} of {a.repeat} done", flush=True)
        for c in levels:
            for name in series:
                if (name, c) not in runs:
                    continue
                js = median(runs[(name, c)], key=lambda j: j["rps"])
                js["rps_runs"] = [j["rps"] for j in runs[(name, c)]]
                result["series"].setdefault(name, []).append(js)
                print(f"{name:13s} c={c:<4d} {js['rps']:>10.0f} req/s  p50 {js['latency_us']['p50']:8.1f} us"
                      f"  p99 {js['latency_us']['p99']:8.1f} us  (runs: "
                      + ", ".join(f"{x:.0f}" for x in js["rps_runs"]) + ")", flush=True)
        # The herd below saturation: open loop at a fixed rate.
        rate = 20000
        got = [bench(["-c", herd_cfg, "--mix", "iamat=100", "--concurrency", "20",
                      "--rate", str(rate)] + common, scratch) for _ in range(a.repeat)]
        js = median(got, key=lambda j: j["latency_us"]["p99"])
        js["p99_runs"] = sorted(j["latency_us"]["p99"] for j in got)
        js["rate"] = rate
        result["open"] = js
        print(f"herd open loop at {rate}/s: p50 {js['latency_us']['p50']:.1f} us  "
              f"p99 {js['latency_us']['p99']:.1f} us", flush=True)
        # Where the CPU goes at 20 connections: per request, the servers'
        # CPU time (all five for the herd), how long they waited for a CPU
        # while runnable, the kernel's share, and the client's CPU time.
        cpu = {"command": "the concurrency-20 runs of the sweep again, reading /proc/PID/schedstat "
                          f"and /proc/PID/stat of the servers around each; {a.repeat} runs "
                          "each, the one with the median server CPU per request"}
        bare = ["--duration", str(a.duration), "--warmup", "0"]   # no warm-up left uncounted
        for r in range(a.repeat):
            for name in pids:
                args = [x for x in series[name](20) if x != "--converge"]
                got = cpu_per_request(pids[name], args + bare, scratch)
                cpu.setdefault(name, []).append(got)
        by_cpu = operator.itemgetter("server_cpu_us")
        for name in pids:
            cpu[name] = dict(median(cpu[name], key=by_cpu), runs=sorted(cpu[name], key=by_cpu))
            c = cpu[name]
            print(f"cpu           {name:13s} {c['server_cpu_us']:5.1f} us server CPU per request "
                  f"({c['server_kernel_share'] or 0:.0%} in the kernel), {c['server_wait_us']:5.1f} us "
                  f"waiting for a CPU, {c['client_cpu_us']:4.1f} us client CPU", flush=True)
        result["cpu"] = cpu
        with open(os.path.join(a.out, "sweep.json"), "w") as f:
            json.dump(result, f, indent=1)
        time.sleep(1)
        js = bench(["-c", herd_cfg, "--propagation", str(a.propagation)], scratch)
        js["machine"] = result["machine"]
        with open(os.path.join(a.out, "propagation.json"), "w") as f:
            json.dump(js, f, indent=1)
        print(f"propagation   p50 {js['servers_us']['all']['p50']:.1f} us  "
              f"p99 {js['servers_us']['all']['p99']:.1f} us over {js['updates']} updates")

        # Idle connections: two servers alike but for 10,000 quiet sockets
        # held open on one of them; the same load on each in turn, --repeat
        # times, and the median of each.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        idle = {"command": "herd-benchmark --mix iamat=100 --concurrency 20 against a server "
                           "with no neighbours, and against the same server holding 10,000 "
                           f"idle connections; {a.repeat} runs each, in turn, median"}
        held = []
        if hard >= 10_500:
            busy_dir = os.path.join(tmp, "idle")
            os.makedirs(busy_dir)
            busy_port = free_port()
            busy_cfg = write_config(busy_dir, {"Solo": (busy_port, [])})
            start([os.path.join(BIN, "herd-server"), "Solo", "-c", busy_cfg], busy_port)
            busy_pid = procs[-1].pid
            for _ in range(10_000):
                held.append(socket.create_connection(("127.0.0.1", busy_port)))
            time.sleep(2.5)   # quiet for two sweeps
            run20 = ["--mix", "iamat=100", "--concurrency", "20"] + common
            without, with_ = [], []
            for _ in range(a.repeat):
                without.append(bench(["-c", solo_cfg] + run20, scratch)["rps"])
                with_.append(bench(["-c", busy_cfg] + run20, scratch)["rps"])
            idle.update(without_runs=without, with_runs=with_,
                        without_rps=median(without), with_rps=median(with_),
                        rss_kib_with_idle=rss_kib(busy_pid))
            print(f"idle          {idle['without_rps']:.0f} req/s without, "
                  f"{idle['with_rps']:.0f} req/s with 10,000 idle connections "
                  f"(runs: {without} / {with_})", flush=True)
        else:
            print(f"report_data: the descriptor limit ({hard}) is too low for 10,000 idle "
                  "connections; no idle figure", file=sys.stderr)
        for c in held:
            c.close()

        # Memory: a fresh server, one million clients.
        mem_dir = os.path.join(tmp, "mem")
        os.makedirs(mem_dir)
        mem_port = free_port()
        mem_cfg = write_config(mem_dir, {"Mem": (mem_port, [])})
        with open(mem_cfg, "a") as f:        # logging: is the last section
            f.write("  log_lines: false\n")
        start([os.path.join(BIN, "herd-server"), "Mem", "-c", mem_cfg], mem_port)
        time.sleep(0.3)
        before = rss_kib(procs[-1].pid)
        fill_clients(mem_port, a.clients)
        after = rss_kib(procs[-1].pid)
        memory = {"command": f"report_data.py: {a.clients} IAMATs for distinct ids, VmRSS before "
                             f"and after", "clients": a.clients, "rss_before_kib": before,
                  "rss_after_kib": after,
                  "bytes_per_client": (after - before) * 1024 / a.clients}
        print(f"memory        {memory['bytes_per_client']:.0f} bytes per client "
              f"({before} KiB -> {after} KiB for {a.clients} clients)")
        with open(os.path.join(a.out, "resources.json"), "w") as f:
            json.dump({"machine": result["machine"], "idle": idle, "memory": memory}, f, indent=1)
        print(f"report_data: wrote sweep.json, propagation.json and resources.json in {a.out}")
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
