"""pytest fixtures and hooks of the integration tests; the harness they use
(Server, Herd, SupervisedHerd, the fakes, wait_for...) is harness.py.

Every process a fixture starts is stopped when the test ends, pass or
fail, and a sanitizer report or a non-zero exit status fails the test.
"""
import json
import os

import pytest

from harness import (NO_HANG, SUP_HERD_SECRET, ONE_RESTART, RESTARTS, FakeLineServer, FakePlaces, Herd, Pair,
                     Server, SupervisedHerd)

# Figures a test measured (resident sizes, counts), printed at the end of
# the run whether or not output is captured; with HERD_MEASURED_FILE set,
# also appended there as JSON lines (make report-data keeps them for the
# report).  They travel in the test's report (user_properties), so that
# under pytest-xdist the controller prints the workers' figures too.
_MEASURED = []


@pytest.fixture
def report(request):
    def add(text):
        request.node.user_properties.append(("measured", f"{request.node.name}: {text}"))
        path = os.environ.get("HERD_MEASURED_FILE")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"test": request.node.name, "text": text}) + "\n")
    return add


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        _MEASURED.extend(v for k, v in report.user_properties if k == "measured")


def pytest_terminal_summary(terminalreporter):
    if _MEASURED:
        terminalreporter.section("measured")
        for line in _MEASURED:
            terminalreporter.write_line(line)


def stop_checked(servers):
    """Stop every server, then fail with what any stop found wrong."""
    errors = []
    for s in servers:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors


@pytest.fixture
def make_server(tmp_path):
    """make_server(**Server options): a started server in its own subfolder."""
    started = []

    def make(**kw):
        sub = tmp_path / f"s{len(started)}"
        sub.mkdir()
        s = Server(sub, **kw).start()
        started.append(s)
        return s

    yield make
    stop_checked(started)


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def herd(tmp_path):
    """The default herd, not started yet; stopped and checked at the end."""
    h = Herd(tmp_path)
    yield h
    h.stop()


@pytest.fixture
def sherd(tmp_path):
    """The default herd under the supervisor (restart_max 3), not started:
    the test runs start_servers.sh (sherd.script) or start_supervisor().
    At the end stop_servers.sh, and every process must be gone, and the
    supervisor's log must show no problem (SupervisedHerd.problems)."""
    h = SupervisedHerd(tmp_path, extra=RESTARTS)
    yield h
    h.stop_by_script()


@pytest.fixture
def loose_sherd(tmp_path):
    """As sherd, for tests that make a mess of the pid files on purpose: at
    the end only stop_servers.sh, nothing checked."""
    h = SupervisedHerd(tmp_path, extra=RESTARTS)
    yield h
    h.script("stop_servers.sh")


@pytest.fixture
def sup_herd(tmp_path):
    """sup_herd(servers, sub="h", remote=(), extra=""): a SupervisedHerd in
    tmp_path/sub with hang_timeout_s 120 and HERD_SECRET set, not started
    (.start()); each is stopped and checked at the end."""
    made = []

    def make(servers, sub="h", extra="", **kw):
        os.makedirs(tmp_path / sub, exist_ok=True)
        h = SupervisedHerd(tmp_path / sub, servers, extra=NO_HANG + extra,
                           secret=SUP_HERD_SECRET, **kw)
        made.append(h)
        return h

    yield make
    for h in made:
        h.stop()


@pytest.fixture
def fake():
    """A FakePlaces on a free port."""
    f = FakePlaces()
    yield f
    f.close()


@pytest.fixture
def fake_line():
    """fake_line(behaviour): a FakeLineServer, closed at the end."""
    servers = []

    def make(behaviour="good"):
        s = FakeLineServer(behaviour)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


@pytest.fixture
def supervised(tmp_path):
    """Bailey alone under the supervisor (restart_max 1 in a 1 s window),
    started directly and listening; stopped at the end, unchecked."""
    s = SupervisedHerd(tmp_path, {"Bailey": []}, extra=ONE_RESTART).start()
    yield s
    s.stop(check=False)


@pytest.fixture
def pair(tmp_path):
    made = []

    def make(limits):
        made.append(Pair(tmp_path, limits))
        return made[-1]
    yield make
    for p in made:
        p.stop()


@pytest.fixture
def started_servers():
    """Servers a test starts; each is stopped (and checked) at the end."""
    servers = []
    yield servers
    stop_checked(servers)


@pytest.fixture
def files(tmp_path):
    """A herd's config in tmp_path; nothing is started."""
    return SupervisedHerd(tmp_path)
