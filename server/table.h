/* table.h -- the server's client table: client id -> latest update.
 *
 * An open-addressing hash table (linear probing, power-of-two size, at most
 * 3/4 of the slots used by entries and removed-entry marks) of 32-bit
 * references to entries.  Each entry is one record holding the AT line
 * exactly as first produced by the server that received the IAMAT, with
 * the lengths that find its fields, so a WHATSAT reply copies it without
 * formatting.  Records live in 64 KiB blocks of records of one size (a
 * multiple of 8 bytes), not one malloc each (see table.c).  Keys are
 * hashed with SipHash-2-4 under a random key, so client-chosen ids cannot
 * be picked to collide.  A client costs its record (16 bytes and its line, rounded up
 * to 8), 5 bytes a slot (a reference and a hash tag) and 12 a heap place:
 * about 120 bytes with a million typical clients (docs/BENCHMARKS.md).
 *
 * The table holds at most 'max' clients (limits.max_stored_clients).  A
 * binary min-heap of the entries, in the herd's newer order (ordered
 * only from the first time the table is full), finds the
 * oldest in O(1); a new client past the bound replaces the oldest entry
 * when it is newer than it, and is refused otherwise (docs/PROTOCOL.md,
 * "Stored clients"), so every server of a herd ends with the same newest
 * 'max' clients.
 */
#ifndef HERD_TABLE_H
#define HERD_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "protocol.h"

#define TABLE_DEFAULT_MAX 1000000   /* clients; about 120 MB */
#define TABLE_MAX_MAX 100000000     /* heap positions are 32-bit */

/* Digests for anti-entropy (forward.c): the table is split into
 * TABLE_BUCKETS buckets by a hash of the client id under a fixed key (the
 * same on every server); a bucket's digest is the XOR of its entries'
 * hashes, each a fixed-key hash of the entry's whole AT line (origin, diff,
 * client, location, time), computed when it joins or leaves (not kept: 8
 * bytes a client).  Kept up to date on every store, replace and
 * eviction: an evicted entry leaves its bucket's digest, so two servers
 * holding the same entries have the same digests whatever they evicted. */
#define TABLE_BUCKETS 4096

/* An entry: its line and what finds the fields in it, in 16 bytes.  The
 * origin starts after "AT ", the client at client_off, the location one
 * byte after the client, the time one byte after the location.  The
 * protocol's limits (protocol.h) bound every width below; table_offer
 * refuses an update past them.  heap_pos is a whole word: the heap writes
 * it at every step without reading the entry first. */
typedef struct {
    uint64_t gen : 57;          /* table.gen when stored (4 centuries at 10M a second) */
    uint64_t client_off : 7;    /* "AT ", origin, diff, two spaces: < 128 */
    uint32_t heap_pos;          /* index in table.heap */
    uint32_t bucket : 12;       /* digest bucket (fixed-key hash of the client) */
    uint32_t line_len : 9;      /* "AT origin diff client location time" < 512 */
    uint32_t client_len : 9;    /* 1 to PROTO_MAX_CLIENT_LEN */
    char line[];                /* NUL-terminated for convenience */
} table_entry;

/* A heap place: an entry's reference and its time as one integer, so most
 * comparisons read the heap array only (see table.c).  Packed: 12 bytes. */
typedef struct __attribute__((packed)) {
    uint64_t key;
    uint32_t ref;
} table_heap_slot;

/* Records of one size (see table.c): the blocks holding them, in order,
 * and their free records. */
typedef struct {
    uint32_t *blocks;           /* numbers in table.blocks */
    uint32_t n_blocks, blocks_cap;
    uint32_t carved;            /* records handed out of the last block */
    uint32_t free;              /* reference of the first free record, 0: none */
    size_t live, n_free;        /* records holding entries, records in the free list */
} table_class;

/* Record sizes are multiples of 8 up to the longest line's record. */
#define TABLE_CLASSES ((16 + PROTO_AT_MAX + 7) / 8 + 1)

typedef struct {
    char *mem;                  /* 64 KiB in one of table.regions */
    uint32_t size;              /* bytes of each record in it */
} table_block;

typedef struct {
    uint32_t *slots;            /* 0 free, 1 removed, else an entry's reference */
    uint8_t *tags;              /* per slot: 8 bits of its entry's hash */
    size_t cap;                 /* power of two */
    size_t count;               /* entries */
    size_t removed;             /* slots marked "removed" (see table.c) */
    uint64_t layout;            /* changes whenever entries change slots */
    table_heap_slot *heap;      /* count entries; heap[0] is the oldest */
    size_t heap_cap;            /* ...once heap_ordered: */
    int heap_ordered;           /* the table was full once (see table.c) */
    size_t max;                 /* at most this many entries */
    uint64_t evicted, refused;  /* totals since the start */
    uint64_t evicted_logged, refused_logged;
    int64_t next_log_ms;
    uint64_t k0, k1;            /* SipHash key */
    uint64_t gen;               /* stores so far: entries' gen come from it */
    uint64_t root;              /* XOR of every entry's sum */
    uint64_t bucket_sum[TABLE_BUCKETS];
    table_block *blocks;        /* every record block */
    uint32_t n_blocks, blocks_cap;
    uint32_t *spare;            /* numbers of blocks given back, for reuse */
    uint32_t n_spare, spare_cap;
    char **regions;             /* the mappings the blocks are cut from */
    uint32_t n_regions, regions_cap;
    int compact_due;            /* a class has more free records than live */
    table_class classes[TABLE_CLASSES];
} table;

/* An empty table holding at most TABLE_DEFAULT_MAX clients. */
void table_init(table *t);
void table_free(table *t);

/* Free every entry; the bound and the hash key stay. */
void table_clear(table *t);

/* Hold at most 'max' clients (1 to TABLE_MAX_MAX); the oldest go first
 * when there are more. */
void table_set_max(table *t, size_t max);

/* The entry for a client id, or NULL. */
table_entry *table_get(const table *t, const char *client, size_t len);

/* The fields of an update, as bytes (nothing here is NUL-terminated). */
typedef struct {
    proto_str origin, diff, client, location, time;
    proto_time t;
} table_update;

/* Store 'u' if it is newer than what the table holds for its client (the
 * herd's order: time, location bytes, origin).  A new client in a full
 * table replaces the oldest entry if it is newer than that one (the client
 * ids break a tie), and is refused otherwise.  Returns the new entry when
 * stored, NULL when not.  Entries returned earlier may be freed or moved by
 * this call, table_set_max and table_clear: keep a copy of what must
 * outlive them. */
table_entry *table_offer(table *t, const table_update *u);

/* The AT line of an update, "AT origin diff client location time" (the one
 * formatter of it: stored entries, IAMAT replies): its length, and the line
 * written to out (table_at_len bytes, no LF, no NUL); with e, the field
 * offsets are recorded in e.  Returns the length written. */
size_t table_at_len(const table_update *u);
size_t table_format_at(char *out, const table_update *u, table_entry *e);

/* The entry at heap place i (i < count); place 0 holds the oldest once
 * the heap is ordered (heap_ordered: the table was full once). */
table_entry *table_heap_entry(const table *t, size_t i);

/* The slot index holding e (which must be in the table). */
size_t table_index(const table *t, const table_entry *e);

/* The entry in slot i (i < cap), or NULL for a free or removed slot.
 * Positions stay put until t->layout changes. */
table_entry *table_slot(const table *t, size_t i);

/* The digest bucket of a client id (the same on every server). */
unsigned table_bucket_of(const char *client, size_t len);

/* Visit every entry (unordered); stop early when fn returns non-zero. */
void table_each(const table *t, int (*fn)(const table_entry *, void *), void *arg);

/* Log how many clients were evicted or refused at the bound since the last
 * such line, at most once a second: the server's loop calls it when
 * table_next_tick says (a time on the clock now_ms is on), -1 while there
 * is nothing to log. */
void table_tick(table *t, int64_t now_ms);
int64_t table_next_tick(const table *t);

/* The stored location in degrees (parsed on demand: only WHATSAT needs it). */
void table_entry_latlng(const table_entry *e, double *lat, double *lng);

/* An entry's fields, pointing into its line. */
static inline proto_str entry_field(const table_entry *e, size_t off, size_t len) {
    proto_str s = {e->line + off, len};
    return s;
}
static inline proto_str table_entry_client(const table_entry *e) {
    return entry_field(e, e->client_off, e->client_len);
}

/* The origin, the location, the time (a scan for their spaces). */
proto_str table_entry_origin(const table_entry *e);
proto_str table_entry_location(const table_entry *e);
proto_str table_entry_time(const table_entry *e);

#endif
