/* config.c -- load config.yml with libyaml's document API; see config.h.
 *
 * The walk is table driven: each section lists its keys with a type, a
 * place in the struct and bounds, so a new setting is one line.  The
 * 'servers' section has its own checks (names, addresses, two-way links).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "log.h"

typedef struct {
    const char *path;
    yaml_document_t *doc;
    char *err;
    size_t errlen;
} loader;

/* Record "FILE:LINE: reason" and return -1. */
static int fail(loader *L, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(loader *L, const yaml_node_t *node, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (node)
        snprintf(L->err, L->errlen, "%s:%zu: %s", L->path,
                 (size_t)node->start_mark.line + 1, msg);
    else
        snprintf(L->err, L->errlen, "%s: %s", L->path, msg);
    return -1;
}

static yaml_node_t *node_at(loader *L, int idx) {
    return yaml_document_get_node(L->doc, idx);
}

static const char *scalar(const yaml_node_t *n) {
    return (const char *)n->data.scalar.value;
}

static const char *type_name(const yaml_node_t *n) {
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a value";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

/* ---------------------------------------------------------------- values */

typedef enum { K_INT, K_INT_OR_OFF, K_SIZE, K_STR, K_PATH, K_BOOL, K_PROVIDER, K_MIX, K_DOUBLE, K_FORWARDING } key_type;

typedef struct {
    const char *name;
    key_type type;
    size_t offset;      /* in config */
    size_t size;        /* for strings: the field's size */
    long long min, max; /* for numbers */
} key_spec;

static int parse_ll(const char *s, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

/* dir + "/" + rel into dst; -1 when it does not fit. */
static int path_join(char *dst, size_t size, const char *dir, const char *rel) {
    int w = snprintf(dst, size, "%s/%s", dir, rel);
    return (w < 0 || (size_t)w >= size) ? -1 : 0;
}

static int set_value(loader *L, config *cfg, const key_spec *k,
                     const yaml_node_t *v, const char *section) {
    char *field = (char *)cfg + k->offset;
    if (v->type != YAML_SCALAR_NODE)
        return fail(L, v, "%s.%s: expected a value, found %s", section,
                    k->name, type_name(v));
    const char *s = scalar(v);
    long long n;
    switch (k->type) {
    case K_INT:
    case K_INT_OR_OFF:        /* 0 (off), or min to max */
    case K_SIZE:
        if (parse_ll(s, &n) < 0)
            return fail(L, v, "%s.%s: expected an integer, found '%s'",
                        section, k->name, s);
        if (k->type == K_INT_OR_OFF && n == 0) {
            *(int *)field = 0;
            return 0;
        }
        if (n < k->min || n > k->max)
            return fail(L, v, "%s.%s: %lld is out of range (%s%lld to %lld)",
                        section, k->name, n, k->type == K_INT_OR_OFF ? "0 for off, or " : "",
                        k->min, k->max);
        if (k->type != K_SIZE) *(int *)field = (int)n;
        else *(size_t *)field = (size_t)n;
        return 0;
    case K_DOUBLE: {
        char *end;
        double d = strtod(s, &end);
        if (end == s || *end || d < (double)k->min || d > (double)k->max)
            return fail(L, v, "%s.%s: expected a number from %lld to %lld, found '%s'",
                        section, k->name, k->min, k->max, s);
        *(double *)field = d;
        return 0;
    }
    case K_BOOL:
        if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) *(int *)field = 1;
        else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) *(int *)field = 0;
        else return fail(L, v, "%s.%s: expected true or false, found '%s'",
                         section, k->name, s);
        return 0;
    case K_STR:
    case K_PATH:
        if (strlen(s) >= k->size)
            return fail(L, v, "%s.%s: value too long", section, k->name);
        if (k->type == K_PATH && !s[0])     /* "" would mean the root folder */
            return fail(L, v, "%s.%s: expected a path, found an empty string", section, k->name);
        if (k->type == K_PATH && s[0] != '/') {
            if (path_join(field, k->size, cfg->dir, s) < 0)
                return fail(L, v, "%s.%s: path too long", section, k->name);
        } else {
            strcpy(field, s);
        }
        return 0;
    case K_PROVIDER:
        if (!strcmp(s, "local")) cfg->places.provider = PLACES_LOCAL;
        else if (!strcmp(s, "google")) cfg->places.provider = PLACES_GOOGLE;
        else if (!strcmp(s, "google-legacy")) cfg->places.provider = PLACES_GOOGLE_LEGACY;
        else return fail(L, v, "%s.%s: unknown provider '%s' (local, google, google-legacy)",
                         section, k->name, s);
        return 0;
    case K_FORWARDING:
        if (!strcmp(s, "tree")) cfg->herd.forwarding = FORWARD_TREE;
        else if (!strcmp(s, "flood")) cfg->herd.forwarding = FORWARD_FLOOD;
        else return fail(L, v, "%s.%s: expected tree or flood, found '%s'",
                         section, k->name, s);
        return 0;
    case K_MIX:
        if (config_parse_mix(s, (int *)field) < 0)
            return fail(L, v, "%s.%s: expected 'iamat=P,whatsat=Q' adding up to 100, found '%s'",
                        section, k->name, s);
        return 0;
    }
    return 0;
}

#define OFF(f) offsetof(config, f)
#define STR(f) OFF(f), sizeof(((config *)0)->f)

static const key_spec places_keys[] = {
    {"provider", K_PROVIDER, 0, 0, 0, 0},
    {"base_url", K_STR, STR(places.base_url), 0, 0},
    {"api_key", K_STR, STR(places.api_key), 0, 0},
    {"local_file", K_PATH, STR(places.local_file), 0, 0},
    {"timeout_ms", K_INT, OFF(places.timeout_ms), 0, 1, 600000},
    {"cache_ttl_s", K_INT, OFF(places.cache_ttl_s), 0, 0, 86400 * 30},
    {"cache_max_entries", K_INT, OFF(places.cache_max_entries), 0, 0, 10000000},
    {"max_response_bytes", K_SIZE, OFF(places.max_response_bytes), 0, 1024, 1 << 30},
    {NULL, 0, 0, 0, 0, 0},
};

static const key_spec limits_keys[] = {
    {"max_line_bytes", K_SIZE, OFF(limits.max_line_bytes), 0, 64, 1 << 20},
    {"max_output_bytes", K_SIZE, OFF(limits.max_output_bytes), 0, 4096, 1LL << 32},
    {"max_clients", K_INT, OFF(limits.max_clients), 0, 1, 1000000},
    {"max_clients_per_address", K_INT, OFF(limits.max_clients_per_address), 0, 0, 1000000},
    {"idle_timeout_s", K_INT, OFF(limits.idle_timeout_s), 0, 0, 86400 * 7},
    {"max_stored_clients", K_SIZE, OFF(limits.max_stored_clients), 0, 1, 100000000},
    {NULL, 0, 0, 0, 0, 0},
};

static const key_spec logging_keys[] = {
    {"dir", K_PATH, STR(logging.dir), 0, 0},
    {"flush_ms", K_INT, OFF(logging.flush_ms), 0, 1, 1000},
    {"log_lines", K_BOOL, OFF(logging.log_lines), 0, 0, 0},
    {"max_file_bytes", K_SIZE, OFF(logging.max_file_bytes), 0, 4096, 1LL << 40},
    {"keep_files", K_INT, OFF(logging.keep_files), 0, 0, 100},
    {NULL, 0, 0, 0, 0, 0},
};

static const key_spec supervisor_keys[] = {
    {"restart_max", K_INT, OFF(supervisor.restart_max), 0, 1, CONFIG_RESTART_MAX},
    {"restart_window_s", K_INT, OFF(supervisor.restart_window_s), 0, 1, 86400},
    {"backoff_initial_ms", K_INT, OFF(supervisor.backoff_initial_ms), 0, 1, 600000},
    {"backoff_max_ms", K_INT, OFF(supervisor.backoff_max_ms), 0, 1, 600000},
    {"stop_timeout_s", K_INT, OFF(supervisor.stop_timeout_s), 0, 1, 3600},
    /* at least 3: a server beats once a second, so 1 or 2 s would take a
     * busy but healthy loop for a hung one */
    {"hang_timeout_s", K_INT_OR_OFF, OFF(supervisor.hang_timeout_s), 0, 3, 3600},
    {NULL, 0, 0, 0, 0, 0},
};

static const key_spec herd_keys[] = {
    {"secret_file", K_PATH, STR(herd.secret_file), 0, 0},
    {"state_dir", K_PATH, STR(herd.state_dir), 0, 0},
    {"snapshot_interval_s", K_INT, OFF(herd.snapshot_interval_s), 0, 1, 86400},
    {"metrics_server_label", K_BOOL, OFF(herd.metrics_server_label), 0, 0, 0},
    {"forwarding", K_FORWARDING, 0, 0, 0, 0},
    {"anti_entropy_ms", K_INT, OFF(herd.anti_entropy_ms), 0, 100, 600000},
    {NULL, 0, 0, 0, 0, 0},
};

static const key_spec benchmark_keys[] = {
    {"concurrency", K_INT, OFF(benchmark.concurrency), 0, 1, 100000},
    {"duration_s", K_INT, OFF(benchmark.duration_s), 0, 1, 86400},
    {"mix", K_MIX, OFF(benchmark.iamat_pct), 0, 0, 0},
    {"clients", K_INT, OFF(benchmark.clients), 0, 1, 100000000},
    {"warmup_s", K_INT, OFF(benchmark.warmup_s), 0, 0, 3600},
    {"radius_km", K_DOUBLE, OFF(benchmark.radius_km), 0, 0, 50},
    {"bound", K_INT, OFF(benchmark.bound), 0, 1, 20},
    {NULL, 0, 0, 0, 0, 0},
};

static int load_section(loader *L, config *cfg, const char *section,
                        const yaml_node_t *map, const key_spec *keys) {
    if (map->type != YAML_MAPPING_NODE)
        return fail(L, map, "%s: expected a mapping, found %s", section,
                    type_name(map));
    unsigned seen = 0;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(L, p->key), *v = node_at(L, p->value);
        if (k->type != YAML_SCALAR_NODE)
            return fail(L, k, "%s: keys must be plain names", section);
        int i;
        for (i = 0; keys[i].name; i++)
            if (!strcmp(keys[i].name, scalar(k))) break;
        if (!keys[i].name)
            return fail(L, k, "%s: unknown key '%s'", section, scalar(k));
        if (seen & (1u << i))
            return fail(L, k, "%s: key '%s' given twice", section, scalar(k));
        seen |= 1u << i;
        if (set_value(L, cfg, &keys[i], v, section) < 0) return -1;
    }
    return 0;
}

/* --------------------------------------------------------------- servers */

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n >= CONFIG_MAX_NAME) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-' || *s == '.'))
            return 0;
    return 1;
}

/* NULL when h may be a server's host: an IPv4 literal, an IPv6 literal
 * (without brackets), or a host name (RFC 1123: dot-separated labels of
 * letters, digits and '-', up to 63 characters each, 253 in all).  Else
 * why not.  Nothing is looked up here: names are resolved by who uses them
 * (common/net.h), at start and before each dial. */
static const char *host_problem(const char *h) {
    unsigned char a[sizeof(struct in6_addr)];
    size_t n = strlen(h);
    if (n == 0) return "is empty";
    if (h[0] == '[') return "is in brackets: write an IPv6 address without them, in quotes";
    if (strchr(h, ':'))
        return inet_pton(AF_INET6, h, a) == 1 ? NULL : "is not an IPv6 address";
    if (strspn(h, "0123456789.") == n)
        return inet_pton(AF_INET, h, a) == 1 ? NULL : "is not an IPv4 address";
    if (n > 253) return "is longer than a host name may be (253)";
    size_t label = 0;
    for (const char *p = h;; p++) {
        if (*p == '.' || !*p) {
            if (label == 0 || label > 63 || p[-1] == '-' || *(p - label) == '-')
                return "is not a host name (labels of 1 to 63 letters, digits or '-', "
                       "not starting or ending with '-')";
            if (!*p) return NULL;
            label = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '-') {
            label++;
        } else {
            return "is not an IPv4 or IPv6 address or a host name";
        }
    }
}

/* Where each server's neighbour list items are, for error lines. */
typedef struct {
    const yaml_node_t *items[CONFIG_MAX_SERVERS][CONFIG_MAX_SERVERS];
    const yaml_node_t *names[CONFIG_MAX_SERVERS];
    const yaml_node_t *neigh_nodes[CONFIG_MAX_SERVERS];
} server_nodes;

static int load_server(loader *L, config_server *s,
                       const yaml_node_t *body, server_nodes *sn, int idx) {
    strcpy(s->host, "127.0.0.1");
    s->port = 0;
    if (body->type != YAML_MAPPING_NODE)
        return fail(L, body, "servers.%s: expected a mapping with host, port and neighbors, found %s",
                    s->name, type_name(body));
    int have_port = 0;
    for (yaml_node_pair_t *p = body->data.mapping.pairs.start;
         p < body->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(L, p->key), *v = node_at(L, p->value);
        const char *key = k->type == YAML_SCALAR_NODE ? scalar(k) : "?";
        if (!strcmp(key, "host")) {
            if (v->type != YAML_SCALAR_NODE)
                return fail(L, v, "servers.%s.host: expected an address, found %s", s->name, type_name(v));
            const char *h = scalar(v), *why = host_problem(h);
            if (why) return fail(L, v, "servers.%s.host: '%s' %s", s->name, h, why);
            snprintf(s->host, sizeof s->host, "%s", h);
        } else if (!strcmp(key, "port")) {
            long long n;
            if (v->type != YAML_SCALAR_NODE || parse_ll(scalar(v), &n) < 0 || n < 1 || n > 65535)
                return fail(L, v, "servers.%s.port: expected a port from 1 to 65535, found '%s'",
                            s->name, v->type == YAML_SCALAR_NODE ? scalar(v) : type_name(v));
            s->port = (int)n;
            have_port = 1;
        } else if (!strcmp(key, "neighbors")) {
            if (v->type != YAML_SEQUENCE_NODE)
                return fail(L, v, "servers.%s.neighbors: expected a list of names, found %s",
                            s->name, type_name(v));
            sn->neigh_nodes[idx] = v;
        } else {
            return fail(L, k, "servers.%s: unknown key '%s' (host, port, neighbors)", s->name, key);
        }
    }
    if (!have_port) return fail(L, body, "servers.%s: no port", s->name);
    return 0;
}

static int resolve_neighbors(loader *L, config *cfg, server_nodes *sn) {
    for (int i = 0; i < cfg->n_servers; i++) {
        config_server *s = &cfg->servers[i];
        const yaml_node_t *seq = sn->neigh_nodes[i];
        if (!seq) continue;
        for (yaml_node_item_t *it = seq->data.sequence.items.start;
             it < seq->data.sequence.items.top; it++) {
            yaml_node_t *n = node_at(L, *it);
            if (n->type != YAML_SCALAR_NODE)
                return fail(L, n, "servers.%s.neighbors: expected a name, found %s", s->name, type_name(n));
            int j = config_find_server(cfg, scalar(n));
            if (j < 0)
                return fail(L, n, "servers.%s: unknown neighbour '%s'", s->name, scalar(n));
            if (j == i)
                return fail(L, n, "servers.%s: a server cannot be its own neighbour", s->name);
            for (int k = 0; k < s->n_neighbors; k++)
                if (s->neighbors[k] == j)
                    return fail(L, n, "servers.%s: neighbour '%s' listed twice", s->name, scalar(n));
            sn->items[i][s->n_neighbors] = n;
            s->neighbors[s->n_neighbors++] = j;
        }
    }
    for (int i = 0; i < cfg->n_servers; i++) {
        config_server *s = &cfg->servers[i];
        for (int k = 0; k < s->n_neighbors; k++) {
            config_server *o = &cfg->servers[s->neighbors[k]];
            int back = 0;
            for (int m = 0; m < o->n_neighbors; m++)
                if (o->neighbors[m] == i) back = 1;
            if (!back)
                return fail(L, sn->items[i][k],
                            "servers.%s: one-way link: %s lists %s, but %s does not list %s",
                            s->name, s->name, o->name, o->name, s->name);
        }
    }
    return 0;
}

static int load_servers(loader *L, config *cfg, const yaml_node_t *map) {
    if (map->type != YAML_MAPPING_NODE)
        return fail(L, map, "servers: expected a mapping of names to servers, found %s", type_name(map));
    static server_nodes sn;
    memset(&sn, 0, sizeof sn);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
         p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(L, p->key), *v = node_at(L, p->value);
        if (k->type != YAML_SCALAR_NODE || !valid_name(scalar(k)))
            return fail(L, k, "servers: a server name must be 1 to %d letters, digits, '_', '-' or '.'",
                        CONFIG_MAX_NAME - 1);
        if (config_find_server(cfg, scalar(k)) >= 0)
            return fail(L, k, "servers: server '%s' is defined twice", scalar(k));
        if (cfg->n_servers == CONFIG_MAX_SERVERS)
            return fail(L, k, "servers: more than %d servers", CONFIG_MAX_SERVERS);
        int idx = cfg->n_servers++;
        config_server *s = &cfg->servers[idx];
        snprintf(s->name, sizeof s->name, "%s", scalar(k));
        s->line = (int)k->start_mark.line + 1;
        sn.names[idx] = k;
        if (load_server(L, s, v, &sn, idx) < 0) return -1;
        for (int j = 0; j < idx; j++)
            if (cfg->servers[j].port == s->port && !strcmp(cfg->servers[j].host, s->host))
                return fail(L, v, "servers.%s: %s port %d is already used by %s", s->name,
                            s->host, s->port, cfg->servers[j].name);
    }
    if (cfg->n_servers == 0) return fail(L, map, "servers: no server defined");
    return resolve_neighbors(L, cfg, &sn);
}

/* ------------------------------------------------------------------ file */

static void set_defaults(config *cfg) {
    cfg->places.provider = PLACES_LOCAL;
    path_join(cfg->places.local_file, sizeof cfg->places.local_file, cfg->dir,
              "data/places.geojson");
    cfg->places.timeout_ms = 5000;
    cfg->places.cache_ttl_s = 60;
    cfg->places.cache_max_entries = 10000;
    cfg->places.max_response_bytes = 4 << 20;
    cfg->limits.max_line_bytes = 8192;
    cfg->limits.max_output_bytes = 1 << 20;
    cfg->limits.max_clients = 20000;
    cfg->limits.idle_timeout_s = 300;
    cfg->limits.max_stored_clients = 1000000;
    path_join(cfg->logging.dir, sizeof cfg->logging.dir, cfg->dir, "logs");
    cfg->logging.flush_ms = 200;
    cfg->logging.log_lines = 1;
    cfg->logging.max_file_bytes = LOG_DEFAULT_MAX_FILE_BYTES;
    cfg->logging.keep_files = LOG_DEFAULT_KEEP_FILES;
    cfg->supervisor.restart_max = 5;
    cfg->supervisor.restart_window_s = 60;
    cfg->supervisor.backoff_initial_ms = 100;
    cfg->supervisor.backoff_max_ms = 5000;
    cfg->supervisor.stop_timeout_s = 10;
    cfg->supervisor.hang_timeout_s = 10;
    path_join(cfg->herd.secret_file, sizeof cfg->herd.secret_file, cfg->dir,
              "state/herd.secret");
    path_join(cfg->herd.state_dir, sizeof cfg->herd.state_dir, cfg->dir, "state");
    cfg->herd.snapshot_interval_s = 5;
    cfg->herd.forwarding = FORWARD_TREE;
    cfg->herd.anti_entropy_ms = 1000;
    cfg->benchmark.concurrency = 20;
    cfg->benchmark.duration_s = 10;
    cfg->benchmark.iamat_pct = 50;
    cfg->benchmark.clients = 1000;
    cfg->benchmark.warmup_s = 1;
    cfg->benchmark.radius_km = 5;
    cfg->benchmark.bound = 5;
}

static int load_root(loader *L, config *cfg, const yaml_node_t *root) {
    static const struct { const char *name; const key_spec *keys; } sections[] = {
        {"places", places_keys},       {"limits", limits_keys},
        {"logging", logging_keys},     {"supervisor", supervisor_keys},
        {"herd", herd_keys},           {"benchmark", benchmark_keys},
    };
    if (!root) return fail(L, NULL, "the file is empty");
    if (root->type != YAML_MAPPING_NODE)
        return fail(L, root, "expected a mapping of sections, found %s", type_name(root));
    const yaml_node_t *servers = NULL;
    unsigned seen = 0;
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = node_at(L, p->key), *v = node_at(L, p->value);
        const char *name = k->type == YAML_SCALAR_NODE ? scalar(k) : "?";
        if (!strcmp(name, "servers")) {
            if (servers) return fail(L, k, "section 'servers' given twice");
            servers = v;
            continue;
        }
        size_t i, n = sizeof sections / sizeof sections[0];
        for (i = 0; i < n; i++)
            if (!strcmp(sections[i].name, name)) break;
        if (i == n)
            return fail(L, k, "unknown section '%s' (servers, places, limits, logging, supervisor, herd, benchmark)",
                        name);
        if (seen & (1u << i)) return fail(L, k, "section '%s' given twice", name);
        seen |= 1u << i;
        if (load_section(L, cfg, name, v, sections[i].keys) < 0) return -1;
    }
    if (!servers) return fail(L, NULL, "missing section 'servers'");
    if (load_servers(L, cfg, servers) < 0) return -1;
    if (cfg->supervisor.backoff_max_ms < cfg->supervisor.backoff_initial_ms)
        return fail(L, NULL, "supervisor.backoff_max_ms is smaller than backoff_initial_ms");
    return 0;
}

/* The part both entry points share: 'path' names the text in messages and
 * sets the directory relative paths are resolved against; 'f' or
 * 'text'/'len' is the YAML. */
static int load(const char *path, FILE *f, const char *text, size_t len, config *cfg,
                char *err, size_t errlen) {
    loader L = {path, NULL, err, errlen};
    memset(cfg, 0, sizeof *cfg);
    if (strlen(path) >= sizeof cfg->path) return fail(&L, NULL, "path too long");
    strcpy(cfg->path, path);
    const char *slash = strrchr(path, '/');
    if (!slash) strcpy(cfg->dir, ".");
    else if (slash == path) strcpy(cfg->dir, "/");
    else snprintf(cfg->dir, sizeof cfg->dir, "%.*s", (int)(slash - path), path);
    set_defaults(cfg);

    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = -1;
    if (!yaml_parser_initialize(&parser))
        return fail(&L, NULL, "cannot initialise the YAML parser");
    if (f) yaml_parser_set_input_file(&parser, f);
    else yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%s:%zu: invalid YAML: %s%s%s", path,
                 (size_t)parser.problem_mark.line + 1,
                 parser.problem ? parser.problem : "parse error",
                 parser.context ? " " : "", parser.context ? parser.context : "");
        goto out_parser;
    }
    L.doc = &doc;
    rc = load_root(&L, cfg, yaml_document_get_root_node(&doc));
    yaml_document_delete(&doc);
    if (rc == 0) {
        const char *env = getenv("GOOGLE_PLACES_API_KEY");
        if (env && *env) snprintf(cfg->places.api_key, sizeof cfg->places.api_key, "%s", env);
        if (cfg->places.provider != PLACES_LOCAL && !cfg->places.api_key[0]) {
            snprintf(err, errlen,
                     "%s: places.provider is %s but no API key is set "
                     "(set GOOGLE_PLACES_API_KEY or places.api_key)",
                     path, config_provider_name(cfg->places.provider));
            rc = -1;
        }
    }
out_parser:
    yaml_parser_delete(&parser);
    return rc;
}

int config_load(const char *path, config *cfg, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        memset(cfg, 0, sizeof *cfg);
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int rc = load(path, f, NULL, 0, cfg, err, errlen);
    fclose(f);
    return rc;
}

int config_load_text(const char *path, const char *text, size_t len, config *cfg,
                     char *err, size_t errlen) {
    return load(path, NULL, text, len, cfg, err, errlen);
}

int config_find_server(const config *cfg, const char *name) {
    for (int i = 0; i < cfg->n_servers; i++)
        if (!strcmp(cfg->servers[i].name, name)) return i;
    return -1;
}

int config_needs_restart(const config *old, const config *new, const char *name, char *why,
                         size_t whylen) {
    int a = config_find_server(old, name), b = config_find_server(new, name);
    if (a < 0 || b < 0) {
        snprintf(why, whylen, "%s is not in both configs", name);
        return 1;
    }
    const config_server *o = &old->servers[a], *n = &new->servers[b];
    const char *what = NULL;
    if (strcmp(o->host, n->host) || o->port != n->port) what = "its address or port";
    else if (strcmp(old->logging.dir, new->logging.dir)) what = "logging.dir";
    else if (strcmp(old->herd.state_dir, new->herd.state_dir)) what = "herd.state_dir";
    else if (old->places.provider != new->places.provider &&
             (old->places.provider != PLACES_LOCAL || new->places.provider != PLACES_LOCAL))
        what = "places.provider (to or from google)";
    if (!what) return 0;
    snprintf(why, whylen, "%s changed", what);
    return 1;
}

const char *config_provider_name(places_provider p) {
    switch (p) {
    case PLACES_GOOGLE: return "google";
    case PLACES_GOOGLE_LEGACY: return "google-legacy";
    default: return "local";
    }
}

int config_parse_mix(const char *s, int *iamat_pct) {
    int iamat = -1, whatsat = -1;
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s", s);
    for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        long long v;
        if (!eq) return -1;
        *eq = '\0';
        if (parse_ll(eq + 1, &v) < 0 || v < 0 || v > 100) return -1;
        if (!strcmp(tok, "iamat") && iamat < 0) iamat = (int)v;
        else if (!strcmp(tok, "whatsat") && whatsat < 0) whatsat = (int)v;
        else return -1;
    }
    if (iamat < 0 && whatsat < 0) return -1;
    if (iamat < 0) iamat = 100 - whatsat;
    if (whatsat < 0) whatsat = 100 - iamat;
    if (iamat + whatsat != 100) return -1;
    *iamat_pct = iamat;
    return 0;
}
