"""Behaviour no other test pinned down, found by `make test-mutation`
(tests/mutation/mutations.py names the mutation each test catches)."""
import subprocess

from conftest import free_port, program, write_config


def status(cfg):
    return subprocess.run([program("herd-supervisor"), "-c", cfg, "--status"],
                          capture_output=True, text=True, timeout=30)


def test_status_with_a_stale_pid_file(tmp_path):
    """--status (make status, start_servers.sh) must not trust a servers.pid
    whose supervisor is gone: exit 3, "no herd is running", "stale"."""
    cfg = write_config(str(tmp_path), {"Bailey": (free_port(), [])})
    r = status(cfg)
    assert r.returncode == 3 and "no herd is running" in r.stdout and "missing" in r.stdout, r
    dead = subprocess.Popen(["true"])
    dead.wait()                      # a pid that was just released
    with open(tmp_path / "servers.pid", "w") as f:
        f.write(f"supervisor {dead.pid}\nBailey {dead.pid}\n")
    r = status(cfg)
    assert r.returncode == 3, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    assert "no herd is running" in r.stdout and "stale" in r.stdout, r.stdout
