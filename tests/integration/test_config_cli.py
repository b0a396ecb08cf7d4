"""Config errors and the command lines (docs/PROTOCOL.md, "Processes and
files", "Limits"): --help, usage errors, unknown names, a config's bad
lines with file and line, --check, and the errors herd-server and
herd-supervisor give at start.
"""
import os
import socket
import subprocess

from harness import (ephemeral_port, ephemeral_range, ephemeral_warning, PLACES, free_port,
                     program, ROOT, write_config)


def sup(*args, env=None):
    return subprocess.run([program("herd-supervisor"), *args], capture_output=True, text=True,
                          timeout=30, env=env)


def test_bound_out_of_range_is_refused_with_its_line(tmp_path):
    for bad in ("0", "100000001", "lots"):
        cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])},
                           limits={"max_stored_clients": bad})
        r = subprocess.run([program("herd-server"), "--check", "Alpha", "-c", cfg],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 1 and f"{cfg}:7: limits.max_stored_clients" in r.stderr, r.stderr


def run(*args, cwd=None):
    return subprocess.run([program("herd-server"), *args], capture_output=True,
                          text=True, timeout=20, cwd=cwd)


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "Usage: herd-server NAME [-c FILE]" in r.stdout


def test_no_name_is_a_usage_error():
    r = run()
    assert r.returncode == 2 and "Usage" in r.stderr


def test_unknown_option():
    r = run("--bogus")
    assert r.returncode == 2 and "unknown option '--bogus'" in r.stderr


def test_unknown_name(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])})
    r = run("Nobody", "-c", cfg)
    assert r.returncode == 1
    assert "no server named 'Nobody'" in r.stderr and "Alpha" in r.stderr


def test_bad_config_names_file_and_line(tmp_path):
    cfg = tmp_path / "config.yml"
    cfg.write_text("servers:\n  A: { port: 1, neighbors: [B] }\n")
    r = run("A", "-c", str(cfg))
    assert r.returncode == 1
    assert f"{cfg}:2: servers.A: unknown neighbour 'B'" in r.stderr


def test_default_config_from_working_directory(tmp_path):
    write_config(str(tmp_path), {"Alpha": (free_port(), [])})
    r = run("--check", "Alpha", cwd=str(tmp_path))
    assert r.returncode == 0 and "Alpha listens on 127.0.0.1:" in r.stdout


def test_check_warns_of_a_port_in_the_ephemeral_range(tmp_path):
    """--check: a port inside net.ipv4.ip_local_port_range gets one warning
    on stderr naming the range (a warning: exit 0); one outside it, and the
    default herd's ports, none."""
    port = ephemeral_port()
    cfg = write_config(str(tmp_path), {"Alpha": (port, [])})
    r = run("--check", "Alpha", "-c", cfg)
    assert r.returncode == 0 and "Alpha listens on 127.0.0.1:" in r.stdout, r.stderr
    assert r.stderr == f"herd-server: warning: {ephemeral_warning('Alpha', port)}\n", r.stderr
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])})
    r = run("--check", "Alpha", "-c", cfg)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    low, high = ephemeral_range()
    default = os.path.join(ROOT, "config.yml")
    for name, port in (("Bailey", 10099), ("Bona", 10044), ("Campbell", 10022),
                       ("Clark", 10211), ("Jaquez", 10194)):
        r = run("--check", name, "-c", default)
        assert f"{name} listens on 127.0.0.1:{port}," in r.stdout, r.stdout + r.stderr
        assert r.returncode == 0 and (r.stderr == "" or low <= port <= high), r.stderr


def test_port_in_use(tmp_path):
    """A port another process listens on: the server says so, and which
    process holds it (this test's), in its log and on stderr."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(str(tmp_path), {"Alpha": (port, [])})
        r = run("Alpha", "-c", cfg)
    with open("/proc/self/comm") as f:
        me = f.read().strip()
    held = f"Address already in use (held by pid {os.getpid()} ({me}))"
    assert r.returncode == 1 and held in r.stderr, r.stderr
    log = open(os.path.join(tmp_path, "logs", "Alpha.log")).read()
    assert "start-failed" in log and held in log


def test_missing_places_file(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])},
                       places={"local_file": "nowhere.geojson"})
    r = run("Alpha", "-c", cfg)
    assert r.returncode == 1 and "nowhere.geojson: cannot open" in r.stderr


def test_config_option_needs_a_file():
    r = run("Alpha", "-c")
    assert r.returncode == 2 and r.stderr == "herd-server: -c needs a file name\n"


def test_two_names_is_a_usage_error(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])})
    r = run("Alpha", "Beta", "--config", cfg)
    assert r.returncode == 2 and "one server name only (got 'Alpha' and 'Beta')" in r.stderr


def test_unknown_name_lists_every_configured_one(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), ["Beta"]),
                                       "Beta": (free_port(), ["Alpha"])})
    r = run("Gamma", "-c", cfg)
    assert r.returncode == 1
    assert r.stderr.endswith("no server named 'Gamma'; the config has: Alpha, Beta\n"), r.stderr


def test_check_counts_the_places_and_refuses_a_missing_file(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])})
    r = run("-h")
    assert r.returncode == 0 and "Usage" in r.stdout
    r = run("--check", "Alpha", "-c", cfg)
    assert r.returncode == 0 and "places: local (82 places)" in r.stdout, r.stdout
    bad = write_config(str(tmp_path), {"Alpha": (free_port(), [])},
                       places={"local_file": "nowhere.geojson"})
    r = run("--check", "Alpha", "-c", bad)
    assert r.returncode == 1 and "nowhere.geojson: cannot open" in r.stderr
    assert not os.path.exists(os.path.join(tmp_path, "logs", "Alpha.log")), "--check starts nothing"


def test_log_folder_that_cannot_be_made(tmp_path):
    """The log folder is a file: the server says so and exits 1."""
    (tmp_path / "afile").write_text("")
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])},
                       logging={"dir": "afile/logs"})
    r = run("Alpha", "-c", cfg)
    assert r.returncode == 1 and "afile/logs" in r.stderr, r.stderr


def test_address_that_is_not_ours(tmp_path):
    """A configured host no interface has: bind fails, the server says so."""
    port = free_port()
    cfg = tmp_path / "config.yml"
    cfg.write_text(f"servers:\n  Alpha: {{ host: 192.0.2.1, port: {port} }}\n"
                   f"places: {{ local_file: {PLACES} }}\n")
    r = run("Alpha", "-c", str(cfg))
    assert r.returncode == 1 and "192.0.2.1" in r.stderr and "assign" in r.stderr, r.stderr


def test_supervisor_help_and_bad_options(tmp_path):
    for h in ("-h", "--help"):
        r = sup(h)
        assert r.returncode == 0 and r.stdout.startswith("Usage: herd-supervisor")
    for bad in (["--bogus"], ["-c"], ["--wait"], ["--config"]):
        r = sup(*bad)
        assert r.returncode == 2 and f"unknown or incomplete option '{bad[0]}'" in r.stderr
    r = sup("-c", str(tmp_path / "missing.yml"), "--status")
    assert r.returncode == 1 and "missing.yml" in r.stderr


def test_supervisor_status_without_a_herd(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])})
    r = sup("--config", cfg, "--status")
    assert r.returncode == 3 and f"no herd is running ({tmp_path}/servers.pid: missing)" in r.stdout
    (tmp_path / "servers.pid").write_text("supervisor 999999\nAlpha 999998\n")
    r = sup("-c", cfg, "--status", "--wait", "1")
    assert r.returncode == 3 and "servers.pid: stale" in r.stdout


def test_supervisor_without_a_server_program(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])})
    env = dict(os.environ, HERD_BIN_DIR=str(tmp_path / "nowhere"))
    r = sup("-c", cfg, env=env)
    assert r.returncode == 1 and "nowhere/herd-server is missing or not executable" in r.stderr
