/* metrics.h -- a server's counters, and <state_dir>/NAME.prom (docs/PROTOCOL.md,
 * "Metrics").
 *
 * The counters live in the server struct; the code where an event happens
 * bumps one field, in one line.  Once a second the loop's timer writes
 * them, with the gauges read from the server (stored clients, links up,
 * connections), in the Prometheus text format to NAME.prom.tmp and renames
 * that over NAME.prom: a reader sees the old file or the new one, never a
 * part of one.
 */
#ifndef HERD_METRICS_H
#define HERD_METRICS_H

#include <stdint.h>

struct server;

typedef enum { MX_IAMAT, MX_WHATSAT, MX_INVALID, MX_NCOMMANDS } metrics_command;

/* The status an upstream places request ended with (server/google.c). */
typedef enum {
    MX_UP_OK, MX_UP_ZERO_RESULTS, MX_UP_REQUEST_DENIED, MX_UP_OVER_QUERY_LIMIT,
    MX_UP_INVALID_REQUEST, MX_UP_UNKNOWN_ERROR, MX_NUPSTREAM
} metrics_upstream_status;

typedef struct {
    uint64_t client_updates;        /* IAMATs stored as newer */
    uint64_t link_updates_sent;     /* AT lines queued to peers, catch-up included */
    uint64_t link_updates_received; /* AT lines read from peers */
    uint64_t link_updates_stored;   /* ... of which stored as newer */
    uint64_t link_updates_repaired; /* ... of those, from a repair stream (SYNC) */
    uint64_t link_repairs_sent;     /* SYNC lines sent: anti-entropy, catch-up */
    uint64_t digest_mismatches;     /* SUMs received that differed from ours */
    uint64_t requests[MX_NCOMMANDS];
    uint64_t conns_accepted;        /* client connections accepted */
    uint64_t conns_refused;         /* turned away: max_clients, or no descriptor */
    uint64_t upstream[MX_NUPSTREAM];
    uint64_t upstream_cache_hits;   /* WHATSATs answered from the cache */
    double start_time_s;            /* wall clock at start, seconds */
    int failing;                    /* the last write failed (logged once) */
    double reload_time_s;           /* the last reload (SIGUSR1), wall clock; 0: none */
    int reload_ok;                  /* ... and whether it applied */
    uint64_t reloads;               /* reloads applied */
    int64_t next_write_ms;          /* the next NAME.prom, on the loop's clock */
} metrics;

/* At start: note the time and write the first file. */
void metrics_start(struct server *s);

/* The metrics timer, once a second (server.c runs it when
 * metrics_next_due says): rewrite NAME.prom.  Never fails the server: a
 * write error is logged once, and tried again next second. */
void metrics_tick(struct server *s);
int64_t metrics_next_due(const struct server *s);

/* At a graceful stop: remove NAME.prom, so no stale figures outlive the
 * server (a crashed server's file stays, and its age shows it). */
void metrics_stop(struct server *s);

/* Count one upstream request by the status it ended with ("OK", ...). */
void metrics_upstream(metrics *m, const char *status);

#endif
