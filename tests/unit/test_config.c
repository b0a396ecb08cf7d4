/* test_config.c -- config_load: the default file, defaults, paths, and every
 * refusal with its line number. */
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

static char dir[64], path[128];

static int load_text(const char *text, config *cfg, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return config_load(path, cfg, err, errlen);
}

#define HERD2 "servers:\n  A: { port: 7001, neighbors: [B] }\n  B: { port: 7002, neighbors: [A] }\n"

/* Each bad config, the line the error must name (0: none) and a word of
 * the reason. */
static void test_refusals(void) {
    static const struct { const char *text; int line; const char *why; } cases[] = {
        {"servers:\n  A: { port: 7001, neighbors: [B] }\n", 2, "unknown neighbour 'B'"},
        {"servers:\n  A: { port: 7001, neighbors: [B] }\n  B: { port: 7002, neighbors: [] }\n",
         2, "one-way link"},
        {"servers:\n  A: { port: 7001 }\n  B: { port: 7002 }\n  A: { port: 7003 }\n", 4,
         "defined twice"},
        {"servers:\n  A: { port: 7001 }\n  B:\n    host: 127.0.0.1\n    port: 7001\n", 4,
         "already used by A"},
        {"servers:\n  A: { port: 0 }\n", 2, "port from 1 to 65535"},
        {"servers:\n  A: { port: 70000 }\n", 2, "port from 1 to 65535"},
        {"servers:\n  A: { port: abc }\n", 2, "port from 1 to 65535"},
        {"servers:\n  A: { neighbors: [] }\n", 2, "no port"},
        {"servers:\n  A: { port: 7001, host: 10.0.0.300 }\n", 2, "not an IPv4 address"},
        {"servers:\n  A: { port: 7001, host: 127.1 }\n", 2, "not an IPv4 address"},
        {"servers:\n  A: { port: 7001, host: \"1::2::3\" }\n", 2, "not an IPv6 address"},
        {"servers:\n  A: { port: 7001, host: \"[::1]\" }\n", 2, "without them"},
        {"servers:\n  A: { port: 7001, host: \"a b\" }\n", 2, "or a host name"},
        {"servers:\n  A: { port: 7001, host: -bad.example }\n", 2, "not a host name"},
        {"servers:\n  A: { port: 7001, host: bad-.example }\n", 2, "not a host name"},
        {"servers:\n  A: { port: 7001, host: a..b }\n", 2, "not a host name"},
        {"servers:\n  A: { port: 7001, host: \"\" }\n", 2, "is empty"},
        {"places:\n  provider: local\n", 0, "missing section 'servers'"},
        {"servers: {}\n", 1, "no server defined"},
        {HERD2 "limits: [1, 2]\n", 4, "expected a mapping"},
        {HERD2 "limits:\n  max_clients: lots\n", 5, "expected an integer"},
        {HERD2 "limits:\n  max_clients: 0\n", 5, "out of range"},
        {HERD2 "limits:\n  max_clients_per_address: -1\n", 5, "out of range"},
        {HERD2 "supervisor:\n  hang_timeout_s: 3601\n", 5, "out of range"},
        {HERD2 "supervisor:\n  hang_timeout_s: 2\n", 5, "0 for off, or 3 to 3600"},
        {HERD2 "limits:\n  max_line_bytes: [1]\n", 5, "expected a value"},
        {HERD2 "limits:\n  max_lines: 5\n", 5, "unknown key 'max_lines'"},
        {HERD2 "logging:\n  dir: logs\n  dir: other\n", 6, "given twice"},
        {HERD2 "logging:\n  log_lines: maybe\n", 5, "true or false"},
        {HERD2 "limit:\n  max_clients: 5\n", 4, "unknown section 'limit'"},
        {HERD2 "places: { provider: bing }\n", 4, "unknown provider 'bing'"},
        {HERD2 "benchmark:\n  mix: iamat=60,whatsat=60\n", 5, "adding up to 100"},
        {"servers:\n  A: { port: 7001, neighbors: [A] }\n", 2, "its own neighbour"},
        {"servers:\n  A: { port: 7001, neighbors: [B, B] }\n  B: { port: 7002, neighbors: [A] }\n",
         2, "listed twice"},
        {"servers:\n  A: { port: 7001, colour: red }\n", 2, "unknown key 'colour'"},
        {"servers:\n  A: { port: 7001\n", 3, "invalid YAML"},
        {"servers:\n  A: [port, 7001]\n", 2, "expected a mapping"},
        {"servers:\n  \"bad name\": { port: 7001 }\n", 2, "server name"},
        {HERD2 "supervisor:\n  backoff_initial_ms: 500\n  backoff_max_ms: 100\n", 0,
         "backoff_max_ms"},
        /* the supervisor keeps restart_max + 1 crash times: no more than it can */
        {HERD2 "supervisor:\n  restart_max: 1001\n", 5, "out of range"},
        {"", 0, "empty"},
        {"- a\n- b\n", 1, "expected a mapping of sections"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config cfg;
        char err[512] = "";
        int rc = load_text(cases[i].text, &cfg, err, sizeof err);
        CHECK(rc < 0, "case %zu accepted", i);
        char want[160];
        if (cases[i].line)
            snprintf(want, sizeof want, "%s:%d: ", path, cases[i].line);
        else
            snprintf(want, sizeof want, "%s: ", path);
        CHECK(strncmp(err, want, strlen(want)) == 0, "case %zu: '%s' does not start with '%s'",
              i, err, want);
        CHECK(strstr(err, cases[i].why) != NULL, "case %zu: '%s' lacks '%s'", i, err,
              cases[i].why);
    }
}

/* IPv4 and IPv6 literals and host names are taken as written: nothing is
 * looked up when the file is read (common/net.h resolves them). */
static void test_hosts(void) {
    static const char *ok[] = {"127.0.0.1", "::1", "fe80::1:2", "localhost", "example.com",
                               "host-1.example.org", "10.1.2.3", "::ffff:10.0.0.1"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        config cfg;
        char err[512], text[256];
        snprintf(text, sizeof text, "servers:\n  A: { port: 7001, host: \"%s\" }\n", ok[i]);
        CHECK(load_text(text, &cfg, err, sizeof err) == 0, "host %s: %s", ok[i], err);
        CHECK_STR(cfg.servers[0].host, ok[i]);
    }
    config cfg;
    char err[512];
    /* unquoted, ::1 is a plain value in block style (flow style needs quotes) */
    CHECK(load_text("servers:\n  A:\n    host: ::1\n    port: 7001\n", &cfg, err,
                    sizeof err) == 0, "unquoted ::1: %s", err);
    CHECK_STR(cfg.servers[0].host, "::1");
}

static void test_google_needs_key(void) {
    config cfg;
    char err[512];
    unsetenv("GOOGLE_PLACES_API_KEY");
    CHECK(load_text(HERD2 "places: { provider: google }\n", &cfg, err, sizeof err) < 0 &&
          strstr(err, "no API key"), "google without a key: %s", err);
    setenv("GOOGLE_PLACES_API_KEY", "from-env", 1);
    CHECK(load_text(HERD2 "places: { provider: google, api_key: in-file }\n", &cfg, err,
                    sizeof err) == 0, "%s", err);
    CHECK_STR(cfg.places.api_key, "from-env");
    unsetenv("GOOGLE_PLACES_API_KEY");
    CHECK(load_text(HERD2 "places: { provider: google-legacy, api_key: in-file }\n", &cfg,
                    err, sizeof err) == 0 && !strcmp(cfg.places.api_key, "in-file"), "%s", err);
}

static void test_defaults_and_paths(void) {
    config cfg;
    char err[512], want[256];
    CHECK(load_text(HERD2 "places: { local_file: p.geojson }\nlogging: { dir: /var/x }\n",
                    &cfg, err, sizeof err) == 0, "%s", err);
    snprintf(want, sizeof want, "%s/p.geojson", dir);
    CHECK_STR(cfg.places.local_file, want);
    CHECK_STR(cfg.logging.dir, "/var/x");
    snprintf(want, sizeof want, "%s/state", dir);
    CHECK_STR(cfg.herd.state_dir, want);
    CHECK(cfg.limits.max_line_bytes == 8192 && cfg.limits.max_output_bytes == 1048576 &&
          cfg.limits.max_clients == 20000 && cfg.limits.idle_timeout_s == 300 &&
          cfg.limits.max_clients_per_address == 0, "limits");
    CHECK(cfg.supervisor.hang_timeout_s == 10, "hang_timeout_s");
    CHECK(cfg.places.provider == PLACES_LOCAL && cfg.places.timeout_ms == 5000, "places");
    CHECK(!strcmp(cfg.servers[0].host, "127.0.0.1") && cfg.servers[1].port == 7002, "servers");
}

static void test_default_file(void) {
    config cfg;
    char err[512];
    CHECK(config_load("config.yml", &cfg, err, sizeof err) == 0, "%s", err);
    static const struct { const char *name; int port; const char *neigh[3]; } herd[] = {
        {"Bailey", 10099, {"Bona", "Campbell"}},
        {"Bona", 10044, {"Bailey", "Clark", "Campbell"}},
        {"Campbell", 10022, {"Bailey", "Bona", "Jaquez"}},
        {"Clark", 10211, {"Jaquez", "Bona"}},
        {"Jaquez", 10194, {"Clark", "Campbell"}},
    };
    CHECK(cfg.n_servers == 5, "%d servers", cfg.n_servers);
    for (int i = 0; i < 5; i++) {
        int k = config_find_server(&cfg, herd[i].name);
        CHECK(k >= 0 && cfg.servers[k].port == herd[i].port, "%s port", herd[i].name);
        if (k < 0) continue;
        int n = 0;
        while (n < 3 && herd[i].neigh[n]) n++;
        CHECK(cfg.servers[k].n_neighbors == n, "%s neighbours", herd[i].name);
        for (int j = 0; j < n && j < cfg.servers[k].n_neighbors; j++)
            CHECK_STR(cfg.servers[cfg.servers[k].neighbors[j]].name, herd[i].neigh[j]);
    }
    CHECK_STR(cfg.places.local_file, "./data/places.geojson");
    CHECK(config_load("no-such.yml", &cfg, err, sizeof err) < 0 &&
          strstr(err, "no-such.yml: cannot open"), "%s", err);
}

/* The in-memory loader is the file loader's twin: same answer, same lines. */
static void test_load_text(void) {
    static const char ok[] = "servers:\n  A: {port: 7001, neighbors: [B]}\n"
                             "  B: {port: 7002, neighbors: [A]}\n";
    static const char bad[] = "servers:\n  A: {port: 7001}\nlimits:\n  max_line_bytes: -3\n";
    config cfg;
    char err[512];
    CHECK(config_load_text("etc/herd.yml", ok, sizeof ok - 1, &cfg, err, sizeof err) == 0,
          "%s", err);
    CHECK(cfg.n_servers == 2 && cfg.servers[1].port == 7002 && cfg.servers[0].n_neighbors == 1,
          "two servers linked");
    CHECK_STR(cfg.dir, "etc");
    CHECK(config_load_text("etc/herd.yml", bad, sizeof bad - 1, &cfg, err, sizeof err) < 0,
          "negative limit refused");
    CHECK(!strncmp(err, "etc/herd.yml:4: ", 16), "%s", err);
    CHECK(config_load_text("x.yml", "a: [", 4, &cfg, err, sizeof err) < 0 &&
          !strncmp(err, "x.yml:", 6) && strstr(err, ": invalid YAML: "), "%s", err);
    CHECK(config_load_text("x.yml", "", 0, &cfg, err, sizeof err) < 0 &&
          !strncmp(err, "x.yml: ", 7), "%s", err);
}

/* herd.forwarding and herd.anti_entropy_ms: defaults, values, refusals
 * naming the line. */
static void test_forwarding(void) {
    static const char srv[] = "servers:\n  A: {port: 7001}\nherd:\n  snapshot_interval_s: 5\n";
    char text[256], err[512];
    config cfg;
    CHECK(config_load_text("h.yml", srv, sizeof srv - 1, &cfg, err, sizeof err) == 0, "%s", err);
    CHECK(cfg.herd.forwarding == FORWARD_TREE && cfg.herd.anti_entropy_ms == 1000,
          "trees and 1 s by default");
    int n = snprintf(text, sizeof text, "%s  forwarding: flood\n  anti_entropy_ms: 250\n", srv);
    CHECK(config_load_text("h.yml", text, (size_t)n, &cfg, err, sizeof err) == 0, "%s", err);
    CHECK(cfg.herd.forwarding == FORWARD_FLOOD && cfg.herd.anti_entropy_ms == 250, "set");
    n = snprintf(text, sizeof text, "%s  forwarding: gossip\n", srv);
    CHECK(config_load_text("h.yml", text, (size_t)n, &cfg, err, sizeof err) < 0 &&
          !strncmp(err, "h.yml:5: ", 9) && strstr(err, "expected tree or flood"), "%s", err);
    n = snprintf(text, sizeof text, "%s  anti_entropy_ms: 50\n", srv);
    CHECK(config_load_text("h.yml", text, (size_t)n, &cfg, err, sizeof err) < 0 &&
          !strncmp(err, "h.yml:5: ", 9) && strstr(err, "out of range"), "%s", err);
}

static void test_mix(void) {
    int p = -1;
    CHECK(config_parse_mix("iamat=30,whatsat=70", &p) == 0 && p == 30, "30/70");
    CHECK(config_parse_mix("whatsat=70", &p) == 0 && p == 30, "whatsat only");
    CHECK(config_parse_mix("iamat=100", &p) == 0 && p == 100, "iamat only");
    CHECK(config_parse_mix("iamat=30,whatsat=60", &p) < 0, "not 100");
    CHECK(config_parse_mix("iamat=30,iamat=70", &p) < 0, "twice");
    CHECK(config_parse_mix("bogus", &p) < 0, "bogus");
    CHECK(config_parse_mix("iamat=x", &p) < 0, "not a number");
}

/* logging.max_file_bytes and logging.keep_files: bounded defaults, values
 * taken, and out-of-range or malformed values refused with their line. */
static void test_logging_bounds(void) {
    static const struct { const char *text; const char *why; } bad[] = {
        {HERD2 "logging:\n  max_file_bytes: 4095\n", "out of range (4096 to"},
        {HERD2 "logging:\n  max_file_bytes: 2199023255553\n", "out of range"},
        {HERD2 "logging:\n  max_file_bytes: 64MiB\n", "expected an integer"},
        {HERD2 "logging:\n  max_file_bytes: -1\n", "out of range"},
        {HERD2 "logging:\n  keep_files: -1\n", "out of range (0 to 100)"},
        {HERD2 "logging:\n  keep_files: 101\n", "out of range (0 to 100)"},
        {HERD2 "logging:\n  keep_files: [1]\n", "expected a value"},
    };
    config cfg;
    char err[512], want[160];
    snprintf(want, sizeof want, "%s:5: logging.", path);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(load_text(bad[i].text, &cfg, err, sizeof err) < 0, "logging case %zu accepted", i);
        CHECK(!strncmp(err, want, strlen(want)) && strstr(err, bad[i].why),
              "logging case %zu: '%s' lacks '%s' or '%s'", i, err, want, bad[i].why);
    }
    CHECK(load_text(HERD2, &cfg, err, sizeof err) == 0, "%s", err);
    CHECK(cfg.logging.max_file_bytes == 64u << 20 && cfg.logging.keep_files == 4,
          "logging defaults: %zu bytes x %d files", cfg.logging.max_file_bytes,
          cfg.logging.keep_files);
    CHECK(load_text(HERD2 "logging:\n  max_file_bytes: 65536\n  keep_files: 0\n", &cfg, err,
                    sizeof err) == 0, "%s", err);
    CHECK(cfg.logging.max_file_bytes == 65536 && cfg.logging.keep_files == 0,
          "logging values: %zu bytes x %d files", cfg.logging.max_file_bytes,
          cfg.logging.keep_files);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/herdcfgXXXXXX");
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/config.yml", dir);
    test_refusals();
    test_hosts();
    test_google_needs_key();
    test_defaults_and_paths();
    test_default_file();
    test_load_text();
    test_forwarding();
    test_mix();
    test_logging_bounds();
    unlink(path);
    rmdir(dir);
    return check_report("config");
}
