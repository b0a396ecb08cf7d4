"""The benchmark program herd-benchmark (docs/PROTOCOL.md, "Benchmark"): its
counts and JSON against fake line servers that answer well or badly, the
reference and open-loop modes, and short runs against a real herd.
"""
import json
import subprocess

import pytest

from harness import FakeLineServer, program


def bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    r = subprocess.run([program("herd-benchmark"), "--quiet", "--json", str(out), *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout, json.loads(out.read_text())


def test_long_reference_line_is_sent_whole(tmp_path):
    fake = FakeLineServer("ok")
    try:
        ref = "PING " + "r" * 3000
        _, js = bench(tmp_path, "--target", f"127.0.0.1:{fake.port}", "--reference", ref,
                      "--requests", "20", "--concurrency", "2", "--warmup", "0")
        assert js["errors"] == 0 and js["requests"] >= 20, js
        assert fake.lines and all(l == ref.encode() for l in fake.lines), \
            [l[:60] + b"..." + l[-20:] for l in fake.lines[:3]]
    finally:
        fake.close()


def check_json(js, n, conc):
    for key in ("requests", "errors", "rps", "latency_us", "errors_by_kind", "histogram"):
        assert key in js
    for key in ("min", "p50", "p90", "p99", "p999", "max"):
        assert key in js["latency_us"]
    total = js["requests"] + js["errors"]
    assert n <= total <= n + conc
    assert sum(h["count"] for h in js["histogram"]) == js["requests"]
    assert sum(js["errors_by_kind"].values()) == js["errors"]


def test_counts_a_good_server(tmp_path, fake_line):
    s = fake_line("good")
    out, js = bench(tmp_path, "--target", f"127.0.0.1:{s.port}", "--requests", "2000",
                    "--concurrency", "4", "--warmup", "0", "--mix", "iamat=50,whatsat=50")
    check_json(js, 2000, 4)
    assert js["errors"] == 0 and js["requests"] >= 2000
    assert js["latency_us"]["min"] <= js["latency_us"]["p50"] <= js["latency_us"]["max"]
    assert "histogram" in out and "rps" in out


@pytest.mark.parametrize("behaviour,kind", [("question", "question_reply"),
                                            ("wrong-client", "wrong_client"),
                                            ("bad-json", "bad_json")])
def test_wrong_replies_are_errors(tmp_path, fake_line, behaviour, kind):
    s = fake_line(behaviour)
    mix = "iamat=100" if behaviour != "bad-json" else "iamat=10,whatsat=90"
    _, js = bench(tmp_path, "--target", f"127.0.0.1:{s.port}", "--requests", "500",
                  "--concurrency", "2", "--warmup", "0", "--mix", mix)
    check_json(js, 500, 2)
    assert js["errors_by_kind"][kind] > 0
    if behaviour != "bad-json":
        assert js["requests"] == 0 and js["errors_by_kind"][kind] == js["errors"]


def test_every_bad_json_is_caught_after_good_ones(tmp_path, fake_line):
    # The client remembers the last good JSON per client and skips parsing a
    # reply equal to it; a bad reply between good ones must still count.
    s = fake_line("flip-json")
    _, js = bench(tmp_path, "--target", f"127.0.0.1:{s.port}", "--requests", "2000",
                  "--concurrency", "2", "--warmup", "0", "--mix", "iamat=10,whatsat=90",
                  "--clients", "3")
    check_json(js, 2000, 2)
    assert s.bad_json_sent > 500
    assert s.bad_json_sent - 2 <= js["errors_by_kind"]["bad_json"] <= s.bad_json_sent
    assert js["errors"] == js["errors_by_kind"]["bad_json"]


def test_reference_mode_counts_reply_lines(tmp_path, fake_line):
    s = fake_line("good")
    _, js = bench(tmp_path, "--target", f"127.0.0.1:{s.port}", "--reference", "PING",
                  "--requests", "1000", "--concurrency", "3", "--warmup", "0")
    check_json(js, 1000, 3)
    assert js["errors"] == 0 and js["mode"] == "reference"


def test_open_loop_mode(tmp_path, fake_line):
    s = fake_line("good")
    _, js = bench(tmp_path, "--target", f"127.0.0.1:{s.port}", "--rate", "500",
                  "--duration", "1", "--concurrency", "4", "--warmup", "0", "--mix", "iamat=100")
    assert js["mode"] == "open" and js["errors"] == 0
    assert 350 <= js["requests"] <= 520


@pytest.mark.parametrize("conc", [1, 50])
def test_real_herd_short_run_has_no_errors(tmp_path, herd, conc):
    herd.start().wait_links()
    out, js = bench(tmp_path, "-c", herd.config, "--concurrency", str(conc), "--duration", "1",
                    "--warmup", "0", "--mix", "iamat=70,whatsat=30", "--converge")
    assert js["errors"] == 0, out
    assert js["requests"] > 0 and js["servers"] == 5
    assert js["converged"] is True, out


def test_converge_checks_every_server_when_one_takes_the_load(tmp_path, herd):
    # all writes into Bona, as all of redis's go to its master: the run
    # counts as converged only once the other four hold them too
    herd.start().wait_links()
    out, js = bench(tmp_path, "-c", herd.config, "--servers", "Bona", "--concurrency", "4",
                    "--duration", "1", "--warmup", "0", "--mix", "iamat=100", "--converge")
    assert js["errors"] == 0 and js["servers"] == 1 and js["converged"] is True, out
    assert "all 5 servers hold the newest update" in out, out
    newest = {}
    for name in herd.ports:
        for k in range(20):
            at = herd.stored(name, b"bench-%d" % k)
            if at:
                newest.setdefault(k, set()).add(at.split(b" ")[-1])
    assert newest and all(len(times) == 1 for times in newest.values()), newest


def test_real_herd_propagation(tmp_path, herd):
    herd.start().wait_links()
    out, js = bench(tmp_path, "-c", herd.config, "--propagation", "20")
    assert js["failures"] == 0 and js["updates"] == 20 and js["from"] == "Bailey"
    for name in ("Bona", "Campbell", "Clark", "Jaquez", "all"):
        assert name in out
        row = js["servers_us"][name]
        assert 0 < row["min"] <= row["p50"] <= row["p99"] <= row["max"] < 5e6
    samples = js["all_sorted_us"]
    assert len(samples) == 20 and samples == sorted(samples)
    assert samples[-1] == js["servers_us"]["all"]["max"]


def test_reference_key_placeholder_names_a_key_per_request(tmp_path):
    # --reference 'SET k{key} v' (a replicated redis as the yardstick): each
    # request gets its own key, CONN-N, the connection's index and its count.
    fake = FakeLineServer("ok")
    try:
        # for a second, not a count: the fake's thread for the first
        # connection could otherwise serve them all before the others start
        _, js = bench(tmp_path, "--target", f"127.0.0.1:{fake.port}", "--reference",
                      "SET k{key} v{key}", "--duration", "1", "--concurrency", "3",
                      "--warmup", "0")
        assert js["errors"] == 0 and js["requests"] >= 300, js
        keys = []
        for line in fake.lines:
            verb, key, val = line.split(b" ")
            assert verb == b"SET" and key[:1] == b"k" and val == b"v" + key[1:], line
            keys.append(key[1:])
        assert len(keys) == len(set(keys)) >= 300
        per_conn = {}
        for k in keys:
            conn, n = k.split(b"-")
            per_conn.setdefault(int(conn), []).append(int(n))
        assert sorted(per_conn) == [0, 1, 2]
        for counts in per_conn.values():
            assert counts == list(range(len(counts))), counts[:10]
    finally:
        fake.close()
