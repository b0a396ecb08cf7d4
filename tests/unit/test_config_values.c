/* test_config_values.c -- config_load's value parsing and edge cases: each
 * spelling a setting accepts and the value it gives, each value it refuses
 * with the line it names, server names, path joins, and the mix. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"

#define HERD2 "servers:\n  A: { port: 7001, neighbors: [B] }\n  B: { port: 7002, neighbors: [A] }\n"

static int load(const char *text, config *cfg, char *err, size_t errlen) {
    return config_load_text("/etc/herd/c.yml", text, strlen(text), cfg, err, errlen);
}

/* Refused, and the error starts with "/etc/herd/c.yml:LINE: " and has why. */
static void refused(const char *text, int line, const char *why) {
    config cfg;
    char err[1024] = "", want[64];
    CHECK(load(text, &cfg, err, sizeof err) < 0, "accepted: %s", text);
    if (line) snprintf(want, sizeof want, "/etc/herd/c.yml:%d: ", line);
    else snprintf(want, sizeof want, "/etc/herd/c.yml: ");
    CHECK(!strncmp(err, want, strlen(want)) && strstr(err, why), "'%s': want '%s' ... '%s'",
          err, want, why);
}

static void test_bools(void) {
    static const struct { const char *v; int want; } cases[] = {
        {"true", 1}, {"yes", 1}, {"on", 1}, {"false", 0}, {"no", 0}, {"off", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[256], err[512];
        config cfg;
        snprintf(text, sizeof text, HERD2 "logging:\n  log_lines: %s\n", cases[i].v);
        CHECK(load(text, &cfg, err, sizeof err) == 0, "%s: %s", cases[i].v, err);
        CHECK(cfg.logging.log_lines == cases[i].want, "log_lines: %s", cases[i].v);
    }
    refused(HERD2 "logging:\n  log_lines: True1\n", 5, "true or false");
}

static void test_numbers(void) {
    config cfg;
    char err[512];
    CHECK(load(HERD2 "benchmark:\n  radius_km: 0.25\n  mix: whatsat=80\n", &cfg, err,
               sizeof err) == 0 && cfg.benchmark.radius_km == 0.25 &&
          cfg.benchmark.iamat_pct == 20, "%s", err);
    refused(HERD2 "benchmark:\n  radius_km: 51\n", 5, "radius_km");
    refused(HERD2 "benchmark:\n  radius_km: -1\n", 5, "radius_km");
    refused(HERD2 "benchmark:\n  radius_km: 1km\n", 5, "radius_km");
    refused(HERD2 "benchmark:\n  radius_km: \"\"\n", 5, "radius_km");
    refused(HERD2 "benchmark:\n  mix: iamat\n", 5, "mix");
    refused(HERD2 "limits:\n  max_clients: 12x\n", 5, "expected an integer");
    refused(HERD2 "limits:\n  max_clients: \"\"\n", 5, "expected an integer");
    refused(HERD2 "limits:\n  max_clients: 99999999999999999999\n", 5, "expected an integer");
    refused(HERD2 "limits:\n  max_clients: 1000001\n", 5, "out of range");
    refused(HERD2 "limits:\n  max_line_bytes: 63\n", 5, "out of range");
    CHECK(load(HERD2 "limits:\n  max_output_bytes: 4294967296\n", &cfg, err, sizeof err) == 0 &&
          cfg.limits.max_output_bytes == 4294967296ULL, "%s", err);
    refused(HERD2 "limits:\n  max_output_bytes: 4294967297\n", 5, "out of range");
}

static void test_strings_and_paths(void) {
    config cfg;
    char err[512], text[8192];
    CHECK(load(HERD2 "places:\n  local_file: /abs/p.json\nherd:\n  state_dir: s\n",
               &cfg, err, sizeof err) == 0, "%s", err);
    CHECK_STR(cfg.places.local_file, "/abs/p.json");
    CHECK_STR(cfg.herd.state_dir, "/etc/herd/s");
    /* an empty path would be the root folder (logs in /NAME.log): refused */
    refused(HERD2 "logging:\n  dir: \"\"\n", 5, "logging.dir: expected a path, found an empty");
    refused(HERD2 "herd:\n  state_dir: \"\"\n", 5, "herd.state_dir: expected a path");
    refused(HERD2 "herd:\n  secret_file: \"\"\n", 5, "herd.secret_file: expected a path");
    refused(HERD2 "places:\n  local_file: \"\"\n", 5, "places.local_file: expected a path");
    char longv[5000];
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    snprintf(text, sizeof text, HERD2 "places:\n  base_url: %s\n", longv);
    refused(text, 5, "too long");
    snprintf(text, sizeof text, HERD2 "herd:\n  state_dir: %.4090s\n", longv);
    refused(text, 5, "too long");
    /* a config file at the root, and one with no folder */
    CHECK(config_load_text("/c.yml", HERD2, sizeof HERD2 - 1, &cfg, err, sizeof err) == 0 &&
          !strcmp(cfg.dir, "/"), "root: %s", cfg.dir);
    CHECK(config_load_text("c.yml", HERD2, sizeof HERD2 - 1, &cfg, err, sizeof err) == 0 &&
          !strcmp(cfg.dir, "."), "no folder: %s", cfg.dir);
    char longpath[5000];
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    char lerr[8192];
    CHECK(config_load_text(longpath, HERD2, sizeof HERD2 - 1, &cfg, lerr, sizeof lerr) < 0 &&
          strstr(lerr, "path too long"), "%.60s", lerr);
}

static void test_servers(void) {
    config cfg;
    char err[512];
    CHECK(load("servers:\n  a_b-c.9: { host: localhost, port: 7001 }\n", &cfg, err,
               sizeof err) == 0 && !strcmp(cfg.servers[0].host, "localhost") &&
          !strcmp(cfg.servers[0].name, "a_b-c.9"), "%s", err);
    refused("servers:\n  \"a/b\": { port: 7001 }\n", 2, "server name");
    refused("servers:\n  \"\": { port: 7001 }\n", 2, "server name");
    refused("servers:\n  AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:"
            " { port: 7001 }\n", 2, "server name");
    refused("servers:\n  [A]: { port: 7001 }\n", 2, "server name");
    refused("servers:\n  A: { port: [1] }\n", 2, "port from 1 to 65535");
    refused("servers:\n  A: { port: 7001, host: [h] }\n", 2, "host");
    refused("servers:\n  A: { port: 7001, neighbors: B }\n", 2, "list");
    refused("servers:\n  A: { port: 7001, neighbors: [[B]] }\n", 2, "neighbo");
    refused("servers: [A, B]\n", 1, "expected a mapping");
    refused(HERD2 "servers:\n  C: { port: 7003 }\n", 4, "given twice");
    refused(HERD2 "limits: {}\nlimits: {}\n", 5, "given twice");
    refused(HERD2 "[x]: 1\n", 4, "unknown section");
    refused(HERD2 "limits:\n  [k]: 1\n", 5, "keys must be plain names");
    char text[16384];
    int n = snprintf(text, sizeof text, "servers:\n");
    for (int i = 0; i < CONFIG_MAX_SERVERS + 1; i++)
        n += snprintf(text + n, sizeof text - (size_t)n, "  S%d: { port: %d }\n", i, 7000 + i);
    refused(text, CONFIG_MAX_SERVERS + 2, "servers");
}

static void test_mix(void) {
    int p = -1;
    CHECK(config_parse_mix("whatsat=0", &p) == 0 && p == 100, "whatsat=0");
    CHECK(config_parse_mix("iamat=0,whatsat=100", &p) == 0 && p == 0, "0/100");
    CHECK(config_parse_mix("whatsat=50,whatsat=50", &p) < 0, "whatsat twice");
    CHECK(config_parse_mix("iamat=101", &p) < 0, "over 100");
    CHECK(config_parse_mix("iamat=-1", &p) < 0, "negative");
    CHECK(config_parse_mix("", &p) < 0, "empty");
}

static void test_env_key(void) {
    config cfg;
    char err[512];
    setenv("GOOGLE_PLACES_API_KEY", "", 1);   /* empty: the file's key stays */
    CHECK(load(HERD2 "places: { provider: google, api_key: file-key }\n", &cfg, err,
               sizeof err) == 0 && !strcmp(cfg.places.api_key, "file-key"), "%s", err);
    unsetenv("GOOGLE_PLACES_API_KEY");
}

int main(void) {
    test_bools();
    test_numbers();
    test_strings_and_paths();
    test_servers();
    test_mix();
    test_env_key();
    return check_report("config values");
}
