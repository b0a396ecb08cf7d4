"""The places cache (docs/PROTOCOL.md, "Places"): the servers of a host
share one prepared copy of the local places file, <state_dir>/places.cache,
built once under <state_dir>/places.lock and mapped by the others; a
changed places file makes it stale, a damaged one is logged, ignored and
rebuilt; a reload waits for the lock at most 10 s, its heartbeat going.
Whatever the cache did, every
WHATSAT answer is byte for byte the answer of the file read into memory."""
import fcntl
import os
import re
import signal
import stat
import struct
import subprocess
import threading

from harness import Herd, Server, exchange, program, wait_for, write_config
from test_places_local import generate, location, queries, scan

CACHE = "places.cache"


def results(log):
    """The places-cache results a log holds, in order."""
    return re.findall(r" places-cache result=(\w+)", log)


def bodies(port, qs, tag):
    """The JSON of the WHATSAT answer to each query (an IAMAT first, client
    tag+k), without its first line (the AT line names the server)."""
    out = []
    for k, (lat, lng, radius, bound) in enumerate(qs):
        client = b"%s%d" % (tag, k)
        at = exchange(port, b"IAMAT %s %s 1700000000.5\n" % (client, location(lat, lng)))
        assert at.startswith(b"AT "), at
        reply = exchange(port, b"WHATSAT %s %s %d\n" % (client, radius, bound))
        first, body = reply.split(b"\n", 1)
        assert first.startswith(b"AT ") and body.endswith(b"}\n\n"), reply[-60:]
        out.append(body)
    return out


def private_server(tmp_path, path):
    """A server that cannot have a cache (a folder is in its place): its
    places are read into memory, as before the cache."""
    state = tmp_path / "ref" / "state"
    os.makedirs(state / CACHE)
    os.chmod(state, 0o700)
    s = Server(tmp_path / "ref", places={"local_file": path}).start()
    log = s.read_log(wait_for="cannot write")
    assert "places held privately" in log and "result=used" not in log, log
    return s


def test_a_herd_started_at_once_builds_the_cache_once_and_answers_as_without_it(tmp_path):
    path, places = generate(tmp_path, 20000)
    qs = queries(places)
    ref = private_server(tmp_path, path)
    try:
        want = bodies(ref.port, qs, b"r")
    finally:
        ref.stop()
    assert sum(b"\"place_id\"" in b for b in want) > 40
    os.makedirs(tmp_path / "h")
    h = Herd(tmp_path / "h", places={"local_file": path})
    try:
        h.start()
        assert wait_for(lambda: all(results(h.log(n)) for n in h.procs), 5)
        got = {n: results(h.log(n)) for n in h.procs}
        assert sorted(got.values()) == [["built"]] + [["used"]] * 4, got
        for n in h.procs:
            assert bodies(h.ports[n], qs, n.encode()) == want, n
        assert sorted(f for f in os.listdir(tmp_path / "h" / "state") if "places" in f) == \
            [CACHE, "places.lock"]
        # read-only: a user's write in place (SIGBUS for every server that
        # maps it) fails
        assert stat.S_IMODE(os.stat(tmp_path / "h" / "state" / CACHE).st_mode) == 0o400
    finally:
        h.stop()


def test_a_changed_places_file_makes_the_cache_stale(tmp_path):
    """Touched: the next start rebuilds it (the same answers); rewritten
    with other places and reloaded: rebuilt, the new places answer."""
    path, places = generate(tmp_path, 5000)
    qs = queries(places)[:60]
    s = Server(tmp_path, places={"local_file": path}).start()
    try:
        first = bodies(s.port, qs, b"a")
        s.stop()
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        s.start()
        log = s.read_log(wait_for="the places file changed")
        assert results(log) == ["built", "built"], log
        assert 'reason="stale: the places file changed"' in log, log
        assert bodies(s.port, qs, b"b") == first

        _, places = generate(tmp_path, 5000, seed=8, path=path)
        os.kill(s.proc.pid, signal.SIGUSR1)
        assert s.read_log(wait_for="(places file read again)", timeout=10)
        assert results(s.read_log()) == ["built"] * 3
        assert_answers_as_a_scan(s.port, qs, places)
    finally:
        s.stop()


def assert_answers_as_a_scan(port, qs, places):
    """Each query's places, asked of the server at port, are those a scan
    of 'places' finds, in its order."""
    for k, (lat, lng, radius, bound) in enumerate(qs):
        body = bodies(port, [(lat, lng, radius, bound)], b"c%d" % k)[0]
        qlat, qlng = float(b"%.6f" % lat), float(b"%.6f" % lng)
        got = re.findall(rb'"place_id" : "([^"]+)"', body)
        assert [g.decode() for g in got] == scan(places, qlat, qlng, float(radius), bound)


def rewrite_keeping_size_and_mtime(path):
    """Every place_id changed in place to one of the same length, then the
    old mtime put back (as cp -p or touch -r leave it): the same inode, size
    and mtime, other places."""
    st = os.stat(path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "r+b") as f:
        f.write(data.replace(b'"sample-', b'"SAMPLE-'))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = os.stat(path)
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)


def test_a_file_rewritten_with_its_size_and_mtime_kept_makes_the_cache_stale(tmp_path):
    """Its ctime is new: the next start rebuilds the cache and answers the
    new places, never the old ones from the cache."""
    path, places = generate(tmp_path, 2000)
    qs = queries(places)[:30]
    s = Server(tmp_path, places={"local_file": path}).start()
    try:
        assert b'"place_id" : "sample-' in b"".join(bodies(s.port, qs, b"a"))
        s.stop()
        rewrite_keeping_size_and_mtime(path)
        s.start()
        log = s.read_log(wait_for="the places file changed")
        assert results(log) == ["built", "built"], log
        got = b"".join(bodies(s.port, qs, b"b"))
        assert b'"place_id" : "SAMPLE-' in got and b'"sample-' not in got
    finally:
        s.stop()


def test_a_reload_reads_a_file_rewritten_with_its_size_and_mtime_kept(tmp_path):
    """The reload's own check (is it the file already read?) looks at the
    inode and ctime too: the new places answer at once."""
    path, places = generate(tmp_path, 2000)
    qs = queries(places)[:30]
    s = Server(tmp_path, places={"local_file": path}).start()
    try:
        assert b'"place_id" : "sample-' in b"".join(bodies(s.port, qs, b"a"))
        rewrite_keeping_size_and_mtime(path)
        os.kill(s.proc.pid, signal.SIGUSR1)
        assert s.read_log(wait_for="(places file read again)", timeout=10)
        assert results(s.read_log()) == ["built", "built"]
        got = b"".join(bodies(s.port, qs, b"b"))
        assert b'"place_id" : "SAMPLE-' in got and b'"sample-' not in got
    finally:
        s.stop()


def damage(cache, how):
    """Change the cache file the way 'how' says (the header's fields:
    server/placescache.h, places_cache_head)."""
    with open(cache, "rb") as f:
        data = bytearray(f.read())
    n, _text_len, v_off, node_off = struct.unpack_from("<QQQQ", data, 88)
    if how == "truncated":
        del data[len(data) // 2:]
    elif how == "magic":
        data[0] ^= 0x20
    elif how == "version":
        data[8] += 1
    elif how == "node id":          # the high byte of the middle node's id
        data[node_off + 32 * (n // 2) + 24 + 3] ^= 0x80
    elif how == "text offset":      # a place's json_off
        data[v_off + 56 * 5 + 40 + 4] ^= 0x01
    os.unlink(cache)                # read-only: a new file in its place
    with open(cache, "wb") as f:
        f.write(data)


def test_a_damaged_cache_is_logged_ignored_and_rebuilt(tmp_path):
    path, places = generate(tmp_path, 5000)
    qs = queries(places)[:40]
    s = Server(tmp_path, places={"local_file": path}).start()
    cache = os.path.join(s.dir, "state", CACHE)
    leftover = os.path.join(s.dir, "state", CACHE + ".tmp.424242")
    try:
        want = bodies(s.port, qs, b"a")
        cases = [("truncated", "truncated"), ("magic", "magic"), ("version", "version"),
                 ("node id", "checksum mismatch"), ("text offset", "checksum mismatch")]
        for how, reason in cases:
            s.stop()
            damage(cache, how)
            with open(leftover, "w") as f:
                f.write("a writer that died")
            mark = len(s.read_log())
            s.start()
            assert wait_for(lambda: " listening " in s.read_log()[mark:], 5)
            log = s.read_log()[mark:]
            assert re.search(r"WARN places-cache result=ignored cache=\S+/state/places\.cache "
                             r'reason="[^"]*%s' % reason, log), (how, log)
            assert "result=built" in log and "result=used" not in log, (how, log)
            assert f"places-cache-leftover-removed file={leftover}" in log, log
            assert not os.path.exists(leftover)
            assert bodies(s.port, qs, how.replace(" ", "-").encode()) == want, how
    finally:
        s.stop()


def test_a_herd_reloaded_at_once_maps_the_one_cache_built(tmp_path):
    """The places file changed and every server reloaded at the same time:
    one builds the cache, the others wait for it (their heartbeat going)
    and map it -- none reads the file into a copy of its own."""
    path, places = generate(tmp_path, 100000)
    os.makedirs(tmp_path / "h")
    h = Herd(tmp_path / "h", places={"local_file": path})
    try:
        h.start()
        assert wait_for(lambda: all(results(h.log(n)) for n in h.procs), 5)
        _, places = generate(tmp_path, 100000, seed=9, path=path)
        for p in h.procs.values():
            os.kill(p.pid, signal.SIGUSR1)
        assert wait_for(lambda: all("(places file read again)" in h.log(n) for n in h.procs), 30)
        got = sorted(results(h.log(n))[1:] for n in h.procs)
        assert got == [["built"]] + [["used"]] * 4, {n: h.log(n) for n in h.procs}
        lat, lng = places[7]["lat"], places[7]["lng"]
        for n in h.procs:
            body = bodies(h.ports[n], [(lat, lng, b"50", 20)], n.encode())[0]
            qlat, qlng = float(b"%.6f" % lat), float(b"%.6f" % lng)
            got = re.findall(rb'"place_id" : "([^"]+)"', body)
            assert [g.decode() for g in got] == scan(places, qlat, qlng, 50.0, 20), n
    finally:
        h.stop()


def test_a_reload_waits_for_a_held_lock_boundedly_with_its_heartbeat_going(sup_herd,
                                                                           tmp_path):
    """The lock held for good (a holder that hangs): the reload waits 10 s
    for it, beating (hang_timeout_s 3: the supervisor does not take it for
    hung), then reads the new file into memory; the new places answer."""
    path, places = generate(tmp_path, 2000)
    h = sup_herd({"Alpha": []})
    write_config(h.dir, {"Alpha": (h.ports["Alpha"], [])}, places={"local_file": path},
                 extra="supervisor:\n  hang_timeout_s: 3\n  stop_timeout_s: 5\n")
    h.start()
    pid = h.pids()["Alpha"]
    lock = open(h.path("state", "places.lock"), "rb")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _, places = generate(tmp_path, 2000, seed=9, path=path)
        qs = queries(places)[:20]
        os.kill(pid, signal.SIGUSR1)
        assert h.wait_log("Alpha", "(places file read again)", timeout=30)
        log = h.log("Alpha")
        m = re.search(r'places-cache result=ignored reason="\S+/places\.lock held by another '
                      r'server \(waited (\d+) ms\); places read privately', log)
        assert m and 10000 <= int(m.group(1)) < 12000, log
        assert "child-hung" not in h.log("supervisor") and h.pids()["Alpha"] == pid
        assert_answers_as_a_scan(h.ports["Alpha"], qs, places)
    finally:
        lock.close()


def test_check_writes_no_cache(tmp_path):
    path, _ = generate(tmp_path, 2000)
    s = Server(tmp_path, places={"local_file": path})
    r = subprocess.run([program("herd-server"), "Bailey", "-c", s.config, "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "(2000 places)" in r.stdout, r
    assert not os.path.exists(os.path.join(s.dir, "state", CACHE))


def test_a_lock_file_that_cannot_be_had_is_a_warning(tmp_path):
    """A directory or a symlink in the lock's place keeps the cache off for
    good (the places are read privately, the same answers): a WARN, unlike
    a lock another server holds for a while."""
    path, places = generate(tmp_path, 2000)
    qs = queries(places)[:20]
    for how in ("directory", "symlink"):
        state = os.path.join(tmp_path, how, "state")
        os.makedirs(state, mode=0o700)
        s = Server(tmp_path / how, places={"local_file": path})
        lock = os.path.join(state, "places.lock")
        os.mkdir(lock) if how == "directory" else os.symlink(path, lock)
        try:
            s.start()
            log = s.read_log(wait_for=" listening ")
            assert re.search(r'WARN places-cache result=ignored reason="cannot open '
                             r'\S+/places\.lock: ', log), (how, log)
            assert b'"place_id" : "sample-' in b"".join(bodies(s.port, qs, how[:3].encode()))
            assert not os.path.exists(os.path.join(state, CACHE))
        finally:
            s.stop()


def waits_for_lock(pid, lock):
    """The server has the lock file open and sleeps: in the lock's wait
    (nothing between its open and its first try blocks)."""
    fds = "/proc/%d/fd" % pid
    try:
        held = any(os.readlink(os.path.join(fds, fd)) == lock for fd in os.listdir(fds))
        with open("/proc/%d/stat" % pid) as f:
            return held and f.read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return False


def test_after_a_lock_holder_that_made_no_cache_the_others_read_at_once(tmp_path):
    """A folder in the cache's place: no cache can be written.  The servers
    that waited for the lock do not each read the file and fail to write it
    in turn, one after the other (the last of a herd would listen after five
    loads): they read it privately at once, and say so."""
    path, places = generate(tmp_path, 2000)
    qs = queries(places)[:5]
    state = tmp_path / "h" / "state"
    os.makedirs(state / CACHE)
    os.chmod(state, 0o700)
    lock_path = str(state / "places.lock")
    h = Herd(tmp_path / "h", places={"local_file": path})
    lock = open(lock_path, "ab")
    fcntl.flock(lock, fcntl.LOCK_EX)            # a server that will make none
    starting = threading.Thread(target=h.start)
    try:
        starting.start()
        assert wait_for(lambda: len(h.procs) == 5 and
                        all(waits_for_lock(p.pid, lock_path) for p in list(h.procs.values())), 10)
        fcntl.flock(lock, fcntl.LOCK_UN)
        starting.join()
        assert wait_for(lambda: all(results(h.log(n)) for n in h.procs), 5)
        for n in h.procs:
            log = h.log(n)
            assert "cannot write" not in log, (n, log)
            assert re.search(r'INFO places-cache result=ignored cache=\S+/places\.cache '
                             r'reason="[^"]*, after the server that held the lock; places '
                             r'read privately"', log), (n, log)
            assert b'"place_id" : "sample-' in b"".join(bodies(h.ports[n], qs, n.encode()))
    finally:
        lock.close()
        starting.join()
        h.stop()
