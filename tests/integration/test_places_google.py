"""Places (docs/PROTOCOL.md, "Places", "Hosts"): the Google Places providers
against a fake of both APIs (requests, mapping, errors, cache, slow or
gone upstreams, the key never shown), and neighbours' host names resolved
off the server's loop by the resolver helper.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse

import pytest

from harness import (LOC, PLACES_KEY, config_text, connect, exchange, FakePlaces, free_port,
                     Namespaces, netns_available, places_opts, proc_kib, program, read_log,
                     recv_until_eof, start_server, stop_server, wait_for, wait_log, with_secret)


class ErrorPlaces(FakePlaces):
    """Answers every request with an error whose text we choose."""

    def __init__(self):
        super().__init__()
        self.message = ""

    def answer(self, method, path):
        if path == "/maps/api/place/nearbysearch/json":
            return 200, json.dumps({"error_message": self.message, "html_attributions": [],
                                    "results": [], "status": "REQUEST_DENIED"}).encode()
        return 403, json.dumps({"error": {"code": 403, "message": self.message,
                                          "status": "PERMISSION_DENIED"}}).encode()


@pytest.fixture
def errfake():
    f = ErrorPlaces()
    yield f
    f.close()


def error_server(make_server, fake, provider):
    s = make_server(places=places_opts(fake, provider))
    exchange(s.port, b"IAMAT kiwi %s %.9f\n" % (LOC, time.time()))
    return s


def error_message(port, client):
    reply = exchange(port, b"WHATSAT %s 10 2\n" % client)
    first, body = reply.split(b"\n", 1)
    assert first.startswith(b"AT Bailey "), reply
    return json.loads(body)["error_message"]


@pytest.mark.parametrize("provider", ["google", "google-legacy"])
def test_key_across_the_error_text_cut_never_shows(make_server, errfake, provider):
    s = error_server(make_server, errfake, provider)
    # the reply shows 511 bytes of "upstream answered HTTP 403: " + message
    # (or the legacy message alone); put the key across that cut
    prefix = len("upstream answered HTTP 403: ") if provider == "google" else 0
    errfake.message = "x" * (511 - 9 - prefix) + PLACES_KEY + " and more"
    msg = error_message(s.port, b"kiwi")
    assert len(msg.encode()) <= 511 and msg.endswith("x" + "*" * 9), msg
    for k in range(4, len(PLACES_KEY) + 1):
        assert PLACES_KEY[:k] not in msg, f"{PLACES_KEY[:k]!r} leaked: {msg[-40:]!r}"


@pytest.mark.parametrize("provider", ["google", "google-legacy"])
def test_url_escaped_key_never_shows(make_server, errfake, provider):
    s = error_server(make_server, errfake, provider)
    # the URL-escaped key, as in a legacy request's URL
    escaped = urllib.parse.quote(PLACES_KEY, safe="")
    assert escaped != PLACES_KEY
    errfake.message = f"denied: GET /json?location=1,2&key={escaped}&radius=10"
    msg = error_message(s.port, b"kiwi")
    assert escaped not in msg and "Sekr3t" not in msg, msg
    assert msg.endswith("&key=" + "*" * len(escaped) + "&radius=10"), msg


GOOGLE_KEY = "test-key-Sekr3t/+="


def google_server(make_server, fake, provider="google", **places):
    opts = {"provider": provider, "base_url": fake.base, "api_key": f'"{GOOGLE_KEY}"',
            "timeout_ms": 1000, "cache_ttl_s": 60, **places}
    s = make_server(places=opts)
    exchange(s.port, b"IAMAT kiwi " + LOC + b" %.9f\n" % time.time())
    return s


def split(reply):
    first, rest = reply.split(b"\n", 1)
    assert rest.endswith(b"}\n\n") and b"\n\n" not in rest[:-2], reply
    return first, rest[:-2].decode()


MASK = ("places.id,places.displayName,places.shortFormattedAddress,places.types,"
        "places.location,places.rating,places.userRatingCount,places.businessStatus,"
        "places.priceLevel,places.currentOpeningHours.openNow")


def assert_key_never_written(s, provider):
    """After a stop (every line flushed), the log holds the WHATSAT and the
    upstream answer, so it is no empty log that passes; neither it nor
    stderr holds the key, plain or URL-encoded."""
    s.stop()
    log = s.read_log()
    assert 'recv id=' in log and '"WHATSAT kiwi ' in log, log[-2000:]
    assert f"upstream provider={provider} http=200" in log, log[-2000:]
    for text in (log, s.read_stderr()):
        assert GOOGLE_KEY not in text and "Sekr3t" not in text


def test_new_api_request_and_mapping(make_server, fake):
    s = google_server(make_server, fake)
    reply = exchange(s.port, b"WHATSAT kiwi 10 2\n")
    first, body = split(reply)
    assert first.startswith(b"AT Bailey ") and first.endswith(b" kiwi " + LOC + b" " + first.split()[-1])
    assert len(fake.requests) == 1
    r = fake.requests[0]
    assert r["method"] == "POST" and r["path"] == "/v1/places:searchNearby"
    assert r["headers"]["x-goog-api-key"] == GOOGLE_KEY
    assert r["headers"]["x-goog-fieldmask"] == MASK
    assert r["headers"]["content-type"] == "application/json"
    req = json.loads(r["body"])
    assert req["maxResultCount"] == 2
    circle = req["locationRestriction"]["circle"]
    assert circle["radius"] == 10000
    assert abs(circle["center"]["latitude"] - 34.06893) < 1e-7
    assert abs(circle["center"]["longitude"] + 118.445127) < 1e-7
    assert body == """{
   "html_attributions" : [],
   "results" : [
      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.0729157,
               "lng" : -118.4421933
            }
         },
         "name" : "Royce Hall",
         "opening_hours" : {
            "open_now" : true
         },
         "place_id" : "ChIJ-royce",
         "rating" : 4.8,
         "types" : [
            "performing_arts_theater",
            "point_of_interest",
            "establishment"
         ],
         "user_ratings_total" : 612,
         "vicinity" : "10745 Dickson Ct, Los Angeles"
      },
      {
         "business_status" : "OPERATIONAL",
         "geometry" : {
            "location" : {
               "lat" : 34.0630126,
               "lng" : -118.4468657
            }
         },
         "name" : "Diddy Riese",
         "opening_hours" : {
            "open_now" : false
         },
         "place_id" : "ChIJ-diddy",
         "price_level" : 1,
         "rating" : 4.7,
         "types" : [
            "bakery",
            "food",
            "store"
         ],
         "user_ratings_total" : 7310,
         "vicinity" : "926 Broxton Ave, Los Angeles"
      }
   ],
   "status" : "OK"
}"""
    log = s.read_log(wait_for="upstream provider=google")
    assert "upstream provider=google http=200" in log and "status=OK results=2" in log
    assert_key_never_written(s, "google")


def test_new_api_zero_results(make_server, fake):
    fake.mode = "zero"
    s = google_server(make_server, fake)
    _, body = split(exchange(s.port, b"WHATSAT kiwi 1 5\n"))
    assert json.loads(body) == {"html_attributions": [], "results": [], "status": "ZERO_RESULTS"}


def test_legacy_request_and_trim(make_server, fake):
    s = google_server(make_server, fake, provider="google-legacy")
    _, body = split(exchange(s.port, b"WHATSAT kiwi 2.5 2\n"))
    r = fake.requests[0]
    assert r["method"] == "GET" and r["path"] == "/maps/api/place/nearbysearch/json"
    assert r["query"]["location"] == ["34.0689300,-118.4451270"]
    assert r["query"]["radius"] == ["2500"]
    assert r["query"]["key"] == [GOOGLE_KEY]
    assert "Sekr3t%2F%2B%3D" in r["raw_query"], "the key is URL-encoded"
    js = json.loads(body)
    assert js["status"] == "OK" and [p["name"] for p in js["results"]] == ["Royce Hall", "Diddy Riese"]
    assert_key_never_written(s, "google-legacy")


FAILURES = [
    ("http", {"http_status": 500}, {}, "UNKNOWN_ERROR", "HTTP 500"),
    ("http", {"http_status": 429}, {}, "OVER_QUERY_LIMIT", "HTTP 429"),
    ("google-error", {"error_status": "PERMISSION_DENIED"}, {}, "REQUEST_DENIED", "API key not valid"),
    ("google-error", {"error_status": "RESOURCE_EXHAUSTED"}, {}, "OVER_QUERY_LIMIT", "API key not valid"),
    ("google-error", {"error_status": "INVALID_ARGUMENT"}, {}, "INVALID_REQUEST", "API key not valid"),
    ("bad-json", {}, {}, "UNKNOWN_ERROR", "not valid JSON"),
    ("huge", {}, {"max_response_bytes": 65536}, "UNKNOWN_ERROR", "larger than 65536 bytes"),
    ("hang", {}, {"timeout_ms": 500}, "UNKNOWN_ERROR", "timed out after 500 ms"),
]


@pytest.mark.parametrize("mode,fake_opts,places,status,message", FAILURES)
def test_upstream_failures(make_server, fake, mode, fake_opts, places, status, message):
    fake.mode = mode
    for k, v in fake_opts.items():
        setattr(fake, k, v)
    s = google_server(make_server, fake, **places)
    slow = connect(s.port)
    slow.sendall(b"WHATSAT kiwi 10 5\n")
    # meanwhile the server keeps serving IAMAT
    t0 = time.time()
    assert exchange(s.port, b"IAMAT other +1.0+1.0 1\n").startswith(b"AT Bailey ")
    assert time.time() - t0 < 0.3
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = slow.recv(65536)
        assert chunk, data
        data += chunk
    slow.close()
    _, body = split(data)
    js = json.loads(body)
    assert js["results"] == [] and js["status"] == status
    assert message in js["error_message"] and "Sekr3t" not in js["error_message"]
    assert f"status={status}" in s.read_log(wait_for="upstream provider")


def test_refused_connection(make_server, fake):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    s = make_server(places={"provider": "google", "base_url": f"http://127.0.0.1:{port}",
                            "api_key": "k", "timeout_ms": 1000})
    exchange(s.port, b"IAMAT kiwi " + LOC + b" 1\n")
    _, body = split(exchange(s.port, b"WHATSAT kiwi 10 5\n"))
    js = json.loads(body)
    assert js["status"] == "UNKNOWN_ERROR" and "upstream request failed" in js["error_message"]


def test_slow_upstream_does_not_slow_iamat(make_server, fake):
    fake.delay = 0.2
    s = google_server(make_server, fake, timeout_ms=10000)   # 32 connections at most
    socks = []
    for i in range(200):                     # 200 distinct questions in flight
        c = connect(s.port)
        c.sendall(b"WHATSAT kiwi %.2f 5\n" % (1 + i * 0.01))
        socks.append(c)
    lat = []
    with connect(s.port) as c:
        end = time.time() + 1.0
        while time.time() < end:
            t0 = time.perf_counter()
            c.sendall(b"IAMAT fast +1.0+1.0 1\n")
            assert c.recv(4096).startswith(b"AT ")
            lat.append(time.perf_counter() - t0)
    for c in socks:
        data = b""
        c.settimeout(30)
        while not data.endswith(b"\n\n"):
            chunk = c.recv(65536)
            assert chunk
            data += chunk
        assert json.loads(split(data)[1])["status"] == "OK"
        c.close()
    lat.sort()
    p50, p99, mx = lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1]
    print(f"IAMAT latency with 200 WHATSATs in flight: n={len(lat)} p50={p50 * 1e3:.2f} ms "
          f"p99={p99 * 1e3:.2f} ms max={mx * 1e3:.2f} ms")
    assert mx < 0.2, "an IAMAT waited behind the upstream calls"
    assert len(fake.requests) == 200


def test_cache_and_shared_in_flight_requests(make_server, fake):
    fake.delay = 0.3
    s = google_server(make_server, fake)
    socks = [connect(s.port) for _ in range(50)]
    for c in socks:
        c.sendall(b"WHATSAT kiwi 7 3\n")
    replies = []
    for c in socks:
        data = b""
        while not data.endswith(b"\n\n"):
            data += c.recv(65536)
        replies.append(data)
        c.close()
    assert len(set(replies)) == 1
    assert len(fake.requests) == 1, "50 identical questions share one upstream call"
    again = exchange(s.port, b"WHATSAT kiwi 7 3\n")
    assert again == replies[0] and len(fake.requests) == 1, "cached within the TTL"
    exchange(s.port, b"WHATSAT kiwi 7 4\n")
    assert len(fake.requests) == 2, "another bound is another question"


def test_pipelined_commands_wait_for_the_upstream_reply(make_server, fake):
    fake.delay = 0.2
    s = google_server(make_server, fake)
    reply = exchange(s.port, b"WHATSAT kiwi 3 1\nIAMAT after +1.0+1.0 1\nFOO\n")
    first, rest = reply.split(b"\n", 1)
    body, tail = rest.split(b"}\n\n", 1)
    assert json.loads(body + b"}")["status"] == "OK"
    lines = tail.split(b"\n")
    assert lines[0].startswith(b"AT Bailey ") and lines[1] == b"? FOO"


def test_an_iamat_behind_a_waited_whatsat_is_forwarded_before_it_is_answered(tmp_path, fake):
    """Bona answers WHATSAT from Google; a client pipelines an IAMAT behind
    one that waits upstream.  When the answer comes, the IAMAT is served
    from what was held, and its reply still follows its forwarding
    (docs/PROTOCOL.md, "Durability"): traced on Bona, the TLS record that
    carries the update to Bailey is written before the send that carries
    the WHATSAT's answer and the AT reply.  (It was sent at once, before
    the round's link write: a SIGKILL in between lost an acknowledged
    update.)"""
    strace = shutil.which("strace")
    assert strace, "strace is needed (make deps installs it)"
    ports = {"Bailey": free_port(), "Bona": free_port()}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]), "Bona": (ports["Bona"], ["Bailey"])}
    quiet = "herd:\n  anti_entropy_ms: 600000\n"     # no SUM on the link meanwhile
    bailey = start_server(tmp_path, "Bailey", servers=servers, env=with_secret(), extra=quiet)
    bona = start_server(tmp_path, "Bona", servers=servers, env=with_secret(), extra=quiet,
                        places={"provider": "google", "base_url": fake.base,
                                "api_key": '"test-key"', "timeout_ms": 5000})
    tracer = None
    try:
        assert "link-up peer=Bailey" in bona.read_log(wait_for="link-up peer=Bailey")
        assert exchange(ports["Bona"], b"IAMAT kiwi %s %.9f\n" % (LOC, time.time())).startswith(b"AT ")
        wait_for(lambda: exchange(ports["Bailey"], b"WHATSAT kiwi 1 1\n").startswith(b"AT Bona "),
                 10, what="kiwi at Bailey")
        trace = str(tmp_path / "trace")
        tracer = subprocess.Popen([strace, "-p", str(bona.proc.pid), "-e", "trace=write,sendto",
                                   "-s", "16", "-o", trace], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        assert "attached" in tracer.stderr.readline()
        fake.delay = 0.3
        with connect(ports["Bona"]) as c:
            c.sendall(b"WHATSAT kiwi 10 5\nIAMAT piped +1.0+1.0 %.9f\n" % time.time())
            c.shutdown(socket.SHUT_WR)
            reply = recv_until_eof(c)
        assert b"\nAT Bona " in reply and b" piped " in reply, reply
        wait_for(lambda: exchange(ports["Bailey"], b"WHATSAT piped 1 1\n").startswith(b"AT Bona "),
                 10, what="the piped update at Bailey")
        tracer.send_signal(signal.SIGINT)            # detach
        tracer.wait(timeout=10)
        lines = open(trace).read().splitlines()
        link = [i for i, ln in enumerate(lines) if ln.startswith("write(") and '"\\27\\3\\3' in ln]
        reply_at = [i for i, ln in enumerate(lines) if ln.startswith("sendto(") and '"AT Bona ' in ln]
        assert link and reply_at, lines
        assert link[0] < reply_at[0], "the reply went before the update's forwarding:\n" + \
            "\n".join(lines)
    finally:
        if tracer and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        assert stop_server(bona) == 0
        assert stop_server(bailey) == 0


def test_client_gone_mid_request(make_server, fake):
    fake.delay = 0.3
    s = google_server(make_server, fake)
    for _ in range(10):
        c = connect(s.port)
        c.sendall(b"WHATSAT kiwi 9 5\n")
        c.close()
    time.sleep(0.6)
    assert exchange(s.port, b"IAMAT still +1.0+1.0 1\n").startswith(b"AT ")
    assert "upstream provider=google" in s.read_log(wait_for="upstream provider=google")


# (provider, HTTP status, body, status of the reply, words of its error_message)
ODD_ANSWERS = [
    ("google", 200, b"[1, 2]", "UNKNOWN_ERROR", "not valid JSON"),
    ("google", 502, b"[]", "UNKNOWN_ERROR", "upstream answered HTTP 502"),
    ("google", 401, b"{}", "REQUEST_DENIED", "HTTP 401: no message"),
    ("google", 400, b'{"error": {"message": "bad"}}', "INVALID_REQUEST", "HTTP 400: bad"),
    ("google", 403, b'{"error": {"status": "UNAUTHENTICATED"}}', "REQUEST_DENIED", "HTTP 403"),
    ("google", 200, b'{"error": {"status": "RESOURCE_EXHAUSTED", "message": "m"}}',
     "OVER_QUERY_LIMIT", "HTTP 200: m"),
    ("google", 200, b'{"places": {"id": "x"}}', "UNKNOWN_ERROR", "no places list"),
    ("google-legacy", 200, b'{"results": []}', "UNKNOWN_ERROR", "no status"),
    ("google-legacy", 200, b'{"status": 5}', "UNKNOWN_ERROR", "no status"),
    ("google-legacy", 200, b'{"status": "OVER_QUERY_LIMIT"}', "OVER_QUERY_LIMIT", "OVER_QUERY_LIMIT"),
    ("google-legacy", 200, b'{"status": "INVALID_REQUEST", "error_message": "why"}',
     "INVALID_REQUEST", "why"),
    ("google-legacy", 200, b'{"status": "NOT_A_STATUS"}', "UNKNOWN_ERROR", "NOT_A_STATUS"),
    ("google-legacy", 200, b'{"status": "OK", "results": {}}', "UNKNOWN_ERROR", "not a list"),
]


def whatsat_js(s, line=b"WHATSAT kiwi 10 5\n"):
    _, body = split(exchange(s.port, line))
    return json.loads(body)


@pytest.mark.parametrize("provider,code,body,status,message", ODD_ANSWERS)
def test_odd_upstream_answers(make_server, fake, provider, code, body, status, message):
    """Whatever upstream says, the client gets the legacy shape with the
    mapped status and an error_message; nothing of it is cached."""
    fake.mode = "raw"
    fake.raw = (code, body)
    s = google_server(make_server, fake, provider=provider)
    for _ in range(2):
        js = whatsat_js(s)
        assert js["results"] == [] and js["status"] == status, js
        assert message in js["error_message"], js
    assert len(fake.requests) == 2, "an error is never cached"


def test_sparse_places_get_defaults(make_server, fake):
    """Places (New) with fields missing or of the wrong type: each result
    still has every key a legacy result always has."""
    fake.mode = "raw"
    fake.raw = (200, json.dumps({"places": [
        {},
        {"id": 7, "displayName": {"text": 5}, "location": {"latitude": "n", "longitude": None},
         "types": "museum", "priceLevel": "PRICE_LEVEL_UNKNOWN", "rating": "high",
         "formattedAddress": "Long address", "currentOpeningHours": {"openNow": "yes"}},
        {"id": "p3", "priceLevel": "PRICE_LEVEL_VERY_EXPENSIVE", "shortFormattedAddress": 3,
         "formattedAddress": "Fallback"},
    ]}).encode())
    s = google_server(make_server, fake)
    js = whatsat_js(s, b"WHATSAT kiwi 10 20\n")
    assert js["status"] == "OK"
    empty = {"geometry": {"location": {"lat": 0, "lng": 0}}, "name": "", "place_id": "",
             "types": [], "vicinity": ""}
    assert js["results"][0] == empty
    assert js["results"][1] == dict(empty, vicinity="Long address")
    assert js["results"][2] == dict(empty, place_id="p3", price_level=4, vicinity="Fallback")


def test_legacy_answer_trimmed_and_attributions_kept(make_server, fake):
    fake.mode = "raw"
    fake.raw = (200, json.dumps({"status": "OK", "html_attributions": ["<a>x</a>"],
                                 "results": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}).encode())
    s = google_server(make_server, fake, provider="google-legacy")
    js = whatsat_js(s, b"WHATSAT kiwi 10 2\n")
    assert js == {"html_attributions": ["<a>x</a>"], "results": [{"name": "a"}, {"name": "b"}],
                  "status": "OK"}
    fake.raw = (200, json.dumps({"status": "ZERO_RESULTS", "html_attributions": "x"}).encode())
    js = whatsat_js(s, b"WHATSAT kiwi 11 2\n")
    assert js == {"html_attributions": [], "results": [], "status": "ZERO_RESULTS"}


def test_cache_expires_and_is_bounded(make_server, fake):
    """cache_ttl_s: an answer is reused within it and asked again after;
    cache_max_entries: the oldest answer leaves first; ttl 0: no cache."""
    s = google_server(make_server, fake, cache_ttl_s=1, cache_max_entries=2)
    for radius in (b"1", b"2", b"1"):            # 1 and 2 cached; 1 again: a hit
        assert whatsat_js(s, b"WHATSAT kiwi %s 5\n" % radius)["status"] == "OK"
    assert len(fake.requests) == 2
    assert whatsat_js(s, b"WHATSAT kiwi 3 5\n")["status"] == "OK"   # evicts the oldest (1)
    assert len(fake.requests) == 3
    whatsat_js(s, b"WHATSAT kiwi 2 5\n")
    assert len(fake.requests) == 3, "2 is still cached"
    whatsat_js(s, b"WHATSAT kiwi 1 5\n")
    assert len(fake.requests) == 4, "1 was evicted"
    time.sleep(1.2)
    whatsat_js(s, b"WHATSAT kiwi 1 5\n")
    assert len(fake.requests) == 5, "expired"
    log = s.read_log(wait_for="source=cache")
    assert "source=cache" in log


def test_no_cache_with_ttl_zero(make_server, fake):
    s = google_server(make_server, fake, cache_ttl_s=0)
    for _ in range(3):
        assert whatsat_js(s)["status"] == "OK"
    assert len(fake.requests) == 3


def test_client_gone_while_others_wait_for_the_same_answer(make_server, fake):
    """Three clients wait for one upstream request; two of them leave: the
    third still gets the answer, and the server stays sound."""
    fake.delay = 0.5
    s = google_server(make_server, fake)
    socks = [connect(s.port) for _ in range(3)]
    for c in socks:
        c.sendall(b"WHATSAT kiwi 4 5\n")
    time.sleep(0.2)
    socks[0].close()
    socks[2].close()
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = socks[1].recv(65536)
        assert chunk
        data += chunk
    socks[1].close()
    assert json.loads(split(data)[1])["status"] == "OK"
    assert len(fake.requests) == 1


def resolver_children(pid):
    """Pids of pid's children named herd-resolver."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        if comm == "herd-resolver" and int(rest.split()[1]) == pid:
            found.append(int(d))
    return found


# Times every PING for `seconds`, from inside the namespace: the largest
# wait for an answer, and how many were answered.
PROBE = """
import json, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
worst, n, end = 0.0, 0, time.time() + seconds
while time.time() < end:
    t = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"PING\\n")
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        b = s.recv(100)
        if not b:
            break
        got += b
    s.close()
    assert got == b"? PING\\n", got
    worst, n = max(worst, time.time() - t), n + 1
    time.sleep(0.05)
print(json.dumps({"worst": worst, "answered": n}))
"""


@pytest.fixture
def slow_dns():
    """A namespace ("dns") whose resolver never answers."""
    why = netns_available()
    if why:
        pytest.skip(why)
    ns = Namespaces(["dns"], bridge=False, slow_dns=True)
    try:
        yield ns.up()
    finally:
        ns.down()


def test_a_host_name_dns_does_not_answer_never_holds_the_loop(tmp_path, slow_dns):
    port = free_port()
    text = config_text({"Alpha": ("127.0.0.1", port, ["Beta"]),
                        "Beta": ("beta.herd-test", port + 1, ["Alpha"])})
    cfg = tmp_path / "config.yml"
    cfg.write_text(text)
    env = dict(os.environ, HERD_SECRET="resolver-test-secret")
    err = open(tmp_path / "Alpha.stderr", "wb")
    server = slow_dns.spawn("dns", [program("herd-server"), "Alpha", "-c", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=err)
    assert wait_log(str(tmp_path), "Alpha", "listening server=Alpha", timeout=10)
    pid = int(read_log(str(tmp_path), "Alpha").split("listening server=Alpha")[1]
              .split(" pid=")[1].split()[0])
    # Alpha dials Beta (its name sorts first) and asks for beta.herd-test
    # again after each 2 s timeout: 4 s of PINGs span two lookups
    probe = slow_dns.run("dns", ["/usr/bin/python3", "-c", PROBE, str(port), "4"], timeout=60)
    assert probe.returncode == 0, probe.stderr
    got = json.loads(probe.stdout)
    assert got["worst"] < 1.0, f"a PING waited {got['worst']:.2f} s for the lookup"
    assert got["answered"] >= 20, got
    assert wait_log(str(tmp_path), "Alpha", "link-dial-failed peer=Beta reason=cannot resolve "
                    "'beta.herd-test': Temporary failure in name resolution (retrying)",
                    timeout=10)
    # the lookups run in one helper process, which a loss does not stop
    helpers = resolver_children(pid)
    assert len(helpers) == 1, helpers
    os.kill(helpers[0], signal.SIGKILL)
    assert wait_log(str(tmp_path), "Alpha", f"resolver pid={helpers[0]} went away", timeout=10)
    assert wait_for(lambda: resolver_children(pid) not in ([], helpers), timeout=10)
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=10) == 0
    assert resolver_children(pid) == []
    err.close()
    stderr = (tmp_path / "Alpha.stderr").read_text(errors="replace")
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr


def test_the_resolver_helper_holds_none_of_the_servers_memory(tmp_path):
    """The helper is a new image of herd-server, not a forked copy of the
    server: a copy kept the whole table as it was at the fork, and each
    page the server changed afterwards was a page more (a 300000-client
    table: 70 MB more, for a process that only calls getaddrinfo)."""
    port = free_port()
    cfg = tmp_path / "config.yml"
    cfg.write_text(config_text({"Alpha": ("127.0.0.1", port, ["Beta"]),
                                "Beta": ("localhost", port + 1, ["Alpha"])}))
    (tmp_path / "state").mkdir(mode=0o700)
    n, now = 200000, time.time()
    with open(tmp_path / "state" / "Alpha.snap", "w") as f:
        f.write("HERDSNAP 1 Alpha\n")
        f.writelines(f"AT Alpha +0.000000001 client{i:07d}-{'x' * 60} "
                     f"+34.068930-118.445127 {now - 60 + i / 1e6:.6f}\n" for i in range(n))
        f.write(f"END {n}\n")
    env = dict(os.environ, HERD_SECRET="resolver-test-secret")
    with open(tmp_path / "Alpha.stderr", "wb") as err:
        server = subprocess.Popen([program("herd-server"), "Alpha", "-c", str(cfg)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_log(str(tmp_path), "Alpha", f"snapshot-loaded file={tmp_path}/state/"
                        f"Alpha.snap clients={n}", timeout=30)
        assert wait_log(str(tmp_path), "Alpha", "listening server=Alpha", timeout=30)
        # Alpha dials Beta (its name sorts first): localhost goes to the helper
        assert wait_for(lambda: resolver_children(server.pid), timeout=10)
        helper = resolver_children(server.pid)[0]
        mine, theirs = proc_kib(helper), proc_kib(server.pid)
        assert mine < theirs * 0.4, f"helper {mine} kB, server {theirs} kB"
        with open(f"/proc/{helper}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
        assert cmdline[:2] == [b"herd-server", b"--resolver-helper"], cmdline
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
        assert not os.path.exists(f"/proc/{helper}")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    stderr = (tmp_path / "Alpha.stderr").read_text(errors="replace")
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr


@pytest.mark.skipif(not os.path.exists("/usr/bin/valgrind"), reason="needs valgrind")
def test_the_resolver_helper_starts_under_valgrind(tmp_path):
    """Under valgrind, /proc/self/exe is valgrind's tool, which will not run
    as the helper: the program's own path comes first (else every dial
    started a helper that died at once, and no name was ever looked up)."""
    with open(program("herd-server"), "rb") as f:
        if b"libasan" in f.read():
            pytest.skip("valgrind cannot run a sanitized build")
    port = free_port()
    cfg = tmp_path / "config.yml"
    cfg.write_text(config_text({"Alpha": ("127.0.0.1", port, ["Beta"]),
                                "Beta": ("localhost", port + 1, ["Alpha"])}))
    env = dict(os.environ, HERD_SECRET="resolver-test-secret")
    with open(tmp_path / "Alpha.stderr", "wb") as err:
        server = subprocess.Popen(["/usr/bin/valgrind", "--quiet", program("herd-server"),
                                   "Alpha", "-c", str(cfg)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=err)
    try:
        # localhost looked up, then the dial refused: nobody listens there
        refused = (f"link-dial-failed peer=Beta addr=127.0.0.1:{port + 1} "
                   "reason=Connection refused")
        wait_for(lambda: any(t in read_log(str(tmp_path), "Alpha")
                             for t in ("link-dial-failed peer=Beta", "went away")), timeout=60)
        log = read_log(str(tmp_path), "Alpha")
        assert refused in log and "went away" not in log, log
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_the_reason_for_a_longest_name_is_logged_whole(tmp_path, slow_dns):
    """A neighbour's name of 253 characters (the most a host name may have)
    that cannot be looked up: the helper's answer cut the reason off."""
    port = free_port()
    name = ".".join(["a" * 63] * 4)[:253]
    text = config_text({"Alpha": ("127.0.0.1", port, ["Beta"]),
                        "Beta": (name, port + 1, ["Alpha"])})
    cfg = tmp_path / "config.yml"
    cfg.write_text(text)
    env = dict(os.environ, HERD_SECRET="resolver-test-secret")
    with open(tmp_path / "Alpha.stderr", "wb") as err:
        server = slow_dns.spawn("dns", [program("herd-server"), "Alpha", "-c", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        assert wait_log(str(tmp_path), "Alpha", "link-dial-failed peer=Beta", timeout=20)
        line = next(l for l in read_log(str(tmp_path), "Alpha").splitlines()
                    if "link-dial-failed" in l)
        assert line.endswith(f"reason=cannot resolve '{name}': Temporary failure in name "
                             "resolution (retrying)"), line
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=10) == 0
