#!/usr/bin/python3
"""This build's herd against an earlier build's and redis with four replicas,
interleaved (docs/BENCHMARKS.md).

    benchmark/replicated_ab.py --base-bin DIR [--repeat N] [--duration S] [--json FILE]

DIR holds the earlier build's herd-server (for instance a worktree of the
base commit, built with make).  Starts, on free ports, the default herd
twice (the base build's and this one's, logging as shipped) and a redis
master with four replicas (benchmark/yardsticks.py); then REPEAT rounds,
each running the three sides once, in an order rotated every round: IAMAT
at c=20 (--concurrency) over the five servers of each herd (--converge) and SET to the
master (replicas caught up, key counts equal); and this build's herd again
with all 20 connections on Bona ("one": one server takes every write and
the links carry it to four, as redis's master does).  Per run: requests/s, CPU
per request summed over the five processes of the side, the time they
waited for a CPU while runnable, p50 and p99.  Prints each round with its
ratios (this herd over redis, over the base herd) and the range of each
ratio over the rounds; --json writes it all.  The same client program
(this build's herd-benchmark) loads every side.  Every process it starts
is stopped when it ends.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_data import BIN, machine, stop_all  # noqa: E402
from yardsticks import LOCATION, ONE_ENTRY, Procs, redis_caught_up, run_costed  # noqa: E402

RATIOS = (("rps", "rate"), ("cpu_us", "CPU per write"), ("p99_us", "p99"))
PAIRS = (("new", "redis"), ("one", "redis"), ("new", "base"), ("base", "redis"))


def ratios(r, a, b):
    return {k: r[a][k] / r[b][k] for k, _ in RATIOS}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-bin", required=True, help="the earlier build's bin/")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="replicated-ab-")
    procs = Procs(tmp)
    scratch = os.path.join(tmp, "run.json")
    common = ["--concurrency", str(a.concurrency), "--duration", str(a.duration), "--warmup", "0"]
    load_at_start = os.getloadavg()
    try:
        herds = {"base": procs.herd("c", bin_dir=os.path.abspath(a.base_bin)),
                 "new": procs.herd("c", bin_dir=BIN)}
        master, replicas, redis_pids = procs.redis(4)
        time.sleep(3)        # links up, and past the 2 s of flooding after link changes

        def herd_run(side, only=()):
            cfg, pids = herds[side]
            r = run_costed(pids, ["-c", cfg, "--mix", "iamat=100", "--converge"] + list(only)
                           + common, scratch)
            if not r["converged"]:
                raise SystemExit(f"replicated_ab: the {side} herd did not converge")
            return r

        sides = {"base": lambda: herd_run("base"), "new": lambda: herd_run("new"),
                 "one": lambda: herd_run("new", ("--servers", ONE_ENTRY)),
                 "redis": lambda: run_costed(
                     redis_pids, ["--reference", f"SET k{{key}} {LOCATION}", "--target",
                                  f"127.0.0.1:{master}"] + common, scratch,
                     lambda: redis_caught_up(master, replicas))}
        names = list(sides)
        rounds = []
        for i in range(a.repeat):
            order = names[i % len(names):] + names[:i % len(names)]
            r = {"order": order}
            for side in order:
                r[side] = sides[side]()
            for a_, b_ in PAIRS:
                r[f"{a_}_vs_{b_}"] = ratios(r, a_, b_)
            rounds.append(r)
            print(f"round {i + 1} ({', '.join(order)}): " + "; ".join(
                f"{s} {r[s]['rps']:.0f}/s {r[s]['cpu_us']:.1f} us CPU "
                f"(runq wait {r[s]['runq_wait_us']:.1f} us) p99 {r[s]['p99_us']:.0f} us"
                for s in names), flush=True)
            for a_, b_ in PAIRS:
                pair = f"{a_}_vs_{b_}"
                print(f"  {pair}: " + ", ".join(f"{label} {r[pair][k]:.2f}x"
                                                for k, label in RATIOS), flush=True)
        summary = {f"{a_}_vs_{b_}": {k: [min(r[f"{a_}_vs_{b_}"][k] for r in rounds),
                                         max(r[f"{a_}_vs_{b_}"][k] for r in rounds)]
                                     for k, _ in RATIOS}
                   for a_, b_ in PAIRS}
        for pair, v in summary.items():
            print(f"{pair} over {a.repeat} rounds: " + ", ".join(
                f"{label} {v[k][0]:.2f} to {v[k][1]:.2f}x" for k, label in RATIOS))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"command": " ".join(["benchmark/replicated_ab.py"] + sys.argv[1:]),
                           "machine": machine(), "load_at_start": load_at_start,
                           "load_at_end": os.getloadavg(),
                           "rounds": rounds, "ranges": summary}, f, indent=1)
    finally:
        stop_all(procs.all)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
