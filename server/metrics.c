/* metrics.c -- <state_dir>/NAME.prom, the server's counters in the Prometheus
 * text exposition format (docs/PROTOCOL.md, "Metrics").
 *
 * The file follows node_exporter's textfile-collector convention: written
 * whole to a new NAME.prom.tmp (a name the collector ignores; never through
 * a link: see replace_file), then renamed over NAME.prom, once a second.
 * The samples carry exactly the labels docs/PROTOCOL.md fixes
 * (proxyherd_clients has none, proxyherd_link_up has peer="NAME"), which
 * suits one server per host.  Several servers sharing a state folder would
 * give the collector the same series twice, which it refuses:
 * herd.metrics_server_label adds server="NAME" to every sample for them.
 * The HELP texts name no server, for the same reason (families merged from
 * several files must agree).
 *
 * Mode 0644: the file holds counts and peer names, never a client or a
 * location; the state folder's own mode decides who may read it.  No fsync:
 * a figure lost in a crash is rewritten a second later, and the loop must
 * not wait on the disk.  At a graceful stop the file is removed, so a
 * stopped server shows as absent rather than as a server whose counters
 * froze; a killed server's file stays, and node_exporter's
 * node_textfile_mtime_seconds shows its age.
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "server.h"

static const char *const command_label[MX_NCOMMANDS] = {"IAMAT", "WHATSAT", "invalid"};

static const char *const upstream_label[MX_NUPSTREAM] = {
    "OK", "ZERO_RESULTS", "REQUEST_DENIED", "OVER_QUERY_LIMIT", "INVALID_REQUEST",
    "UNKNOWN_ERROR",
};

void metrics_upstream(metrics *m, const char *status) {
    int k = MX_UP_UNKNOWN_ERROR;
    for (int i = 0; i < MX_NUPSTREAM; i++)
        if (!strcmp(status, upstream_label[i])) k = i;
    m->upstream[k]++;
}

/* ------------------------------------------------------------- the text */

static void family(buf_t *b, const char *name, const char *type, const char *help) {
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A sample's name and labels: 'label' (one `key="value"` or NULL), then
 * server="NAME" when herd.metrics_server_label asks for it.  Server and
 * peer names need no escaping: the config allows [A-Za-z0-9_.-] only. */
static void sample(buf_t *b, const server *s, const char *name, const char *label) {
    int named = s->cfg->herd.metrics_server_label;
    buf_printf(b, "%s%s%s%s", name, label || named ? "{" : "", label ? label : "",
               label && named ? "," : "");
    if (named) buf_printf(b, "server=\"%s\"", s->me->name);
    buf_printf(b, "%s ", label || named ? "}" : "");
}

/* A family of one sample. */
static void single(buf_t *b, const server *s, const char *name, const char *type,
                   const char *help, uint64_t v) {
    family(b, name, type, help);
    sample(b, s, name, NULL);
    buf_printf(b, "%llu\n", (unsigned long long)v);
}

/* A family of n samples, the i-th labelled key="labels[i]". */
static void labelled(buf_t *b, const server *s, const char *name, const char *type,
                     const char *help, const char *key, const char *const *labels,
                     const uint64_t *v, int n) {
    char label[96];
    family(b, name, type, help);
    for (int i = 0; i < n; i++) {
        snprintf(label, sizeof label, "%s=\"%s\"", key, labels[i]);
        sample(b, s, name, label);
        buf_printf(b, "%llu\n", (unsigned long long)v[i]);
    }
}

static int link_is_up(const server *s, const peer_link *L) {
    (void)s;
    return L->conn && L->conn->state != CONN_DEAD;
}

static int link_caught_up(const server *s, const peer_link *L) {
    return link_is_up(s, L) && L->caught_up;
}

static int link_mismatch(const server *s, const peer_link *L) {
    return link_is_up(s, L) && L->mismatch != 0;
}

/* A gauge with one sample per configured neighbour, peer="NAME". */
static void per_link(buf_t *b, const server *s, const char *name, const char *help,
                     int (*value)(const server *, const peer_link *)) {
    char label[96];
    family(b, name, "gauge", help);
    for (int i = 0; i < s->n_links; i++) {
        snprintf(label, sizeof label, "peer=\"%s\"", s->cfg->servers[s->links[i].server].name);
        sample(b, s, name, label);
        buf_printf(b, "%d\n", value(s, &s->links[i]));
    }
}

/* The whole file's text into b. */
static void render(const server *s, buf_t *b) {
    const metrics *m = &s->metrics;
    single(b, s, "proxyherd_up", "gauge", "1 while the server runs.", 1);
    family(b, "proxyherd_start_time_seconds", "gauge",
           "When the server started, in seconds since the Unix epoch.");
    sample(b, s, "proxyherd_start_time_seconds", NULL);
    buf_printf(b, "%.3f\n", m->start_time_s);
    single(b, s, "proxyherd_config_reloads_total", "counter",
           "Config reloads (SIGUSR1) applied in place.", m->reloads);
    single(b, s, "proxyherd_config_last_reload_successful", "gauge",
           "1 when the last config reload applied (or none was asked), 0 when it was refused.",
           m->reload_time_s == 0 || m->reload_ok);
    family(b, "proxyherd_config_last_reload_timestamp_seconds", "gauge",
           "When the last config reload was asked, in seconds since the Unix epoch; 0: never.");
    sample(b, s, "proxyherd_config_last_reload_timestamp_seconds", NULL);
    buf_printf(b, "%.3f\n", m->reload_time_s);
    single(b, s, "proxyherd_clients", "gauge", "Clients stored in the table.", s->tab.count);
    single(b, s, "proxyherd_client_updates_total", "counter",
           "IAMATs from clients stored as newer than what the table held.", m->client_updates);
    single(b, s, "proxyherd_link_updates_sent_total", "counter",
           "AT lines sent to peers, catch-up included.", m->link_updates_sent);
    single(b, s, "proxyherd_link_updates_received_total", "counter",
           "AT lines received from peers.", m->link_updates_received);
    single(b, s, "proxyherd_link_updates_stored_total", "counter",
           "AT lines from peers stored as newer than what the table held.",
           m->link_updates_stored);
    single(b, s, "proxyherd_link_updates_repaired_total", "counter",
           "Of those, the ones that came by anti-entropy or a catch-up stream, not forwarding.",
           m->link_updates_repaired);
    single(b, s, "proxyherd_link_repairs_sent_total", "counter",
           "AT lines sent to peers by anti-entropy or a catch-up stream.", m->link_repairs_sent);
    single(b, s, "proxyherd_link_digest_mismatches_total", "counter",
           "SUM lines from peers whose count or digest differed from ours.",
           m->digest_mismatches);
    per_link(b, s, "proxyherd_link_up",
             "1 while the authenticated link to a configured neighbour is up, else 0.",
             link_is_up);
    per_link(b, s, "proxyherd_link_connecting",
             "1 while the link is not up and being set up: a dial or handshake under way, "
             "or the first try due; else 0.", peer_connecting);
    per_link(b, s, "proxyherd_link_caught_up",
             "1 while the link is up and, since it came up, the neighbour's SUM matched ours "
             "or its repair stream ended (SYNCED); else 0.", link_caught_up);
    per_link(b, s, "proxyherd_link_config_mismatch",
             "1 while the link is up and the neighbour's settings that must agree differ.",
             link_mismatch);
    labelled(b, s, "proxyherd_requests_total", "counter",
             "Client lines by the command they parsed as; invalid: answered \"? \".",
             "command", command_label, m->requests, MX_NCOMMANDS);
    single(b, s, "proxyherd_connections", "gauge",
           "Open client connections (those limits.max_clients counts; links are not).",
           s->nclients);
    single(b, s, "proxyherd_connections_idle", "gauge",
           "Client connections parked idle (the cold set).", s->ncold);
    single(b, s, "proxyherd_connections_accepted_total", "counter",
           "Connections accepted: clients, and neighbours dialling in.", m->conns_accepted);
    single(b, s, "proxyherd_connections_refused_total", "counter",
           "Connections turned away (limits.max_clients, or out of descriptors).",
           m->conns_refused);
    labelled(b, s, "proxyherd_upstream_requests_total", "counter",
             "Requests to the places provider, by the status they ended with.",
             "status", upstream_label, m->upstream, MX_NUPSTREAM);
    single(b, s, "proxyherd_upstream_cache_hits_total", "counter",
           "WHATSATs answered from the places cache.", m->upstream_cache_hits);
    single(b, s, "proxyherd_evictions_total", "counter",
           "Stored clients dropped past limits.max_stored_clients.", s->tab.evicted);
}

/* ----------------------------------------------------------- the file */

static void prom_path(const server *s, char *out, size_t n, const char *suffix) {
    snprintf(out, n, "%s/%s.prom%s", s->cfg->herd.state_dir, s->me->name, suffix);
}

/* Write b to a new file tmp and rename it over path.  Whatever is at tmp
 * (a stale file, a planted link) is removed first: unlink() never follows a
 * link, and O_EXCL creates a new file or fails, so nothing is ever written
 * through one.  Returns 0, or -1 with errno. */
static int replace_file(const char *path, const char *tmp, const buf_t *b) {
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    const char *p = buf_data(b);
    size_t left = buf_pending(b);
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int saved = n < 0 ? errno : ENOSPC;
            close(fd);
            unlink(tmp);
            errno = saved;
            return -1;
        }
        p += n;
        left -= (size_t)n;
    }
    if (close(fd) < 0 || rename(tmp, path) < 0) {
        int saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    return 0;
}

#define METRICS_MS 1000

int64_t metrics_next_due(const server *s) {
    return s->metrics.next_write_ms;
}

void metrics_tick(server *s) {
    char path[4200], tmp[4300];
    s->metrics.next_write_ms = s->now_ms + METRICS_MS;
    prom_path(s, path, sizeof path, "");
    prom_path(s, tmp, sizeof tmp, ".tmp");
    buf_t b = {0};
    render(s, &b);
    int rc = replace_file(path, tmp, &b);
    if (rc < 0 && errno == ENOENT) {       /* no state folder yet */
        mkdir(s->cfg->herd.state_dir, 0700);
        rc = replace_file(path, tmp, &b);
    }
    int err = errno;
    buf_free(&b);
    if (rc < 0 && !s->metrics.failing)
        log_msg(LOG_ERROR, "metrics-failed", "file=%s reason=%s (trying again every second)",
                path, strerror(err));
    else if (rc == 0 && s->metrics.failing)
        log_msg(LOG_INFO, "metrics-written", "file=%s (writing again)", path);
    s->metrics.failing = rc < 0;
}

void metrics_start(server *s) {
    s->metrics.start_time_s = wall_s();
    metrics_tick(s);
}

void metrics_stop(server *s) {
    char path[4200];
    prom_path(s, path, sizeof path, "");
    if (unlink(path) < 0 && errno != ENOENT)
        log_msg(LOG_WARN, "metrics-failed", "file=%s cannot be removed: %s", path,
                strerror(errno));
}
