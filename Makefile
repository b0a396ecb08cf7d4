# proxyherd -- build, test and run the herd.
#
#   make            build every program into bin/
#   make deps       install the missing Debian packages (nothing when all are there)
#   make test       the whole gate (about 8 minutes): shellcheck the scripts, build, run the whole
#                   suite, then again under ASan+UBSan, then the fuzzers and the mutations
#   make check      the edit-test loop (about 3 minutes): unit and integration tests, normal build
#   make run        build and start the herd on the default config
#   make stop       stop the herd
#   make status     this host's servers: pid, uptime, restarts, listening, links,
#                   then their rates (updates, link messages, requests per second)
#   make benchmark  load the running herd (CONCURRENCY=N DURATION=S MIX=...)
#   make places-sample  write a test GeoJSON of N places (default 100000; SEED=S,
#                   default 26) to build/places-N.geojson, or to OUT=FILE
#   make fuzz       run each libFuzzer harness for FUZZ_SECONDS (default 60),
#                   or FUZZ_RUNS executions each when that is set
#   make test-chaos kill servers under load for CHAOS_SECONDS (default 60)
#   make test-nemesis  seeded random schedules (kills, pauses, links cut, stalled
#                   or torn, odd IAMATs), then the herd's promise checked:
#                   SEEDS=N runs N random ones, SEED=S replays one (default:
#                   the fixed seeds make integration runs)
#   make test-soak  the integration suite, normal and ASan+UBSan builds, SOAK_RUNS times
#                   (default 5) while stress-ng loads every core: stops at the first failure
#   make test-valgrind  the protocol and log tests with the server under valgrind
#   make test-mutation  apply each curated mutation (tests/mutation/) to a scratch
#                   copy and check that a test fails for it (MUTATIONS=id,id...)
#   make coverage   line and branch coverage of the unit and integration tests
#                   (gcovr; build/cov/coverage.html shows each line and branch)
#   make report     rebuild report.pdf from docs/report.md and docs/data/
#   make report-data  measure again what the report shows (several minutes)
#   make install    install programs, scripts, sample config, docs and the
#                   systemd unit (PREFIX=/usr/local, DESTDIR, SYSCONFDIR=/etc)
#   make clean      remove what the build made

CC      ?= gcc
PKGS    := libcurl yaml-0.1 libcjson libssl libcrypto
OPT     ?= -O2 -g
CFLAGS  := $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wformat=2 \
           -Icommon -Iserver -Isupervisor -MMD -MP
LDFLAGS := $(SAN) -Wl,--as-needed
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LIBS    = $(PKG_LIBS) -lm

# Debian packages the build and the tests need (openssl: the tests play a
# neighbour with openssl s_client; pytest-xdist runs the integration tests
# in parallel; prometheus: its promtool lints the metrics files).  The
# report's own packages are installed by make report.
DEB_PACKAGES := gcc make libc6-dev pkg-config libcurl4-openssl-dev libyaml-dev \
                libcjson-dev libssl-dev openssl python3 python3-pytest python3-pytest-xdist \
                prometheus netcat-openbsd clang libclang-rt-14-dev valgrind iproute2 tcpdump \
                gcovr shellcheck strace
REPORT_PACKAGES := pandoc weasyprint gnuplot-nox graphviz fonts-dejavu-core poppler-utils

# Where objects go: build/ for the normal build, build/asan/ for the
# sanitizer build (its programs land in build/asan/bin/).
B       ?= build
BIN     ?= bin
PYTEST  := /usr/bin/python3 -m pytest
# Integration tests at once (pytest-xdist workers): each takes its own free
# ports and temporary folder, and most of a test's time is spent waiting.
JOBS    ?= 4

COMMON_SRC := common/buf.c common/clock.c common/config.c common/folder.c common/handshake.c common/log.c \
              common/net.c common/ports.c common/protocol.c common/secret.c common/siphash.c common/signals.c
SERVER_SRC := server/main.c server/server.c server/commands.c server/table.c server/places.c server/placesidx.c server/placescache.c \
              server/peer.c server/forward.c server/snapshot.c server/http.c server/google.c \
              server/addrcap.c server/metrics.c server/tls.c server/resolver.c server/reload.c
BENCH_SRC  := benchmark/benchmark.c
SUPER_SRC  := supervisor/main.c supervisor/supervisor.c supervisor/status.c supervisor/rates.c \
              supervisor/init_secret.c supervisor/lock.c supervisor/local.c \
              supervisor/control.c supervisor/ctl.c
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(B)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(B)/%.o)
SERVER_LIB := $(filter-out $(B)/server/main.o,$(SERVER_OBJ))
SUPER_OBJ  := $(SUPER_SRC:%.c=$(B)/%.o)
BENCH_OBJ  := $(BENCH_SRC:%.c=$(B)/%.o)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

PROGRAMS := $(BIN)/herd-server $(BIN)/herd-supervisor $(BIN)/herd-benchmark

.PHONY: all reload restart deps check-deps test check check-normal unit integration asan-build asan-test fuzz fuzz-build test-chaos test-nemesis \
        test-valgrind test-soak \
        test-mutation run stop status \
        benchmark places-sample report report-data install clean coverage

all: check-deps $(PROGRAMS) $(UNIT_BIN)

# Quiet by default; V=1 shows the commands.
Q := $(if $(V),,@)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC    $<")
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(BIN)/herd-server: $(SERVER_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK  $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LIBS)

$(BIN)/herd-supervisor: $(SUPER_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK  $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LIBS)

$(BIN)/herd-benchmark: $(BENCH_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK  $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) $^ -o $@ $(LIBS)

$(B)/fuzz_%: tests/fuzz/fuzz_%.c $(SERVER_LIB) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK  $@")
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -fsanitize=fuzzer $< $(SERVER_LIB) $(COMMON_OBJ) -o $@ $(LIBS)

$(B)/tests/%: tests/unit/%.c tests/unit/check.h $(SERVER_LIB) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LINK  $@")
	$(Q)$(CC) $(CFLAGS) $(PKG_CFLAGS) -Itests/unit $(LDFLAGS) $< $(SERVER_LIB) $(COMMON_OBJ) -o $@ $(LIBS)

# Stop early with a useful message when a library is missing.
check-deps:
	@pkg-config --exists $(PKGS) 2>/dev/null || { \
	  echo "missing build libraries ($(PKGS)); run 'make deps' first" >&2; exit 1; }

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all packages are installed"; exit 0; fi; \
	echo "deps: installing$$missing"; \
	SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing

unit: all
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: all
	HERD_BIN_DIR=$(abspath $(BIN)) $(PYTEST) -q -rs -n $(JOBS) --durations=10 tests/integration

check: deps
	@$(MAKE) --no-print-directory check-normal

check-normal: unit integration

SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all

ASAN_MAKE = $(MAKE) --no-print-directory B=build/asan BIN=build/asan/bin \
	  OPT="-O1 -g -fno-omit-frame-pointer $(SANITIZE)" SAN="$(SANITIZE)"

asan-build:
	@$(ASAN_MAKE) all

asan-test:
	$(ASAN_MAKE) unit integration

# libFuzzer harnesses (clang, ASan+UBSan), each with its seed corpus in
# tests/fuzz/corpus/; what they find lands in build/fuzz/ as crash-* files.
FUZZ_TARGETS := protocol handshake config places
FUZZ_SECONDS ?= 60
FUZZ_RUNS ?=
FUZZ_LIMIT = $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS),-max_total_time=$(FUZZ_SECONDS))
FUZZ_OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
            -fno-sanitize-recover=all

CHAOS_SECONDS ?= 60
test-chaos: all
	CHAOS_SECONDS=$(CHAOS_SECONDS) HERD_BIN_DIR=$(abspath $(BIN)) $(PYTEST) -q \
	  tests/integration/test_chaos.py::test_no_acknowledged_update_is_lost

# The nemesis (tests/integration/test_chaos.py::test_nemesis_schedule): a failing schedule prints
# its seed; SEED=S (or NEMESIS_SEED=S in the environment) replays it.
SEEDS ?=
SEED ?=
test-nemesis: all
	$(if $(SEEDS),NEMESIS_SEEDS=$(SEEDS)) $(if $(SEED),NEMESIS_SEED=$(SEED)) \
	  HERD_BIN_DIR=$(abspath $(BIN)) $(PYTEST) -q \
	  tests/integration/test_chaos.py::test_nemesis_schedule

SOAK_RUNS ?= 5
test-soak: all asan-build
	@$(MAKE) --no-print-directory deps DEB_PACKAGES=stress-ng
	SOAK_RUNS=$(SOAK_RUNS) JOBS=$(JOBS) tests/soak.sh

test-valgrind: all
	HERD_VALGRIND=1 HERD_BIN_DIR=$(abspath $(BIN)) $(PYTEST) -q \
	  tests/integration/test_client_protocol.py \
	  --deselect tests/integration/test_client_protocol.py::test_iamat_behind_a_slow_whatsat_keeps_its_receive_time \
	  tests/integration/test_logs.py::test_log_holds_input_output_and_connections \
	  tests/integration/test_logs.py::test_log_escapes_control_bytes \
	  tests/integration/test_logs.py::test_log_reaches_file_within_a_second \
	  tests/integration/test_logs.py::test_log_reopened_on_sighup \
	  tests/integration/test_logs.py::test_log_summarises_whatsat_json \
	  tests/integration/test_logs.py::test_log_lines_off_keeps_connections_but_no_data

# Each mutation in tests/mutation/mutations.py must make one of its tests
# fail; a survivor or a text that no longer matches the code fails the run.
MUTATIONS ?=
MUTATION_JOBS ?= 3
test-mutation: check-deps
	/usr/bin/python3 tests/mutation/run.py --jobs $(MUTATION_JOBS) $(if $(MUTATIONS),--only $(MUTATIONS)) \
	  $(if $(filter no,$(MUTATION_BASELINE)),--no-baseline)

# Coverage: a separate -O0 --coverage build in build/cov/ (fresh counters
# each time), the unit and integration tests against it, then gcovr over
# server/, common/ and supervisor/: the summary, build/cov/coverage.txt (per
# file) and build/cov/coverage.html (each line and branch).  A server only
# writes its counters when it exits normally, so tests stop what they start
# with SIGTERM; what SIGKILL or a forked snapshot child runs is not counted.
COV_FLAGS := --root . --object-directory build/cov --filter 'server/' --filter 'common/' \
             --filter 'supervisor/' --exclude-unreachable-branches
coverage: deps
	rm -rf build/cov
	@rc=0; $(MAKE) --no-print-directory B=build/cov BIN=build/cov/bin OPT="-O0 -g --coverage" \
	  SAN="--coverage" unit integration || rc=$$?; \
	gcovr $(COV_FLAGS) --branches --txt build/cov/coverage.txt \
	  --html-details build/cov/coverage.html --print-summary || rc=1; \
	[ $$rc -eq 0 ] || echo "make coverage: a test failed; the figures above are incomplete" >&2; \
	exit $$rc

fuzz-build:
	@$(MAKE) --no-print-directory CC=clang B=build/fuzz BIN=build/fuzz/bin OPT="$(FUZZ_OPT)" \
	  SAN="-fsanitize=address,undefined" $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)

FUZZ_JOBS ?= 2
fuzz: fuzz-build
	@$(MAKE) --no-print-directory -j$(FUZZ_JOBS) $(FUZZ_TARGETS:%=fuzz-run-%)

fuzz-run-%:
	@mkdir -p build/fuzz/corpus-$*
	@echo "== fuzz_$* for $(if $(FUZZ_RUNS),$(FUZZ_RUNS) runs,$(FUZZ_SECONDS) s) (log: build/fuzz/$*.log)"
	@build/fuzz/fuzz_$* $(FUZZ_LIMIT) -print_final_stats=1 \
	  -artifact_prefix=build/fuzz/$*- build/fuzz/corpus-$* tests/fuzz/corpus/$* \
	  2>build/fuzz/$*.log || { tail -40 build/fuzz/$*.log; exit 1; }
	@grep -E "stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs" build/fuzz/$*.log | \
	  sed 's/^/fuzz_$*: /'

# make test: while the normal build's tests run (mostly waiting on sockets),
# the sanitizer and fuzzer builds compile beside them; -O shows each part's
# output whole when it ends.
test: deps
	shellcheck start_servers.sh stop_servers.sh tests/soak.sh
	@$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory -j3 -O check-normal asan-build fuzz-build
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(MAKE) --no-print-directory asan-test
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=30
	@# the mutations' tests just passed unmutated, in the integration run above
	$(MAKE) --no-print-directory test-mutation MUTATION_BASELINE=no
	@echo "make test: all passed (normal and ASan+UBSan builds, fuzzing, mutations)"

run: deps
	@$(MAKE) --no-print-directory all
	@./start_servers.sh
	@echo "try:  echo 'IAMAT me +34.068930-118.445127 1700000000.5' | nc -q1 127.0.0.1 10099"
	@echo "      echo 'WHATSAT me 1 3' | nc -q1 127.0.0.1 10044"
	@echo "stop: make stop    status: make status"

stop:
	@./stop_servers.sh

# Apply config.yml again to the running herd (README, "Changing a running herd").
reload: all
	@./start_servers.sh --reload

# Restart this machine's servers one at a time with the binaries just built.
restart: all
	@./start_servers.sh --restart

status:
	@$(BIN)/herd-supervisor --status --rates || true

CONCURRENCY ?=
DURATION ?=
MIX ?=
benchmark: all
	@$(BIN)/herd-supervisor --status >/dev/null 2>&1 || { \
	  echo "make benchmark: no herd is running; start one with: make run" >&2; exit 1; }
	$(BIN)/herd-benchmark -c config.yml $(if $(CONCURRENCY),--concurrency $(CONCURRENCY)) \
	  $(if $(DURATION),--duration $(DURATION)) $(if $(MIX),--mix $(MIX)) $(BENCH_ARGS)

N ?= 100000
OUT ?= $(B)/places-$(N).geojson
places-sample:
	@mkdir -p $(dir $(OUT))
	/usr/bin/python3 benchmark/places_sample.py $(N) $(OUT) $(if $(SEED),--seed $(SEED))

# The report: text in docs/report.md, figures from the JSON in docs/data/,
# which make report-data measures (the sweep against redis-server, the
# propagation run, the yardsticks: redis with four replicas taking SET and
# the asyncio herd on both event loops, then the chaos, multi-host and abuse
# tests' figures).
report: deps
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="$(REPORT_PACKAGES)"
	@/usr/bin/python3 docs/report/build.py

report-data: all
	@$(MAKE) --no-print-directory deps DEB_PACKAGES="redis-server python3-uvloop"
	/usr/bin/python3 benchmark/report_data.py
	/usr/bin/python3 benchmark/forwarding_ab.py --json docs/data/forwarding_ab.json
	/usr/bin/python3 benchmark/yardsticks.py
	rm -f docs/data/resilience.jsonl
	HERD_MEASURED_FILE=$(abspath docs/data/resilience.jsonl) CHAOS_SECONDS=$(CHAOS_SECONDS) \
	  HERD_BIN_DIR=$(abspath $(BIN)) $(PYTEST) -q -rs \
	  tests/integration/test_chaos.py::test_no_acknowledged_update_is_lost \
	  tests/integration/test_hosts.py::test_herd_across_hosts_survives_cut_links \
	  tests/integration/test_limits_abuse.py::test_ten_thousand_idle_connections \
	  tests/integration/test_limits_abuse.py::test_iamat_flood_without_reading \
	  tests/integration/test_limits_abuse.py::test_random_bytes_nul_and_invalid_utf8 \
	  tests/integration/test_forwarding.py::test_default_herd_under_load_sends_at_most_4_2_per_update \
	  tests/integration/test_forwarding.py::test_trees_follow_a_death_and_a_return \
	  tests/integration/test_forwarding.py::test_anti_entropy_at_rest_costs_one_sum_per_link_and_second \
	  tests/integration/test_forwarding.py::test_catch_up_sends_little_when_little_differs \
	  tests/integration/test_forwarding.py::test_big_herd_n_minus_1_per_update_and_converges_after_cuts_and_kills \
	  tests/integration/test_forwarding.py::test_anti_entropy_under_load_on_a_large_table \
	  tests/integration/test_links.py::test_link_messages_as_documented_and_bad_ones_ignored \
	  tests/integration/test_forwarding.py::test_catch_up_with_a_small_max_line_bytes \
	  tests/integration/test_forwarding.py::test_an_update_reaches_every_server_before_anti_entropy_could

# Installation (README, "Running on several hosts").  The config is
# installed only when there is none, so a second install keeps it; the
# sample beside the scripts is always the new one.
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share/proxyherd
DOCDIR     ?= $(PREFIX)/share/doc/proxyherd
SYSCONFDIR ?= /etc
LIBDIR_SD  ?= $(PREFIX)/lib
STATEDIR   ?= /var/lib/proxyherd
LOGDIR     ?= /var/log/proxyherd
FILL = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
           -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'

install: $(PROGRAMS)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR) \
	  $(DESTDIR)$(SYSCONFDIR)/proxyherd $(DESTDIR)$(LIBDIR_SD)/systemd/system \
	  $(DESTDIR)$(LIBDIR_SD)/sysusers.d $(DESTDIR)$(LIBDIR_SD)/tmpfiles.d
	install -m 0755 $(PROGRAMS) $(DESTDIR)$(BINDIR)/
	for f in start_servers.sh stop_servers.sh; do \
	  sed 's|/etc/proxyherd|$(SYSCONFDIR)/proxyherd|g' $$f > $(DESTDIR)$(DATADIR)/$$f && \
	  chmod 0755 $(DESTDIR)$(DATADIR)/$$f || exit 1; done
	install -m 0644 data/places.geojson $(DESTDIR)$(DATADIR)/places.geojson
	sed -e 's|^\(  local_file: \)data/places.geojson|\1$(DATADIR)/places.geojson|' \
	    -e 's|^\(  dir: \)logs |\1$(LOGDIR)|' \
	    -e 's|^\(  secret_file: \)state/herd.secret|\1$(STATEDIR)/herd.secret|' \
	    -e 's|^\(  state_dir: \)state |\1$(STATEDIR)|' \
	    -e 's|^# proxyherd: the default herd.*|# proxyherd: a sample herd; copy this same file to every host of the herd.|' \
	    config.yml > $(DESTDIR)$(DATADIR)/config.yml.sample
	[ -f $(DESTDIR)$(SYSCONFDIR)/proxyherd/config.yml ] || \
	  install -m 0644 $(DESTDIR)$(DATADIR)/config.yml.sample $(DESTDIR)$(SYSCONFDIR)/proxyherd/config.yml
	install -m 0644 README.md docs/PROTOCOL.md docs/DESIGN.md $(DESTDIR)$(DOCDIR)/
	$(FILL) packaging/proxyherd.service.in > $(DESTDIR)$(LIBDIR_SD)/systemd/system/proxyherd.service
	$(FILL) packaging/proxyherd.tmpfiles.in > $(DESTDIR)$(LIBDIR_SD)/tmpfiles.d/proxyherd.conf
	install -m 0644 packaging/proxyherd.sysusers $(DESTDIR)$(LIBDIR_SD)/sysusers.d/proxyherd.conf
	@echo "installed under $(DESTDIR)$(PREFIX); next: README.md, \"Running on several hosts\""

clean:
	@if [ -f servers.pid ]; then echo "the herd is running: make stop first" >&2; exit 1; fi
	rm -rf build $(BIN) state servers.pid servers.lock
	find logs -type f ! -name .keep -delete

-include $(shell find build -name '*.d' 2>/dev/null)
