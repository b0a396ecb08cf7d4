/* table.h -- the server's client table: client id -> latest update.
 *
 * An open-addressing hash table (linear probing, power-of-two size, at most
 * 3/4 full) of pointers to entries.  Each entry is one allocation holding the
 * AT line exactly as first produced by the server that received the IAMAT,
 * with offsets of its fields, so a WHATSAT reply copies it without
 * formatting.  Keys are hashed with SipHash-2-4 under a random key, so
 * client-chosen ids cannot be picked to collide.  Millions of clients cost
 * one pointer slot and one entry each.
 */
#ifndef HERD_TABLE_H
#define HERD_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

typedef struct {
    uint64_t hash;
    proto_time t;
    uint32_t line_len;          /* "AT origin diff client location time" */
    uint16_t origin_off, origin_len;
    uint16_t client_off, client_len;
    uint32_t location_off;
    uint32_t location_len;
    char line[];                /* NUL-terminated for convenience */
} table_entry;

typedef struct {
    table_entry **slots;
    size_t cap;                 /* power of two */
    size_t count;
    uint64_t k0, k1;            /* SipHash key */
} table;

void table_init(table *t);
void table_free(table *t);

/* The entry for a client id, or NULL. */
table_entry *table_get(const table *t, const char *client, size_t len);

/* The fields of an update, as bytes (nothing here is NUL-terminated). */
typedef struct {
    proto_str origin, diff, client, location, time;
    proto_time t;
} table_update;

/* Store 'u' if it is newer than what the table holds for its client (the
 * herd's order: time, location bytes, origin).  Returns the new entry when
 * stored, NULL when the table already had the same or a newer update. */
table_entry *table_offer(table *t, const table_update *u);

/* The slot index holding e (which must be in the table). */
size_t table_index(const table *t, const table_entry *e);

/* Visit every entry (unordered); stop early when fn returns non-zero. */
void table_each(const table *t, int (*fn)(const table_entry *, void *), void *arg);

/* The stored location in degrees (parsed on demand: only WHATSAT needs it). */
void table_entry_latlng(const table_entry *e, double *lat, double *lng);

static inline proto_str entry_field(const table_entry *e, uint32_t off, uint32_t len) {
    proto_str s = {e->line + off, len};
    return s;
}

#endif
