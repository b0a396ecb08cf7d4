#!/bin/sh
# make test-soak: the integration suite, normal and ASan+UBSan builds, RUNS
# times in a row while stress-ng keeps every core busy.  A test that acts on
# a state it has not waited for shows up here; the run stops at the first
# failure.  Each run's output: build/soak/RUN-normal.txt, RUN-asan.txt.
set -u
runs=${SOAK_RUNS:-5}
jobs=${JOBS:-4}
out=build/soak
mkdir -p "$out"
stress-ng --cpu "$(nproc)" --timeout 4h >/dev/null 2>&1 &
load=$!
trap 'kill "$load" 2>/dev/null' EXIT INT TERM
start=$(date +%s)
i=1
while [ "$i" -le "$runs" ]; do
    for build in normal asan; do
        if [ "$build" = asan ]; then bin=build/asan/bin; else bin=bin; fi
        t0=$(date +%s)
        if HERD_BIN_DIR="$PWD/$bin" ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
           /usr/bin/python3 -m pytest -q -rfE -p no:cacheprovider -n "$jobs" tests/integration \
           >"$out/$i-$build.txt" 2>&1; then
            echo "soak run $i/$runs, $build build: $(tail -1 "$out/$i-$build.txt") ($(( $(date +%s) - t0 )) s)"
        else
            tail -30 "$out/$i-$build.txt"
            echo "soak run $i/$runs, $build build: FAILED (whole output: $out/$i-$build.txt)"
            exit 1
        fi
    done
    i=$((i + 1))
done
echo "soak: $runs runs of both builds passed under stress-ng --cpu $(nproc) in $(( $(date +%s) - start )) s"
