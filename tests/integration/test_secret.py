"""The herd secret (docs/PROTOCOL.md, "Between servers", "The herd secret"
and "Processes and files"): HERD_SECRET or the secret file, its creation
by --init-secret and start_servers.sh, and the files refused (empty,
blank, readable by others, another user's, a FIFO, a dangling link).  The
key ring of a secret rotation (README, "Rotating the herd secret"): two
hosts a step apart link whichever dials, rings sharing no secret never
do, and the --secret-* commands rewrite the file as documented.
"""
import os
import re
import subprocess

import pytest

from harness import (configured_server, free_port, key_id, one_server, one_server_config, program,
                     supervisor_cmd, write_config)


def test_secret_from_the_file_trimmed(herd):
    """Without HERD_SECRET the servers read herd.secret_file; trailing
    blanks and line ends are not part of the secret.  A secret file that
    cannot be read stops the server with a message naming it."""
    os.makedirs(os.path.join(herd.dir, "state"))
    secret = os.path.join(herd.dir, "state", "herd.secret")
    with open(secret, "w") as f:
        f.write(herd.secret + " \t\r\n")
    os.chmod(secret, 0o600)                          # the owner's alone, or refused
    herd.start("Bona")                               # HERD_SECRET: the plain secret
    herd.start("Bailey", secret_from_file=True)
    assert herd.wait_log("Bailey", "link-up peer=Bona", timeout=10)
    herd.stop("Bailey")
    os.remove(secret)
    os.symlink("herd.secret", secret)
    env = {k: v for k, v in os.environ.items() if k != "HERD_SECRET"}
    r = subprocess.run([program("herd-server"), "Bailey", "-c", herd.config], env=env,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "herd.secret" in r.stderr and "symbolic links" in r.stderr


def run_server(h, name, timeout=10):
    """herd-server NAME on h's config: (exit status or None if it kept running, stderr)."""
    p = subprocess.Popen([program("herd-server"), name, "-c", h.config], env=h.env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()
        p.wait(timeout=15)
        rc = None
    return rc, p.stderr.read()


def test_white_space_herd_secret_is_refused_like_an_empty_file(files):
    """HERD_SECRET of blanks trimmed to nothing turned every link off
    without a word, where an empty secret file is refused."""
    env = dict(files.env, HERD_SECRET="  \t ")
    files.env = env
    rc, err = run_server(files, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with a blank HERD_SECRET (no links)"
    assert "HERD_SECRET" in err and "white space" in err, err
    r = supervisor_cmd(files.config, env=files.env, timeout=10)
    assert r.returncode != 0 and "HERD_SECRET" in r.stderr, r.stdout + r.stderr


def test_secret_that_is_a_fifo_is_refused_at_once(files):
    """open() of a FIFO secret blocked forever, with TERM already caught:
    the server hung at start and ignored TERM."""
    files.env.pop("HERD_SECRET", None)
    os.makedirs(os.path.join(files.dir, "state"))
    path = os.path.join(files.dir, "state", "herd.secret")
    os.mkfifo(path, 0o600)
    p = subprocess.Popen([program("herd-server"), "Bailey", "-c", files.config], env=files.env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        rc = p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        p.kill()   # TERM does not reach a server blocked in that open()
        p.wait()
        rc = None
    err = p.stderr.read()
    assert rc not in (None, 0), "herd-server hung on a FIFO secret"
    assert "not a regular file" in err, err
    r = supervisor_cmd(files.config, "--init-secret", env=files.env, timeout=10)
    assert r.returncode != 0 and "not a regular file" in r.stderr, r.stdout + r.stderr


def write_secret(h, text, mode):
    os.makedirs(os.path.join(h.dir, "state"), exist_ok=True)
    path = os.path.join(h.dir, "state", "herd.secret")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_secret_owned_by_another_user_is_refused(files):
    """A 0600 secret owned by another user passed the mode check, yet that
    user may read and change it."""
    files.env.pop("HERD_SECRET", None)
    path = write_secret(files, "s3cret-of-the-herd\n", 0o600)
    os.chown(path, 65534, 65534)
    rc, err = run_server(files, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with another user's secret"
    assert "belongs to uid 65534" in err, err
    r = supervisor_cmd(files.config, "--init-secret", env=files.env, timeout=10)
    assert r.returncode != 0 and "belongs to uid 65534" in r.stderr, r.stdout + r.stderr


def test_init_secret_through_a_dangling_link_says_no(files):
    """--init-secret on a symbolic link to a missing file printed "created the
    herd secret" and exited 0; nothing was created and the herd ran without
    links."""
    files.env.pop("HERD_SECRET", None)
    os.makedirs(os.path.join(files.dir, "state"))
    path = os.path.join(files.dir, "state", "herd.secret")
    os.symlink(os.path.join(files.dir, "nowhere", "secret"), path)
    r = supervisor_cmd(files.config, "--init-secret", env=files.env, timeout=10)
    assert "created" not in r.stdout, r.stdout
    assert r.returncode != 0 and "symbolic link" in r.stderr, r.stdout + r.stderr


def test_secret_readable_by_others_is_refused(loose_sherd):
    path = write_secret(loose_sherd, "s3cret-of-the-herd\n", 0o644)
    rc, err = run_server(loose_sherd, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with a world-readable secret"
    assert f"chmod 600 {path}" in err, err
    r = loose_sherd.script("start_servers.sh")
    assert r.returncode != 0 and f"chmod 600 {path}" in r.stderr, r.stdout + r.stderr
    assert not os.path.exists(loose_sherd.pidfile)
    sup = subprocess.run([program("herd-supervisor"), "-c", loose_sherd.config], env=loose_sherd.env,
                         capture_output=True, text=True, timeout=30)
    assert sup.returncode != 0 and f"chmod 600 {path}" in sup.stderr
    os.chmod(path, 0o600)
    assert open(path).read() == "s3cret-of-the-herd\n"


def test_empty_secret_is_refused_and_init_secret_replaces_it(loose_sherd):
    path = write_secret(loose_sherd, "\n", 0o600)
    rc, err = run_server(loose_sherd, "Bailey", timeout=5)
    assert rc not in (None, 0), "herd-server ran with an empty secret"
    assert "is empty" in err and "--init-secret" in err, err
    r = loose_sherd.script("start_servers.sh")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "replaced the herd secret" in r.stdout
    assert len(open(path).read().strip()) == 64
    assert os.stat(path).st_mode & 0o777 == 0o600
    for n in loose_sherd.ports:
        assert loose_sherd.wait_log(n, "link-up", timeout=10), n
    assert "links-disabled" not in loose_sherd.log("Bailey")


def init_secret(cfg, secret=None):
    env = dict(os.environ)
    env.pop("HERD_SECRET", None)
    if secret is not None:
        env["HERD_SECRET"] = secret
    return supervisor_cmd(cfg, "--init-secret", env=env)


def test_init_secret(tmp_path):
    """--init-secret makes the secret (64 hex digits, mode 0600, in a
    folder of mode 0700 it creates) when HERD_SECRET is unset or empty,
    not when HERD_SECRET holds one, keeps a valid file, and refuses a file
    others may read, a folder in its place, and a folder it would have to
    create more than one level of."""
    cfg, _ = one_server(tmp_path / "a")
    path = tmp_path / "a" / "state" / "herd.secret"
    r = init_secret(cfg, secret="")
    assert (r.returncode, r.stdout, r.stderr) == (
        0, f"created the herd secret {path} (mode 0600)\n", ""), r
    text = path.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", text), text
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    r = init_secret(cfg)                           # kept
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "") and path.read_text() == text
    assert sorted(os.listdir(path.parent)) == ["herd.secret"]

    cfg, _ = one_server(tmp_path / "b")
    r = init_secret(cfg, secret="from-the-environment")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert not os.path.exists(tmp_path / "b" / "state")

    os.chmod(path, 0o644)
    r = init_secret(tmp_path / "a" / "config.yml")
    assert r.returncode == 1 and r.stdout == "" and f"chmod 600 {path}" in r.stderr, r
    assert path.read_text() == text
    os.remove(path)
    os.mkdir(path)
    r = init_secret(tmp_path / "a" / "config.yml")
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", f"herd-supervisor: {path} is not a regular file: the herd's secret must be one\n")

    cfg, _ = one_server(tmp_path / "c", extra="herd:\n  secret_file: keys/herd/herd.secret\n")
    r = init_secret(cfg)
    deep = tmp_path / "c" / "keys" / "herd" / "herd.secret"
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", f"herd-supervisor: cannot create {deep}: No such file or directory\n"), r
    assert not os.path.exists(tmp_path / "c" / "keys")


def test_the_folder_check_comes_before_the_secret_is_made(tmp_path):
    """--init-secret (start_servers.sh runs it first) refuses the same way."""
    cfg = one_server_config(tmp_path, free_port())
    folder = tmp_path / "state"
    folder.mkdir()
    os.chmod(folder, 0o777)
    r = subprocess.run([program("herd-supervisor"), "-c", cfg, "--init-secret"],
                       capture_output=True, text=True, timeout=20,
                       env={k: v for k, v in os.environ.items() if k != "HERD_SECRET"})
    assert r.returncode != 0 and f"chmod go-w {folder}" in r.stderr, r
    assert os.listdir(folder) == []


def test_init_secret_once(tmp_path):
    cfg = write_config(str(tmp_path), {"Alpha": (free_port(), [])})
    env = {k: v for k, v in os.environ.items() if k != "HERD_SECRET"}
    r = supervisor_cmd(cfg, "--init-secret", env=dict(env, HERD_SECRET="given"))
    assert r.returncode == 0 and r.stdout == ""
    secret = tmp_path / "state" / "herd.secret"
    assert not secret.exists(), "HERD_SECRET set: no file is made"
    r = supervisor_cmd(cfg, "--init-secret", env=env)
    assert r.returncode == 0 and "created the herd secret" in r.stdout
    text = secret.read_text()
    assert len(text) == 65 and all(c in "0123456789abcdef" for c in text[:64])
    assert secret.stat().st_mode & 0o777 == 0o600
    r = supervisor_cmd(cfg, "--init-secret", env=env)
    assert r.returncode == 0 and r.stdout == "" and secret.read_text() == text
    # a secret file that cannot be made
    (tmp_path / "blocked").write_text("")
    with open(cfg, "a") as f:
        f.write("herd:\n  secret_file: blocked/herd.secret\n")
    r = supervisor_cmd(cfg, "--init-secret", env=env)
    assert r.returncode == 1 and "blocked/herd.secret: Not a directory" in r.stderr, r.stderr


# ------------------------------------------------------------ the key ring

OLD, NEW = "old-secret-0123456789", "new-secret-0123456789"
# a host's ring at each step of a rotation (README, "Rotating the herd secret")
STEPS = {"before": [OLD], "installed": [OLD, NEW], "used": [NEW, OLD], "removed": [NEW]}
# one host a step ahead of the other, either of them the one that dials
AHEAD = [("before", "installed"), ("installed", "used"), ("used", "removed")]
PAIRS = [p for a, b in AHEAD for p in ((a, b), (b, a))]


def ring_pair(tmp_path, monkeypatch, rings):
    """Bailey (it dials: its name sorts first) and Bona, not started, each
    in its own folder with its own secret file holding rings[name]."""
    monkeypatch.delenv("HERD_SECRET", raising=False)
    ports = {"Bailey": free_port(), "Bona": free_port()}
    servers = {"Bailey": (ports["Bailey"], ["Bona"]), "Bona": (ports["Bona"], ["Bailey"])}
    pair = {}
    for name, ring in rings.items():
        s = configured_server(tmp_path, name, servers)
        os.makedirs(os.path.join(s.dir, "state"))
        path = os.path.join(s.dir, "state", "herd.secret")
        with open(path, "w") as f:
            f.write("# the herd's key ring\n" + "".join(k + "\n" for k in ring))
        os.chmod(path, 0o600)
        pair[name] = s
    return pair


def start_pair(pair, started_servers):
    for name in ("Bona", "Bailey"):
        started_servers.append(pair[name].start())


@pytest.mark.parametrize("dialer,acceptor", PAIRS, ids=[f"{a}-dials-{b}" for a, b in PAIRS])
def test_hosts_a_rotation_step_apart_link(tmp_path, monkeypatch, started_servers, dialer,
                                          acceptor):
    """Between any two steps of the rotation one host may be reloaded and
    the other not yet: whichever of the two dials, the link comes up."""
    pair = ring_pair(tmp_path, monkeypatch, {"Bailey": STEPS[dialer], "Bona": STEPS[acceptor]})
    start_pair(pair, started_servers)
    for name, peer in (("Bailey", "Bona"), ("Bona", "Bailey")):
        log = pair[name].read_log(wait_for=f"link-up peer={peer}", timeout=10)
        assert f"link-up peer={peer}" in log and "peer-refused" not in log, log
        ring = STEPS[dialer if name == "Bailey" else acceptor]
        assert f"secret-ring keys={','.join(key_id(k) for k in ring)}\n" in log, log


@pytest.mark.parametrize("ring,why", [
    (["other-secret"], "peer=Bailey addr=127.0.0.1:\\S+ reason=TLS: the PSK does not "
                       "match \\(wrong secret\\?\\)"),
    (["other-secret", OLD + "-not"], "peer=\\? addr=127.0.0.1:\\S+ reason=PSK identity "
                                     "names a key id not in our ring"),
], ids=["one-secret", "two-secrets"])
def test_rings_sharing_no_secret_never_link(tmp_path, monkeypatch, started_servers, ring, why):
    """A dialer holding none of the acceptor's secrets is refused, whether
    it names its key (a ring of several) or not (a ring of one)."""
    pair = ring_pair(tmp_path, monkeypatch, {"Bailey": ring, "Bona": STEPS["installed"]})
    start_pair(pair, started_servers)
    bona = pair["Bona"].read_log(wait_for="peer-refused", timeout=10)
    assert re.search("peer-refused " + why, bona), bona
    bailey = pair["Bailey"].read_log(wait_for="peer-refused", timeout=10)
    assert "peer-refused peer=Bona" in bailey and "refused our PSK" in bailey, bailey
    assert "link-up" not in bona + bailey


def ring_cmd(cfg, *args, stdin="", env=None):
    """herd-supervisor -c cfg ARGS with stdin, HERD_SECRET unset unless env has it."""
    env = env or {k: v for k, v in os.environ.items() if k != "HERD_SECRET"}
    return subprocess.run([program("herd-supervisor"), "-c", cfg, *args], input=stdin,
                          capture_output=True, text=True, timeout=20, env=env)


def listed(cfg):
    r = ring_cmd(cfg, "--secret-list")
    assert r.returncode == 0 and r.stderr == "", r
    return r.stdout.splitlines()


def test_ring_commands_walk_a_rotation(tmp_path):
    """The three steps on one host, by the commands: install the new secret
    second, make it first, remove the old one.  Each rewrites the file (mode
    0600, comments kept, no temporary file left) and says what it did;
    --secret-list shows key ids, never a secret."""
    cfg, _ = one_server(tmp_path)
    path = tmp_path / "state" / "herd.secret"
    os.makedirs(path.parent, mode=0o700)
    path.write_text("# herd ring\n" + OLD + "\n")
    os.chmod(path, 0o600)
    old, new = key_id(OLD), key_id(NEW)
    assert listed(cfg) == [f"{old} first"]

    r = ring_cmd(cfg, "--secret-install", stdin=NEW + " \n")
    assert (r.returncode, r.stderr) == (0, ""), r
    assert r.stdout == (f"installed {new} in {path} (key 2 of 2): after a reload this host "
                        f"accepts it; once every host has it, make it first "
                        f"(--secret-use {new})\n")
    assert path.read_text() == f"# herd ring\n{OLD}\n{NEW}\n"
    assert listed(cfg) == [f"{old} first", new]

    r = ring_cmd(cfg, "--secret-use", new)
    assert r.returncode == 0 and r.stdout == (
        f"{new} is now first in {path}: after a reload this host dials with it\n"), r
    assert path.read_text() == f"# herd ring\n{NEW}\n{OLD}\n"

    r = ring_cmd(cfg, "--secret-remove", old)
    assert r.returncode == 0 and r.stdout == (
        f"removed {old} from {path} (1 key left): after a reload this host no longer "
        f"accepts it\n"), r
    assert path.read_text() == f"# herd ring\n{NEW}\n"
    assert listed(cfg) == [f"{new} first"]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(path.parent) == ["herd.secret"]
    assert OLD not in r.stdout + r.stderr and NEW not in "".join(listed(cfg))


def test_ring_commands_refuse_what_would_break_the_herd(tmp_path):
    """Refused, with the file unchanged: removing the first (or only) key,
    a key id not in the ring, a secret already in it, a bad secret on
    stdin, a ninth secret, any change while HERD_SECRET is set (the servers
    would not read the file), and a secret file that is a symbolic link."""
    cfg, _ = one_server(tmp_path)
    path = tmp_path / "state" / "herd.secret"
    r = ring_cmd(cfg, "--secret-install", "--random")         # no file yet: made, 0600
    assert r.returncode == 0 and "the only key" in r.stdout, r
    first = re.match(r"installed ([0-9a-f]{8}) in ", r.stdout).group(1)
    assert re.fullmatch(r"[0-9a-f]{64}\n", path.read_text())
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = path.read_text()

    def refused(*args, stdin="", env=None, says):
        r = ring_cmd(cfg, *args, stdin=stdin, env=env)
        assert r.returncode == 1 and r.stdout == "" and says in r.stderr, (args, r)
        assert path.read_text() == text, args

    refused("--secret-remove", first, says=f"{first} is the first key of {path}")
    refused("--secret-use", "0badc0de", says=f"no key 0badc0de in {path}; its keys: {first}")
    for bad, why in (("", "an empty secret"), ("#x", "a secret starting with '#'"),
                     ("a\nb", "a secret of more than one line"),
                     ("x" * 256, "a secret longer than 255 bytes")):
        refused("--secret-install", stdin=bad, says=f"the secret on stdin: {why}")
    for k in range(7):
        assert ring_cmd(cfg, "--secret-install", stdin=f"s-{k}").returncode == 0
    text = path.read_text()
    refused("--secret-install", stdin="s-3", says=f"key {key_id('s-3')} is already in {path}")
    refused("--secret-install", "--random", says=f"{path}:9: more than 8 secrets")
    env = dict(os.environ, HERD_SECRET="from-the-environment")
    refused("--secret-use", key_id("s-1"), env=env, says="HERD_SECRET is set")
    r = ring_cmd(cfg, "--secret-list", env=env)
    assert r.stdout == f"{key_id('from-the-environment')} first (HERD_SECRET)\n", r

    real = tmp_path / "real.secret"
    os.rename(path, real)
    os.symlink(real, path)
    refused("--secret-use", key_id("s-1"), says=f"{path} is a symbolic link")
    assert real.read_text() == text and os.path.islink(path)
