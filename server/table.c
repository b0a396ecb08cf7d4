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
 * updates agree on which is the oldest.  An entry's time is its heap key
 * (exact before the year 2514; the line's text is parsed after it).  The
 * order is only needed once the table is full, so while it is small and
 * not full an update just writes its key in its place (no sifting: most
 * tables never fill); the first eviction, or the entry past
 * HEAP_LAZY_MAX, orders the heap at once (Floyd's build, O(n): a few ms
 * at that size, where a million entries would hold the loop for a quarter
 * of a second), and from then on every change keeps it ordered.
 *
 * Records: an entry is a record of its size class (its header and line
 * rounded up to 8 bytes), carved out of 64 KiB blocks of that class; a
 * reference names a block and a record in it (0 and 1 are the free and
 * removed slot marks).  A freed record joins its class's free list.  When a
 * class holds more free records than live ones (lines changed length for
 * good), its live records move down into the holes and its emptied blocks
 * are given back, at the start of the next table_offer (no entry pointer is
 * held then): the slot and the heap place of a moved entry get its new
 * reference, its slot index stays, so the catch-up cursor is unaffected.
 */
#include "table.h"

#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>

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

/* ---------------------------------------------------------------- records */

#define TABLE_BLOCK_BYTES 65536
#define TABLE_REGION_BLOCKS 64             /* blocks are mapped 4 MiB at a time */
#define REF_INDEX_BITS 11                  /* records in a block: < 2048 */
#define REF_MAX_BLOCKS ((UINT32_C(1) << (32 - REF_INDEX_BITS)) - 1)
#define SLOT_FREE 0
#define SLOT_REMOVED 1                     /* no reference is below 2048 */
#define HEADER_BYTES offsetof(table_entry, line)
_Static_assert(HEADER_BYTES == 16, "an entry's header is 16 bytes");

/* Compact a class once it has this many free records and more than live. */
#define COMPACT_MIN_FREE_BLOCKS 4

static size_t record_size(size_t line_len) {
    return (HEADER_BYTES + line_len + 1 + 7) & ~(size_t)7;
}

static uint32_t per_block(uint32_t size) { return TABLE_BLOCK_BYTES / size; }

static uint32_t make_ref(uint32_t block, uint32_t index) {
    return (block + 1) << REF_INDEX_BITS | index;
}

/* Does u fit an entry's fields?  Every update the protocol's limits let
 * through does. */
static int fits(const table_update *u) {
    return table_at_len(u) < PROTO_AT_MAX && u->client.len >= 1 &&
           u->client.len <= PROTO_MAX_CLIENT_LEN && 3 + u->origin.len + 1 + u->diff.len + 1 < 128;
}

static table_entry *entry_at(const table *t, uint32_t ref) {
    const table_block *b = &t->blocks[(ref >> REF_INDEX_BITS) - 1];
    return (table_entry *)(b->mem + (size_t)(ref & ((1u << REF_INDEX_BITS) - 1)) * b->size);
}

/* The reference of the record at position pos of a class (its blocks in
 * order). */
static uint32_t class_ref(const table_class *c, uint32_t size, size_t pos) {
    uint32_t n = per_block(size);
    return make_ref(c->blocks[pos / n], (uint32_t)(pos % n));
}

/* The memory of a new block: a 64 KiB piece of a 4 MiB region mapped
 * whole (mapped, not malloc'd: the holes other allocations leave in the
 * malloc heap are a little too small for a block, and a million clients'
 * blocks would step past them, leaving megabytes resident and unused). */
static char *block_memory(table *t, uint32_t no) {
    uint32_t region = no / TABLE_REGION_BLOCKS;
    if (no % TABLE_REGION_BLOCKS == 0) {
        if (region == t->regions_cap) {
            t->regions_cap = t->regions_cap ? t->regions_cap * 2 : 16;
            t->regions = xrealloc(t->regions, t->regions_cap * sizeof *t->regions);
        }
        void *m = mmap(NULL, (size_t)TABLE_REGION_BLOCKS * TABLE_BLOCK_BYTES,
                       PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            fputs("out of memory\n", stderr);
            abort();
        }
        t->regions[region] = m;
        t->n_regions = region + 1;
    }
    return t->regions[region] + (size_t)(no % TABLE_REGION_BLOCKS) * TABLE_BLOCK_BYTES;
}

/* A new block of records of 'size' bytes, appended to class c: a block
 * given back by a compaction, else the next one. */
static void class_grow(table *t, table_class *c, uint32_t size) {
    uint32_t no;
    if (t->n_spare) {
        no = t->spare[--t->n_spare];
    } else {
        if (t->n_blocks == REF_MAX_BLOCKS) {
            log_msg(LOG_ERROR, "table-overflow", "blocks=%" PRIu32, t->n_blocks);
            abort();                       /* 128 GiB of records: unreachable */
        }
        if (t->n_blocks == t->blocks_cap) {
            t->blocks_cap = t->blocks_cap ? t->blocks_cap * 2 : 64;
            t->blocks = xrealloc(t->blocks, t->blocks_cap * sizeof *t->blocks);
        }
        no = t->n_blocks++;
        t->blocks[no].mem = block_memory(t, no);
    }
    t->blocks[no].size = size;
    if (c->n_blocks == c->blocks_cap) {
        c->blocks_cap = c->blocks_cap ? c->blocks_cap * 2 : 4;
        c->blocks = xrealloc(c->blocks, c->blocks_cap * sizeof *c->blocks);
    }
    c->blocks[c->n_blocks++] = no;
    c->carved = 0;
}

/* A record for a line of line_len bytes: from the free list, else carved. */
static uint32_t record_alloc(table *t, size_t line_len) {
    uint32_t size = (uint32_t)record_size(line_len);
    table_class *c = &t->classes[size / 8];
    uint32_t ref = c->free;
    if (ref) {
        c->free = (uint32_t)entry_at(t, ref)->gen;
        c->n_free--;
    } else {
        if (!c->n_blocks || c->carved == per_block(size)) class_grow(t, c, size);
        ref = make_ref(c->blocks[c->n_blocks - 1], c->carved++);
    }
    c->live++;
    return ref;
}

/* More free records than live ones, and more than a few blocks' worth. */
static int wants_compaction(const table_class *c, uint32_t size) {
    return c->n_free > c->live && c->n_free > (size_t)COMPACT_MIN_FREE_BLOCKS * per_block(size);
}

/* A free record has line_len 0 (a live one never has) and the next free
 * record's reference in gen. */
static void record_free(table *t, uint32_t ref) {
    table_entry *e = entry_at(t, ref);
    uint32_t size = (uint32_t)record_size(e->line_len);
    table_class *c = &t->classes[size / 8];
    e->line_len = 0;
    e->gen = c->free;
    c->free = ref;
    c->live--;
    c->n_free++;
    if (wants_compaction(c, size)) t->compact_due = 1;
}

static void free_records(table *t) {
    for (uint32_t i = 0; i < t->n_regions; i++)
        munmap(t->regions[i], (size_t)TABLE_REGION_BLOCKS * TABLE_BLOCK_BYTES);
    free(t->regions);
    for (int k = 0; k < TABLE_CLASSES; k++) free(t->classes[k].blocks);
    free(t->blocks);
    free(t->spare);
}

/* ----------------------------------------------------------- the fields */

/* From off up to the next space or the end of e's line. */
static proto_str field_at(const table_entry *e, size_t off) {
    const char *sp = memchr(e->line + off, ' ', e->line_len - off);
    return entry_field(e, off, sp ? (size_t)(sp - e->line) - off : e->line_len - off);
}

proto_str table_entry_origin(const table_entry *e) { return field_at(e, 3); }

proto_str table_entry_location(const table_entry *e) {
    return field_at(e, (size_t)e->client_off + e->client_len + 1);
}

proto_str table_entry_time(const table_entry *e) {
    proto_str loc = table_entry_location(e);
    size_t off = (size_t)(loc.p - e->line) + loc.len + 1;
    return entry_field(e, off, e->line_len - off);
}

/* ---------------------------------------------------------- the order */

/* A time as one integer that never orders two times the wrong way: exact
 * below 2^34 seconds (the year 2514), the same for every later time. */
static uint64_t time_key(proto_time t) {
    if (t.sec >= (INT64_C(1) << 34)) return UINT64_MAX;
    return (uint64_t)t.sec << 30 | (uint64_t)t.nsec;
}

/* The time of an entry whose key is UINT64_MAX: its line's text. */
static proto_time entry_time(const table_entry *e) {
    proto_time tm = {0, 0};
    proto_str s = table_entry_time(e);
    proto_parse_time(s.p, s.len, &tm);    /* cannot fail: every stored time was checked */
    return tm;
}

/* The herd's newer order (docs/PROTOCOL.md) between an update and an entry
 * whose times have the same key: time (read only past the exact keys),
 * location bytes, origin; then the whole AT line's bytes, so two different
 * lines are never equal (the line holds the client id: two clients'
 * entries never are either).  aline is a's line, or NULL to format it from
 * a (rare: only updates equal in all the rest get there, a resent IAMAT, a
 * time written two ways).  <0 when a is older than b, 0 when it is the
 * same line. */
static int same_key_cmp(const table_update *a, const char *aline, size_t alen,
                        const table_entry *b, uint64_t key) {
    int c = key == UINT64_MAX ? proto_time_cmp(a->t, entry_time(b)) : 0;
    if (!c) {
        proto_str loc = table_entry_location(b), org = table_entry_origin(b);
        c = proto_bytes_cmp(a->location.p, a->location.len, loc.p, loc.len);
        if (!c) c = proto_bytes_cmp(a->origin.p, a->origin.len, org.p, org.len);
    }
    if (c) return c;
    char line[PROTO_AT_MAX];
    if (!aline) {
        alen = table_format_at(line, a, NULL);
        aline = line;
    }
    return proto_bytes_cmp(aline, alen, b->line, b->line_len);
}

/* The fields the order reads, from an entry. */
static table_update entry_view(const table_entry *e) {
    table_update v;
    memset(&v, 0, sizeof v);
    v.origin = table_entry_origin(e);
    v.client = table_entry_client(e);
    v.location = table_entry_location(e);
    return v;
}

/* u against a stored entry e: <0 when u is older, 0 when it is e's line. */
static int update_cmp(const table *t, const table_update *u, const table_entry *e) {
    uint64_t ku = time_key(u->t), ke = t->heap[e->heap_pos].key;
    if (ku != ke) return ku < ke ? -1 : 1;
    return same_key_cmp(u, NULL, 0, e, ke);
}

/* --------------------------------------------------------------- the heap */

static table_heap_slot heap_slot(uint32_t ref, proto_time tm) {
    table_heap_slot h = {time_key(tm), ref};
    return h;
}

/* Different keys decide without reading the entries (a cache miss each). */
static int slot_older(const table *t, table_heap_slot a, table_heap_slot b) {
    if (a.key != b.key) return a.key < b.key;
    const table_entry *ea = entry_at(t, a.ref);
    table_update va = entry_view(ea);
    if (a.key == UINT64_MAX) va.t = entry_time(ea);
    return same_key_cmp(&va, ea->line, ea->line_len, entry_at(t, b.ref), a.key) < 0;
}

static void heap_put(table *t, size_t i, table_heap_slot h) {
    t->heap[i] = h;
    entry_at(t, h.ref)->heap_pos = (uint32_t)i;
}

static void sift_up(table *t, size_t i) {
    table_heap_slot h = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!slot_older(t, h, t->heap[parent])) break;
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
        if (child + 1 < n && slot_older(t, t->heap[child + 1], t->heap[child])) child++;
        if (!slot_older(t, t->heap[child], h)) break;
        heap_put(t, i, t->heap[child]);
        i = child;
    }
    heap_put(t, i, h);
}

#define HEAP_LAZY_MAX 65536

/* The oldest entry is at heap[0] from now on (see the top of the file). */
static void heap_order(table *t) {
    if (t->heap_ordered) return;
    for (size_t i = t->count / 2; i-- > 0;) sift_down(t, i, t->count);
    t->heap_ordered = 1;
}

/* Room for one more entry: doubling, but never past the bound. */
static void heap_reserve(table *t) {
    if (t->count < t->heap_cap) return;
    size_t cap = t->heap_cap ? t->heap_cap * 2 : 1024;
    if (cap > t->max && t->max > t->count) cap = t->max;
    t->heap = xrealloc(t->heap, cap * sizeof *t->heap);
    t->heap_cap = cap;
}

table_entry *table_heap_entry(const table *t, size_t i) {
    return entry_at(t, t->heap[i].ref);
}

/* ------------------------------------------------------------------ table */

static int live(uint32_t ref) { return ref > SLOT_REMOVED; }

void table_init(table *t) {
    memset(t, 0, sizeof *t);
    t->cap = 1024;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    t->tags = xcalloc(t->cap, sizeof *t->tags);
    t->max = TABLE_DEFAULT_MAX;
    uint64_t key[2];
    siphash_random_key(key);
    t->k0 = key[0];
    t->k1 = key[1];
}

void table_free(table *t) {
    free_records(t);
    free(t->slots);
    free(t->tags);
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

static uint64_t client_hash(const table *t, const char *client, size_t len) {
    return siphash24(client, len, t->k0, t->k1);
}

/* A slot's tag: hash bits the slot index does not use (see find_slot). */
static uint8_t tag_of(uint64_t h) { return (uint8_t)(h >> 56); }

static uint64_t entry_hash(const table *t, const table_entry *e) {
    proto_str c = table_entry_client(e);
    return client_hash(t, c.p, c.len);
}

/* Slot holding the client; when it is absent, the slot a new entry for it
 * takes: the first removed mark on its probe path, else the free slot that
 * ends the path.  An entry is read only when its slot's tag matches: most
 * other keys on the path cost no cache miss. */
static size_t find_slot(const table *t, uint64_t h, const char *client, size_t len) {
    size_t mask = t->cap - 1, i = (size_t)h & mask, reuse = SIZE_MAX;
    uint8_t tag = tag_of(h);
    for (;;) {
        uint32_t ref = t->slots[i];
        if (ref == SLOT_FREE) return reuse != SIZE_MAX ? reuse : i;
        if (ref == SLOT_REMOVED) {
            if (reuse == SIZE_MAX) reuse = i;
        } else if (t->tags[i] == tag) {
            const table_entry *e = entry_at(t, ref);
            if (e->client_len == len && memcmp(e->line + e->client_off, client, len) == 0)
                return i;
        }
        i = (i + 1) & mask;
    }
}

table_entry *table_get(const table *t, const char *client, size_t len) {
    uint32_t ref = t->slots[find_slot(t, client_hash(t, client, len), client, len)];
    return live(ref) ? entry_at(t, ref) : NULL;
}

/* Put every entry in a new array of new_cap slots, dropping the marks. */
static void rebuild(table *t, size_t new_cap) {
    size_t old_cap = t->cap;
    uint32_t *old = t->slots;
    t->cap = new_cap;
    t->slots = xcalloc(t->cap, sizeof *t->slots);
    free(t->tags);
    t->tags = xcalloc(t->cap, sizeof *t->tags);
    size_t mask = t->cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!live(old[i])) continue;
        uint64_t h = entry_hash(t, entry_at(t, old[i]));
        size_t j = (size_t)h & mask;
        while (t->slots[j]) j = (j + 1) & mask;
        t->slots[j] = old[i];
        t->tags[j] = tag_of(h);
    }
    free(old);
    t->removed = 0;
    t->layout++;
}

/* Move the live records of class c down into its free ones, then give back
 * the blocks left empty (see the top of the file). */
static void compact_class(table *t, table_class *c, uint32_t size) {
    size_t n = per_block(size);
    size_t lo = 0, hi = (size_t)(c->n_blocks - 1) * n + c->carved;
    for (;;) {
        while (lo < hi && entry_at(t, class_ref(c, size, lo))->line_len) lo++;
        while (hi > lo && !entry_at(t, class_ref(c, size, hi - 1))->line_len) hi--;
        if (lo >= hi) break;
        uint32_t from = class_ref(c, size, --hi), to = class_ref(c, size, lo++);
        table_entry *e = entry_at(t, from);
        proto_str id = table_entry_client(e);
        t->slots[find_slot(t, client_hash(t, id.p, id.len), id.p, id.len)] = to;
        t->heap[e->heap_pos].ref = to;
        memcpy(entry_at(t, to), e, size);
    }
    size_t keep = (c->live + n - 1) / n;
    while (c->n_blocks > keep) {
        uint32_t no = c->blocks[--c->n_blocks];
        madvise(t->blocks[no].mem, TABLE_BLOCK_BYTES, MADV_DONTNEED);   /* not resident */
        if (t->n_spare == t->spare_cap) {
            t->spare_cap = t->spare_cap ? t->spare_cap * 2 : 64;
            t->spare = xrealloc(t->spare, t->spare_cap * sizeof *t->spare);
        }
        t->spare[t->n_spare++] = no;
    }
    c->carved = c->n_blocks ? (uint32_t)(c->live - (size_t)(c->n_blocks - 1) * n) : 0;
    c->free = 0;
    c->n_free = 0;
}

static void compact_due_classes(table *t) {
    for (uint32_t k = HEADER_BYTES / 8; k < TABLE_CLASSES; k++)
        if (wants_compaction(&t->classes[k], k * 8)) compact_class(t, &t->classes[k], k * 8);
    t->compact_due = 0;
}

/* Take the oldest entry out of the table and free it. */
static void evict_oldest(table *t) {
    heap_order(t);
    uint32_t ref = t->heap[0].ref;
    table_entry *e = entry_at(t, ref);
    size_t mask = t->cap - 1, i = table_index(t, e);
    if (t->slots[(i + 1) & mask]) {
        t->slots[i] = SLOT_REMOVED;    /* a probe path may run through it */
        t->removed++;
    } else {                           /* the end of a cluster: no path does */
        t->slots[i] = SLOT_FREE;
        for (size_t j = (i - 1) & mask; t->slots[j] == SLOT_REMOVED; j = (j - 1) & mask) {
            t->slots[j] = SLOT_FREE;
            t->removed--;
        }
    }
    t->count--;
    digest_flip(t, e);
    if (t->count) {
        heap_put(t, 0, t->heap[t->count]);
        sift_down(t, 0, t->count);
    }
    record_free(t, ref);
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
    memcpy(o, u->origin.p, u->origin.len); o += u->origin.len; *o++ = ' ';
    memcpy(o, u->diff.p, u->diff.len); o += u->diff.len; *o++ = ' ';
    if (e) {
        e->client_off = (uint64_t)(o - out) & 0x7f;
        e->client_len = u->client.len & 0x1ff;
    }
    memcpy(o, u->client.p, u->client.len); o += u->client.len; *o++ = ' ';
    memcpy(o, u->location.p, u->location.len); o += u->location.len; *o++ = ' ';
    memcpy(o, u->time.p, u->time.len); o += u->time.len;
    return (size_t)(o - out);
}

/* A new entry for u, in a new record, in digest bucket 'bucket' (its
 * client's: table_bucket_of); returns its reference. */
static uint32_t make_entry(table *t, const table_update *u, unsigned bucket) {
    size_t len = table_at_len(u);
    uint32_t ref = record_alloc(t, len);
    table_entry *e = entry_at(t, ref);
    table_format_at(e->line, u, e);
    e->line[len] = '\0';
    e->line_len = len & 0x1ff;
    e->bucket = bucket & 0xfff;
    e->gen = ++t->gen & ((UINT64_C(1) << 57) - 1);
    return ref;
}

/* A newer update for a stored client: same slot, same heap place, then down
 * the heap (it only got newer) once the heap is kept ordered. */
static table_entry *replace(table *t, size_t i, const table_update *u) {
    uint32_t old_ref = t->slots[i];
    uint32_t ref = make_entry(t, u, entry_at(t, old_ref)->bucket);   /* the same client's */
    table_entry *old = entry_at(t, old_ref), *e = entry_at(t, ref);
    digest_flip(t, old);
    digest_flip(t, e);
    t->slots[i] = ref;
    heap_put(t, old->heap_pos, heap_slot(ref, u->t));
    if (t->heap_ordered) sift_down(t, e->heap_pos, t->count);
    record_free(t, old_ref);
    return e;
}

table_entry *table_offer(table *t, const table_update *u) {
    if (t->compact_due) compact_due_classes(t);
    if (!fits(u)) return NULL;
    uint64_t h = client_hash(t, u->client.p, u->client.len);
    size_t i = find_slot(t, h, u->client.p, u->client.len);
    uint32_t old = t->slots[i];
    if (live(old))
        return update_cmp(t, u, entry_at(t, old)) > 0 ? replace(t, i, u) : NULL;
    if (t->count >= t->max) {
        heap_order(t);
        if (update_cmp(t, u, table_heap_entry(t, 0)) < 0) {
            t->refused++;              /* older than all we keep: never stored */
            return NULL;
        }
        evict_oldest(t);
        i = find_slot(t, h, u->client.p, u->client.len);   /* marks may have gone */
    }
    uint32_t ref = make_entry(t, u, table_bucket_of(u->client.p, u->client.len));
    table_entry *e = entry_at(t, ref);
    digest_flip(t, e);
    if (t->slots[i] == SLOT_REMOVED) t->removed--;
    t->slots[i] = ref;
    t->tags[i] = tag_of(h);
    heap_reserve(t);
    heap_put(t, t->count, heap_slot(ref, u->t));
    t->count++;
    if (t->heap_ordered) sift_up(t, e->heap_pos);
    else if (t->count > HEAP_LAZY_MAX) heap_order(t);
    if ((t->count + t->removed) * 4 > t->cap * 3)
        rebuild(t, t->count * 2 > t->cap ? t->cap * 2 : t->cap);
    return e;
}

void table_entry_latlng(const table_entry *e, double *lat, double *lng) {
    proto_str loc = table_entry_location(e);
    if (proto_parse_location(loc.p, loc.len, lat, lng) < 0)
        *lat = *lng = 0;   /* cannot happen: every stored location was checked */
}

size_t table_index(const table *t, const table_entry *e) {
    proto_str c = table_entry_client(e);
    return find_slot(t, client_hash(t, c.p, c.len), c.p, c.len);
}

table_entry *table_slot(const table *t, size_t i) {
    return live(t->slots[i]) ? entry_at(t, t->slots[i]) : NULL;
}

void table_each(const table *t, int (*fn)(const table_entry *, void *), void *arg) {
    for (size_t i = 0; i < t->cap; i++)
        if (live(t->slots[i]) && fn(entry_at(t, t->slots[i]), arg)) return;
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
