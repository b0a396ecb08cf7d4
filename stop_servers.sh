#!/bin/sh
# stop_servers.sh -- stop the herd: SIGTERM to the supervisor, wait until
# every process is gone, SIGKILL after a timeout.  Usage: ./stop_servers.sh [-c CONFIG]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
config="$here/config.yml"
timeout=${HERD_STOP_TIMEOUT:-15}

while [ $# -gt 0 ]; do
    case "$1" in
        -c|--config) [ $# -ge 2 ] || exit 2; config=$2; shift 2 ;;
        -h|--help) echo "Usage: ./stop_servers.sh [-c CONFIG]"; exit 0 ;;
        *) echo "stop_servers.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

dir=$(cd "$(dirname "$config")" && pwd)
pidfile="$dir/servers.pid"

if [ ! -f "$pidfile" ]; then
    echo "the herd is not running (no $pidfile)"
    exit 0
fi
sup=$(awk '$1 == "supervisor" { print $2 }' "$pidfile")
pids=$(awk '{ print $2 }' "$pidfile")

alive() {
    for p in $pids; do
        if kill -0 "$p" 2>/dev/null; then return 0; fi
    done
    return 1
}

if [ -z "$sup" ] || ! kill -0 "$sup" 2>/dev/null; then
    # the supervisor is gone; its children follow it, but make sure
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    rm -f "$pidfile"
    echo "the herd is not running (removed a stale $pidfile)"
    exit 0
fi

kill -TERM "$sup"
waited=0
while alive && [ "$waited" -lt $((timeout * 10)) ]; do
    sleep 0.1
    waited=$((waited + 1))
done
if alive; then
    echo "stop_servers.sh: still running after ${timeout}s; sending SIGKILL" >&2
    for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
    while alive; do sleep 0.1; done
fi
rm -f "$pidfile"
echo "the herd is stopped"
