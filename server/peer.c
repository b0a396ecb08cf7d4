/* peer.c -- links between servers: dial, authenticate, flood, catch up.
 *
 * Each pair of neighbours shares one TCP connection.  The server whose name
 * sorts first dials; the other accepts on its ordinary port.  Dials that
 * fail are retried with exponential back-off (100 ms doubling to 3.2 s).
 *
 * Every link is TLS 1.3 (server/tls.c), keyed by the herd secret: the
 * dialer's PSK identity names the link and the PSK proves the secret both
 * ways; no plain-text handshake precedes it.  The acceptor tells a TLS
 * dialer from a client by its first byte (0x16, see server.c); a
 * ClientHello that proves a link's key moves from the client's place (or
 * probation) to the link's own (hold_link_place).  A handshake not done
 * within HANDSHAKE_MS is dropped.
 *
 * Once up, each side's first line is its AGREE (forward.c: the settings
 * both ends must share), then both catch up by anti-entropy (forward.c:
 * only the buckets whose digests differ are streamed, as "SYNC AT ..."
 * lines), and every newer update goes as one "AT ..." line on the links
 * forward.c picks.  Updates pending for a link collect in its output
 * buffer and leave in one write per loop round (peer_flush).  A link whose
 * unsent output passes limits.max_output_bytes stops queueing single
 * updates and streams the whole table instead, a part per round while its
 * output has room (the peer timer): the backlog is bounded and never more
 * than one line per client.
 */
#include "peer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

#include "forward.h"
#include "log.h"
#include "net.h"
#include "resolver.h"
#include "secret.h"
#include "server.h"
#include "tls.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 3200
#define HANDSHAKE_MS 5000
#define STREAM_CHUNK (256 * 1024)   /* catch-up output per round and link */

static const char *peer_name(const server *s, const peer_link *L) {
    return s->cfg->servers[L->server].name;
}

/* ---------------------------------------------------------------- secret */

/* The ring's key ids, first first, comma-separated, into out (for the log). */
static const char *ring_ids(const secret_ring *ring, char *out, size_t cap) {
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < ring->n && used < cap; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? "," : "", ring->keys[i].id);
    return out;
}

/* HERD_SECRET, else the secret file (common/secret.c: refused when open to
 * other users, empty or not in the ring's format); no secret when neither
 * exists. */
static int load_secret(server *s, char *err, size_t errlen) {
    char ids[SECRET_RING_MAX * (HS_KEY_ID_LEN + 1) + 1];
    if (secret_ring_load(s->cfg->herd.secret_file, &s->secrets, err, errlen) < 0) return -1;
    if (s->secrets.n)
        log_msg(LOG_INFO, "secret-ring", "keys=%s",
                ring_ids(&s->secrets, ids, sizeof ids));
    return 0;
}

int peer_secrets_read(const server *s, const char *path, secret_ring *ring, char *err,
                      size_t errlen) {
    int n = secret_ring_load(path, ring, err, errlen);
    if (n == 0 && s->secrets.n) {
        snprintf(err, errlen, "%s is gone (and HERD_SECRET is unset): keeping the %d "
                 "secret(s) loaded", path, s->secrets.n);
        n = -1;
    }
    if (n < 0) explicit_bzero(ring, sizeof *ring);
    return n;
}

int peer_secrets_use(server *s, secret_ring *ring, char *err, size_t errlen) {
    char ids[SECRET_RING_MAX * (HS_KEY_ID_LEN + 1) + 1];
    explicit_bzero(&s->secrets, sizeof s->secrets);
    s->secrets = *ring;
    explicit_bzero(ring, sizeof *ring);
    if (!s->secrets.n) return 0;
    /* links were off for want of a secret (or of a neighbour): they start now */
    if (!s->tls_ctx && tls_init(s, err, errlen) < 0) {
        explicit_bzero(&s->secrets, sizeof s->secrets);
        return -1;
    }
    log_msg(LOG_INFO, "secret-ring", "keys=%s reloaded", ring_ids(&s->secrets, ids, sizeof ids));
    return 0;
}

int peer_init(server *s, char *err, size_t errlen) {
    if (load_secret(s, err, errlen) < 0) return -1;
    forward_init(s);
    for (int k = 0; k < s->me->n_neighbors; k++) {
        peer_link *L = &s->links[s->n_links++];
        memset(L, 0, sizeof *L);
        L->server = s->me->neighbors[k];
        L->dialer = strcmp(s->me->name, peer_name(s, L)) < 0;
        L->backoff_ms = BACKOFF_MIN_MS;
    }
    if (s->n_links && !s->secrets.n)
        log_msg(LOG_WARN, "links-disabled",
                "no secret (set HERD_SECRET or create %s): serving clients only",
                s->cfg->herd.secret_file);
    return 0;
}

/* ---------------------------------------------------------------- reload */

/* Is server 'name' a neighbour of ours in cfg? */
static int neighbour_in(const config *cfg, int me, const char *name) {
    const config_server *cs = &cfg->servers[me];
    for (int k = 0; k < cs->n_neighbors; k++)
        if (!strcmp(cfg->servers[cs->neighbors[k]].name, name)) return 1;
    return 0;
}

void peer_drop_removed(server *s, const config *next, int me) {
    for (size_t i = SERVER_FIRST_CLIENT; i < s->npfd; i++) {   /* handshakes are never cold */
        client *c = s->conn[i];
        if (c->link >= 0 && !neighbour_in(next, me, peer_name(s, &s->links[c->link])))
            client_kill(s, c, "no longer a neighbour (config reloaded)");
    }
    for (int li = 0; li < s->n_links; li++)   /* its answer, if it comes, finds no link */
        if (!neighbour_in(next, me, peer_name(s, &s->links[li]))) s->links[li].resolving = 0;
}

void peer_reconfigure(server *s, const config *old) {
    peer_link was[CONFIG_MAX_SERVERS];
    int n_was = s->n_links, moved[CONFIG_MAX_SERVERS];
    memcpy(was, s->links, (size_t)n_was * sizeof *was);
    for (int j = 0; j < n_was; j++) moved[j] = -1;
    s->n_links = 0;
    s->links_gen++;                     /* answers to earlier questions: dropped */
    for (int k = 0; k < s->me->n_neighbors; k++) {
        int li = s->n_links++, srv = s->me->neighbors[k];
        peer_link *L = &s->links[li];
        const char *name = s->cfg->servers[srv].name;
        int j = 0;
        while (j < n_was && strcmp(old->servers[was[j].server].name, name)) j++;
        if (j < n_was) {                /* kept, with its state */
            *L = was[j];
            moved[j] = li;
            if (L->resolving) {         /* asked under the old numbering: ask again */
                L->resolving = 0;
                L->next_dial_ms = s->now_ms;
            }
        } else {                        /* new: dialled (or awaited) from now */
            memset(L, 0, sizeof *L);
            L->dialer = strcmp(s->me->name, name) < 0;
            L->backoff_ms = BACKOFF_MIN_MS;
            L->next_dial_ms = s->now_ms;
        }
        L->server = srv;
    }
    /* every connection of a kept link follows it: the link itself, our dial,
     * and each handshake that named it, whether it holds the link's place
     * or goes on beside the one that does */
    for (size_t i = SERVER_FIRST_CLIENT; i < s->npfd; i++) {
        client *c = s->conn[i];
        if (c->link >= 0) c->link = c->link < n_was ? moved[c->link] : -1;
    }
}

/* ----------------------------------------------------------------- links */

/* Stream the entries of the buckets in mask stored by table.gen 'gen'. */
static void start_stream_of(server *s, peer_link *L, const uint64_t *mask, uint64_t gen) {
    L->streaming = 1;
    L->stream_pos = 0;
    L->stream_layout = s->tab.layout;
    memcpy(L->stream_mask, mask, sizeof L->stream_mask);
    L->stream_gen = gen;
    L->resync = 0;
}

/* The whole table (a backlog that overflowed). */
static void start_stream(server *s, peer_link *L) {
    uint64_t all[TABLE_BUCKETS / 64];
    memset(all, 0xff, sizeof all);
    start_stream_of(s, L, all, UINT64_MAX);
}

void peer_stream(server *s, int li, const uint64_t *mask, uint64_t gen) {
    peer_link *L = &s->links[li];
    if (L->conn && L->conn->state != CONN_DEAD && !L->streaming) start_stream_of(s, L, mask, gen);
}

/* A neighbour that vanishes without a reset shows as link-down within about
 * 15 s instead of the kernel's default of hours. */
static void tune_link_socket(int fd) {
    int one = 1, idle = 5, intvl = 2, cnt = 3;
    unsigned int user_timeout = 15000;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

/* An incoming handshake leaves its link's own place (done, or gone). */
static void drop_place(server *s, client *c) {
    if (c->link >= 0 && s->links[c->link].accepting == c) s->links[c->link].accepting = NULL;
}

static void link_up(server *s, int li, client *c, const char *direction) {
    peer_link *L = &s->links[li];
    tune_link_socket(c->fd);
    if (L->conn && L->conn != c) client_kill(s, L->conn, "replaced by a new link");
    if (L->dialing == c) L->dialing = NULL;
    drop_place(s, c);
    if (L->accepting)                  /* a handshake that did not finish first */
        client_kill(s, L->accepting, "the link came up on another connection");
    client_set_role(s, c, ROLE_PEER);
    c->link = li;
    c->quiet = 0;
    L->conn = c;
    L->failures = 0;
    L->backoff_ms = BACKOFF_MIN_MS;
    L->sent = L->received = 0;
    forward_link_changed(s, li);   /* catch-up: anti-entropy, at once */
    log_msg(LOG_INFO, "link-up", "peer=%s addr=%s dir=%s id=%llu tls=%d", peer_name(s, L),
            c->addr, direction, (unsigned long long)c->id, c->ssl != NULL);
}

/* A dial that failed (addr: where it went, or NULL when it did not start):
 * logged once per run of failures, tried again after the back-off. */
static void dial_failed(server *s, peer_link *L, const char *addr, const char *why) {
    if (L->failures++ == 0)
        log_msg(LOG_WARN, "link-dial-failed", "peer=%s%s%s reason=%s (retrying)",
                peer_name(s, L), addr ? " addr=" : "", addr ? addr : "", why);
    L->next_dial_ms = s->now_ms + L->backoff_ms;
    L->backoff_ms = L->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : L->backoff_ms * 2;
}

void peer_lost(server *s, client *c) {
    if (c->role == ROLE_ACCEPTED) {       /* gone during its TLS handshake */
        log_msg(LOG_WARN, "peer-refused", "peer=%s addr=%s reason=%s before its TLS "
                "handshake was done", c->link >= 0 ? peer_name(s, &s->links[c->link]) : "?",
                c->addr, c->close_reason);
        drop_place(s, c);
        c->link = -1;
        return;
    }
    if (c->link < 0) return;
    peer_link *L = &s->links[c->link];
    if (L->dialing == c) {
        L->dialing = NULL;
        dial_failed(s, L, c->addr, c->close_reason);
    } else if (L->conn == c) {
        L->conn = NULL;
        L->streaming = 0;
        forward_link_changed(s, c->link);
        L->next_dial_ms = s->now_ms + BACKOFF_MIN_MS;
        L->backoff_ms = BACKOFF_MIN_MS;
        log_msg(LOG_WARN, "link-down", "peer=%s reason=%s sent=%llu received=%llu",
                peer_name(s, L), c->close_reason, (unsigned long long)L->sent,
                (unsigned long long)L->received);
    }
    c->link = -1;
}

/* Connect link li to an address: the dial is under way. */
static void dial_to(server *s, int li, const struct sockaddr_storage *sa, socklen_t len) {
    peer_link *L = &s->links[li];
    char err[512], addr[NET_ADDRSTRLEN];
    int fd = net_connect_sa(sa, len, addr, sizeof addr, err, sizeof err);
    if (fd < 0) {
        dial_failed(s, L, NULL, err);
        return;
    }
    net_nodelay(fd);
    client *c = client_add(s, fd, addr);
    c->quiet = 1;
    client_set_role(s, c, ROLE_DIALING);
    c->link = li;
    c->connecting = 1;
    c->handshake_until_ms = s->now_ms + HANDSHAKE_MS;
    L->dialing = c;
}

/* A literal is dialled at once; a name is looked up again before each dial
 * (so a host that moved is found), by the resolver helper, never here. */
static void dial(server *s, int li) {
    peer_link *L = &s->links[li];
    const config_server *o = &s->cfg->servers[L->server];
    struct sockaddr_storage sa;
    socklen_t len;
    char err[512];
    if (net_literal(o->host, o->port, &sa, &len) == 0) dial_to(s, li, &sa, len);
    else if (resolver_ask(s, li, o->host, o->port, err, sizeof err) < 0)
        dial_failed(s, L, NULL, err);
    else L->resolving = 1;
}

void peer_resolved(server *s, int li, const struct sockaddr_storage *sa, socklen_t len,
                   const char *why) {
    for (int i = 0; i < s->n_links; i++) {
        peer_link *L = &s->links[i];
        if ((li >= 0 && i != li) || !L->resolving) continue;
        L->resolving = 0;
        if (sa) dial_to(s, i, sa, len);
        else dial_failed(s, L, NULL, why);
    }
}

void peer_connected(server *s, client *c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err) {
        client_kill(s, c, strerror(err));
        return;
    }
    c->connecting = 0;
    if (tls_start(s, c, 1) < 0) client_kill(s, c, "TLS setup failed");
    else peer_tls_step(s, c);
}

/* ------------------------------------------------------------------ TLS */

int peer_find_link(const server *s, const char *name, size_t len) {
    for (int i = 0; i < s->n_links; i++) {
        const char *n = s->cfg->servers[s->links[i].server].name;
        if (strlen(n) == len && memcmp(n, name, len) == 0) return i;
    }
    return -1;
}

static void refuse(server *s, client *c, const char *why) {
    log_msg(LOG_WARN, "peer-refused", "peer=%s addr=%s reason=%s",
            c->link >= 0 ? peer_name(s, &s->links[c->link]) : "?", c->addr, why);
    if (c->role == ROLE_ACCEPTED) {               /* logged once is enough */
        drop_place(s, c);
        c->link = -1;
        c->role = ROLE_CLIENT;   /* no link any more; still counted as a client */
    }
    client_kill(s, c, why);
}

/* A client's "PEER HELLO ...": the plain-text handshake of earlier
 * versions (or a probe).  Links are TLS only; the line gets the answer of
 * any bad line, and a server with links logs the refusal. */
void peer_plain_hello(server *s, client *c) {
    if (s->n_links)
        log_msg(LOG_WARN, "peer-refused", "peer=? addr=%s id=%llu reason=plain-text handshake "
                "(links are TLS)", c->addr, (unsigned long long)c->id);
}

/* Accepting side: c's first byte was 0x16.  With links and a secret, it is
 * a neighbour's TLS handshake: c keeps its place among the clients (or on
 * probation) until its ClientHello names the link (hold_link_place); it has
 * the handshake timeout to get there (on probation, what is left of
 * PROBATION_MS). */
int peer_tls_accept(server *s, client *c) {
    if (!s->tls_ctx || tls_start(s, c, 0) < 0) return -1;
    c->role = ROLE_ACCEPTED;   /* not client_set_role: it stays counted */
    int64_t until = s->now_ms + HANDSHAKE_MS;
    if (!c->probation || until < c->handshake_until_ms) c->handshake_until_ms = until;
    peer_tls_step(s, c);
    return 0;
}

/* Accepting side: c's ClientHello named link li with a PSK binder that
 * verifies (OpenSSL checks it in the same step that looks the identity up).
 * It leaves the clients' places, or the probation, for the link's own
 * place, which no client can take (docs/PROTOCOL.md, "Limits").  A binder
 * proves that someone once had the key, not that this connection has it:
 * a ClientHello seen on the wire can be sent again.  So a newer handshake
 * of the link never displaces the one holding the place: it goes on where
 * it is, and the first to finish becomes the link (link_up ends the
 * others); only the neighbour itself can finish one. */
static void hold_link_place(server *s, client *c) {
    peer_link *L = &s->links[c->link];
    if (L->accepting) return;
    L->accepting = c;
    client_set_role(s, c, ROLE_ACCEPTED);   /* gives back its client or probation place */
}

/* Either side: the next step of the TLS handshake; when done, the link is
 * up (the PSK identity told the acceptor which one). */
void peer_tls_step(server *s, client *c) {
    const char *why = "TLS handshake failed";
    int r = tls_handshake(s, c, &why);
    if (r < 0 || (r == 1 && c->link < 0)) {
        refuse(s, c, why);
        return;
    }
    if (c->role == ROLE_ACCEPTED && c->link >= 0) hold_link_place(s, c);
    if (r == 0) return;
    c->last_ms = s->now_ms;
    c->tls_more = 1;           /* the first records may have come with the handshake */
    link_up(s, c->link, c, c->role == ROLE_DIALING ? "out" : "in");
}

/* ------------------------------------------------------------- updates */

/* An AT line from a link; 'repair': it came in a SYNC line (a catch-up or
 * anti-entropy stream), counted apart from forwarded ones. */
static void on_update(server *s, client *c, const char *line, size_t len, int repair) {
    proto_at at;
    const char *why = "";
    peer_link *L = &s->links[c->link];
    if (proto_parse_at(line, len, &at, &why) < 0) {
        log_msg(LOG_WARN, "peer-bad-line", "peer=%s reason=%s", peer_name(s, L), why);
        return;
    }
    L->received++;
    s->metrics.link_updates_received++;
    table_update u = {
        .origin = at.origin, .diff = at.diff, .client = at.u.client,
        .location = at.u.location, .time = at.u.time, .t = at.u.t
    };
    if (update_apply(s, &u, c->link) && repair) s->metrics.link_updates_repaired++;
}

void peer_line(server *s, client *c, const char *line, size_t len) {
    /* nothing from a peer is ever answered "? " */
    if (c->role != ROLE_PEER) return;
    if (forward_first_line(s, c->link, line, len)) return;
    if (len > 3 && memcmp(line, "AT", 2) == 0) on_update(s, c, line, len, 0);
    else if (len > 8 && memcmp(line, "SYNC AT ", 8) == 0) on_update(s, c, line + 5, len - 5, 1);
    else forward_line(s, c->link, line, len);   /* LINK, SUM, SUMS */
}

static int in_stream(const peer_link *L, const table_entry *e) {
    return (L->stream_mask[e->bucket / 64] >> (e->bucket % 64) & 1) && e->gen <= L->stream_gen;
}

void peer_send(server *s, const table_entry *e, int li) {
    size_t cap = s->cfg->limits.max_output_bytes;
    peer_link *L = &s->links[li];
    if (!L->conn || L->conn->state == CONN_DEAD) return;
    if (L->streaming && L->stream_gen == UINT64_MAX && s->tab.layout == L->stream_layout &&
        table_index(&s->tab, e) >= L->stream_pos)
        return;   /* a whole-table stream will reach this slot later, with the newest entry */
    if (buf_pending(&L->conn->out) > cap) {
        if (!L->streaming && !L->resync)
            log_msg(LOG_WARN, "link-backlog", "peer=%s unsent=%zu cap=%zu: "
                    "sending the table again once it drains", peer_name(s, L),
                    buf_pending(&L->conn->out), cap);
        if (L->streaming) L->resync = 1;
        else start_stream(s, L);
        return;
    }
    buf_reserve(&L->conn->out, e->line_len + 1);
    buf_append(&L->conn->out, e->line, e->line_len);
    buf_append_char(&L->conn->out, '\n');
    L->sent++;
    s->metrics.link_updates_sent++;
}

/* Append the next part of the table to a catching-up link: "SYNC " and
 * the AT line, so the peer counts what it stores from it as a repair (an
 * earlier server, which does not know SYNC, gets the AT line alone). */
static void pump_stream(server *s, peer_link *L) {
    buf_t *out = &L->conn->out;
    int sync = L->agree == PEER_AGREE_OK;
    if (s->tab.layout != L->stream_layout) {   /* entries changed slots */
        L->stream_pos = 0;
        L->stream_layout = s->tab.layout;
    }
    while (L->stream_pos < s->tab.cap && buf_pending(out) < STREAM_CHUNK) {
        const table_entry *e = table_slot(&s->tab, L->stream_pos++);
        if (!e || !in_stream(L, e)) continue;
        if (sync) buf_append(out, "SYNC ", 5);
        buf_append(out, e->line, e->line_len);
        buf_append_char(out, '\n');
        L->sent++;
        s->metrics.link_updates_sent++;
        s->metrics.link_repairs_sent++;
    }
    if (L->stream_pos < s->tab.cap) return;
    if (L->resync) {
        start_stream(s, L);
        return;
    }
    L->streaming = 0;
    if (L->synced_due) {                 /* the repair our SUMS asked for is out */
        buf_append(out, "SYNCED\n", 7);
        L->synced_due = 0;
    }
    log_msg(LOG_INFO, "catch-up-sent", "peer=%s updates=%llu clients=%zu whole=%d",
            peer_name(s, L), (unsigned long long)L->sent, s->tab.count,
            L->stream_gen == UINT64_MAX);
}

/* A link whose catch-up stream has room for its next part. */
static int stream_ready(const peer_link *L) {
    return L->conn && L->conn->state != CONN_DEAD && L->streaming &&
           buf_pending(&L->conn->out) < STREAM_CHUNK;
}

/* A link we dial, with no dial or lookup under way: dialled at next_dial_ms. */
static int dial_waits(const peer_link *L) {
    return L->dialer && !L->conn && !L->dialing && !L->resolving;
}

int peer_connecting(const server *s, const peer_link *L) {
    if (!s->secrets.n || (L->conn && L->conn->state != CONN_DEAD)) return 0;
    return L->dialing || L->resolving || L->accepting || (L->dialer && !L->failures);
}

void peer_tick(server *s) {
    for (int li = 0; li < s->n_links; li++) {
        peer_link *L = &s->links[li];
        if (!s->secrets.n) continue;
        if (dial_waits(L) && s->now_ms >= L->next_dial_ms) dial(s, li);
        if (stream_ready(L)) pump_stream(s, L);
    }
}

void peer_flush(server *s) {
    for (int li = 0; li < s->n_links; li++) {
        client *c = s->links[li].conn;
        if (c && c->state != CONN_DEAD && buf_pending(&c->out)) client_write(s, c);
    }
}

int64_t peer_next_due(const server *s) {
    int64_t due = -1;
    if (!s->secrets.n) return -1;
    for (int li = 0; li < s->n_links; li++) {
        const peer_link *L = &s->links[li];
        if (stream_ready(L)) return s->now_ms;
        if (dial_waits(L) && (due < 0 || L->next_dial_ms < due)) due = L->next_dial_ms;
    }
    return due;
}
