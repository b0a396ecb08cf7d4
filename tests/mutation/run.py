#!/usr/bin/python3
"""make test-mutation: does each curated mutation make some test fail?

The mutations are in mutations.py beside this file.  The run:

  1. checks that every mutation's original text occurs exactly once in its
     file (a stale entry fails the run, named with the file and count);
  2. copies the tracked tree (git ls-files) to a scratch folder and builds it
     once (make all: the programs and the unit test binaries);
  3. runs the union of the selected tests on that unmutated build, so a
     failing or flaky test cannot pass for a caught mutation;
  4. for each mutation: applies it, rebuilds incrementally, runs its tests
     with a timeout, records "caught" (a test failed or timed out) or
     "survived", restores the file, and goes on.  A mutation that does not
     compile is reported as "caught by the build", never silently.
     --jobs N workers (default 3) do this at once, each in its own copy of
     the built tree, taking the next mutation when one is done.

It prints one line per mutation and a summary, and exits 1 when a
mutation survived (other than one marked pending) or a text is stale.
The scratch folder and every process the tests left behind are removed,
whatever happens.

  tests/mutation/run.py              every mutation
  tests/mutation/run.py --list       the list, without running anything
  tests/mutation/run.py --check      only check that every text still matches
  tests/mutation/run.py --only ID[,ID...]
                                     only these (baseline limited to their tests)
  tests/mutation/run.py --jobs N     N mutations at once (default 3)

Standard library only; run with /usr/bin/python3.
"""
import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_TIMEOUT = 180
BUILD_TIMEOUT = 600


def load_mutations():
    spec = importlib.util.spec_from_file_location("mutations", os.path.join(HERE, "mutations.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MUTATIONS


def validate(muts):
    """Problems with the list itself and stale texts, as printable lines."""
    problems = []
    seen = set()
    for m in muts:
        for key in ("id", "file", "original", "mutant", "breaks", "tests"):
            if not m.get(key):
                problems.append(f"mutation {m.get('id', '?')}: no '{key}'")
        if m.get("id") in seen:
            problems.append(f"mutation {m['id']}: id used twice")
        seen.add(m.get("id"))
    return problems


def stale(m, root):
    """None when the original text occurs exactly once, else the reason."""
    path = os.path.join(root, m["file"])
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        return f"mutation {m['id']}: cannot read {m['file']}: {e.strerror}"
    k = text.count(m["original"])
    if k == 0:
        return f"mutation {m['id']}: text not found in {m['file']}: {m['original']!r}"
    if k > 1:
        return f"mutation {m['id']}: text found {k} times in {m['file']}: {m['original']!r}"
    return None


# ------------------------------------------------------------ processes

def scratch_pids(scratch):
    """Processes running a program of the scratch tree (setsid'ed
    supervisors and their servers escape the test's process group)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            exe = os.readlink(f"/proc/{d}/exe")
        except OSError:
            continue
        if exe.startswith(scratch + os.sep):
            pids.append(int(d))
    return pids


def kill_leftovers(scratch, pgid=None):
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for _ in range(50):
        pids = scratch_pids(scratch)
        if not pids:
            return
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.1)


def run_group(cmd, cwd, env, timeout, scratch):
    """Run cmd in its own session; returns (returncode or None on timeout,
    output).  Whatever it started is killed afterwards."""
    out_path = os.path.join(scratch, ".mutation-output")
    with open(out_path, "wb") as out:
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            kill_leftovers(scratch, p.pid)
            if p.poll() is None:
                p.wait()
    with open(out_path, "rb") as f:
        text = f.read().decode(errors="replace")
    os.unlink(out_path)
    return rc, text


# ----------------------------------------------------------------- tests

def split_tests(tests):
    units = [t.split("/", 1)[1] for t in tests if t.startswith("unit/")]
    pys = [t for t in tests if not t.startswith("unit/")]
    return units, pys


def run_tests(tests, scratch, timeout, tag, workers=1):
    """Returns (ok, what, output): ok False means a test failed (or timed
    out); 'what' names the first failure."""
    units, pys = split_tests(tests)
    deadline = time.time() + timeout
    env = dict(os.environ, HERD_BIN_DIR=os.path.join(scratch, "bin"))
    env.pop("HERD_SECRET", None)
    env.pop("HERD_MEASURED_FILE", None)
    for u in units:
        left = max(1, deadline - time.time())
        rc, out = run_group([os.path.join(scratch, "build", "tests", u)], scratch, env, left,
                            scratch)
        if rc is None:
            return False, f"unit/{u} timed out after {timeout} s", out
        if rc != 0:
            fails = [l for l in out.splitlines() if "FAIL" in l]
            return False, f"unit/{u} failed" + (f": {fails[0].strip()}" if fails else ""), out
    if pys:
        left = max(1, deadline - time.time())
        base = os.path.join(scratch, "pytest-tmp", tag)
        os.makedirs(os.path.dirname(base), exist_ok=True)
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-rfE", "-p", "no:cacheprovider",
               f"--basetemp={base}", *pys]
        if workers > 1:
            cmd[3:3] = ["-n", str(workers)]
        rc, out = run_group(cmd, scratch, env, left, scratch)
        shutil.rmtree(base, ignore_errors=True)
        if rc is None:
            return False, f"pytest timed out after {timeout} s", out
        if rc == 5 or "no tests ran" in out or "ERROR: not found" in out:
            raise SetupError(f"{tag}: pytest selected no test from {pys}:\n{out[-2000:]}")
        if rc != 0:
            failed = [l[len("FAILED "):] for l in out.splitlines() if l.startswith("FAILED ")]
            errors = [l[len("ERROR "):] for l in out.splitlines() if l.startswith("ERROR ")]
            if failed:
                what = failed[0].split(" - ")[0] + " failed"
            elif errors:
                what = errors[0].split(" - ")[0] + " failed in its fixture (setup or teardown)"
            else:
                what = f"pytest exited {rc}"
            return False, what, out
    return True, "all passed", ""


class SetupError(Exception):
    pass


# ----------------------------------------------------------------- build

def tracked_files():
    """git ls-files; outside a git checkout (a release tarball), every file
    but what the build and the herd make."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode()
        return out.split("\0")
    except (OSError, subprocess.CalledProcessError):
        skip = {"build", "bin", "logs", "state", ".git", "__pycache__", ".pytest_cache"}
        files = []
        for d, dirs, names in os.walk(ROOT):
            dirs[:] = [x for x in dirs if x not in skip]
            files += [os.path.relpath(os.path.join(d, n), ROOT) for n in names]
        return files


def copy_tree(scratch):
    files = tracked_files()
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if not os.path.isfile(src):     # deleted in the work tree
            continue
        dst = os.path.join(scratch, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    # the work tree's uncommitted edits to tracked files are copied as they
    # are, so the list can be tried before committing


def build(scratch, tests=None):
    """make all, or with 'tests' only what they run: the programs for
    pytest, the named binaries for unit tests (relinking all of them for
    every mutation would double the run)."""
    targets = ["all"]
    if tests is not None:
        units, pys = split_tests(tests)
        targets = ["build/tests/" + u for u in units]
        if pys:
            targets += ["bin/herd-server", "bin/herd-supervisor", "bin/herd-benchmark"]
    jobs = str(min(2, os.cpu_count() or 1))
    return run_group(["make", "-j" + jobs, "--no-print-directory", *targets], scratch,
                     dict(os.environ), BUILD_TIMEOUT, scratch)


def bump_mtime(path):
    """Make sure make sees the file as newer than its object."""
    st = os.stat(path)
    t = max(time.time_ns(), st.st_mtime_ns + 1_000_000)
    os.utime(path, ns=(t, t))


def try_mutation(m, scratch):
    """Apply m in the tree 'scratch', build, run its tests, restore.
    Returns (verdict, what)."""
    path = os.path.join(scratch, m["file"])
    original = open(path, encoding="utf-8").read()
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original.replace(m["original"], m["mutant"], 1))
        bump_mtime(path)
        brc, bout = build(scratch, m["tests"])
        if brc != 0:
            err = [l for l in bout.splitlines() if "error" in l]
            verdict, what = "caught-by-build", (err[0] if err else "make failed")
        else:
            ok, what, _ = run_tests(m["tests"], scratch, m.get("timeout", DEFAULT_TIMEOUT), m["id"])
            verdict = "survived" if ok else "caught"
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
        bump_mtime(path)
    if verdict == "survived" and m.get("pending"):
        verdict = "pending"
    return verdict, what


def report(i, n, m, verdict, what, seconds):
    label = {"caught": "caught", "caught-by-build": "CAUGHT ONLY BY THE BUILD",
             "survived": "SURVIVED"}.get(verdict)
    if verdict == "pending":
        label = f"survived (pending: {m['pending']})"
    if verdict == "survived":
        what = f"no test failed; it breaks: {m['breaks']}"
    elif m.get("pending") and verdict == "caught":
        label += f" (its 'pending: {m['pending']}' flag can go)"
    print(f"[{i:2d}/{n}] {m['id']:34s} {m['file']:24s} {label:10s} "
          f"{seconds:5.1f}s  {what}", flush=True)


def missing_tests(muts):
    """Each named test that does not exist: a unit/NAME without its
    tests/unit/NAME.c, or a node id or file that pytest does not collect:
    a test renamed or moved leaves its mutation naming nothing.  One
    collection of tests/integration, compared."""
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                        "no:cacheprovider", "tests/integration"], cwd=ROOT,
                       capture_output=True, text=True)
    ids = [line.strip() for line in r.stdout.splitlines() if "::" in line]
    known = set(ids) | {i.split("[")[0] for i in ids} | {i.split("::")[0] for i in ids}
    if not ids:
        return [f"pytest collected nothing (exit {r.returncode}): {r.stdout[-500:]}{r.stderr[-500:]}"]
    unit = {f"unit/{f[:-2]}" for f in os.listdir(os.path.join(ROOT, "tests", "unit"))
            if f.endswith(".c")}
    return [f"{t} (mutation {m['id']})" for m in muts for t in m["tests"]
            if t not in known and t not in unit]


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description="Apply each curated mutation and check a test fails.")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--check", action="store_true",
                    help="only check that every original text occurs exactly once")
    ap.add_argument("--only", default="", help="comma-separated ids to run")
    ap.add_argument("--jobs", type=int, default=3, metavar="N",
                    help="mutations tried at once, each in its own copy (default 3)")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip running the tests on the unmutated build first")
    args = ap.parse_args()

    muts = load_mutations()
    problems = validate(muts)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    if args.list:
        for i, m in enumerate(muts, 1):
            flag = f"  [pending: {m['pending']}]" if m.get("pending") else ""
            print(f"{i:3d} {m['id']:32s} {m['file']:24s} {m['breaks']}{flag}")
            for t in m["tests"]:
                print(f"      {t}")
        return 0
    if args.only:
        want = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in want if w not in {m["id"] for m in muts}]
        if unknown:
            print(f"unknown mutation id(s): {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        muts = [m for m in muts if m["id"] in want]

    stale_lines = [s for s in (stale(m, ROOT) for m in muts) if s]
    for s in stale_lines:
        print("STALE " + s)
    if args.check:
        missing = missing_tests(muts)
        for s in missing:
            print("MISSING " + s)
        print(f"{len(muts)} mutations, {len(stale_lines)} stale, {len(missing)} naming no test")
        return 1 if stale_lines or missing else 0
    runnable = [m for m in muts if not stale(m, ROOT)]

    start = time.time()
    scratch = tempfile.mkdtemp(prefix="herd-mutation-")
    scratch = os.path.realpath(scratch)
    stopping = {"sig": None}

    def on_term(sig, frame):
        stopping["sig"] = sig
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    results = []
    try:
        print(f"copying the tracked tree to {scratch} and building it once ...", flush=True)
        copy_tree(scratch)
        rc, out = build(scratch)
        if rc != 0:
            print(out[-4000:])
            print("the unmutated tree does not build", file=sys.stderr)
            return 2
        print(f"  built in {time.time() - start:.0f} s", flush=True)

        if not args.no_baseline:
            union = []
            for m in runnable:
                for t in m["tests"]:
                    if t not in union:
                        union.append(t)
            t0 = time.time()
            ok, what, out = run_tests(union, scratch, 1200, "baseline", workers=args.jobs)
            if not ok:
                print(out[-4000:])
                print(f"the tests fail WITHOUT any mutation ({what}); fix that first",
                      file=sys.stderr)
                return 2
            print(f"  baseline: the {len(union)} selected tests pass unmutated "
                  f"({time.time() - t0:.0f} s)", flush=True)

        copies = [scratch]
        for k in range(1, min(args.jobs, len(runnable))):
            copy = f"{scratch}.{k}"
            subprocess.run(["cp", "-a", scratch, copy], check=True)
            copies.append(copy)
        n = len(runnable)
        queue = list(enumerate(runnable, 1))
        lock = threading.Lock()
        failures = []

        def worker(tree):
            while not stopping["sig"]:
                with lock:
                    if not queue:
                        return
                    i, m = queue.pop(0)
                t0 = time.time()
                try:
                    verdict, what = try_mutation(m, tree)
                except Exception as e:      # a setup error: stop every worker
                    failures.append(e)
                    stopping["sig"] = stopping["sig"] or -1
                    return
                with lock:
                    results.append((m, verdict, what))
                    report(i, n, m, verdict, what, time.time() - t0)

        threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in copies]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        if failures:
            raise failures[0]
    except KeyboardInterrupt:
        print(f"\ninterrupted{' by signal %d' % stopping['sig'] if stopping['sig'] else ''}; "
              "cleaning up", file=sys.stderr)
        return 130
    except SetupError as e:
        print(f"setup error: {e}", file=sys.stderr)
        return 2
    finally:
        for tree in [scratch] + [f"{scratch}.{k}" for k in range(1, args.jobs)]:
            kill_leftovers(tree)
            shutil.rmtree(tree, ignore_errors=True)

    caught = sum(1 for _, v, _ in results if v == "caught")
    by_build = sum(1 for _, v, _ in results if v == "caught-by-build")
    survived = [m["id"] for m, v, _ in results if v == "survived"]
    pending = [m["id"] for m, v, _ in results if v == "pending"]
    print()
    print(f"{len(muts)} mutations: {caught + by_build} caught"
          + (f" ({by_build} only by a build failure)" if by_build else "")
          + f", {len(survived)} survived"
          + (f", {len(pending)} pending (survive until their branch lands: {', '.join(pending)})"
             if pending else "")
          + (f", {len(stale_lines)} stale" if stale_lines else "")
          + f"; {time.time() - start:.0f} s")
    if survived:
        print("SURVIVED (a test should fail for each): " + ", ".join(survived))
    if stale_lines:
        print("STALE (update tests/mutation/mutations.py):")
        for s in stale_lines:
            print("  " + s)
    return 1 if survived or stale_lines else 0


if __name__ == "__main__":
    sys.exit(main())
