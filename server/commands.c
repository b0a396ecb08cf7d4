/* commands.c -- one client line in, its reply out (docs/PROTOCOL.md).
 *
 *   IAMAT    -> "AT <server> <diff> <client> <location> <time>", and the
 *               update is stored when it is newer than what we hold; a
 *               time more than a day ahead of our clock is a bad field
 *   WHATSAT  -> the stored AT line, LF, the places JSON, LF, LF
 *   anything else, or a bad field -> "? " + the line as received
 *
 * Replies are appended to the client's output buffer whole, so each goes out
 * in one write.  Only ROLE_CLIENT connections come here (server.c picks the
 * handler by role); a link's lines go to peer_line() in peer.c, and an
 * update, from a client or a link, is applied by update_apply() in forward.c.
 */
#include "commands.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "forward.h"
#include "google.h"
#include "log.h"
#include "peer.h"
#include "protocol.h"
#include "server.h"

/* Log the client's line or our reply, as "id=N "-prefixed escaped data. */
static void log_client_data(const client *c, const char *event, const char *data,
                            size_t len, const char *suffix) {
    char digits[24], prefix[32];
    int n = 0;
    uint64_t v = c->id;
    do digits[n++] = (char)('0' + v % 10); while ((v /= 10));
    memcpy(prefix, "id=", 3);
    for (int i = 0; i < n; i++) prefix[3 + i] = digits[n - 1 - i];
    prefix[3 + n] = ' ';
    prefix[4 + n] = '\0';
    log_data(LOG_INFO, event, prefix, data, len, suffix);
}

/* 'start' counts from the front of the pending output (buf_pending before
 * the reply was appended), not from c->out.p: appending may compact the
 * buffer, which moves the data but keeps that distance. */
static void log_reply(server *s, client *c, size_t start) {
    if (!s->cfg->logging.log_lines) return;
    const char *d = buf_data(&c->out);
    size_t end = buf_pending(&c->out), len = end - start;
    if (len && d[end - 1] == '\n') len--;  /* the line's own LF */
    log_client_data(c, "send", d + start, len, NULL);
}

/* The answer to a bad line, "? " + the line + LF, on c->out. */
static void command_reply_invalid(server *s, client *c, const char *line, size_t len) {
    size_t start = buf_pending(&c->out);
    buf_reserve(&c->out, len + 3);
    buf_append(&c->out, "? ", 2);
    buf_append(&c->out, line, len);
    buf_append_char(&c->out, '\n');
    log_reply(s, c, start);
}

/* The diff counts from when the line was read from the socket, not from
 * now: an IAMAT held behind a WHATSAT waiting for Google keeps its time. */
static void do_iamat(server *s, client *c, const proto_iamat *ia) {
    proto_time now = {c->rx_time.tv_sec, (int32_t)c->rx_time.tv_nsec};
    char diff[PROTO_DIFF_MAX];
    size_t dlen = proto_format_diff(diff, now, ia->t);
    table_update u = {
        .origin = {s->me->name, strlen(s->me->name)},
        .diff = {diff, dlen},
        .client = ia->client,
        .location = ia->location,
        .time = ia->time,
        .t = ia->t,
    };
    size_t start = buf_pending(&c->out), n = table_at_len(&u);
    buf_reserve(&c->out, n + 1);
    c->out.len += table_format_at(c->out.p + c->out.len, &u, NULL);
    buf_append_char(&c->out, '\n');
    log_reply(s, c, start);
    update_apply(s, &u, -1);
}

/* A time further ahead of our clock than PROTO_MAX_AHEAD_S (at the line's
 * receive time) is refused: stored, it would be newer than every real
 * update for that long, and could pin the table at max_stored_clients. */
static int too_far_ahead(const client *c, proto_time t) {
    proto_time limit = {c->rx_time.tv_sec + PROTO_MAX_AHEAD_S, (int32_t)c->rx_time.tv_nsec};
    return proto_time_cmp(t, limit) > 0;
}

static void do_whatsat(server *s, client *c, const proto_whatsat *ws,
                       const char *line, size_t len) {
    const table_entry *e = table_get(&s->tab, ws->client.p, ws->client.len);
    if (!e) {
        if (s->cfg->logging.log_lines)
            log_msg(LOG_INFO, "invalid", "id=%llu reason=unknown client",
                    (unsigned long long)c->id);
        command_reply_invalid(s, c, line, len);
        return;
    }
    if (s->google) {
        google_whatsat(s, c, e, ws);
        return;
    }
    buf_append(&c->out, e->line, e->line_len);
    buf_append_char(&c->out, '\n');
    size_t json_start = buf_pending(&c->out);
    double lat, lng;
    table_entry_latlng(e, &lat, &lng);
    int n = places_local_render(&s->places, lat, lng, ws->radius_km,
                                ws->bound, &c->out);
    size_t json_len = buf_pending(&c->out) - json_start;
    buf_append(&c->out, "\n\n", 2);
    if (s->cfg->logging.log_lines) {
        /* the AT line, and the JSON summarised: a full dump is kilobytes */
        char suffix[96];
        snprintf(suffix, sizeof suffix, " json_bytes=%zu results=%d status=%s",
                 json_len, n, n ? "OK" : "ZERO_RESULTS");
        log_client_data(c, "send", e->line, e->line_len, suffix);
    }
}

void command_handle(server *s, client *c, const char *line, size_t len) {
    proto_iamat ia;
    proto_whatsat ws;
    const char *why = NULL;
    if (s->cfg->logging.log_lines)
        log_client_data(c, "recv", line, len, NULL);
    if (len > 11 && memcmp(line, "PEER HELLO ", 11) == 0)
        peer_plain_hello(s, c);            /* logged, then a bad line like any */
    if (c->probation) {                    /* past a full table: neighbours only */
        client_refuse_busy(s, c);
        return;
    }
    proto_kind kind = proto_parse(line, len, &ia, &ws, &why);
    if (kind == PROTO_IAMAT && too_far_ahead(c, ia.t)) {
        kind = PROTO_INVALID;
        why = "time more than a day ahead of the server's clock";
    }
    switch (kind) {
    case PROTO_EMPTY:
        return;
    case PROTO_IAMAT:
        s->metrics.requests[MX_IAMAT]++;
        do_iamat(s, c, &ia);
        return;
    case PROTO_WHATSAT:
        s->metrics.requests[MX_WHATSAT]++;
        do_whatsat(s, c, &ws, line, len);
        return;
    case PROTO_INVALID:
        s->metrics.requests[MX_INVALID]++;
        if (s->cfg->logging.log_lines)
            log_msg(LOG_INFO, "invalid", "id=%llu reason=%s",
                    (unsigned long long)c->id, why);
        command_reply_invalid(s, c, line, len);
        return;
    case PROTO_OTHER:
        s->metrics.requests[MX_INVALID]++;
        command_reply_invalid(s, c, line, len);
        return;
    }
}
