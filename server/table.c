/* table.c -- the client table; see table.h. */
#include "table.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "xalloc.h"

/* ------------------------------------------------------------ SipHash-2-4 */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                         \
    do {                                                                 \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);        \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                           \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                           \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);        \
    } while (0)

static uint64_t siphash(const void *data, size_t len, uint64_t k0, uint64_t k1) {
    const unsigned char *p = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)len << 56;
    size_t i, full = len & ~(size_t)7;
    for (i = 0; i < full; i += 8) {
        uint64_t m;
        memcpy(&m, p + i, 8);   /* little-endian hosts only, as Debian amd64/arm64 */
        v3 ^= m;
        SIPROUND; SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; i + j < len; j++) b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    SIPROUND; SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* ------------------------------------------------------------------ table */

void table_init(table *t) {
    memset(t, 0, sizeof *t);
    t->cap = 1024;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    uint64_t key[2];
    if (getrandom(key, sizeof key, GRND_NONBLOCK) != (ssize_t)sizeof key) {
        struct timespec ts;   /* early boot without entropy: still varies */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        key[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL;
        key[1] = (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)t;
    }
    t->k0 = key[0];
    t->k1 = key[1];
}

void table_free(table *t) {
    for (size_t i = 0; i < t->cap; i++) free(t->slots[i]);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* Slot holding the client, or the empty slot where it would go. */
static size_t find_slot(const table *t, uint64_t h, const char *client, size_t len) {
    size_t mask = t->cap - 1, i = (size_t)h & mask;
    for (;;) {
        const table_entry *e = t->slots[i];
        if (!e) return i;
        if (e->hash == h && e->client_len == len &&
            memcmp(e->line + e->client_off, client, len) == 0)
            return i;
        i = (i + 1) & mask;
    }
}

table_entry *table_get(const table *t, const char *client, size_t len) {
    uint64_t h = siphash(client, len, t->k0, t->k1);
    return t->slots[find_slot(t, h, client, len)];
}

static void grow(table *t) {
    size_t old_cap = t->cap;
    table_entry **old = t->slots;
    t->cap *= 2;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    size_t mask = t->cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        table_entry *e = old[i];
        if (!e) continue;
        size_t j = (size_t)e->hash & mask;
        while (t->slots[j]) j = (j + 1) & mask;
        t->slots[j] = e;
    }
    free(old);
}

static table_entry *make_entry(const table_update *u, uint64_t h) {
    size_t len = 3 + u->origin.len + 1 + u->diff.len + 1 + u->client.len + 1 +
                 u->location.len + 1 + u->time.len;
    table_entry *e = xmalloc(sizeof *e + len + 1);
    char *o = e->line;
    e->hash = h;
    e->t = u->t;
    memcpy(o, "AT ", 3); o += 3;
    e->origin_off = (uint16_t)(o - e->line); e->origin_len = (uint16_t)u->origin.len;
    memcpy(o, u->origin.p, u->origin.len); o += u->origin.len; *o++ = ' ';
    memcpy(o, u->diff.p, u->diff.len); o += u->diff.len; *o++ = ' ';
    e->client_off = (uint16_t)(o - e->line); e->client_len = (uint16_t)u->client.len;
    memcpy(o, u->client.p, u->client.len); o += u->client.len; *o++ = ' ';
    e->location_off = (uint32_t)(o - e->line); e->location_len = (uint32_t)u->location.len;
    memcpy(o, u->location.p, u->location.len); o += u->location.len; *o++ = ' ';
    memcpy(o, u->time.p, u->time.len); o += u->time.len;
    *o = '\0';
    e->line_len = (uint32_t)len;
    return e;
}

table_entry *table_offer(table *t, const table_update *u) {
    uint64_t h = siphash(u->client.p, u->client.len, t->k0, t->k1);
    size_t i = find_slot(t, h, u->client.p, u->client.len);
    table_entry *old = t->slots[i];
    if (old && proto_update_cmp(u->t, u->location, u->origin, old->t,
                                entry_field(old, old->location_off, old->location_len),
                                entry_field(old, old->origin_off, old->origin_len)) <= 0)
        return NULL;
    table_entry *e = make_entry(u, h);
    t->slots[i] = e;
    if (old) {
        free(old);
    } else if (++t->count * 4 > t->cap * 3) {
        grow(t);
    }
    return e;
}

void table_entry_latlng(const table_entry *e, double *lat, double *lng) {
    if (proto_parse_location(e->line + e->location_off, e->location_len, lat, lng) < 0)
        *lat = *lng = 0;   /* cannot happen: every stored location was checked */
}

size_t table_index(const table *t, const table_entry *e) {
    return find_slot(t, e->hash, e->line + e->client_off, e->client_len);
}

void table_each(const table *t, int (*fn)(const table_entry *, void *), void *arg) {
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i] && fn(t->slots[i], arg)) return;
}
