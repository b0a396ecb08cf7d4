#!/usr/bin/python3
"""Resident memory per stored client of one herd-server, and its IAMAT rate.

    benchmark/memory_per_client.py [--clients N] [--bound N] [--prefix ID] [--repeat R]
        [--against BIN_DIR [--duration S] [--rate-clients N]] [--json FILE]

Starts one herd-server with no neighbours on a free loopback port, a table
bound of --bound clients and log_lines off; sends it --clients IAMATs for
distinct ids ("client-0", "client-1", ...) over a pipelined connection,
reading every reply; prints the growth of its VmRSS divided by the clients.
--repeat starts a fresh server each time and prints every figure and the
median.  The fill and the VmRSS reading are report_data.py's (its memory
figure measures the same way, with ids "mem0", "mem1", ... at the default
bound).

--against BIN_DIR compares with another build's herd-server (say, the
previous commit's bin/): the memory runs alternate between the two, then
one server of each, filled with --clients ids "bench-0", "bench-1", ...
with old times, takes --repeat runs of this build's herd-benchmark
(--mix iamat=100 --concurrency 20 --clients N: every IAMAT replaces a
stored client) in turn, reading each server's CPU time around each run.
--rate-clients M, more than --bound, makes nearly every IAMAT a new client
that evicts the oldest instead.
Every process it starts is stopped when it ends.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report_data as rd  # noqa: E402


def start_server(bin_dir, folder, bound):
    """One server from bin_dir in a fresh folder; returns (process, port, config)."""
    os.makedirs(folder)
    port = rd.free_port()
    cfg = rd.write_config(folder, {"Mem": (port, [])})
    with open(cfg, "a") as f:        # logging: is the last section
        f.write(f"  log_lines: false\nlimits:\n  max_stored_clients: {bound}\n")
    env = dict(os.environ, HERD_SECRET="memory-per-client")
    p = subprocess.Popen([os.path.join(bin_dir, "herd-server"), "Mem", "-c", cfg],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        rd.wait_port(port, p)
    except BaseException:
        rd.stop_all([p])
        raise
    return p, port, cfg


def memory_run(bin_dir, folder, a):
    """A fresh server, filled; returns its VmRSS before and after, and per client."""
    p, port, _ = start_server(bin_dir, folder, a.bound)
    try:
        before = rd.rss_kib(p.pid)
        rd.fill_clients(port, a.clients, a.prefix.encode())
        after = rd.rss_kib(p.pid)
        if p.poll() is not None:
            raise SystemExit("memory_per_client: the server exited during the fill")
    finally:
        rd.stop_all([p])
    per = (after - before) * 1024 / a.clients
    return {"rss_before_kib": before, "rss_after_kib": after, "bytes_per_client": per}


def rate_runs(builds, tmp, a):
    """IAMAT rate and server CPU per request of each build, interleaved."""
    procs, cfgs = [], {}
    runs = {name: [] for name in builds}
    try:
        for name, bin_dir in builds.items():
            p, port, cfg = start_server(bin_dir, os.path.join(tmp, "rate-" + name), a.bound)
            procs.append(p)
            cfgs[name] = (cfg, p.pid)
            rd.fill_clients(port, a.clients, b"bench-")
        scratch = os.path.join(tmp, "run.json")
        args = ["--mix", "iamat=100", "--concurrency", "20",
                "--clients", str(a.rate_clients or a.clients),
                "--duration", str(a.duration), "--warmup", "0"]
        for r in range(a.repeat):
            order = list(builds) if r % 2 == 0 else list(reversed(builds))
            for name in order:
                cfg, pid = cfgs[name]
                got = rd.cpu_per_request([pid], ["-c", cfg] + args, scratch)
                runs[name].append(got)
                print(f"memory_per_client: {name:7s} {got['rps']:9.0f} IAMAT/s, "
                      f"{got['server_cpu_us']:5.2f} us server CPU per IAMAT", flush=True)
    finally:
        rd.stop_all(procs)
    return {name: {"runs": got,
                   "rps": rd.median([g["rps"] for g in got]),
                   "server_cpu_us": rd.median([g["server_cpu_us"] for g in got])}
            for name, got in runs.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=1_000_000,
                    help="distinct clients sent (default 1000000)")
    ap.add_argument("--bound", type=int, default=2_000_000,
                    help="limits.max_stored_clients; at least --clients (default 2000000)")
    ap.add_argument("--prefix", default="client-", help="client id prefix (default client-)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each kind (default 1)")
    ap.add_argument("--against", metavar="BIN_DIR", help="another build to compare with")
    ap.add_argument("--duration", type=float, default=3.0,
                    help="seconds per rate run, with --against (default 3)")
    ap.add_argument("--rate-clients", type=int,
                    help="client ids in the rate runs (default --clients)")
    ap.add_argument("--json", help="also write the figures to this file")
    a = ap.parse_args()
    if a.bound < a.clients:
        raise SystemExit("memory_per_client: --bound must be at least --clients")
    builds = {"this": rd.BIN}
    if a.against:
        builds["against"] = os.path.abspath(a.against)
    tmp = tempfile.mkdtemp(prefix="herd-memory-")
    memory = {name: [] for name in builds}
    try:
        for r in range(a.repeat):
            for name, bin_dir in builds.items():
                got = memory_run(bin_dir, os.path.join(tmp, f"{name}-{r}"), a)
                memory[name].append(got)
                print(f"memory_per_client: {name:7s} {got['bytes_per_client']:.1f} bytes per "
                      f"client ({got['rss_before_kib']} KiB -> {got['rss_after_kib']} KiB for "
                      f"{a.clients} clients)", flush=True)
        rate = rate_runs(builds, tmp, a) if a.against else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mid = {name: rd.median([g["bytes_per_client"] for g in got]) for name, got in memory.items()}
    for name in builds:
        print(f"memory_per_client: {name:7s} median {mid[name]:.1f} bytes per client")
    if rate:
        this, other = rate["this"], rate["against"]
        print(f"memory_per_client: IAMAT rate this/against {this['rps'] / other['rps']:.3f} "
              f"({this['rps']:.0f} / {other['rps']:.0f}), server CPU per IAMAT "
              f"{this['server_cpu_us']:.2f} / {other['server_cpu_us']:.2f} us")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": rd.machine(), "clients": a.clients, "bound": a.bound,
                       "rate_clients": a.rate_clients or a.clients,
                       "prefix": a.prefix, "memory": memory, "median_bytes_per_client": mid,
                       "rate": rate}, f, indent=1)


if __name__ == "__main__":
    main()
