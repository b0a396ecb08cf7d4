/* benchmark.c -- herd-benchmark: load the herd and measure it (docs/PROTOCOL.md, "Benchmark").
 *
 * One poll() loop drives --concurrency persistent connections spread over
 * the target servers.  Closed loop (default): each connection sends a
 * request, waits for the whole reply, checks it, and sends the next.  Open
 * loop (--rate R): requests are due at fixed times and each latency counts
 * from when its request was due, so a slow server cannot hide its queue
 * (no coordinated omission).  Every reply is checked; a wrong reply is an
 * error of its kind, never a success.
 *
 * Modes: the herd mix of IAMAT (fresh timestamps, so each one floods) and
 * WHATSAT; --reference LINE (count one reply line per request, e.g. PING to
 * redis-server; each {key} in LINE becomes CONN-N, a key of its own per
 * request, e.g. SET k{key} v on a replicated redis); --propagation N (time until each server holds an update
 * given to the first one).  --converge: after the load, time until every
 * server holds the newest update of every client id the run used (every
 * server of the config: --servers only picks the ones that take the load).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "net.h"
#include "protocol.h"
#include "xalloc.h"

#define MAX_TARGETS 64
#define REPLY_TIMEOUT_NS (5 * 1000000000LL)

typedef enum {
    E_CONNECT, E_CLOSED, E_TRUNCATED, E_TIMEOUT, E_QUESTION, E_BAD_AT, E_BAD_JSON,
    E_WRONG_CLIENT, E_COUNT
} err_kind;
static const char *err_name[E_COUNT] = {"connect", "closed", "truncated", "timeout",
                                        "question_reply", "bad_at_line", "bad_json",
                                        "wrong_client"};

typedef enum { REQ_IAMAT, REQ_WHATSAT, REQ_REFERENCE } req_kind;

typedef struct {
    char host[256];
    int port;
    char name[64];
} target;

typedef struct {
    int fd;
    int target;
    int id;                     /* its index, for --reference's {key} */
    unsigned long long sent;    /* requests it sent, for --reference's {key} */
    buf_t in;
    int busy;                   /* a request is out */
    req_kind kind;
    int64_t sent_ns, due_ns;    /* due: open loop's intended time */
    char client[64];            /* the id of the request out */
    char last_iamat[64];        /* an id this connection made known */
    char location[32], time[40];  /* of the IAMAT out: its reply must echo them */
} conn;

static struct {
    target targets[MAX_TARGETS];
    int n_targets;
    int n_load;                 /* the first n_load targets take the load */
    int concurrency, clients, iamat_pct, bound, json_out_set;
    double duration_s, warmup_s, rate, radius_km;
    long long max_requests;
    const char *json_path, *reference;
    char *reference_line;       /* reference + CRLF, any length */
    size_t reference_len;
    int reference_keyed;        /* reference holds {key}: built per request */
    buf_t reference_out;        /* that request */
    int propagation;
    int converge;
    char (*newest)[40];         /* per client id: the time of its newest IAMAT */
    double converge_ms;
    int converged;
    int quiet;
    conn *conns;
    uint64_t seq;
    long long requests, errors[E_COUNT], total_errors;
    int64_t *lat;               /* ns, measured requests */
    size_t nlat, caplat;
    int measuring;
    volatile sig_atomic_t interrupted;
} B;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void on_int(int sig) {
    (void)sig;
    B.interrupted = 1;
}

static void record(int64_t ns) {
    if (!B.measuring) return;
    if (B.nlat == B.caplat) {
        B.caplat = B.caplat ? B.caplat * 2 : 1 << 16;
        B.lat = xrealloc(B.lat, B.caplat * sizeof *B.lat);
    }
    B.lat[B.nlat++] = ns;
    B.requests++;
}

static void count_error(err_kind k) {
    if (!B.measuring) return;
    B.errors[k]++;
    B.total_errors++;
}

/* ---------------------------------------------------------- connections */

static int open_conn(conn *c) {
    char err[256];
    const target *t = &B.targets[c->target];
    c->fd = net_connect(t->host, t->port, err, sizeof err);
    if (c->fd < 0) return -1;
    net_nodelay(c->fd);
    struct pollfd p = {.fd = c->fd, .events = POLLOUT};
    int e = 0;
    socklen_t len = sizeof e;
    if (poll(&p, 1, 2000) != 1 || getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0 || e) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void reconnect(conn *c) {
    if (c->fd >= 0) close(c->fd);
    buf_clear(&c->in);
    c->busy = 0;
    c->last_iamat[0] = '\0';
    if (open_conn(c) < 0) count_error(E_CONNECT);
}

static void send_all(conn *c, const char *p, size_t n) {
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {.fd = c->fd, .events = POLLOUT};
            poll(&pf, 1, 100);
            continue;
        }
        if (w <= 0) return;       /* the read side will see the close */
        p += w;
        n -= (size_t)w;
    }
}

#define REFERENCE_KEY "{key}"

/* The reference request c sends next: LINE and CRLF, each {key} in LINE
 * replaced by "ID-N" (c's index, then how many it sent before), so every
 * request of the run names a key of its own.  The bytes stay valid until
 * the next call; *len is their length. */
static const char *reference_request(conn *c, size_t *len) {
    if (!B.reference_keyed) {
        *len = B.reference_len;
        return B.reference_line;
    }
    buf_t *b = &B.reference_out;
    const char *s = B.reference, *k;
    buf_clear(b);
    while ((k = strstr(s, REFERENCE_KEY))) {
        buf_append(b, s, (size_t)(k - s));
        buf_printf(b, "%d-%llu", c->id, c->sent);
        s = k + strlen(REFERENCE_KEY);
    }
    buf_append_str(b, s);
    buf_append(b, "\r\n", 2);
    *len = buf_pending(b);
    return buf_data(b);
}

static void send_request(conn *c, int64_t due) {
    char line[512];
    const char *data = line;
    size_t len = 0;
    c->due_ns = due;
    if (B.reference) {
        c->kind = REQ_REFERENCE;
        data = reference_request(c, &len);
    } else if (c->last_iamat[0] && (int)(random() % 100) >= B.iamat_pct) {
        c->kind = REQ_WHATSAT;
        snprintf(c->client, sizeof c->client, "%s", c->last_iamat);
        len = (size_t)snprintf(line, sizeof line, "WHATSAT %s %g %d\n", c->client, B.radius_km,
                               B.bound);
    } else {
        c->kind = REQ_IAMAT;
        uint64_t k = B.seq++ % (uint64_t)B.clients;
        snprintf(c->client, sizeof c->client, "bench-%llu", (unsigned long long)k);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double dlat = (double)(k % 1000) * 1e-5, dlng = (double)(k / 1000 % 1000) * 1e-5;
        snprintf(c->location, sizeof c->location, "%+.6f%+.6f", 34.068930 + dlat,
                 -118.445127 - dlng);
        snprintf(c->time, sizeof c->time, "%lld.%09ld", (long long)ts.tv_sec, ts.tv_nsec);
        len = (size_t)snprintf(line, sizeof line, "IAMAT %s %s %s\n", c->client, c->location,
                               c->time);
        if (B.newest) snprintf(B.newest[k], sizeof B.newest[k], "%s", c->time);
    }
    c->busy = 1;
    c->sent++;
    c->sent_ns = now_ns();
    if (!due) c->due_ns = c->sent_ns;
    send_all(c, data, len);
}

/* Parse the AT line a reply begins with, line[0..len) without its LF, by
 * the parser the servers use (common/protocol.c), so that one parser
 * defines the AT line.  Returns 0, or -1 when it is not a valid one. */
static int parse_at(const char *line, size_t len, proto_at *at) {
    const char *why;
    return proto_parse_at(line, len, at, &why);
}

/* True when field f holds exactly the bytes of s. */
static int field_is(proto_str f, const char *s) {
    size_t n = strlen(s);
    return f.len == n && !memcmp(f.p, s, n);
}

/* The first "\n\n" in [p, lim), where a WHATSAT answer ends; NULL if none. */
static const char *blank_line(const char *p, const char *lim) {
    for (; p + 1 < lim; p++) {
        p = memchr(p, '\n', (size_t)(lim - p));
        if (!p || p + 1 >= lim) return NULL;
        if (p[1] == '\n') return p;
    }
    return NULL;
}

/* WHATSAT replies repeat: a client's location, the radius and the bound
 * decide the JSON.  Each distinct JSON is parsed with cJSON once; a reply
 * whose JSON is byte for byte the last one found valid for the same client
 * slot is valid too.  This keeps the client's CPU per WHATSAT near the
 * server's on a machine they share (parsing 9 KB took the client longer than
 * the server took to answer).  At most JSON_MEMO replies are kept. */
#define JSON_MEMO 4096
static struct { char *json; size_t len; } memo[JSON_MEMO];

static size_t memo_slot(const char *client) {
    const char *dash = strrchr(client, '-');
    return dash ? (size_t)(strtoull(dash + 1, NULL, 10) % JSON_MEMO) : 0;
}

static int json_valid(const char *client, const char *json, size_t len) {
    size_t k = memo_slot(client);
    if (memo[k].json && memo[k].len == len && !memcmp(memo[k].json, json, len)) return 1;
    cJSON *js = cJSON_ParseWithLength(json, len);
    int ok = js && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(js, "status")) &&
             cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(js, "results"));
    cJSON_Delete(js);
    if (ok) {
        memo[k].json = xrealloc(memo[k].json, len);
        memcpy(memo[k].json, json, len);
        memo[k].len = len;
    }
    return ok;
}

/* Check one complete reply; returns -1 when more bytes are needed. */
static int check_reply(conn *c, size_t *used, err_kind *err) {
    const char *d = buf_data(&c->in);
    size_t n = buf_pending(&c->in);
    const char *nl = memchr(d, '\n', n);
    if (!nl) return -1;
    size_t l1 = (size_t)(nl - d);
    if (c->kind == REQ_REFERENCE) {
        *used = l1 + 1;
        return 0;
    }
    if (l1 >= 2 && d[0] == '?' && d[1] == ' ') {
        *used = l1 + 1;
        *err = E_QUESTION;
        return 1;
    }
    proto_at at;
    if (parse_at(d, l1, &at) < 0) {
        *used = l1 + 1;
        *err = E_BAD_AT;
        return 1;
    }
    if (c->kind == REQ_IAMAT) {
        *used = l1 + 1;
        if (!field_is(at.u.client, c->client) || !field_is(at.u.location, c->location) ||
            !field_is(at.u.time, c->time)) {
            *err = E_WRONG_CLIENT;
            return 1;
        }
        return 0;
    }
    /* WHATSAT: AT line, JSON, empty line */
    const char *end = blank_line(nl + 1, d + n);
    if (!end) return -1;
    *used = (size_t)(end - d) + 2;
    if (!field_is(at.u.client, c->client)) {
        *err = E_WRONG_CLIENT;
        return 1;
    }
    if (!json_valid(c->client, nl + 1, (size_t)(end - nl - 1))) {
        *err = E_BAD_JSON;
        return 1;
    }
    return 0;
}

/* Read what arrived; finish the request when its reply is whole. */
static void on_readable(conn *c, int closed_loop) {
    buf_reserve(&c->in, 65536);
    ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        count_error(c->busy && buf_pending(&c->in) ? E_TRUNCATED : E_CLOSED);
        reconnect(c);
        return;
    }
    c->in.len += (size_t)r;
    while (c->busy) {
        size_t used = 0;
        err_kind err = E_CLOSED;
        int rc = check_reply(c, &used, &err);
        if (rc < 0) return;
        int64_t t = now_ns();
        buf_consume(&c->in, used);
        c->busy = 0;
        if (rc == 0) {
            if (c->kind == REQ_IAMAT) snprintf(c->last_iamat, sizeof c->last_iamat, "%s", c->client);
            record(t - c->due_ns);
        } else {
            count_error(err);
        }
        if (closed_loop) send_request(c, 0);
    }
}

/* ------------------------------------------------------------- the run */

static void progress(int64_t start, long long last_req, int64_t last_t, int final) {
    if (B.quiet || !isatty(STDERR_FILENO)) return;
    double el = (double)(now_ns() - start) / 1e9;
    double rate = (double)(B.requests - last_req) / ((double)(now_ns() - last_t) / 1e9);
    fprintf(stderr, "\r  %6.1fs  requests %-10lld  rate %9.0f/s  errors %-6lld%s", el,
            B.requests, rate, B.total_errors, final ? "\n" : "");
    fflush(stderr);
}

/* Run the load until the duration or the request count is reached. */
static void run_load(void) {
    int n = B.concurrency;
    B.conns = xcalloc((size_t)n, sizeof *B.conns);
    struct pollfd *pfd = xcalloc((size_t)n, sizeof *pfd);
    for (int i = 0; i < n; i++) {
        B.conns[i].target = i % B.n_load;
        B.conns[i].id = i;
        B.conns[i].fd = -1;
        if (open_conn(&B.conns[i]) < 0) {
            fprintf(stderr, "herd-benchmark: cannot connect to %s:%d\n",
                    B.targets[B.conns[i].target].host, B.targets[B.conns[i].target].port);
            exit(1);
        }
    }
    int closed_loop = B.rate <= 0;
    int64_t start = now_ns(), warm_end = start + (int64_t)(B.warmup_s * 1e9);
    int64_t end = warm_end + (int64_t)(B.duration_s * 1e9);
    int64_t interval = closed_loop ? 0 : (int64_t)(1e9 / B.rate), next_due = start;
    int64_t *queue = NULL;                 /* open loop: due times not yet sent */
    size_t qhead = 0, qlen = 0, qcap = 0;
    B.measuring = B.warmup_s <= 0;
    if (closed_loop)
        for (int i = 0; i < n; i++) send_request(&B.conns[i], 0);
    int64_t last_progress = start;
    long long last_req = 0;
    while (!B.interrupted) {
        int64_t t = now_ns();
        if (!B.measuring && t >= warm_end) {
            B.measuring = 1;
            start = t;
            last_progress = t;
        }
        if (t >= end || (B.max_requests && B.requests + B.total_errors >= B.max_requests)) break;
        if (!closed_loop) {
            while (next_due <= t) {        /* due requests join the queue */
                if (qlen == qcap) {
                    int64_t *nq = xmalloc((qcap ? qcap * 2 : 1024) * sizeof *nq);
                    for (size_t k = 0; k < qlen; k++) nq[k] = queue[(qhead + k) % (qcap ? qcap : 1)];
                    free(queue);
                    queue = nq;
                    qhead = 0;
                    qcap = qcap ? qcap * 2 : 1024;
                }
                queue[(qhead + qlen++) % qcap] = next_due;
                next_due += interval;
            }
            for (int i = 0; i < n && qlen; i++)
                if (!B.conns[i].busy && B.conns[i].fd >= 0) {
                    send_request(&B.conns[i], queue[qhead]);
                    qhead = (qhead + 1) % qcap;
                    qlen--;
                }
        }
        for (int i = 0; i < n; i++) {
            conn *c = &B.conns[i];
            if (c->busy && t - c->sent_ns > REPLY_TIMEOUT_NS) {
                count_error(E_TIMEOUT);
                reconnect(c);
                if (closed_loop && c->fd >= 0) send_request(c, 0);
            }
            pfd[i] = (struct pollfd){.fd = c->fd, .events = POLLIN};
        }
        int timeout = 100;
        if (!closed_loop) {
            int64_t wait = (next_due - now_ns()) / 1000000;
            timeout = wait < 0 ? 0 : wait > 100 ? 100 : (int)wait;
        }
        int r = poll(pfd, (nfds_t)n, timeout);
        if (r > 0)
            for (int i = 0; i < n; i++)
                if (pfd[i].revents) {
                    int was = B.conns[i].fd;
                    on_readable(&B.conns[i], closed_loop);
                    if (closed_loop && B.conns[i].fd != was && B.conns[i].fd >= 0)
                        send_request(&B.conns[i], 0);
                }
        t = now_ns();
        if (t - last_progress >= 1000000000LL) {
            progress(start, last_req, last_progress, 0);
            last_req = B.requests;
            last_progress = t;
        }
    }
    B.duration_s = (double)(now_ns() - start) / 1e9;
    progress(start, last_req, last_progress, 1);
    for (int i = 0; i < n; i++) {
        if (B.conns[i].fd >= 0) close(B.conns[i].fd);
        buf_free(&B.conns[i].in);
    }
    free(queue);
    free(pfd);
    free(B.conns);
}

/* ----------------------------------------------------------- propagation */

/* What the reply in c's buffer says of a WHATSAT: 1 the client is known
 * (the whole answer is in), 0 not known, -1 the reply is not complete yet. */
static int held_reply(conn *c) {
    const char *d = buf_data(&c->in);
    size_t len = buf_pending(&c->in);
    if (len >= 2 && d[0] == '?' && memchr(d, '\n', len)) return 0;
    if (len >= 2 && d[0] == 'A' && blank_line(d, d + len)) return 1;
    return -1;
}

/* Ask servers 1..m at once, again and again, whether they hold 'client',
 * and note in times[i][u] when each first does (nanoseconds after t0).
 * Asking them all together keeps the figure from growing by one round
 * trip per server.  Returns how many never did within 5 s. */
static int await_holders(conn *cs, int m, const char *client, int64_t t0,
                         int64_t **times, int u) {
    char line[160];
    int n = snprintf(line, sizeof line, "WHATSAT %s 0.001 1\n", client);
    struct pollfd p[MAX_TARGETS];
    char pending[MAX_TARGETS] = {0}, asked[MAX_TARGETS] = {0};
    int left = m;
    for (int i = 1; i <= m; i++) pending[i] = 1;
    while (left > 0 && now_ns() - t0 < 5000000000LL) {
        int np = 0, idx[MAX_TARGETS];
        for (int i = 1; i <= m; i++) {
            if (!pending[i]) continue;
            if (!asked[i]) {
                buf_clear(&cs[i].in);
                send_all(&cs[i], line, (size_t)n);
                asked[i] = 1;
            }
            p[np] = (struct pollfd){.fd = cs[i].fd, .events = POLLIN};
            idx[np++] = i;
        }
        if (poll(p, (nfds_t)np, 2000) <= 0) break;
        for (int k = 0; k < np; k++) {
            if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            conn *c = &cs[idx[k]];
            buf_reserve(&c->in, 65536);
            ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
            if (r <= 0) return left;
            c->in.len += (size_t)r;
            int h = held_reply(c);
            if (h < 0) continue;
            asked[idx[k]] = 0;                /* ask again, or done */
            if (h == 1) {
                times[idx[k]][u] = now_ns() - t0;
                pending[idx[k]] = 0;
                left--;
            }
        }
    }
    return left;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const int64_t *v, size_t n, double p) {
    if (!n) return 0;
    size_t i = (size_t)ceil(p / 100.0 * (double)n);
    if (i > 0) i--;
    if (i >= n) i = n - 1;
    return (double)v[i] / 1000.0;
}

static int run_propagation(void) {
    if (B.n_targets < 2) {
        fprintf(stderr, "herd-benchmark: --propagation needs at least two servers\n");
        return 1;
    }
    conn *cs = xcalloc((size_t)B.n_targets, sizeof *cs);
    for (int i = 0; i < B.n_targets; i++) {
        cs[i].target = i;
        if (open_conn(&cs[i]) < 0) {
            fprintf(stderr, "herd-benchmark: cannot connect to %s\n", B.targets[i].name);
            return 1;
        }
    }
    int m = B.n_targets - 1;
    int64_t **times = xcalloc((size_t)B.n_targets, sizeof *times);
    for (int i = 0; i <= m; i++) times[i] = xcalloc((size_t)B.propagation, sizeof **times);
    int failures = 0;
    for (int u = 0; u < B.propagation && !B.interrupted; u++) {
        char client[64], line[256];
        snprintf(client, sizeof client, "prop-%ld-%d", (long)getpid(), u);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int n = snprintf(line, sizeof line, "IAMAT %s +34.068930-118.445127 %lld.%09ld\n",
                         client, (long long)ts.tv_sec, ts.tv_nsec);
        int64_t t0 = now_ns();
        send_all(&cs[0], line, (size_t)n);
        buf_clear(&cs[0].in);
        while (!buf_pending(&cs[0].in) ||
               !memchr(buf_data(&cs[0].in), '\n', buf_pending(&cs[0].in))) {
            struct pollfd p = {.fd = cs[0].fd, .events = POLLIN};
            buf_reserve(&cs[0].in, 4096);
            ssize_t r = poll(&p, 1, 2000) == 1 ? read(cs[0].fd, cs[0].in.p + cs[0].in.len, 4096) : 0;
            if (r <= 0) {
                fprintf(stderr, "herd-benchmark: %s did not answer an IAMAT\n", B.targets[0].name);
                return 1;
            }
            cs[0].in.len += (size_t)r;
        }
        if (await_holders(cs, m, client, t0, times, u) > 0) failures++;
        int64_t all = 0;
        for (int i = 1; i <= m; i++)
            if (times[i][u] > all) all = times[i][u];
        times[0][u] = all;
        usleep(2000);
    }
    printf("propagation: %d updates given to %s; microseconds until the server holds it\n",
           B.propagation, B.targets[0].name);
    printf("%-12s %9s %9s %9s %9s %9s\n", "server", "min", "p50", "p90", "p99", "max");
    for (int i = 1; i <= m + 1; i++) {
        int idx = i <= m ? i : 0;
        qsort(times[idx], (size_t)B.propagation, sizeof **times, cmp_i64);
        const int64_t *v = times[idx];
        size_t n = (size_t)B.propagation;
        printf("%-12s %9.1f %9.1f %9.1f %9.1f %9.1f\n", i <= m ? B.targets[idx].name : "all",
               (double)v[0] / 1000, pct(v, n, 50), pct(v, n, 90), pct(v, n, 99),
               (double)v[n - 1] / 1000);
    }
    if (failures) printf("failures: %d (an update not seen within 5 s)\n", failures);
    if (B.json_path) {      /* every row is sorted by now */
        FILE *f = fopen(B.json_path, "w");
        if (f) {
            size_t n = (size_t)B.propagation;
            fprintf(f, "{\n  \"mode\": \"propagation\",\n  \"from\": \"%s\",\n"
                    "  \"updates\": %d,\n  \"failures\": %d,\n  \"servers_us\": {",
                    B.targets[0].name, B.propagation, failures);
            for (int i = 0; i <= m; i++)
                fprintf(f, "%s\n    \"%s\": {\"min\": %.1f, \"p50\": %.1f, \"p90\": %.1f, "
                        "\"p99\": %.1f, \"max\": %.1f}", i ? "," : "",
                        i ? B.targets[i].name : "all", (double)times[i][0] / 1000,
                        pct(times[i], n, 50), pct(times[i], n, 90), pct(times[i], n, 99),
                        (double)times[i][n - 1] / 1000);
            fprintf(f, "\n  },\n  \"all_sorted_us\": [");
            for (size_t k = 0; k < n; k++)
                fprintf(f, "%s%.1f", k ? ", " : "", (double)times[0][k] / 1000);
            fprintf(f, "]\n}\n");
            fclose(f);
        }
    }
    for (int i = 0; i <= m; i++) free(times[i]);
    free(times);
    for (int i = 0; i < B.n_targets; i++) {
        close(cs[i].fd);
        buf_free(&cs[i].in);
    }
    free(cs);
    return failures ? 1 : 0;
}

/* ------------------------------------------------------------ converge */

/* Ask server t for every client id; returns how many hold the newest time. */
static long count_current(conn *c) {
    buf_t req = {0};
    for (int k = 0; k < B.clients; k++)
        if (B.newest[k][0]) buf_printf(&req, "WHATSAT bench-%d 0.001 1\n", k);
    send_all(c, req.p, req.len);
    buf_free(&req);
    long good = 0;
    int k = 0;
    buf_clear(&c->in);
    for (;;) {
        while (k < B.clients && !B.newest[k][0]) k++;
        if (k == B.clients) break;
        const char *d = buf_data(&c->in);
        size_t n = buf_pending(&c->in);
        const char *nl = n ? memchr(d, '\n', n) : NULL;
        size_t used = 0;
        if (nl && d[0] == '?') {
            used = (size_t)(nl - d) + 1;
        } else if (nl) {
            const char *end = NULL;
            for (const char *p = nl; p + 1 < d + n; p++)
                if (p[0] == '\n' && p[1] == '\n') { end = p; break; }
            proto_at at;
            if (end) {
                if (parse_at(d, (size_t)(nl - d), &at) == 0 && field_is(at.u.time, B.newest[k]))
                    good++;
                used = (size_t)(end - d) + 2;
            }
        }
        if (used) {
            buf_consume(&c->in, used);
            k++;
            continue;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        buf_reserve(&c->in, 65536);
        if (poll(&p, 1, 2000) != 1) return -1;
        ssize_t r = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
        if (r <= 0) return -1;
        c->in.len += (size_t)r;
    }
    return good;
}

static void run_converge(void) {
    long want = 0;
    for (int k = 0; k < B.clients; k++) want += B.newest[k][0] != 0;
    int64_t t0 = now_ns();
    conn c = {0};
    int all = 0;
    while (!all && now_ns() - t0 < 5000000000LL) {
        all = 1;
        for (int i = 0; i < B.n_targets && all; i++) {
            c.target = i;
            if (open_conn(&c) < 0) { all = 0; break; }
            if (count_current(&c) != want) all = 0;
            close(c.fd);
        }
    }
    buf_free(&c.in);
    B.converged = all;
    B.converge_ms = (double)(now_ns() - t0) / 1e6;
    printf("converge     %s: all %d servers hold the newest update of all %ld clients "
           "%.1f ms after the load stopped\n", all ? "yes" : "NO", B.n_targets, want,
           B.converge_ms);
}

/* -------------------------------------------------------------- report */

static void report(void) {
    if (B.nlat) qsort(B.lat, B.nlat, sizeof *B.lat, cmp_i64);
    size_t n = B.nlat;
    double rps = B.duration_s > 0 ? (double)B.requests / B.duration_s : 0;
    double mn = n ? (double)B.lat[0] / 1000 : 0, mx = n ? (double)B.lat[n - 1] / 1000 : 0;
    /* histogram: powers of two of microseconds */
    long long hist[40] = {0};
    for (size_t i = 0; i < n; i++) {
        int64_t us = B.lat[i] / 1000;
        int b = 0;
        while (b < 39 && ((int64_t)1 << b) < us) b++;
        hist[b]++;
    }
    printf("requests     %lld in %.2f s (%s, concurrency %d, %d servers)\n", B.requests,
           B.duration_s, B.reference ? "reference" : B.rate > 0 ? "open loop" : "closed loop",
           B.concurrency, B.n_load);
    printf("rps          %.0f\n", rps);
    printf("errors       %lld", B.total_errors);
    for (int k = 0; k < E_COUNT; k++)
        if (B.errors[k]) printf("  %s=%lld", err_name[k], B.errors[k]);
    printf("\nlatency (us) min %.1f  p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
           mn, pct(B.lat, n, 50), pct(B.lat, n, 90), pct(B.lat, n, 99), pct(B.lat, n, 99.9), mx);
    long long most = 1;
    for (int b = 0; b < 40; b++) if (hist[b] > most) most = hist[b];
    printf("histogram (us, at most)\n");
    for (int b = 0; b < 40; b++) {
        if (!hist[b]) continue;
        int bar = (int)(hist[b] * 50 / most);
        printf("  %10lld %10lld  ", 1LL << b, hist[b]);
        for (int i = 0; i < bar; i++) putchar('#');
        putchar('\n');
    }
    if (!B.json_path) return;
    FILE *f = fopen(B.json_path, "w");
    if (!f) {
        fprintf(stderr, "herd-benchmark: %s: %s\n", B.json_path, strerror(errno));
        return;
    }
    fprintf(f, "{\n  \"mode\": \"%s\",\n  \"concurrency\": %d,\n  \"servers\": %d,\n"
            "  \"duration_s\": %.3f,\n  \"iamat_pct\": %d,\n  \"requests\": %lld,\n"
            "  \"errors\": %lld,\n  \"errors_by_kind\": {",
            B.reference ? "reference" : B.rate > 0 ? "open" : "closed", B.concurrency,
            B.n_load, B.duration_s, B.iamat_pct, B.requests, B.total_errors);
    for (int k = 0; k < E_COUNT; k++)
        fprintf(f, "%s\"%s\": %lld", k ? ", " : "", err_name[k], B.errors[k]);
    fprintf(f, "},\n  \"rps\": %.1f,\n  \"latency_us\": {\"min\": %.1f, \"p50\": %.1f, "
            "\"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f},\n  \"histogram\": [",
            rps, mn, pct(B.lat, n, 50), pct(B.lat, n, 90), pct(B.lat, n, 99),
            pct(B.lat, n, 99.9), mx);
    int first = 1;
    for (int b = 0; b < 40; b++) {
        if (!hist[b]) continue;
        fprintf(f, "%s{\"le_us\": %lld, \"count\": %lld}", first ? "" : ", ", 1LL << b, hist[b]);
        first = 0;
    }
    fprintf(f, "]");
    if (B.converge)
        fprintf(f, ",\n  \"converged\": %s,\n  \"converge_ms\": %.1f", B.converged ? "true" : "false",
                B.converge_ms);
    fprintf(f, "\n}\n");
    fclose(f);
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f) {
    fputs("Usage: herd-benchmark [-c FILE] [options]\n"
          "\n"
          "Load the herd over persistent connections and check every reply.\n"
          "Defaults come from the config's benchmark: section.\n"
          "\n"
          "  -c, --config FILE      the herd's configuration (default: ./config.yml)\n"
          "      --concurrency N    connections, spread over the servers\n"
          "      --duration S       seconds to measure (after the warm-up)\n"
          "      --requests N       stop after N requests instead\n"
          "      --warmup S         seconds of load before measuring\n"
          "      --mix iamat=P,whatsat=Q   request mix in percent\n"
          "      --clients N        distinct client ids\n"
          "      --radius KM --bound N     WHATSAT arguments\n"
          "      --servers A,B      only these servers of the config\n"
          "      --target HOST:PORT a server outside the config (repeatable)\n"
          "      --rate R           open loop: R requests/s in total, latency from\n"
          "                         when each request was due\n"
          "      --reference LINE   send LINE and count one reply line per request\n"
          "                         (e.g. --reference PING --target 127.0.0.1:6379);\n"
          "                         each {key} in LINE becomes ID-N, the connection's\n"
          "                         index and its request count, a key per request\n"
          "                         (e.g. --reference 'SET k{key} v')\n"
          "      --propagation N    give N updates to the first server and time\n"
          "                         until each other server holds them\n"
          "      --converge         after the load, time until every server holds the\n"
          "                         newest update of every client id used (every\n"
          "                         server of the config, even those --servers left out)\n"
          "      --json FILE        write the figures as JSON\n"
          "      --quiet            no progress line\n"
          "  -h, --help             show this help and exit\n",
          f);
}

static int add_target(const char *hostport) {
    const char *colon = strrchr(hostport, ':');
    if (!colon || B.n_targets == MAX_TARGETS) return -1;
    target *t = &B.targets[B.n_targets++];
    snprintf(t->host, sizeof t->host, "%.*s", (int)(colon - hostport), hostport);
    t->port = atoi(colon + 1);
    snprintf(t->name, sizeof t->name, "%s", hostport);
    return t->port > 0 && t->port < 65536 ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *cfg_path = "config.yml", *servers = NULL, *mix = NULL;
    const char *opt[16] = {0};
    enum { O_CONC, O_DUR, O_REQ, O_WARM, O_CLIENTS, O_RADIUS, O_BOUND, O_RATE, O_PROP, O_N };
    static const char *names[O_N] = {"--concurrency", "--duration", "--requests", "--warmup",
                                     "--clients", "--radius", "--bound", "--rate",
                                     "--propagation"};
    char *targets[MAX_TARGETS];
    int n_extra = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k;
        for (k = 0; k < O_N; k++)
            if (!strcmp(a, names[k])) break;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--quiet")) { B.quiet = 1; continue; }
        if (!strcmp(a, "--converge")) { B.converge = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "herd-benchmark: unknown or incomplete option '%s' (try --help)\n", a);
            return 2;
        }
        if (k < O_N) opt[k] = argv[++i];
        else if (!strcmp(a, "-c") || !strcmp(a, "--config")) cfg_path = argv[++i];
        else if (!strcmp(a, "--mix")) mix = argv[++i];
        else if (!strcmp(a, "--servers")) servers = argv[++i];
        else if (!strcmp(a, "--json")) B.json_path = argv[++i];
        else if (!strcmp(a, "--reference")) B.reference = argv[++i];
        else if (!strcmp(a, "--target") && n_extra < MAX_TARGETS) targets[n_extra++] = argv[++i];
        else {
            fprintf(stderr, "herd-benchmark: unknown option '%s' (try --help)\n", a);
            return 2;
        }
    }
    static config cfg;
    char err[1024];
    int have_cfg = config_load(cfg_path, &cfg, err, sizeof err) == 0;
    if (!have_cfg && !n_extra) {
        fprintf(stderr, "herd-benchmark: %s\n", err);
        return 1;
    }
    if (have_cfg) {
        B.concurrency = cfg.benchmark.concurrency;
        B.duration_s = cfg.benchmark.duration_s;
        B.iamat_pct = cfg.benchmark.iamat_pct;
        B.clients = cfg.benchmark.clients;
        B.warmup_s = cfg.benchmark.warmup_s;
        B.radius_km = cfg.benchmark.radius_km;
        B.bound = cfg.benchmark.bound;
    } else {
        B.concurrency = 20; B.duration_s = 10; B.iamat_pct = 50; B.clients = 1000;
        B.warmup_s = 1; B.radius_km = 5; B.bound = 5;
    }
    if (opt[O_CONC]) B.concurrency = atoi(opt[O_CONC]);
    if (opt[O_DUR]) B.duration_s = atof(opt[O_DUR]);
    if (opt[O_REQ]) { B.max_requests = atoll(opt[O_REQ]); if (!opt[O_DUR]) B.duration_s = 1e9; }
    if (opt[O_WARM]) B.warmup_s = atof(opt[O_WARM]);
    if (opt[O_CLIENTS]) B.clients = atoi(opt[O_CLIENTS]);
    if (opt[O_RADIUS]) B.radius_km = atof(opt[O_RADIUS]);
    if (opt[O_BOUND]) B.bound = atoi(opt[O_BOUND]);
    if (opt[O_RATE]) B.rate = atof(opt[O_RATE]);
    if (opt[O_PROP]) B.propagation = atoi(opt[O_PROP]);
    if (mix && config_parse_mix(mix, &B.iamat_pct) < 0) {
        fprintf(stderr, "herd-benchmark: --mix wants iamat=P,whatsat=Q adding up to 100\n");
        return 2;
    }
    if (B.concurrency < 1 || B.clients < 1 || B.duration_s <= 0 || B.bound < 1 || B.bound > 20) {
        fprintf(stderr, "herd-benchmark: concurrency, clients and duration must be positive, bound 1..20\n");
        return 2;
    }
    for (int i = 0; i < n_extra; i++)
        if (add_target(targets[i]) < 0) {
            fprintf(stderr, "herd-benchmark: bad --target '%s' (HOST:PORT)\n", targets[i]);
            return 2;
        }
    if (!n_extra) {
        /* the servers that take the load first; with --converge the rest
         * after them, checked but not loaded */
        for (int pass = 0; pass < (B.converge ? 2 : 1); pass++) {
            if (pass == 1) B.n_load = B.n_targets;
            for (int i = 0; i < cfg.n_servers; i++) {
                const config_server *c = &cfg.servers[i];
                if (servers) {
                    char list[1024];
                    snprintf(list, sizeof list, ",%s,", servers);
                    char want[80];
                    snprintf(want, sizeof want, ",%s,", c->name);
                    if ((strstr(list, want) != NULL) == pass) continue;
                } else if (pass == 1) {
                    break;
                }
                target *t = &B.targets[B.n_targets++];
                snprintf(t->host, sizeof t->host, "%s", c->host);
                t->port = c->port;
                snprintf(t->name, sizeof t->name, "%s", c->name);
            }
        }
    }
    if (!B.converge || n_extra || !servers) B.n_load = B.n_targets;
    if (!B.n_load) {
        fprintf(stderr, "herd-benchmark: no server to load (check --servers)\n");
        return 2;
    }
    signal(SIGINT, on_int);
    signal(SIGPIPE, SIG_IGN);
    srandom((unsigned)now_ns());
    if (B.propagation > 0) return run_propagation();
    if (!B.quiet && isatty(STDERR_FILENO))
        fprintf(stderr, "herd-benchmark: %d connections over %d servers, %.0f s warm-up, %.0f s\n",
                B.concurrency, B.n_load, B.warmup_s, B.duration_s);
    if (B.reference) {         /* built once: a long LINE must not meet a fixed buffer */
        B.reference_len = strlen(B.reference) + 2;
        B.reference_line = xmalloc(B.reference_len + 1);
        snprintf(B.reference_line, B.reference_len + 1, "%s\r\n", B.reference);
        B.reference_keyed = strstr(B.reference, REFERENCE_KEY) != NULL;
    }
    if (B.converge && !B.reference) B.newest = xcalloc((size_t)B.clients, sizeof *B.newest);
    run_load();
    if (B.newest) run_converge();
    report();
    free(B.newest);
    free(B.reference_line);
    buf_free(&B.reference_out);
    free(B.lat);
    for (size_t k = 0; k < JSON_MEMO; k++) free(memo[k].json);
    return 0;
}
