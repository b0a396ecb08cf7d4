#!/usr/bin/python3
"""Forwarding along trees against flooding, side by side (docs/BENCHMARKS.md).

Starts two copies of the default herd on free ports, one with
`herd.forwarding: tree`, one with `flood`, and redis-server when installed;
then, interleaved REPEAT times: IAMAT at concurrency 20 against each herd and
PING against redis, reading each server's CPU time (/proc/PID/stat) around
the herd runs to find a hot server.  Then propagation p99 on each herd, and
what anti-entropy costs at rest (each server's forward-stats line, logged at
exit, over an idle herd).  Prints a summary; --json writes the figures.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_data import BIN, ROOT, TOPOLOGY, bench, free_port, stop_all, wait_port  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def write_config(folder, ports, mode):
    lines = ["servers:"]
    for name, neigh in TOPOLOGY.items():
        lines.append(f"  {name}: {{host: 127.0.0.1, port: {ports[name]}, "
                     f"neighbors: [{', '.join(neigh)}]}}")
    lines += ["places:", "  provider: local", f"  local_file: {ROOT}/data/places.geojson",
              "herd:", f"  state_dir: {folder}/state", f"  forwarding: {mode}",
              "logging:", f"  dir: {folder}/logs"]
    path = os.path.join(folder, "config.yml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])     # utime + stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--rest", type=float, default=20, help="seconds of an idle herd")
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="forwarding-ab-")
    env = dict(os.environ, HERD_SECRET="forwarding-ab-secret")
    procs, herds = [], {}

    def start(argv, port):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(p)
        wait_port(port, p)
        return p

    try:
        for mode in ("flood", "tree"):
            d = os.path.join(tmp, mode)
            os.makedirs(d)
            ports = {n: free_port() for n in TOPOLOGY}
            cfg = write_config(d, ports, mode)
            pids = {n: start([os.path.join(BIN, "herd-server"), n, "-c", cfg], ports[n]).pid
                    for n in TOPOLOGY}
            herds[mode] = {"cfg": cfg, "pids": pids}
        redis, rport = shutil.which("redis-server"), free_port()
        if redis:
            start([redis, "--port", str(rport), "--save", "", "--appendonly", "no"], rport)
        time.sleep(3)      # links up, and past the 2 s of flooding after link changes
        scratch = os.path.join(tmp, "run.json")
        common = ["--duration", str(a.duration), "--warmup", "0", "--concurrency", "20"]   # no warm-up: CPU counts every request
        runs = {}
        for r in range(a.repeat):
            for mode in ("flood", "tree"):
                h = herds[mode]
                before = {n: cpu_ticks(p) for n, p in h["pids"].items()}
                js = bench(["-c", h["cfg"], "--mix", "iamat=100"] + common, scratch)
                after = {n: cpu_ticks(p) for n, p in h["pids"].items()}
                js["cpu_s"] = {n: (after[n] - before[n]) / TICK for n in before}
                runs.setdefault(mode, []).append(js)
            if redis:
                runs.setdefault("redis", []).append(
                    bench(["--reference", "PING", "--target", f"127.0.0.1:{rport}"] + common, scratch))
        out = {"runs": runs}
        for name, rs in runs.items():
            for js in rs:
                cpu = js.get("cpu_s")
                hot = ""
                if cpu:
                    per = sum(cpu.values()) * 1e6 / max(js["requests"], 1)
                    hot = (f"  {per:5.1f} us server CPU/request; cpu s: "
                           + ", ".join(f"{n} {v:.2f}" for n, v in cpu.items()))
                print(f"{name:6s} {js['rps']:9.0f} req/s  p50 {js['latency_us']['p50']:7.1f} us  "
                      f"p99 {js['latency_us']['p99']:8.1f} us{hot}", flush=True)
        for mode in ("flood", "tree"):
            js = bench(["-c", herds[mode]["cfg"], "--propagation", "1000"], scratch)
            out[f"propagation_{mode}"] = js["servers_us"]
            print(f"propagation {mode}: p50 {js['servers_us']['all']['p50']:.1f} us  "
                  f"p99 {js['servers_us']['all']['p99']:.1f} us", flush=True)
        # at rest: a fresh tree herd, idle; its ctl lines over two lengths of idleness
        rest = {}
        for secs in (2.0, 2.0 + a.rest):
            d = os.path.join(tmp, f"rest{secs:.0f}")
            os.makedirs(d)
            ports = {n: free_port() for n in TOPOLOGY}
            cfg = write_config(d, ports, "tree")
            ps = [start([os.path.join(BIN, "herd-server"), n, "-c", cfg], ports[n]) for n in TOPOLOGY]
            time.sleep(secs)
            for p in ps:
                p.send_signal(signal.SIGTERM)
            for p in ps:
                p.wait()
            tot = {"ctl_lines": 0, "ctl_bytes": 0}
            for n in TOPOLOGY:
                text = open(os.path.join(d, "logs", f"{n}.log")).read()
                last = [l for l in text.splitlines() if "forward-stats" in l][-1]
                for k in tot:
                    tot[k] += int(re.search(r"\b%s=(\d+)" % k, last).group(1))
            rest[secs] = tot
        lines = (rest[2.0 + a.rest]["ctl_lines"] - rest[2.0]["ctl_lines"]) / a.rest
        nbytes = (rest[2.0 + a.rest]["ctl_bytes"] - rest[2.0]["ctl_bytes"]) / a.rest
        out["rest"] = {"lines_per_s": lines, "bytes_per_s": nbytes, "totals": rest}
        print(f"anti-entropy at rest, whole herd: {lines:.1f} lines/s, {nbytes:.0f} bytes/s", flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        stop_all(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
