"""Defects a hostile review of the trust fixes found (secrets, snapshots,
scripts, logs), each pinned by the test that reproduced it."""
import os
import subprocess

import pytest

from conftest import program
from test_supervisor import ScriptHerd
from test_trust_supervisor import run_server, write_secret


@pytest.fixture
def files(tmp_path):
    """A herd's config in tmp_path; nothing is started."""
    return ScriptHerd(tmp_path)


def supervisor(h, *args, env=None, timeout=10):
    return subprocess.run([program("herd-supervisor"), "-c", h.config, *args],
                          env=env or h.env, capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------- secrets

def test_white_space_herd_secret_is_refused_like_an_empty_file(files):
    """HERD_SECRET of blanks trimmed to nothing turned every link off
    without a word, where an empty secret file is refused."""
    env = dict(files.env, HERD_SECRET="  \t ")
    files.env = env
    rc, err = run_server(files, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with a blank HERD_SECRET (no links)"
    assert "HERD_SECRET" in err and "white space" in err, err
    r = supervisor(files)
    assert r.returncode != 0 and "HERD_SECRET" in r.stderr, r.stdout + r.stderr
