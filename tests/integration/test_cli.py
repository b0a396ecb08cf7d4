"""herd-server's command line: help, unknown names, bad configs, busy ports."""
import os
import socket
import subprocess

from conftest import free_port, program, write_config


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


def test_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(str(tmp_path), {"Alpha": (port, [])})
        r = run("Alpha", "-c", cfg)
    assert r.returncode == 1 and "Address already in use" in r.stderr
    log = open(os.path.join(tmp_path, "logs", "Alpha.log")).read()
    assert "start-failed" in log


def test_missing_places_file(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])},
                       places={"local_file": "nowhere.geojson"})
    r = run("Alpha", "-c", cfg)
    assert r.returncode == 1 and "nowhere.geojson: cannot open" in r.stderr
