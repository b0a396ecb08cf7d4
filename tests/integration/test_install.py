"""Installation and the test machine (docs/PROTOCOL.md, "Processes and
files"): make install into a DESTDIR with the packaged files, scripts that
find the installed programs, and the free ports the tests use.
"""
import os
import re
import shutil
import socket
import subprocess

import pytest

from harness import (PLACES, ROOT, TRIO, config_text, free_port, kill_all, program, read_pids,
                     script_env, write_herd_dir)


def test_make_install(tmp_path):
    dest = str(tmp_path / "root")
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    want = ["usr/bin/herd-server", "usr/bin/herd-supervisor", "usr/bin/herd-benchmark",
            "usr/share/proxyherd/start_servers.sh", "usr/share/proxyherd/stop_servers.sh",
            "usr/share/proxyherd/places.geojson", "usr/share/proxyherd/config.yml.sample",
            "usr/share/doc/proxyherd/README.md", "usr/share/doc/proxyherd/PROTOCOL.md",
            "usr/lib/systemd/system/proxyherd.service", "usr/lib/sysusers.d/proxyherd.conf",
            "usr/lib/tmpfiles.d/proxyherd.conf", "etc/proxyherd/config.yml"]
    for w in want:
        assert os.path.isfile(os.path.join(dest, w)), w
    for w in want[:5]:
        assert os.access(os.path.join(dest, w), os.X_OK), w
    # the installed sample is a valid config pointing at the installed places
    sample = open(os.path.join(dest, "etc/proxyherd/config.yml")).read()
    assert "/usr/share/proxyherd/places.geojson" in sample and "/var/lib/proxyherd" in sample
    local = sample.replace("/usr/share/proxyherd/places.geojson", PLACES)
    cfg = tmp_path / "check.yml"
    cfg.write_text(local)
    chk = subprocess.run([program("herd-server"), "Bailey", "-c", str(cfg), "--check"],
                         capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    # the installed scripts find the installed programs (no HERD_BIN_DIR, no make)
    ports = {n: free_port() for n in TRIO}
    cfg = write_herd_dir(str(tmp_path / "herd"),
                         config_text({n: ("127.0.0.1", ports[n], TRIO[n]) for n in TRIO}))
    env = script_env()
    env.pop("HERD_BIN_DIR")
    share = os.path.join(dest, "usr/share/proxyherd")
    r = subprocess.run([os.path.join(share, "start_servers.sh"), "-c", cfg], capture_output=True,
                       text=True, env=env, timeout=60)
    pids = read_pids(str(tmp_path / "herd"))
    try:
        assert r.returncode == 0 and "3 of 3 servers listening" in r.stdout, r.stdout + r.stderr
        assert os.readlink(f"/proc/{pids['supervisor']}/exe") == \
            os.path.join(dest, "usr/bin/herd-supervisor")
    finally:
        r = subprocess.run([os.path.join(share, "stop_servers.sh"), "-c", cfg],
                           capture_output=True, text=True, env=env, timeout=60)
        kill_all(pids.values())
    assert r.returncode == 0 and "stopped" in r.stdout, r.stdout + r.stderr
    unit = open(os.path.join(dest, "usr/lib/systemd/system/proxyherd.service")).read()
    assert "ExecStart=/usr/bin/herd-supervisor -c /etc/proxyherd/config.yml" in unit, unit
    assert "ExecReload=/usr/bin/herd-supervisor -c /etc/proxyherd/config.yml --reload" in unit, unit
    # a second install keeps an edited config
    with open(os.path.join(dest, "etc/proxyherd/config.yml"), "a") as f:
        f.write("# edited\n")
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", f"DESTDIR={dest}", "PREFIX=/usr"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "# edited" in open(os.path.join(dest, "etc/proxyherd/config.yml")).read()
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is missing: the unit's syntax was not verified")
    v = subprocess.run(["systemd-analyze", "verify", "--man=no",
                        os.path.join(dest, "usr/lib/systemd/system/proxyherd.service")],
                       capture_output=True, text=True, timeout=60)
    # verify also checks that ExecStart exists on this machine: only the
    # installed path may be missing here, nothing else may be wrong
    problems = [line for line in (v.stdout + v.stderr).splitlines()
                if line.strip() and "/usr/bin/herd-supervisor" not in line
                and "proxyherd.service: Command" not in line]
    assert not problems, v.stdout + v.stderr


def test_free_ports_lie_outside_the_ephemeral_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(x) for x in f.read().split())
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    inside = [p for p in ports if low <= p <= high]
    assert not inside, f"{len(inside)} of 200 in {low}-{high}: {inside[:5]}"
    for p in ports[:20]:           # free when handed out, and still
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_make_clean_refuses_while_the_herd_runs(tmp_path):
    """README, Operations: make clean removes the build, logs, state and the
    pid and lock files, and refuses while the herd runs (servers.pid is
    there), changing nothing.  Run on a folder of the test's own, with the
    project's Makefile."""
    made = ["build/server/server.o", "bin/herd-server", "state/herd.secret", "logs/Bailey.log",
            "logs/.keep", "servers.pid", "servers.lock"]
    for rel in made:
        os.makedirs(os.path.dirname(tmp_path / rel) or str(tmp_path), exist_ok=True)
        (tmp_path / rel).write_text("x\n")

    # not the variables of a make this suite may run under: make asan-test
    # sets BIN=build/asan/bin on its command line, which make passes down
    # in MAKEFLAGS and exports to the environment
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "B", "BIN", "OPT",
                        "SAN", "CC")}

    def clean():
        return subprocess.run(["make", "-s", "-f", os.path.join(ROOT, "Makefile"), "clean"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)

    r = clean()
    assert r.returncode != 0 and "the herd is running: make stop first" in r.stderr, r
    assert all((tmp_path / rel).exists() for rel in made), "make clean removed a file while refusing"
    (tmp_path / "servers.pid").unlink()
    r = clean()
    assert r.returncode == 0, r
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["logs", "logs/.keep"], left


def test_every_test_named_in_the_promise_list_exists():
    """tests/PROMISES.md maps each promise of the docs to its tests: a test
    renamed or removed must not leave a promise pointing at nothing."""
    text = open(os.path.join(ROOT, "tests", "PROMISES.md"), encoding="utf-8").read()
    here = os.path.dirname(os.path.abspath(__file__))
    defined = set()
    for f in os.listdir(here):
        if f.endswith(".py"):
            defined |= set(re.findall(r"^\s*def (\w+)\(", open(os.path.join(here, f)).read(), re.M))
    missing, promises = [], 0
    for line in text.splitlines():
        if not line.startswith("- ") or " -> " not in line:
            continue
        promises += 1
        tests = line.split(" -> ", 1)[1]
        names = re.findall(r"\b(test_\w+(?::\w+)?|supervised_problems)\b", tests)
        if not names and "not a" not in tests:
            missing.append(f"no test named: {line}")
        for name in names:
            if ":" in name:
                unit, func = name.split(":")
                path = os.path.join(ROOT, "tests", "unit", unit + ".c")
                if not os.path.exists(path) or not re.search(rf"\b{func}\b", open(path).read()):
                    missing.append(f"{name} (unit): {line[:80]}")
            elif name not in defined:
                missing.append(f"{name}: {line[:80]}")
    assert promises > 200, f"only {promises} promises read from tests/PROMISES.md"
    assert not missing, "\n".join(missing)
