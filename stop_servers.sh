#!/bin/sh
# stop_servers.sh -- stop this machine's part of the herd: SIGTERM to its
# supervisor, wait until every process is gone, SIGKILL after a timeout.
# Usage: ./stop_servers.sh [-c CONFIG]
#
# Only the supervisor of this config on this machine is stopped, so only the
# servers it runs (those whose host is an address of this machine); the
# other hosts' servers go on.  With no herd running here and none of the
# config's servers on this machine, it says so and fails.
#
# servers.pid may be stale (the supervisor was SIGKILLed, the machine
# rebooted) and its pids reused by anybody, so no pid in it is signalled
# unless proven this herd's: the supervisor is the process holding
# servers.lock (the supervisor flocks it for its whole life and writes its
# pid in it) and runs herd-supervisor; a server runs herd-server as that
# supervisor's child.  Each proven process is remembered with its start
# time, and signalled only while the pid still has that start time.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
config="$here/config.yml"
[ -f "$config" ] || config=/etc/proxyherd/config.yml    # installed (make install)
timeout=${HERD_STOP_TIMEOUT:-15}

while [ $# -gt 0 ]; do
    case "$1" in
        -c|--config) [ $# -ge 2 ] || exit 2; config=$2; shift 2 ;;
        -h|--help) echo "Usage: ./stop_servers.sh [-c CONFIG]"; exit 0 ;;
        *) echo "stop_servers.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

command -v flock >/dev/null 2>&1 || {
    echo "$(basename "$0"): needs flock(1), from util-linux" >&2; exit 1; }
dir=$(cd "$(dirname "$config")" && pwd)
pidfile="$dir/servers.pid"
lock="$dir/servers.lock"

# stat_field PID N: field N of /proc/PID/stat counted after the command name
# (1 the state, 2 the parent's pid, 20 the start time); empty when PID is gone.
stat_field() {
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk -v n="$2" '{ print $n }'
}

# runs PID PROGRAM: true when /proc/PID/exe is PROGRAM (also once rebuilt).
runs() {
    exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    [ "${exe##*/}" = "$2" ]
}

# The live supervisor's pid, or nothing: the lock is held (flock(1) cannot
# share it) and the pid written in it runs herd-supervisor.
live_supervisor() {
    [ -f "$lock" ] || return 0
    if flock -n -s "$lock" true 2>/dev/null; then return 0; fi
    p=$(head -n 1 "$lock" 2>/dev/null | tr -cd 0-9)
    if [ -n "$p" ] && runs "$p" herd-supervisor; then echo "$p"; fi
}

# herd-supervisor, to ask which servers are on this machine (no build here).
if [ -n "${HERD_BIN_DIR:-}" ]; then
    supbin="$HERD_BIN_DIR/herd-supervisor"
elif [ -f "$here/Makefile" ]; then
    supbin="$here/bin/herd-supervisor"
else
    supbin="$here/../../bin/herd-supervisor"    # installed: PREFIX/share/proxyherd
fi

sup=$(live_supervisor)
# Two configs in one folder share servers.lock: its second line names the
# config the supervisor runs, and another config's herd is not ours to stop.
theirs=$(if [ -f "$lock" ]; then sed -n 2p "$lock" 2>/dev/null || true; fi)   # a FIFO would hang sed
mine=$(readlink -f "$config" 2>/dev/null || echo "$config")
if [ -n "$sup" ] && [ -n "$theirs" ] && [ "$theirs" != "$mine" ]; then
    echo "stop_servers.sh: $lock is held by the herd of another config, $theirs" \
         "(supervisor pid $sup), not of $config; signalled no process" >&2
    exit 1
fi
if [ -z "$sup" ] && [ -f "$config" ] && [ -x "$supbin" ] &&
   ! "$supbin" -c "$config" --local >/dev/null; then
    echo "stop_servers.sh: no herd of $config runs here, and none of its servers is on this machine" >&2
    exit 1
fi
if [ -z "$sup" ]; then
    if [ -f "$pidfile" ]; then
        rm -f "$pidfile"
        echo "the herd is not running (removed a stale $pidfile; signalled no process)"
    else
        echo "the herd is not running (no $pidfile)"
    fi
    exit 0
fi

# PID:STARTTIME of the supervisor and of each server it runs.
procs="$sup:$(stat_field "$sup" 20)"
if [ -f "$pidfile" ]; then
    # shellcheck disable=SC2013  # pids: one word each, as awk printed them
    for p in $(awk '$1 != "supervisor" && $2 ~ /^[0-9]+$/ { print $2 }' "$pidfile"); do
        if [ "$(stat_field "$p" 2)" = "$sup" ] && runs "$p" herd-server; then
            procs="$procs $p:$(stat_field "$p" 20)"
        fi
    done
fi

# same PID:STARTTIME: that very process still runs (not a zombie, not a new
# process on a reused pid).
same() {
    [ "$(stat_field "${1%:*}" 20)" = "${1#*:}" ] && [ "$(stat_field "${1%:*}" 1)" != Z ]
}

alive() {
    for p in $procs; do
        if same "$p"; then return 0; fi
    done
    return 1
}

signal_all() {
    for p in $procs; do
        if same "$p"; then kill "-$1" "${p%:*}" 2>/dev/null || true; fi
    done
}

kill -TERM "$sup"
waited=0
while alive && [ "$waited" -lt $((timeout * 10)) ]; do
    sleep 0.1
    waited=$((waited + 1))
done
if alive; then
    echo "stop_servers.sh: still running after ${timeout}s; sending SIGKILL" >&2
    signal_all KILL
    while alive; do sleep 0.1; done
fi
# the supervisor removes its own pid file; after a SIGKILL, do it for it
if [ -f "$pidfile" ] && [ "$(awk '$1 == "supervisor" { print $2 }' "$pidfile")" = "$sup" ]; then
    rm -f "$pidfile"
fi
echo "the herd is stopped (supervisor pid $sup)"
