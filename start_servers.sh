#!/bin/sh
# start_servers.sh -- start this machine's part of the herd in the
# background and wait until each of its servers accepts connections.
# Usage: ./start_servers.sh [-c CONFIG] [--reload | --restart [NAME...]]
#
# --reload and --restart act on the herd already running on this machine
# (through the supervisor's control socket; docs/PROTOCOL.md, "Reloading
# the config" and "Rolling restart").
#
# The same config goes to every host of a herd: the supervisor runs the
# servers whose host is an address of this machine and leaves the others to
# their hosts; with none here this refuses, and starts nothing.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
config="$here/config.yml"
[ -f "$config" ] || config=/etc/proxyherd/config.yml    # installed (make install)
wait_s=${HERD_START_TIMEOUT:-20}

usage() {
    echo "Usage: ./start_servers.sh [-c CONFIG] [--reload | --restart [NAME...]]"
    echo "Start the supervisor and the servers of CONFIG (default: config.yml beside"
    echo "this script, else /etc/proxyherd/config.yml) whose host is an address of this"
    echo "machine, in the background; wait until all listen (and up to 3 s more for"
    echo "the links between them); print their table and the supervisor's warnings."
    echo "Refuses when none of the servers is on this machine."
    echo "  --reload            apply CONFIG again to the herd running here, without"
    echo "                      stopping it (an invalid config changes nothing); exit"
    echo "                      0 once every server of the new config listens"
    echo "  --restart [NAME...] rolling restart of the named servers (default: the"
    echo "                      supervisor in place, then all of this machine's"
    echo "                      servers), one at a time, each caught up first"
}

action=start
names=

while [ $# -gt 0 ]; do
    case "$1" in
        -c|--config) [ $# -ge 2 ] || { usage >&2; exit 2; }; config=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --reload) action=reload; shift ;;
        --restart) action=restart; shift
            while [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; do names="$names $1"; shift; done ;;
        *) echo "start_servers.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

command -v flock >/dev/null 2>&1 || {
    echo "$(basename "$0"): needs flock(1), from util-linux" >&2; exit 1; }
[ -f "$config" ] || { echo "start_servers.sh: no config file '$config'" >&2; exit 1; }
dir=$(cd "$(dirname "$config")" && pwd)
config="$dir/$(basename "$config")"
pidfile="$dir/servers.pid"

if [ -n "${HERD_BIN_DIR:-}" ]; then
    bindir=$HERD_BIN_DIR
elif [ -f "$here/Makefile" ]; then
    bindir="$here/bin"
    make -s -C "$here" all || { echo "start_servers.sh: the build failed" >&2; exit 1; }
else
    bindir=$(cd "$here/../../bin" && pwd)    # installed: PREFIX/share/proxyherd
fi
sup="$bindir/herd-supervisor"

# The LOG column of --status rows: what follows the first seven columns
# (none of which holds a space), spaces in the path included.
log_column() {
    sed -E 's/^([^ ]+ +){7}//'
}

# The last lines of the log of each server a --status table (on stdin)
# shows not listening: why it did not come up.
explain_not_listening() {
    awk 'NR > 2 && $6 != "yes"' | log_column | while read -r log; do
        if [ -f "$log" ]; then
            echo "--- last lines of $log:" >&2
            tail -n 5 "$log" >&2
        fi
    done
}

# --reload and --restart: the running supervisor does the work, the client
# waits for it and says what happened (exit 3: no herd runs here).
case "$action" in
    reload)
        out=$("$sup" -c "$config" --reload --wait "$wait_s") && { echo "$out"; exit 0; }
        rc=$?
        echo "$out"
        [ "$rc" -eq 3 ] || echo "$out" | sed -n '/^supervisor pid /,$p' | explain_not_listening
        exit "$rc" ;;
    restart)
        # shellcheck disable=SC2086 # names: server names, one word each
        "$sup" -c "$config" --restart $names --wait "$wait_s"; exit $? ;;
esac

# Only this machine's servers: refuse (the supervisor says why) when none is.
"$sup" -c "$config" --local >/dev/null || {
    echo "start_servers.sh: nothing to start on this machine; started nothing" >&2; exit 1; }

# A herd runs when its supervisor holds servers.lock (see stop_servers.sh);
# the supervisor itself refuses too, this only says it sooner.  A pid file
# without that is stale: its pids may be anybody's now, so it is removed
# and nothing is signalled.
lock="$dir/servers.lock"
if [ -f "$lock" ] && ! flock -n -s "$lock" true 2>/dev/null; then
    pid=$(head -n 1 "$lock" 2>/dev/null | tr -cd 0-9)
    theirs=$(sed -n 2p "$lock" 2>/dev/null || true)
    if [ -n "$theirs" ] && [ "$theirs" != "$(readlink -f "$config")" ]; then
        echo "start_servers.sh: the herd of another config, $theirs, runs in $dir (supervisor pid ${pid:-unknown}); one folder holds one herd's files: give $config a folder of its own" >&2
        exit 1
    fi
    echo "start_servers.sh: a herd is already running (supervisor pid ${pid:-unknown}, it holds $lock)." >&2
    echo "Stop it first with ./stop_servers.sh" >&2
    exit 1
fi
if [ -f "$pidfile" ]; then
    echo "clearing a stale $pidfile (its supervisor is gone; signalled no process)"
    rm -f "$pidfile"
fi

"$sup" -c "$config" --init-secret

errfile=$(mktemp)
trap 'rm -f "$errfile"' EXIT
# setsid: a new session, so the terminal's Ctrl-C does not reach the herd
# (in a script the job is no group leader, so setsid execs without a fork and
# $! is the supervisor)
setsid "$sup" -c "$config" </dev/null >/dev/null 2>"$errfile" &
spid=$!
started=$(date +%s)

# Wait for the pid file, then for every server to listen; the table then
# waits up to 3 s more for the links between them (--wait-links), so that
# it shows them up (or connecting), not down.  Warnings the supervisor gave
# at its start (a port in the ephemeral range) are shown too.
while :; do
    if "$sup" -c "$config" --status >/dev/null 2>&1; then
        if [ -s "$errfile" ]; then cat "$errfile" >&2; fi
        table=$("$sup" -c "$config" --status --wait-links || true)
        echo "$table"
        # quoted, so the line can be pasted whatever the folder's name holds
        logdir=$(dirname "$(echo "$table" | sed -n 3p | log_column)")
        echo "logs: tail -f '$(echo "$logdir" | sed "s/'/'\\\\''/g")'/*.log"
        exit 0
    fi
    if [ $(( $(date +%s) - started )) -ge "$wait_s" ] || ! kill -0 "$spid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

echo "start_servers.sh: the herd did not start within ${wait_s}s" >&2
if [ -s "$errfile" ]; then
    echo "--- the supervisor said:" >&2
    cat "$errfile" >&2
fi
status=$("$sup" -c "$config" --status 2>&1 || true)
echo "$status" >&2
echo "$status" | explain_not_listening
"$here/stop_servers.sh" -c "$config" >/dev/null 2>&1 || true
exit 1
