#!/usr/bin/python3
"""User-space instructions per update on the hot path, counted by valgrind
(callgrind), so two builds compare without the noise of a shared machine
(docs/BENCHMARKS.md).

    benchmark/instructions.py [--updates N] BIN_DIR [BIN_DIR...]

For each build: two linked servers (Bailey, Bona: a TLS link, logging as
shipped) under callgrind, N IAMATs sent to Bailey one at a time, each reply
read before the next is sent.  Bailey's figure is the client's path (read,
parse, store, log, forward on the link, reply), Bona's the link's (read,
store, log).  Counted: the instructions of client_read and client_write
(inclusive: what OpenSSL and libc do for them), divided by N.  Anti-entropy
runs at link-up only (herd.anti_entropy_ms at its maximum), so its rounds
do not blur the figure.
The kernel's share is not counted: see the syscalls in BENCHMARKS.md.
Every process it starts is stopped when it ends.
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_data import free_port, stop_all, wait_port, write_config  # noqa: E402

LOCATION = b"+34.068930-118.445127"
HOT = ("client_read", "client_write")


def inclusive(cg_file):
    """Inclusive instructions per function name, from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", cg_file],
                         capture_output=True, text=True, check=True).stdout
    cost = {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) .*?:(\w+) \[", line)
        if m:
            cost[m.group(2)] = max(cost.get(m.group(2), 0), int(m.group(1).replace(",", "")))
    return cost


def wait_text(path, text, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(path, errors="replace") as f:
                if text in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"instructions: '{text}' not in {path} within {timeout} s")


def measure(bin_dir, n):
    d = tempfile.mkdtemp(prefix="instructions-")
    ports = {"Bailey": free_port(), "Bona": free_port()}
    cfg = write_config(d, {"Bailey": (ports["Bailey"], ["Bona"]),
                           "Bona": (ports["Bona"], ["Bailey"])})
    with open(cfg) as f:
        text = f.read()
    with open(cfg, "w") as f:                  # no anti-entropy round but the first
        f.write(text.replace("herd:\n", "herd:\n  anti_entropy_ms: 600000\n"))
    env = dict(os.environ, HERD_SECRET="instructions-secret")
    procs = []
    try:
        for name in ports:
            procs.append(subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/{name}.cg",
                 os.path.join(bin_dir, "herd-server"), name, "-c", cfg],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
            wait_port(ports[name], procs[-1], timeout=60)
        wait_text(f"{d}/logs/Bona.log", "link-up", 60)
        time.sleep(3)                  # past the 2 s of flooding after a link change
        with socket.create_connection(("127.0.0.1", ports["Bailey"])) as s:
            replies = s.makefile("rb")
            for i in range(n):
                s.sendall(b"IAMAT insn-%d %s %.9f\n" % (i, LOCATION, time.time()))
                if not replies.readline().startswith(b"AT Bailey "):
                    raise SystemExit("instructions: a bad reply")
        wait_text(f"{d}/logs/Bona.log", f"insn-{n - 1} ", 60)
        stop_all(procs)
        per = {}
        for name in ports:
            c = inclusive(f"{d}/{name}.cg")
            per[name] = sum(c.get(f, 0) for f in HOT) / n
        return per
    finally:
        stop_all(procs)
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bin_dirs", nargs="+")
    ap.add_argument("--updates", type=int, default=3000)
    a = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("instructions: valgrind is not installed")
    for b in a.bin_dirs:
        per = measure(os.path.abspath(b), a.updates)
        print(f"{b}: " + ", ".join(f"{k} {v:,.0f}" for k, v in per.items()) +
              " instructions per update", flush=True)


if __name__ == "__main__":
    main()
