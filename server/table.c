/* table.c -- the client table; see table.h.
 *
 * Removing an entry (an eviction at the bound) leaves a "removed" mark in
 * its slot, so the probe paths of other keys stay intact and no entry moves:
 * a link's catch-up walks the slots with a cursor, and an entry moving back
 * past the cursor would never be sent.  A new entry reuses the first mark on
 * its path; a removal at the end of a cluster frees its slot and the marks
 * just before it.  When entries and marks pass 3/4 of the slots the table is
 * rebuilt, twice as large if entries alone pass half, else at the same size;
 * either way 'layout' changes, which tells the cursor to start over.
 *
 * The heap orders entries by the herd's newer order (whose last step, the
 * whole line, tells two clients apart), so two servers holding the same
 * updates agree on which is the oldest.
 */
#include "table.h"

#include <inttypes.h>
#include <string.h>

#include "log.h"
#include "siphash.h"
#include "xalloc.h"

/* Fixed keys for the digests: every server must compute the same hashes. */
#define DIGEST_K0 0x70726f7879686572ULL   /* "proxyher" */
#define DIGEST_K1 0x6420646967657374ULL   /* "d digest" */

unsigned table_bucket_of(const char *client, size_t len) {
    return (unsigned)(siphash24(client, len, DIGEST_K1, DIGEST_K0) % TABLE_BUCKETS);
}

/* An entry joins or leaves the digests (XOR: the same call does both). */
static void digest_flip(table *t, const table_entry *e) {
    uint64_t sum = siphash24(e->line, e->line_len, DIGEST_K0, DIGEST_K1);
    t->bucket_sum[e->bucket] ^= sum;
    t->root ^= sum;
}

/* ---------------------------------------------------------- the order */

/* The fields the order reads, from an entry. */
static table_update entry_view(const table_entry *e) {
    table_update v;
    memset(&v, 0, sizeof v);
    v.origin = entry_field(e, e->origin_off, e->origin_len);
    v.client = entry_field(e, e->client_off, e->client_len);
    v.location = entry_field(e, e->location_off, e->location_len);
    v.t = e->t;
    return v;
}

/* The herd's newer order (docs/PROTOCOL.md): time, location bytes, origin,
 * then the whole AT line's bytes, so two different lines are never equal
 * (the line holds the client id: two clients' entries never are either).
 * The last step is reached only for updates equal in all the rest (a resent
 * IAMAT, a time written two ways), so formatting u's line there is rare.
 * <0 when u is older than e, 0 when it is the same line. */
static int update_cmp(const table_update *u, const table_entry *e) {
    table_update v = entry_view(e);
    int c = proto_update_cmp(u->t, u->location, u->origin, v.t, v.location, v.origin);
    if (c) return c;
    char line[PROTO_AT_MAX];
    size_t len = table_format_at(line, u, NULL);
    return proto_bytes_cmp(line, len, e->line, e->line_len);
}

/* The same order between two stored entries (whose lines are whole). */
static int entry_older(const table_entry *a, const table_entry *b) {
    table_update va = entry_view(a), vb = entry_view(b);
    int c = proto_update_cmp(va.t, va.location, va.origin, vb.t, vb.location, vb.origin);
    if (!c) c = proto_bytes_cmp(a->line, a->line_len, b->line, b->line_len);
    return c < 0;
}

/* --------------------------------------------------------------- the heap */

/* A time as one integer that never orders two times the wrong way: exact
 * below 2^34 seconds (the year 2514), the same for every later time. */
static uint64_t time_key(proto_time t) {
    if (t.sec >= (INT64_C(1) << 34)) return UINT64_MAX;
    return (uint64_t)t.sec << 30 | (uint64_t)t.nsec;
}

static table_heap_slot heap_slot(table_entry *e) {
    table_heap_slot h = {time_key(e->t), e};
    return h;
}

/* Different keys decide without reading the entries (a cache miss each). */
static int slot_older(table_heap_slot a, table_heap_slot b) {
    if (a.key != b.key) return a.key < b.key;
    return entry_older(a.e, b.e);
}

static void heap_put(table *t, size_t i, table_heap_slot h) {
    t->heap[i] = h;
    h.e->heap_pos = (uint32_t)i;
}

static void sift_up(table *t, size_t i) {
    table_heap_slot h = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!slot_older(h, t->heap[parent])) break;
        heap_put(t, i, t->heap[parent]);
        i = parent;
    }
    heap_put(t, i, h);
}

/* Over the first n heap places. */
static void sift_down(table *t, size_t i, size_t n) {
    table_heap_slot h = t->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && slot_older(t->heap[child + 1], t->heap[child])) child++;
        if (!slot_older(t->heap[child], h)) break;
        heap_put(t, i, t->heap[child]);
        i = child;
    }
    heap_put(t, i, h);
}

/* Room for one more entry: doubling, but never past the bound. */
static void heap_reserve(table *t) {
    if (t->count < t->heap_cap) return;
    size_t cap = t->heap_cap ? t->heap_cap * 2 : 1024;
    if (cap > t->max && t->max > t->count) cap = t->max;
    t->heap = xrealloc(t->heap, cap * sizeof *t->heap);
    t->heap_cap = cap;
}

/* ------------------------------------------------------------------ table */

/* Marks the slot of a removed entry: not free, holds nothing. */
static table_entry removed_mark;
#define REMOVED (&removed_mark)

static int live(const table_entry *e) { return e && e != REMOVED; }

void table_init(table *t) {
    memset(t, 0, sizeof *t);
    t->cap = 1024;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    t->max = TABLE_DEFAULT_MAX;
    uint64_t key[2];
    siphash_random_key(key);
    t->k0 = key[0];
    t->k1 = key[1];
}

void table_free(table *t) {
    for (size_t i = 0; i < t->cap; i++)
        if (live(t->slots[i])) free(t->slots[i]);
    free(t->slots);
    free(t->heap);
    memset(t, 0, sizeof *t);
}

void table_clear(table *t) {
    table saved = *t;
    table_free(t);
    table_init(t);
    t->max = saved.max;
    t->k0 = saved.k0;
    t->k1 = saved.k1;
    t->gen = saved.gen;
    t->layout = saved.layout + 1;
}

/* Slot holding the client; when it is absent, the slot a new entry for it
 * takes: the first removed mark on its probe path, else the free slot that
 * ends the path. */
static size_t find_slot(const table *t, uint64_t h, const char *client, size_t len) {
    size_t mask = t->cap - 1, i = (size_t)h & mask, reuse = SIZE_MAX;
    for (;;) {
        const table_entry *e = t->slots[i];
        if (!e) return reuse != SIZE_MAX ? reuse : i;
        if (e == REMOVED) {
            if (reuse == SIZE_MAX) reuse = i;
        } else if (e->hash == h && e->client_len == len &&
                   memcmp(e->line + e->client_off, client, len) == 0) {
            return i;
        }
        i = (i + 1) & mask;
    }
}

table_entry *table_get(const table *t, const char *client, size_t len) {
    uint64_t h = siphash24(client, len, t->k0, t->k1);
    table_entry *e = t->slots[find_slot(t, h, client, len)];
    return live(e) ? e : NULL;
}

/* Put every entry in a new array of new_cap slots, dropping the marks. */
static void rebuild(table *t, size_t new_cap) {
    size_t old_cap = t->cap;
    table_entry **old = t->slots;
    t->cap = new_cap;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    size_t mask = t->cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        table_entry *e = old[i];
        if (!live(e)) continue;
        size_t j = (size_t)e->hash & mask;
        while (t->slots[j]) j = (j + 1) & mask;
        t->slots[j] = e;
    }
    free(old);
    t->removed = 0;
    t->layout++;
}

/* Take the oldest entry out of the table and free it. */
static void evict_oldest(table *t) {
    table_entry *e = t->heap[0].e;
    size_t mask = t->cap - 1, i = table_index(t, e);
    if (t->slots[(i + 1) & mask]) {
        t->slots[i] = REMOVED;         /* a probe path may run through it */
        t->removed++;
    } else {                           /* the end of a cluster: no path does */
        t->slots[i] = NULL;
        for (size_t j = (i - 1) & mask; t->slots[j] == REMOVED; j = (j - 1) & mask) {
            t->slots[j] = NULL;
            t->removed--;
        }
    }
    t->count--;
    digest_flip(t, e);
    if (t->count) {
        heap_put(t, 0, t->heap[t->count]);
        sift_down(t, 0, t->count);
    }
    free(e);
    t->evicted++;
}

void table_set_max(table *t, size_t max) {
    if (max < 1) max = 1;
    if (max > TABLE_MAX_MAX) max = TABLE_MAX_MAX;
    t->max = max;
    while (t->count > t->max) evict_oldest(t);
}

size_t table_at_len(const table_update *u) {
    return 3 + u->origin.len + 1 + u->diff.len + 1 + u->client.len + 1 +
           u->location.len + 1 + u->time.len;
}

size_t table_format_at(char *out, const table_update *u, table_entry *e) {
    char *o = out;
    memcpy(o, "AT ", 3); o += 3;
    if (e) { e->origin_off = (uint16_t)(o - out); e->origin_len = (uint16_t)u->origin.len; }
    memcpy(o, u->origin.p, u->origin.len); o += u->origin.len; *o++ = ' ';
    memcpy(o, u->diff.p, u->diff.len); o += u->diff.len; *o++ = ' ';
    if (e) { e->client_off = (uint16_t)(o - out); e->client_len = (uint16_t)u->client.len; }
    memcpy(o, u->client.p, u->client.len); o += u->client.len; *o++ = ' ';
    if (e) { e->location_off = (uint32_t)(o - out); e->location_len = (uint32_t)u->location.len; }
    memcpy(o, u->location.p, u->location.len); o += u->location.len; *o++ = ' ';
    memcpy(o, u->time.p, u->time.len); o += u->time.len;
    return (size_t)(o - out);
}

static table_entry *make_entry(table *t, const table_update *u, uint64_t h) {
    size_t len = table_at_len(u);
    table_entry *e = xmalloc(sizeof *e + len + 1);
    e->hash = h;
    e->t = u->t;
    table_format_at(e->line, u, e);
    e->line[len] = '\0';
    e->line_len = (uint32_t)len;
    e->bucket = (uint16_t)table_bucket_of(u->client.p, u->client.len);
    e->gen = ++t->gen;
    return e;
}

/* A newer update for a stored client: same slot, same heap place, then down
 * the heap (it only got newer). */
static table_entry *replace(table *t, size_t i, const table_update *u) {
    table_entry *old = t->slots[i];
    table_entry *e = make_entry(t, u, old->hash);
    digest_flip(t, old);
    digest_flip(t, e);
    t->slots[i] = e;
    heap_put(t, old->heap_pos, heap_slot(e));
    sift_down(t, e->heap_pos, t->count);
    free(old);
    return e;
}

table_entry *table_offer(table *t, const table_update *u) {
    uint64_t h = siphash24(u->client.p, u->client.len, t->k0, t->k1);
    size_t i = find_slot(t, h, u->client.p, u->client.len);
    table_entry *old = t->slots[i];
    if (live(old))
        return update_cmp(u, old) > 0 ? replace(t, i, u) : NULL;
    if (t->count >= t->max) {
        if (update_cmp(u, t->heap[0].e) < 0) {
            t->refused++;              /* older than all we keep: never stored */
            return NULL;
        }
        evict_oldest(t);
        i = find_slot(t, h, u->client.p, u->client.len);   /* marks may have gone */
    }
    table_entry *e = make_entry(t, u, h);
    digest_flip(t, e);
    if (t->slots[i] == REMOVED) t->removed--;
    t->slots[i] = e;
    heap_reserve(t);
    heap_put(t, t->count, heap_slot(e));
    t->count++;
    sift_up(t, e->heap_pos);
    if ((t->count + t->removed) * 4 > t->cap * 3)
        rebuild(t, t->count * 2 > t->cap ? t->cap * 2 : t->cap);
    return e;
}

void table_entry_latlng(const table_entry *e, double *lat, double *lng) {
    if (proto_parse_location(e->line + e->location_off, e->location_len, lat, lng) < 0)
        *lat = *lng = 0;   /* cannot happen: every stored location was checked */
}

size_t table_index(const table *t, const table_entry *e) {
    return find_slot(t, e->hash, e->line + e->client_off, e->client_len);
}

table_entry *table_slot(const table *t, size_t i) {
    return live(t->slots[i]) ? t->slots[i] : NULL;
}

void table_each(const table *t, int (*fn)(const table_entry *, void *), void *arg) {
    for (size_t i = 0; i < t->cap; i++)
        if (live(t->slots[i]) && fn(t->slots[i], arg)) return;
}

int64_t table_next_tick(const table *t) {
    if (t->evicted == t->evicted_logged && t->refused == t->refused_logged) return -1;
    return t->next_log_ms;
}

void table_tick(table *t, int64_t now_ms) {
    int64_t due = table_next_tick(t);
    if (due < 0 || now_ms < due) return;
    log_msg(LOG_WARN, "table-full", "evicted=%" PRIu64 " refused=%" PRIu64
            " evicted_total=%" PRIu64 " refused_total=%" PRIu64
            " clients=%zu max_stored_clients=%zu",
            t->evicted - t->evicted_logged, t->refused - t->refused_logged,
            t->evicted, t->refused, t->count, t->max);
    t->evicted_logged = t->evicted;
    t->refused_logged = t->refused;
    t->next_log_ms = now_ms + 1000;
}
