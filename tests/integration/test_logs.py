"""logs/NAME.log: what was received and sent, escaped, batched, reopened on HUP."""
import os
import re
import signal
import time

from conftest import exchange

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) \S+")


def test_log_holds_input_output_and_connections(server):
    reply = exchange(server.port, b"IAMAT logme +1.0+1.0 1\nHELLO there\n")
    at_line = reply.split(b"\n")[0].decode()
    log = server.read_log(wait_for="HELLO there\"\n", timeout=3)
    m = re.search(r'recv id=(\d+) "IAMAT logme \+1\.0\+1\.0 1"', log)
    assert m, log
    cid = m.group(1)
    assert f'send id={cid} "{at_line}"' in log
    assert f'send id={cid} "? HELLO there"' in log
    assert f"conn-open id={cid} from=127.0.0.1:" in log
    assert re.search(f"conn-close id={cid} from=127.0.0.1:\\d+ reason=client closed", log)
    for line in log.splitlines():
        assert STAMP.match(line), line


def test_log_escapes_control_bytes(server):
    exchange(server.port, b"EVIL\x1b[31m\x00\x7f\"q\" \\ x\r\n")
    log_bytes = open(server.log_path, "rb").read() if os.path.exists(server.log_path) else b""
    deadline = time.time() + 3
    while b"EVIL" not in log_bytes and time.time() < deadline:
        time.sleep(0.05)
        log_bytes = open(server.log_path, "rb").read()
    assert b'"EVIL\\x1b[31m\\x00\\x7f\\x22q\\x22 \\x5c x"' in log_bytes
    for line in log_bytes.split(b"\n"):
        assert not any(b < 0x20 for b in line), line


def test_log_reaches_file_within_a_second(server):
    exchange(server.port, b"PROMPT\n")
    start = time.time()
    log = server.read_log(wait_for="PROMPT", timeout=2)
    assert "PROMPT" in log and time.time() - start < 1.5


def test_log_reopened_on_sighup(server):
    exchange(server.port, b"BEFORE\n")
    server.read_log(wait_for="BEFORE")
    rotated = server.log_path + ".1"
    os.rename(server.log_path, rotated)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 3
    while not os.path.exists(server.log_path) and time.time() < deadline:
        exchange(server.port, b"WAIT\n")
        time.sleep(0.05)
    exchange(server.port, b"AFTER\n")
    log = server.read_log(wait_for="AFTER")
    assert "AFTER" in log and "BEFORE" not in log
    assert "BEFORE" in open(rotated).read()


def test_log_summarises_whatsat_json(server):
    exchange(server.port, b"IAMAT sum +34.068930-118.445127 1\n")
    reply = exchange(server.port, b"WHATSAT sum 50 3\n")
    at_line, rest = reply.split(b"\n", 1)
    json_bytes = len(rest) - 2
    log = server.read_log(wait_for="json_bytes=")
    want = f'"{at_line.decode()}" json_bytes={json_bytes} results=3 status=OK'
    assert want in log, log[-500:]


def test_log_lines_off_keeps_connections_but_no_data(make_server):
    """logging.log_lines: false -- connections and events are still logged,
    what clients send and receive is not; the replies are unchanged."""
    s = make_server(logging={"log_lines": False})
    at = exchange(s.port, b"IAMAT quiet +34.068930-118.445127 1\n")
    assert at.startswith(b"AT Bailey ") and at.endswith(b" quiet +34.068930-118.445127 1\n")
    reply = exchange(s.port, b"WHATSAT quiet 1 2\nWHATSAT nobody 1 2\nIAMAT bad\nHELLO\n")
    assert reply.startswith(at + b"{\n")
    assert reply.endswith(b"\n\n? WHATSAT nobody 1 2\n? IAMAT bad\n? HELLO\n")
    s.stop()
    log = open(s.log_path).read()
    assert "conn-open" in log and "reason=client closed" in log
    for word in ("recv ", "send ", "invalid ", "quiet", "nobody", "HELLO"):
        assert word not in log, word
