#!/usr/bin/python3
"""Two builds' herds loaded at the same time, so both see the same machine
(docs/BENCHMARKS.md).

    benchmark/paired_ab.py BIN_A BIN_B [--repeat N] [--duration S]

Starts the default herd of each build on free ports (logging as shipped),
then REPEAT times runs IAMAT at c=20 against both at once (one client
each, --converge), and prints each side's requests/s, CPU per request
(utime+stime of its five servers) and p99.  Interleaved rounds compare
builds a few seconds apart, when the load of a shared machine may have
changed; here both share every moment, and the other's load is the same
for both.  Run it twice with the builds swapped to see any bias of the
order.  Every process it starts is stopped when it ends.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_data import bench, stop_all  # noqa: E402
from yardsticks import TICK, Procs, ticks  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bins", nargs=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--duration", type=float, default=4)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="paired-ab-")
    procs = Procs(tmp)
    try:
        herds = [procs.herd("c", bin_dir=os.path.abspath(b)) for b in a.bins]
        time.sleep(3)        # links up, and past the 2 s of flooding after link changes
        for r in range(a.repeat):
            got = [None, None]

            def run(i):
                cfg, _ = herds[i]
                got[i] = bench(["-c", cfg, "--mix", "iamat=100", "--converge", "--concurrency",
                                "20", "--duration", str(a.duration), "--warmup", "0"],
                               os.path.join(tmp, f"run{i}.json"))

            before = [ticks(pids) for _, pids in herds]
            threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cpu = [(ticks(pids) - t0) / TICK * 1e6 / js["requests"]
                   for (_, pids), t0, js in zip(herds, before, got)]
            print(f"round {r + 1}: " + "; ".join(
                f"{b} {js['rps']:.0f}/s {c:.1f} us CPU p99 {js['latency_us']['p99']:.0f} us"
                for b, js, c in zip(a.bins, got, cpu)) +
                f"; B/A CPU {cpu[1] / cpu[0]:.2f}x rate {got[1]['rps'] / got[0]['rps']:.2f}x",
                flush=True)
    finally:
        stop_all(procs.all)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
