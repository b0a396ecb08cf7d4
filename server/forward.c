/* forward.c -- one path for every update, and where it goes next.
 *
 * update_apply() is the only place an update enters the table, whether a
 * client sent it (commands.c) or a link did (peer.c): store it when newer,
 * mark the table for the next snapshot, log it, forward it.
 *
 * Trees.  Each server announces the state of its links, "LINK <server>
 * <seq> <up-neighbour,...>", flooded through the herd whenever one of its
 * links comes up or goes down (rare), and sent whole to a neighbour whose
 * link just came up.  Every server keeps the newest state of every server;
 * a link is live when both ends say it is up.  The tree of origin O is the
 * breadth-first tree from O over the live links, neighbours taken in name
 * order, so every server that knows the same states computes the same
 * tree.  An update goes only to our children in its origin's tree: N-1
 * link messages per update instead of 2E-(N-1).
 *
 * Safety first: an update is flooded as before (every neighbour but the
 * sender) when forwarding is set to flood, for FLUX_MS after any link state
 * changed, when its origin is unknown, when the tree does not reach us,
 * when it came from a neighbour that is not our parent in its tree (the
 * sender's view differs from ours), or when a neighbour whose link is up
 * never announced its links (an older server: it only knows flooding).
 * Anything a tree still misses is repaired by anti-entropy.
 *
 * Anti-entropy.  Every herd.anti_entropy_ms (P), and at once when a link
 * comes up, each side of a link sends "SUM <count> <root>": its table's
 * entry count and the XOR of its entries' hashes (table.h).  A receiver
 * whose own differ answers with its TABLE_BUCKETS bucket digests, "SUMS
 * <first> <hex>" lines of SUMS_PER_LINE buckets each; the first side then
 * sends the entries of the buckets that differ, skipping those stored in
 * the last period (they may still be on their way along a tree).  Under
 * load some buckets always differ, by updates still on their way on
 * another branch of a tree; sending their older entries would resend the
 * table.  So a bucket's entries are sent only when it differed in two
 * rounds in a row (in-flight differences rarely hit the same bucket twice
 * among 4096), except right after a link came up.  Applying
 * an entry is idempotent (the newer order), so a repeated one costs a line
 * and nothing else.  At rest this costs one SUM line per link direction per
 * period.  Bound: a server one hop from a server holding an update holds it
 * at most 2P + a round trip + the stream's time after the holder stored it
 * (the holder's next SUM after one full period treats it as old); d hops
 * away, d times that, while the links between them stay up.
 */
#include "forward.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "peer.h"
#include "server.h"

#define FLUX_MS 2000          /* flood this long after a link state changed */
#define STATS_MS 10000        /* forward-stats log line at most this often */
#define SUMS_PER_LINE 32      /* bucket digests per SUMS line (about 540 bytes) */

static int me_index(const server *s) { return (int)(s->me - s->cfg->servers); }

static int server_index(const server *s, const char *name, size_t len) {
    for (int i = 0; i < s->cfg->n_servers; i++) {
        const char *n = s->cfg->servers[i].name;
        if (strlen(n) == len && memcmp(n, name, len) == 0) return i;
    }
    return -1;
}

static int link_ready(const server *s, int li) {
    const client *c = s->links[li].conn;
    return c && c->state != CONN_DEAD;
}

/* Our links that are up, as a mask of server indexes. */
static uint64_t my_up(const server *s) {
    uint64_t m = 0;
    for (int li = 0; li < s->n_links; li++)
        if (link_ready(s, li)) m |= UINT64_C(1) << s->links[li].server;
    return m;
}

/* Something about the links changed: trees are recomputed on demand, and
 * updates are flooded for a while. */
static void states_changed(server *s) {
    s->fw.tree_ok = 0;
    s->fw.flux_until_ms = s->now_ms + FLUX_MS;
}

void forward_init(server *s) {
    memset(&s->fw, 0, sizeof s->fw);
    s->fw.next_stats_ms = s->now_ms + STATS_MS;
    states_changed(s);
}

/* ----------------------------------------------------------------- trees */

static int live(const server *s, int a, int b) {
    return (s->fw.up[a] >> b & 1) && (s->fw.up[b] >> a & 1);
}

static int by_name(const server *s, int a, int b) {
    return strcmp(s->cfg->servers[a].name, s->cfg->servers[b].name);
}

/* Breadth-first from origin o over the live links, each server's
 * neighbours in name order: the same tree on every server that knows the
 * same link states. */
static void compute_tree(server *s, int o) {
    int8_t *par = s->fw.parent[o];
    int queue[CONFIG_MAX_SERVERS], head = 0, tail = 0;
    uint64_t seen = UINT64_C(1) << o;
    memset(par, -1, CONFIG_MAX_SERVERS);
    queue[tail++] = o;
    while (head < tail) {
        int v = queue[head++], nb[CONFIG_MAX_SERVERS], n = 0;
        const config_server *cs = &s->cfg->servers[v];
        for (int k = 0; k < cs->n_neighbors; k++) {        /* insertion sort */
            int w = cs->neighbors[k], j = n++;
            while (j > 0 && by_name(s, nb[j - 1], w) > 0) { nb[j] = nb[j - 1]; j--; }
            nb[j] = w;
        }
        for (int k = 0; k < n; k++) {
            int w = nb[k];
            if ((seen >> w & 1) || !live(s, v, w)) continue;
            seen |= UINT64_C(1) << w;
            par[w] = (int8_t)v;
            queue[tail++] = w;
        }
    }
    s->fw.tree_ok |= UINT64_C(1) << o;
}

/* Our children in the tree of e's origin, as a mask of link indexes in
 * *kids; returns -1 when the update must be flooded instead (see the top of
 * the file). */
static int tree_children(server *s, const table_entry *e, int from_link, uint64_t *kids) {
    if (s->cfg->herd.forwarding == FORWARD_FLOOD || s->now_ms < s->fw.flux_until_ms)
        return -1;
    proto_str origin = table_entry_origin(e);
    int o = server_index(s, origin.p, origin.len), me = me_index(s);
    if (o < 0) return -1;
    for (int li = 0; li < s->n_links; li++)      /* a neighbour that never says LINK */
        if (link_ready(s, li) && !s->fw.seq[s->links[li].server]) return -1;
    if (!(s->fw.tree_ok >> o & 1)) compute_tree(s, o);
    const int8_t *par = s->fw.parent[o];
    if (o != me && par[me] < 0) return -1;                       /* not reached */
    if (from_link >= 0 && s->links[from_link].server != par[me]) return -1;
    if (from_link < 0 && o != me) return -1;
    *kids = 0;
    for (int li = 0; li < s->n_links; li++)
        if (par[s->links[li].server] == me) *kids |= UINT64_C(1) << li;
    return 0;
}

static void forward(server *s, const table_entry *e, int from_link) {
    uint64_t kids;
    int flood = tree_children(s, e, from_link, &kids) < 0;
    if (flood) s->fw.flood_sends++;
    else s->fw.tree_sends++;
    for (int li = 0; li < s->n_links; li++)
        if (flood ? li != from_link : (kids >> li & 1)) peer_send(s, e, li);
}

/* "update from=NAME \"AT ...\"": the prefix by hand, as it is logged for
 * every update a link brings (snprintf was a visible part of that). */
static void log_update(const server *s, const table_entry *e, int from_link) {
    const char *name = s->cfg->servers[s->links[from_link].server].name;
    size_t n = strlen(name);                   /* < CONFIG_MAX_NAME */
    char prefix[CONFIG_MAX_NAME + 8];
    memcpy(prefix, "from=", 5);
    memcpy(prefix + 5, name, n);
    memcpy(prefix + 5 + n, " ", 2);
    log_data(LOG_INFO, "update", prefix, e->line, e->line_len, NULL);
}

table_entry *update_apply(server *s, const table_update *u, int from_link) {
    table_entry *e = table_offer(&s->tab, u);
    if (!e) return NULL;
    s->table_dirty = 1;
    if (from_link < 0) s->metrics.client_updates++;
    else s->metrics.link_updates_stored++;
    if (from_link >= 0 && s->cfg->logging.log_lines) log_update(s, e, from_link);
    forward(s, e, from_link);
    return e;
}

/* ----------------------------------------------------------- link states */

/* A control line (LINK, SUM, SUMS) on link li. */
static void send_ctl(server *s, int li, const char *line, size_t len) {
    client *c = s->links[li].conn;
    buf_reserve(&c->out, len + 1);
    buf_append(&c->out, line, len);
    buf_append_char(&c->out, '\n');
    s->fw.ctl_sent++;
    s->fw.ctl_bytes += len + 1;
}

/* "LINK <server> <seq> <up-neighbour,...>" ("-" for none) into out. */
static size_t format_state(const server *s, int o, char *out, size_t size) {
    const config_server *cs = &s->cfg->servers[o];
    size_t n = (size_t)snprintf(out, size, "LINK %s %" PRIu64 " ", cs->name, s->fw.seq[o]);
    int any = 0;
    for (int k = 0; k < cs->n_neighbors && n < size; k++) {
        int w = cs->neighbors[k];
        if (!(s->fw.up[o] >> w & 1)) continue;
        n += (size_t)snprintf(out + n, size - n, "%s%s", any ? "," : "",
                              s->cfg->servers[w].name);
        any = 1;
    }
    if (!any && n < size) n += (size_t)snprintf(out + n, size - n, "-");
    return n < size ? n : size - 1;
}

/* Server o's state to every ready link but 'except'. */
static void flood_state(server *s, int o, int except) {
    char line[FORWARD_CTL_MAX];
    size_t n = format_state(s, o, line, sizeof line);
    for (int li = 0; li < s->n_links; li++)
        if (li != except && link_ready(s, li)) send_ctl(s, li, line, n);
}

/* Our own state, under a new sequence number: larger than any we used, and
 * than the wall clock in microseconds, so a restarted server's first state
 * is newer than what the herd remembers of its previous life. */
static void announce(server *s) {
    int me = me_index(s);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    s->fw.seq[me] = s->fw.seq[me] + 1 > now_us ? s->fw.seq[me] + 1 : now_us;
    s->fw.up[me] = my_up(s);
    states_changed(s);
    flood_state(s, me, -1);
    s->fw.announced++;
}

/* ------------------------------------------------------------- agreement */

static const char *forwarding_name(int m) {
    return m == FORWARD_FLOOD ? "flood" : "tree";
}

/* "AGREE version=V max_stored_clients=N forwarding=M": the first line on
 * every link, each way. */
static void send_agree(server *s, int li) {
    char line[128];
    int n = snprintf(line, sizeof line, "AGREE version=%d max_stored_clients=%zu forwarding=%s",
                     LINK_PROTOCOL_VERSION, s->cfg->limits.max_stored_clients,
                     forwarding_name(s->cfg->herd.forwarding));
    send_ctl(s, li, line, (size_t)n);
}

/* No wait for the peer's AGREE: ours is the first line it reads, so a
 * peer that disagrees ignores our SUM, and its SUM, behind its AGREE,
 * finds the mismatch already known here. */
int forward_repairs(const server *s, int li) {
    return !(s->links[li].mismatch & (AGREE_KEY_VERSION | AGREE_KEY_MAX_STORED));
}

/* A setting that differs on link li: remembered, and logged once per
 * link-up (an AGREE comes once). */
static void mismatch(server *s, int li, unsigned bit, proto_str key, const char *ours,
                     proto_str theirs) {
    peer_link *L = &s->links[li];
    L->mismatch |= bit;
    log_msg(LOG_WARN, "config-mismatch", "peer=%s key=%.*s ours=%s theirs=%.*s (%s)",
            s->cfg->servers[L->server].name, (int)key.len, key.p, ours,
            (int)(theirs.len > 64 ? 64 : theirs.len), theirs.p,
            bit == AGREE_KEY_FORWARDING ? "updates still reach every server"
                                        : "no anti-entropy on this link until they agree");
}

/* One "key=value" of their AGREE against ours. */
static void agree_key(server *s, int li, proto_str kv) {
    char ours[32];
    unsigned bit;
    const char *eq = memchr(kv.p, '=', kv.len);
    if (!eq) return;
    size_t klen = (size_t)(eq - kv.p), vlen = kv.len - klen - 1;
    if (klen == 7 && memcmp(kv.p, "version", 7) == 0) {
        bit = AGREE_KEY_VERSION;
        snprintf(ours, sizeof ours, "%d", LINK_PROTOCOL_VERSION);
    } else if (klen == 18 && memcmp(kv.p, "max_stored_clients", 18) == 0) {
        bit = AGREE_KEY_MAX_STORED;
        snprintf(ours, sizeof ours, "%zu", s->cfg->limits.max_stored_clients);
    } else if (klen == 10 && memcmp(kv.p, "forwarding", 10) == 0) {
        bit = AGREE_KEY_FORWARDING;
        snprintf(ours, sizeof ours, "%s", forwarding_name(s->cfg->herd.forwarding));
    } else {
        return;                                 /* a newer peer may say more */
    }
    if (strlen(ours) == vlen && memcmp(ours, eq + 1, vlen) == 0) return;
    proto_str key = {kv.p, klen}, theirs = {eq + 1, vlen};
    mismatch(s, li, bit, key, ours, theirs);
}

int forward_first_line(server *s, int li, const char *line, size_t len) {
    peer_link *L = &s->links[li];
    int agree = len >= 5 && memcmp(line, "AGREE", 5) == 0 &&
                (len == 5 || proto_is_space((unsigned char)line[5]));
    if (L->agree != PEER_AGREE_WAIT && !agree) return 0;
    if (!agree) {            /* an earlier server: its order lacks the whole line */
        static const char k[] = "version", none[] = "1 (no AGREE)";
        char ours[16];
        snprintf(ours, sizeof ours, "%d", LINK_PROTOCOL_VERSION);
        L->agree = PEER_AGREE_NONE;
        mismatch(s, li, AGREE_KEY_VERSION, (proto_str){k, sizeof k - 1}, ours,
                 (proto_str){none, sizeof none - 1});
        return 0;
    }
    /* a later AGREE: the peer reloaded its config (forward_reconfigure) */
    unsigned before = L->agree == PEER_AGREE_WAIT ? 0 : L->mismatch;
    L->agree = PEER_AGREE_OK;
    L->mismatch = 0;
    for (size_t i = 5; i < len;) {               /* every key=value, however many */
        while (i < len && proto_is_space((unsigned char)line[i])) i++;
        size_t start = i;
        while (i < len && !proto_is_space((unsigned char)line[i])) i++;
        if (i > start) agree_key(s, li, (proto_str){line + start, i - start});
    }
    if (before && !L->mismatch)
        log_msg(LOG_INFO, "config-agreed", "peer=%s the settings that must agree agree again",
                s->cfg->servers[L->server].name);
    return 1;
}

/* The index in cfg of the server named like servers[i] of 'from', or -1. */
static int renumber(const config *from, int i, const config *cfg) {
    return config_find_server(cfg, from->servers[i].name);
}

void forward_reconfigure(server *s, const config *old) {
    forward_state *w = &s->fw;
    uint64_t seq[CONFIG_MAX_SERVERS] = {0}, up[CONFIG_MAX_SERVERS] = {0};
    for (int i = 0; i < old->n_servers; i++) {   /* what we know, by name */
        int k = renumber(old, i, s->cfg);
        if (k < 0) continue;
        seq[k] = w->seq[i];
        for (int b = 0; b < old->n_servers; b++) {
            int m = (w->up[i] >> b & 1) ? renumber(old, b, s->cfg) : -1;
            if (m >= 0) up[k] |= UINT64_C(1) << m;
        }
    }
    memcpy(w->seq, seq, sizeof seq);
    memcpy(w->up, up, sizeof up);
    w->up[me_index(s)] = my_up(s);
    w->announce = 1;                            /* our new neighbours, to the herd */
    states_changed(s);
    if (old->limits.max_stored_clients != s->cfg->limits.max_stored_clients ||
        old->herd.forwarding != s->cfg->herd.forwarding)
        for (int li = 0; li < s->n_links; li++)
            if (link_ready(s, li)) send_agree(s, li);
}

void forward_link_changed(server *s, int li) {
    peer_link *L = &s->links[li];
    if (link_ready(s, li)) {
        L->agree = PEER_AGREE_WAIT;
        L->mismatch = 0;
        L->caught_up = 0;
        L->synced_due = 0;
        send_agree(s, li);                      /* the first line, each way */
        L->lsdb_due = 1;                        /* every state we know, to it */
        L->next_sum_ms = s->now_ms;             /* catch up now */
        L->sum_gen = L->prev_gen = s->tab.gen;  /* all we hold is old to it */
        memset(L->differ, 0, sizeof L->differ);
        memset(L->differed, 0xff, sizeof L->differed);   /* catch up at once */
    }
    s->fw.up[me_index(s)] = my_up(s);
    s->fw.announce = 1;
    states_changed(s);
}

static int parse_u64(proto_str f, uint64_t *v) {
    if (f.len == 0 || f.len > 19) return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < f.len; i++) {
        if (f.p[i] < '0' || f.p[i] > '9') return -1;
        x = x * 10 + (uint64_t)(f.p[i] - '0');
    }
    *v = x;
    return 0;
}

/* Names in "a,b,c" ("-" for none) that are configured neighbours of o. */
static uint64_t parse_up(const server *s, int o, proto_str f) {
    uint64_t m = 0;
    if (f.len == 1 && f.p[0] == '-') return 0;
    const config_server *cs = &s->cfg->servers[o];
    for (size_t i = 0; i < f.len;) {
        size_t j = i;
        while (j < f.len && f.p[j] != ',') j++;
        int w = server_index(s, f.p + i, j - i);
        for (int k = 0; w >= 0 && k < cs->n_neighbors; k++)
            if (cs->neighbors[k] == w) m |= UINT64_C(1) << w;
        i = j + 1;
    }
    return m;
}

static void on_link_state(server *s, int li, const proto_str *f) {
    int o = server_index(s, f[1].p, f[1].len);
    uint64_t seq;
    if (o < 0 || parse_u64(f[2], &seq) < 0) return;
    if (o == me_index(s)) {   /* our own: an echo, or one from a previous life */
        if (seq > s->fw.seq[o]) {
            s->fw.seq[o] = seq;
            s->fw.announce = 1;
        }
        return;
    }
    if (seq <= s->fw.seq[o]) return;        /* seen it */
    s->fw.seq[o] = seq;
    s->fw.up[o] = parse_up(s, o, f[3]);
    states_changed(s);
    flood_state(s, o, li);
}

/* ---------------------------------------------------------- anti-entropy */

static void send_sum(server *s, int li) {
    peer_link *L = &s->links[li];
    char line[64];
    int n = snprintf(line, sizeof line, "SUM %zu %016" PRIx64, s->tab.count, s->tab.root);
    send_ctl(s, li, line, (size_t)n);
    L->prev_gen = L->sum_gen;
    L->sum_gen = s->tab.gen;
    L->next_sum_ms = s->now_ms + s->cfg->herd.anti_entropy_ms;
}

/* 16 lowercase hex digits at p; -1 on anything else. */
static int hex_u64(const char *p, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        char ch = p[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0) return -1;
        x = x << 4 | (uint64_t)d;
    }
    *v = x;
    return 0;
}

/* v as 16 lowercase hex digits at o, as hex_u64 reads them. */
static void put_hex_u64(char *o, uint64_t v) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4) o[i] = hex[v & 15];
}

/* Their SUM (a well-formed one) differs from ours: our bucket digests, so
 * they send what differs.  Under load one in a second per link does (updates
 * on their way), 4096 digests each: formatted by hand, not by snprintf. */
static void on_sum(server *s, int li, const proto_str *f) {
    uint64_t count, root;
    if (!forward_repairs(s, li)) return;
    if (parse_u64(f[1], &count) < 0 || f[2].len != 16 || hex_u64(f[2].p, &root) < 0) return;
    if (count == s->tab.count && root == s->tab.root) {
        s->links[li].caught_up = 1;
        return;
    }
    s->metrics.digest_mismatches++;
    for (int b = 0; b < TABLE_BUCKETS; b += SUMS_PER_LINE) {
        char line[32 + SUMS_PER_LINE * 16];
        int k = snprintf(line, sizeof line, "SUMS %d ", b);
        for (int i = 0; i < SUMS_PER_LINE; i++, k += 16)
            put_hex_u64(line + k, s->tab.bucket_sum[b + i]);
        send_ctl(s, li, line, (size_t)k);
    }
}

/* Their bucket digests: once all are in, send the entries of the buckets
 * that differ now and differed in the round before, stored before our
 * previous SUM. */
static void on_sums(server *s, int li, const proto_str *f) {
    peer_link *L = &s->links[li];
    uint64_t first;
    if (!forward_repairs(s, li)) return;
    if (parse_u64(f[1], &first) < 0 || first % SUMS_PER_LINE || first >= TABLE_BUCKETS ||
        f[2].len != SUMS_PER_LINE * 16)
        return;
    for (int i = 0; i < SUMS_PER_LINE; i++) {
        uint64_t v;
        unsigned b = (unsigned)first + (unsigned)i;
        if (hex_u64(f[2].p + 16 * i, &v) < 0) return;
        if (v != s->tab.bucket_sum[b]) L->differ[b / 64] |= UINT64_C(1) << (b % 64);
    }
    if (first + SUMS_PER_LINE < TABLE_BUCKETS) return;
    uint64_t both[TABLE_BUCKETS / 64];
    int any = 0;
    for (size_t i = 0; i < TABLE_BUCKETS / 64; i++) {
        both[i] = L->differ[i] & L->differed[i];
        any |= both[i] != 0;
    }
    if (any) peer_stream(s, li, both, L->prev_gen);
    if (L->streaming) L->synced_due = 1;        /* after the stream, */
    else send_ctl(s, li, "SYNCED", 6);          /* or now: nothing (more) to send */
    memcpy(L->differed, L->differ, sizeof L->differed);
    memset(L->differ, 0, sizeof L->differ);
}

/* ------------------------------------------------------------- the rest */

void forward_line(server *s, int li, const char *line, size_t len) {
    proto_str f[5];
    int n = proto_split(line, len, f, 4);
    if (n == 4 && f[0].len == 4 && memcmp(f[0].p, "LINK", 4) == 0) on_link_state(s, li, f);
    else if (n == 3 && f[0].len == 3 && memcmp(f[0].p, "SUM", 3) == 0) on_sum(s, li, f);
    else if (n == 3 && f[0].len == 4 && memcmp(f[0].p, "SUMS", 4) == 0) on_sums(s, li, f);
    else if (n == 1 && f[0].len == 6 && memcmp(f[0].p, "SYNCED", 6) == 0)
        s->links[li].caught_up = 1;
    /* anything else is ignored: a newer peer may say more */
}

void forward_log_stats(server *s) {
    forward_state *w = &s->fw;
    const metrics *m = &s->metrics;
    log_msg(LOG_INFO, "forward-stats", "client_updates=%" PRIu64 " link_updates_sent=%" PRIu64
            " tree=%" PRIu64 " flood=%" PRIu64 " ctl_lines=%" PRIu64 " ctl_bytes=%" PRIu64
            " announced=%" PRIu64 " repairs_sent=%" PRIu64 " stored_forwarded=%" PRIu64
            " stored_repaired=%" PRIu64 " mode=%s", m->client_updates, m->link_updates_sent,
            w->tree_sends, w->flood_sends, w->ctl_sent, w->ctl_bytes, w->announced,
            m->link_repairs_sent, m->link_updates_stored - m->link_updates_repaired,
            m->link_updates_repaired, forwarding_name(s->cfg->herd.forwarding));
}

int64_t forward_next_due(const server *s) {
    if (!s->secrets.n) return -1;
    if (s->fw.announce) return s->now_ms;
    int64_t due = s->fw.next_stats_ms;
    for (int li = 0; li < s->n_links; li++) {
        const peer_link *L = &s->links[li];
        if (!link_ready(s, li)) continue;
        if (L->lsdb_due) return s->now_ms;
        if (forward_repairs(s, li) && L->next_sum_ms < due) due = L->next_sum_ms;
    }
    return due;
}

void forward_tick(server *s) {
    if (!s->secrets.n) return;
    if (s->fw.announce) {
        s->fw.announce = 0;
        announce(s);
    }
    for (int li = 0; li < s->n_links; li++) {
        peer_link *L = &s->links[li];
        if (!link_ready(s, li)) continue;
        if (L->lsdb_due) {
            L->lsdb_due = 0;
            for (int o = 0; o < s->cfg->n_servers; o++) {
                if (!s->fw.seq[o]) continue;
                char line[FORWARD_CTL_MAX];
                send_ctl(s, li, line, format_state(s, o, line, sizeof line));
            }
        }
        if (s->now_ms >= L->next_sum_ms && forward_repairs(s, li)) send_sum(s, li);
    }
    if (s->now_ms >= s->fw.next_stats_ms) {
        s->fw.next_stats_ms = s->now_ms + STATS_MS;
        if (s->metrics.link_updates_sent != s->fw.logged_sent) forward_log_stats(s);
        s->fw.logged_sent = s->metrics.link_updates_sent;
    }
}
