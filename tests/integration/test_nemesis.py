"""The herd's promise under a nemesis: once the links are up and clients
stop, every server holds the same newest update of every client, and the
links fall quiet (docs/PROTOCOL.md, "IAMAT", "Stored clients",
"Anti-entropy").

Each schedule (nemesis_lib.Schedule) is drawn from random.Random(seed): a
herd of 3 to 5 servers on a random connected graph, each link through a TCP
proxy (the dialing server's config names the proxy's port as its
neighbour's), herd.anti_entropy_ms 200, herd.snapshot_interval_s 1, and half
the time limits.max_stored_clients 3 to 8 with more clients than that.
Then 35 to 60 steps, each one of: IAMATs at random servers (recent times,
times far in the past, slightly ahead, more than a day ahead, ties at two
origins, a client with many updates), an IAMAT resent with the same bytes
or its time written another way (`1.5`, `1.500`, `1.5000000000`, `7`,
`7.0`), kill -9 of a server (right after an IAMAT whose reply may be lost,
before or after its snapshot) and its restart some steps later, an origin
that forgets an update and gets the same IAMAT again, SIGSTOP and SIGCONT,
and on a link: close both sides, stay down, delay, stall, tear a TLS record
mid-stream, heal.  Then everything heals (every server running, every proxy
passing, `proxyherd_link_up{peer="X"} 1` at both ends of every link) and:

1. every server holds, for every client, the newest line the herd took: the
   newest acknowledged one (an IAMAT whose AT reply the test read), or a
   newer one that an unanswered IAMAT made; an IAMAT more than 86400 s
   ahead must get `? ` and the line, and never counts.  An unanswered IAMAT
   whose line a server was seen holding counts as acknowledged from then
   on; an acknowledged one that no running server holds when a server is
   killed counts as unanswered (the reply comes before the snapshot, and
   the nemesis may have eaten the flood);
2. no acknowledged update is lost unless a newer one replaced it (with
   max_stored_clients N: the server holds N clients, all newer than it);
3. all servers hold the same line bytes for every client;
4. the links fall quiet: two anti-entropy periods (2 x 200 ms) after the
   tables agree, the sum of proxyherd_link_updates_sent_total over the
   servers must not grow at all over the next 5 periods (5 x 200 ms = 1 s;
   each reading from metrics files written after the window's edge, as
   they are rewritten once a second).  Equal tables have equal digests, so
   a round sends SUM lines only; two periods let a SUMS answer that was
   already on its way be used up.

NEMESIS_SEEDS=N runs N random seeds instead of the fixed ones,
NEMESIS_SEED=S replays one (make test-nemesis SEEDS=N, SEED=S).
"""
import os
import random

import pytest

from nemesis_lib import run_schedule

# The fixed seeds make integration runs (10 to 15 s each): 3 to 5 servers,
# max_stored_clients 5 to 7 in 7, 9 and 10; each forgets and resends an update.
SEEDS = [2, 5, 7, 9, 10]


def seeds():
    if os.environ.get("NEMESIS_SEED"):
        return [int(os.environ["NEMESIS_SEED"])]
    if os.environ.get("NEMESIS_SEEDS"):
        rng = random.SystemRandom()
        return [rng.randrange(1, 10**9) for _ in range(int(os.environ["NEMESIS_SEEDS"]))]
    return SEEDS


@pytest.mark.parametrize("seed", seeds())
def test_nemesis_schedule(tmp_path, seed):
    problems, events = run_schedule(seed, tmp_path)
    if problems:
        shown = "\n  ".join(problems[:25])
        more = f"\n  ... and {len(problems) - 25} more" if len(problems) > 25 else ""
        steps = "\n  ".join(events[-40:])
        raise AssertionError(
            f"nemesis schedule {seed} broke the herd's promise:\n  {shown}{more}\n"
            f"replay: NEMESIS_SEED={seed} make test-nemesis   (or: make test-nemesis SEED={seed})\n"
            f"the whole schedule: {tmp_path}/schedule.txt; its last steps:\n  {steps}")
