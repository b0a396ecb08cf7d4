/* test_table.c -- the client table: lookups, the newer rule, growth, and the
 * bound on stored clients (evictions, refusals, the same set in any order). */
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "table.h"

static table_update upd(const char *origin, const char *client, const char *loc,
                        const char *time) {
    table_update u;
    memset(&u, 0, sizeof u);
    u.origin = (proto_str){origin, strlen(origin)};
    u.diff = (proto_str){"+0.000000001", 12};
    u.client = (proto_str){client, strlen(client)};
    u.location = (proto_str){loc, strlen(loc)};
    u.time = (proto_str){time, strlen(time)};
    proto_parse_time(time, strlen(time), &u.t);
    return u;
}

static const char *stored(table *t, const char *client) {
    table_entry *e = table_get(t, client, strlen(client));
    return e ? e->line : "(none)";
}

static proto_time time_of(const table_entry *e) {
    proto_time tm = {-1, 0};
    proto_str s = table_entry_time(e);
    proto_parse_time(s.p, s.len, &tm);
    return tm;
}

/* Every entry is in the heap at its recorded place, the heap is ordered
 * (once the table was full),
 * every heap entry is findable, and the counts add up. */
static int consistent(const table *t) {
    size_t live = 0, marks = 0;
    for (size_t i = 0; i < t->cap; i++) {
        if (table_slot(t, i)) live++;
        else if (t->slots[i]) marks++;
    }
    if (live != t->count || marks != t->removed || t->count > t->max) return 0;
    for (size_t i = 0; i < t->count; i++) {
        const table_entry *e = table_heap_entry(t, i);
        if (e->heap_pos != i) return 0;
        proto_str id = table_entry_client(e);
        if (table_get(t, id.p, id.len) != e) return 0;
        if (i == 0 || !t->heap_ordered) continue;   /* not full yet: no order kept */
        const table_entry *p = table_heap_entry(t, (i - 1) / 2);
        int c = proto_update_cmp(time_of(p), table_entry_location(p), table_entry_origin(p),
                                 time_of(e), table_entry_location(e), table_entry_origin(e));
        if (!c) c = proto_bytes_cmp(p->line, p->line_len, e->line, e->line_len);
        if (c > 0) return 0;
    }
    return 1;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next_rand(void) {   /* xorshift64: the same sequence every run */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Until the table is full its heap keeps no order (table.c): N clients
 * stored in random time order, then newer updates for some of them, still
 * leave, once the table is full, the oldest to go first, one by one, and
 * an update older than every kept one refused. */
static void test_order_at_first_fill(void) {
    enum { N = 500 };
    static long when[N];            /* each client's time, in ms */
    table t;
    table_init(&t);
    table_set_max(&t, N);
    char id[32], tm[32];
    for (int i = 0; i < N; i++) {
        when[i] = 1000000 + (long)(next_rand() % 1000000);
        snprintf(id, sizeof id, "r%d", i);
        snprintf(tm, sizeof tm, "%ld.%03ld", when[i] / 1000, when[i] % 1000);
        table_update u = upd("Bailey", id, "+1.0+1.0", tm);
        CHECK(table_offer(&t, &u) != NULL, "client %d stored", i);
    }
    for (int k = 0; k < 300; k++) {     /* newer, but not the newest of all */
        int i = (int)(next_rand() % N);
        when[i] += 1 + (long)(next_rand() % 300000);
        snprintf(id, sizeof id, "r%d", i);
        snprintf(tm, sizeof tm, "%ld.%03ld", when[i] / 1000, when[i] % 1000);
        table_update u = upd("Bailey", id, "+1.0+1.0", tm);
        CHECK(table_offer(&t, &u) != NULL, "client %d updated", i);
    }
    CHECK(!t.heap_ordered && consistent(&t), "no order kept before the table is full");
    int wrong = 0;
    for (int k = 0; k < 200; k++) {     /* each new client evicts the oldest */
        int oldest = -1;
        for (int i = 0; i < N; i++)
            if (when[i] >= 0 && (oldest < 0 || when[i] < when[oldest])) oldest = i;
        if (k == 0) {
            snprintf(tm, sizeof tm, "%ld.%03ld", (when[oldest] - 1) / 1000,
                     (when[oldest] - 1) % 1000);
            table_update u = upd("Bona", "too-old", "+1.0+1.0", tm);
            CHECK(table_offer(&t, &u) == NULL && t.refused == 1, "older than all: refused");
        }
        snprintf(id, sizeof id, "n%d", k);
        snprintf(tm, sizeof tm, "%d", 5000 + k);
        table_update u = upd("Bona", id, "+1.0+1.0", tm);
        CHECK(table_offer(&t, &u) != NULL, "new client %d stored", k);
        snprintf(id, sizeof id, "r%d", oldest);
        wrong += table_get(&t, id, strlen(id)) != NULL;
        when[oldest] = -1;
    }
    CHECK(wrong == 0 && t.evicted == 200 && t.heap_ordered && consistent(&t),
          "the oldest went first: %d wrong, %llu evicted", wrong,
          (unsigned long long)t.evicted);
    table_free(&t);
    /* a big table is ordered before it is full: no long first eviction */
    table_init(&t);
    for (int i = 0; i < 70000; i++) {
        snprintf(id, sizeof id, "b%d", i);
        snprintf(tm, sizeof tm, "%ld", 1000000L + (long)(next_rand() % 1000000));
        table_update u = upd("Bailey", id, "+1.0+1.0", tm);
        table_offer(&t, &u);
        if (i == 65535) CHECK(!t.heap_ordered, "65,536 entries: still unordered");
    }
    CHECK(t.heap_ordered && consistent(&t), "70,000 entries, not full: ordered");
    table_free(&t);
}

/* With max N and 2N clients in time order, the newest N stay. */
static void test_bound(void) {
    table t;
    table_init(&t);
    CHECK(t.max == TABLE_DEFAULT_MAX, "default bound %zu", t.max);
    table_set_max(&t, 100);
    char id[32], tm[32];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "c%d", i);
        snprintf(tm, sizeof tm, "%d", 1000 + i);
        table_update u = upd("Bailey", id, "+1.0+1.0", tm);
        CHECK(table_offer(&t, &u) != NULL, "client %d stored", i);
    }
    int kept = 0, gone = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof id, "c%d", i);
        int have = table_get(&t, id, strlen(id)) != NULL;
        if (i < 100) gone += !have;
        else kept += have;
    }
    CHECK(t.count == 100 && kept == 100 && gone == 100, "count %zu kept %d gone %d",
          t.count, kept, gone);
    CHECK(t.evicted == 100 && t.refused == 0, "evicted %llu refused %llu",
          (unsigned long long)t.evicted, (unsigned long long)t.refused);
    /* a new client older than the oldest kept is refused, and changes nothing */
    table_update u = upd("Bona", "late", "+9.0+9.0", "1099.5");
    CHECK(table_offer(&t, &u) == NULL && !table_get(&t, "late", 4) && t.refused == 1,
          "older than the oldest: refused");
    CHECK(table_get(&t, "c100", 4) != NULL, "the oldest kept stays");
    /* a stored client's newer update evicts nothing, even an old one */
    u = upd("Bona", "c100", "+2.0+2.0", "2000");
    CHECK(table_offer(&t, &u) != NULL && t.count == 100 && t.evicted == 100, "update in place");
    /* a new client newer than the oldest replaces the oldest (now c101) */
    u = upd("Bona", "fresh", "+1.0+1.0", "1101.5");
    CHECK(table_offer(&t, &u) != NULL && !table_get(&t, "c101", 4) &&
          table_get(&t, "c100", 4) && table_get(&t, "fresh", 5), "the oldest goes");
    CHECK(consistent(&t), "consistent after evictions");
    /* lowering the bound drops the oldest */
    table_set_max(&t, 10);
    CHECK(t.count == 10 && table_get(&t, "c199", 4) && !table_get(&t, "c189", 4) &&
          consistent(&t), "set_max 10: count %zu", t.count);
    table_free(&t);
}

/* Equal updates of two clients: the larger client id is the newer. */
static void test_ties(void) {
    const char *order[2][2] = {{"ant", "bee"}, {"bee", "ant"}};
    for (int k = 0; k < 2; k++) {
        table t;
        table_init(&t);
        table_set_max(&t, 1);
        for (int j = 0; j < 2; j++) {
            table_update u = upd("Bailey", order[k][j], "+1.0+1.0", "5");
            table_offer(&t, &u);
        }
        CHECK(t.count == 1 && table_get(&t, "bee", 3), "order %d: bee stays", k);
        table_free(&t);
    }
}

/* Snapshot of a table as a sorted list of lines, to compare two tables. */
static int by_line(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}
static int collect(const table_entry *e, void *arg) {
    const char ***o = arg;
    *(*o)++ = e->line;
    return 0;
}

/* The same updates in two different orders leave the same table, the newest
 * N clients each with its newest update: what makes a herd converge. */
static void test_any_order(void) {
    enum { N = 300, CLIENTS = 900, UPDATES = 6000 };
    static char ids[UPDATES][16], tms[UPDATES][24], locs[UPDATES][24];
    static table_update ups[UPDATES];
    for (int i = 0; i < UPDATES; i++) {
        uint64_t r = next_rand();
        snprintf(ids[i], sizeof ids[i], "k%d", (int)(r % CLIENTS));
        snprintf(tms[i], sizeof tms[i], "%d.%d", (int)(r >> 20) % 500, (int)(r >> 40) % 3);
        snprintf(locs[i], sizeof locs[i], "+%d.0-1.0", (int)(r >> 50) % 4);
        ups[i] = upd((r >> 60) & 1 ? "Bona" : "Bailey", ids[i], locs[i], tms[i]);
    }
    table a, b;
    table_init(&a);
    table_init(&b);
    table_set_max(&a, N);
    table_set_max(&b, N);
    for (int i = 0; i < UPDATES; i++) table_offer(&a, &ups[i]);
    for (int i = UPDATES - 1; i >= 0; i--) table_offer(&b, &ups[(i * 7919) % UPDATES]);
    CHECK(a.count == N && b.count == N, "both full: %zu %zu", a.count, b.count);
    static const char *la[N], *lb[N];
    const char **pa = la, **pb = lb;
    table_each(&a, collect, &pa);
    table_each(&b, collect, &pb);
    qsort(la, N, sizeof *la, by_line);
    qsort(lb, N, sizeof *lb, by_line);
    int same = 1;
    for (int i = 0; i < N; i++) same &= strcmp(la[i], lb[i]) == 0;
    CHECK(same, "the same %d clients with the same updates in both orders", N);
    CHECK(consistent(&a) && consistent(&b), "consistent");
    table_free(&a);
    table_free(&b);
}

/* Long churn at the bound: removed marks are reused and cleaned by rebuilds
 * at the same size; positions stay put between layout changes. */
static void test_churn(void) {
    table t;
    table_init(&t);
    table_set_max(&t, 1000);
    char id[32], tm[32], watch[32] = "";
    int ok = 1, moved = 0, rebuilds = 0;
    for (int i = 0; i < 200000; i++) {
        snprintf(id, sizeof id, "u%d", i);
        snprintf(tm, sizeof tm, "%d", i);
        table_update u = upd("Bailey", id, "+1.0+1.0", tm);
        if (i % 100 == 50) snprintf(watch, sizeof watch, "u%d", i - 1);   /* a survivor */
        table_entry *w = table_get(&t, watch, strlen(watch));
        size_t at = w ? table_index(&t, w) : 0;
        uint64_t layout = t.layout;
        ok &= table_offer(&t, &u) != NULL;
        if (t.layout != layout) rebuilds++;
        else if (w && table_slot(&t, at) != table_get(&t, watch, strlen(watch))) moved++;
        if (i % 9973 == 0) ok &= consistent(&t);
    }
    CHECK(ok, "every offer stored, table consistent");
    CHECK(moved == 0, "%d entries changed slots without a layout change", moved);
    CHECK(t.cap <= 4096 && rebuilds > 0, "cap %zu after 199,000 evictions, %d rebuilds",
          t.cap, rebuilds);
    CHECK(t.count == 1000 && t.evicted == 199000, "count %zu evicted %llu", t.count,
          (unsigned long long)t.evicted);
    table_clear(&t);
    CHECK(t.count == 0 && t.max == 1000 && !table_get(&t, "u199999", 7), "clear keeps the bound");
    table_free(&t);
}

/* Digests (anti-entropy): two tables that end with the same entries have
 * the same root and bucket digests, whatever the order of the updates, the
 * replacements and the evictions on the way; one differing entry changes
 * exactly its bucket. */
static int same_digests(const table *a, const table *b) {
    if (a->root != b->root) return 0;
    for (int i = 0; i < TABLE_BUCKETS; i++)
        if (a->bucket_sum[i] != b->bucket_sum[i]) return 0;
    return 1;
}

static void test_digests(void) {
    enum { N = 3000, MAX = 1000 };
    static table_update ups[N];
    static char ids[N][16], times[N][24];
    table a, b;
    table_init(&a);
    table_init(&b);           /* another random SipHash key, as another server */
    table_set_max(&a, MAX);
    table_set_max(&b, MAX);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "d%d", (int)(next_rand() % 1500));
        snprintf(times[i], sizeof times[i], "%d.5", i + 1);
        ups[i] = upd(i % 2 ? "Bona" : "Bailey", ids[i], "+1.0+1.0", times[i]);
        table_offer(&a, &ups[i]);
    }
    for (int i = N; i-- > 0;) table_offer(&b, &ups[i]);   /* reverse order */
    CHECK(a.count == b.count && a.count == MAX, "both full");
    CHECK(a.evicted > 0, "some evicted on the way");
    CHECK(same_digests(&a, &b), "same entries, same digests, in any order");
    uint64_t root = 0;
    for (int i = 0; i < TABLE_BUCKETS; i++) root ^= a.bucket_sum[i];
    CHECK(root == a.root, "the root is the XOR of the buckets");
    /* one newer entry: its bucket and the root differ, no other bucket */
    table_update u = upd("Clark", ups[N - 1].client.p, "+2.0+2.0", "999999");
    CHECK(table_offer(&a, &u) != NULL, "newer stored");
    unsigned want = table_bucket_of(u.client.p, u.client.len), differ = 0;
    for (unsigned i = 0; i < TABLE_BUCKETS; i++)
        if (a.bucket_sum[i] != b.bucket_sum[i]) differ += i == want ? 1 : 100;
    CHECK(differ == 1 && a.root != b.root, "only its bucket differs");
    CHECK(table_offer(&b, &u) != NULL, "and the other takes it");
    CHECK(same_digests(&a, &b), "equal again");
    table_clear(&a);
    CHECK(a.root == 0 && a.bucket_sum[want] == 0, "cleared: empty digests");
    table_free(&a);
    table_free(&b);
}

/* Lines equal in time, location and origin but not in bytes (the same
 * IAMAT taken twice by a restarted origin: another diff; a time written two
 * ways) are ordered by the whole line, whichever arrives first, so two
 * tables that took them in either order hold the same line and digests. */
static void test_whole_line_ties(void) {
    static const char *diffs[][2] = {
        {"+5.000000000", "100"}, {"+7.000000000", "100"}, {"-0.250000000", "100"},
        {"+5.000000000", "100.0"}, {"+5.000000000", "100.000000000"},
        {"+12.000000000", "100.0000000001"},
    };
    enum { N = sizeof diffs / sizeof diffs[0] };
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < N; j++) {
            if (i == j) continue;
            table a, b;
            table_init(&a);
            table_init(&b);
            table_update ui = upd("Bailey", "kiwi", "+1.0+1.0", diffs[i][1]);
            table_update uj = upd("Bailey", "kiwi", "+1.0+1.0", diffs[j][1]);
            ui.diff = (proto_str){diffs[i][0], strlen(diffs[i][0])};
            uj.diff = (proto_str){diffs[j][0], strlen(diffs[j][0])};
            table_offer(&a, &ui);
            int a_took = table_offer(&a, &uj) != NULL;
            table_offer(&b, &uj);
            int b_took = table_offer(&b, &ui) != NULL;
            CHECK(a_took != b_took, "%d,%d: exactly one order replaces", i, j);
            CHECK_STR(stored(&a, "kiwi"), stored(&b, "kiwi"));
            CHECK(a.root == b.root && a.bucket_sum[table_bucket_of("kiwi", 4)] ==
                  b.bucket_sum[table_bucket_of("kiwi", 4)], "%d,%d: digests agree", i, j);
            table_free(&a);
            table_free(&b);
        }
    }
    /* the larger line is the one kept */
    table t;
    table_init(&t);
    table_update u = upd("Bailey", "kiwi", "+1.0+1.0", "1.5");
    table_offer(&t, &u);
    u = upd("Bailey", "kiwi", "+1.0+1.0", "1.500");
    CHECK(table_offer(&t, &u) != NULL, "1.500 sorts after 1.5");
    CHECK_STR(stored(&t, "kiwi"), "AT Bailey +0.000000001 kiwi +1.0+1.0 1.500");
    u = upd("Bailey", "kiwi", "+1.0+1.0", "1.5");
    CHECK(table_offer(&t, &u) == NULL, "and 1.5 again changes nothing");
    table_free(&t);
}

/* Clients whose updates tie in time, location and origin are ordered by
 * their whole lines at the bound too: any arrival order keeps the same
 * newest ones (the heap compared a line without its diff and time, which
 * made every such pair "older" both ways). */
static void test_ties_at_the_bound(void) {
    enum { N = 12, MAX = 4 };
    char ids[N][8], diffs[N][16];
    table_update ups[N];
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "t%02d", (i * 7) % N);
        snprintf(diffs[i], sizeof diffs[i], "+%d.000000000", (i * 5) % N);
        ups[i] = upd("Bailey", ids[i], "+1.0+1.0", "100");
        ups[i].diff = (proto_str){diffs[i], strlen(diffs[i])};
    }
    table a, b;
    table_init(&a);
    table_init(&b);
    table_set_max(&a, MAX);
    table_set_max(&b, MAX);
    for (int i = 0; i < N; i++) table_offer(&a, &ups[i]);
    for (int i = N; i-- > 0;) table_offer(&b, &ups[i]);
    CHECK(consistent(&a) && consistent(&b), "heaps ordered");
    CHECK(a.count == MAX && b.count == MAX && a.root == b.root, "the same %d kept", MAX);
    int kept = 0;              /* the newest MAX: the largest lines, by their diffs */
    for (int i = 0; i < N; i++) {
        table_entry *e = table_get(&a, ids[i], strlen(ids[i]));
        int larger = 0;
        for (int j = 0; j < N; j++) {
            char li[64], lj[64];
            size_t ni = table_format_at(li, &ups[i], NULL), nj = table_format_at(lj, &ups[j], NULL);
            larger += proto_bytes_cmp(lj, nj, li, ni) > 0;
        }
        CHECK((e != NULL) == (larger < MAX), "%s kept %d, %d lines larger", ids[i], e != NULL,
              larger);
        kept += e != NULL;
    }
    CHECK(kept == MAX, "kept %d", kept);
    table_free(&a);
    table_free(&b);
}

/* The fields of the longest entry the protocol's limits allow, found again
 * from the line; an update past a limit is not stored. */
static void test_longest_fields(void) {
    char origin[64], diff[31], client[257], loc[71], tm[50];
    memset(origin, 'o', 63);
    origin[63] = '\0';
    snprintf(diff, sizeof diff, "+%s.123456789", "1234567890123456789");
    memset(client, 'c', 256);
    client[256] = '\0';
    snprintf(loc, sizeof loc, "+123.%s-123.%s", "123456789012345678901234567890",
             "123456789012345678901234567890");
    snprintf(tm, sizeof tm, "123456789012345678.%s", "123456789012345678901234567890");
    table t;
    table_init(&t);
    table_update u = upd(origin, client, loc, tm);
    u.diff = (proto_str){diff, strlen(diff)};
    CHECK(strlen(diff) == 30 && strlen(loc) == 70 && strlen(tm) == 49, "the limits");
    table_entry *e = table_offer(&t, &u);
    CHECK(e != NULL && e->line_len == 475, "stored, %d bytes", e ? (int)e->line_len : -1);
    if (e) {
        proto_str o = table_entry_origin(e), c = table_entry_client(e);
        proto_str l = table_entry_location(e), w = table_entry_time(e);
        CHECK(o.len == 63 && memcmp(o.p, origin, 63) == 0, "origin");
        CHECK(c.len == 256 && memcmp(c.p, client, 256) == 0, "client");
        CHECK(l.len == 70 && memcmp(l.p, loc, 70) == 0, "location");
        CHECK(w.len == 49 && memcmp(w.p, tm, 49) == 0 && e->line[475] == '\0', "time");
    }
    char longer[258];
    memset(longer, 'c', 257);
    longer[257] = '\0';
    u = upd("Bailey", longer, "+1.0+1.0", "1");
    CHECK(table_offer(&t, &u) == NULL && t.count == 1, "a 257-byte id is not stored");
    table_free(&t);
}

/* Times past 2^34 seconds share one heap key: the order reads them from
 * the lines, at the bound and for a stored client alike. */
static void test_far_times(void) {
    table t;
    table_init(&t);
    table_set_max(&t, 2);
    table_update u = upd("Bailey", "x", "+1.0+1.0", "20000000000.5");
    CHECK(table_offer(&t, &u) != NULL, "x stored");
    u = upd("Bailey", "y", "+1.0+1.0", "20000000000.25");
    CHECK(table_offer(&t, &u) != NULL, "y stored");
    u = upd("Bailey", "z", "+1.0+1.0", "20000000000.1");
    CHECK(table_offer(&t, &u) == NULL && t.refused == 1, "z, older than both, refused");
    u = upd("Bailey", "z", "+1.0+1.0", "30000000000");
    CHECK(table_offer(&t, &u) != NULL && !table_get(&t, "y", 1) && table_get(&t, "x", 1),
          "a newer z evicts y, the oldest");
    u = upd("Bailey", "x", "+1.0+1.0", "20000000000.4");
    CHECK(table_offer(&t, &u) == NULL, "an older x refused");
    u = upd("Bailey", "x", "+1.0+1.0", "20000000000.6");
    CHECK(table_offer(&t, &u) != NULL, "a newer x stored");
    u = upd("Bailey", "w", "+1.0+1.0", "20000000000.55");
    CHECK(table_offer(&t, &u) == NULL, "w, older than both, refused");
    CHECK(consistent(&t), "consistent");
    table_free(&t);
}

/* Blocks of records in use (not given back). */
static size_t blocks_in_use(const table *t) { return t->n_blocks - t->n_spare; }

/* Lines that change length for good leave their old size's records free;
 * the next offer moves that size's live records into the holes and gives
 * the emptied blocks back.  Entries keep their slots (the catch-up cursor
 * needs no restart), their lines and digests. */
static void test_compaction(void) {
    enum { N = 20000 };
    static const char *locs[] = {"+1.0+1.0", "+12.123456789-120.123456789",
                                 "+12.1234567890123456789-120.1234567890123456789"};
    static char ids[N][16];
    static size_t slot_of[N];
    table t;
    table_init(&t);
    table_set_max(&t, 2 * N);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "m%d", i);
        table_update u = upd("Bailey", ids[i], locs[0], "100");
        table_offer(&t, &u);
    }
    size_t full = blocks_in_use(&t);
    for (int i = 0; i < N; i++)
        slot_of[i] = table_index(&t, table_get(&t, ids[i], strlen(ids[i])));
    uint64_t layout = t.layout;
    /* three quarters take a longer line: the short size turns mostly holes,
     * and its every block keeps a live record, which must move */
    for (int i = 0; i < N; i++) {
        if (i % 4 == 0) continue;
        table_update u = upd("Bailey", ids[i], locs[1], "200");
        CHECK(table_offer(&t, &u) != NULL, "m%d longer", i);
    }
    table_update u = upd("Bailey", ids[0], locs[2], "50");   /* older: refused */
    CHECK(table_offer(&t, &u) == NULL && !t.compact_due, "nothing left due");
    CHECK(t.n_spare > 0, "blocks given back");
    CHECK(t.layout == layout && consistent(&t), "same slots, consistent");
    int ok = 1;
    for (int i = 0; i < N; i++) {
        table_entry *e = table_get(&t, ids[i], strlen(ids[i]));
        char want[96];
        snprintf(want, sizeof want, "AT Bailey +0.000000001 %s %s %s", ids[i],
                 locs[i % 4 ? 1 : 0], i % 4 ? "200" : "100");
        ok &= e && strcmp(e->line, want) == 0 && table_slot(&t, slot_of[i]) == e;
    }
    CHECK(ok, "every entry in its slot with its line after the moves");
    table b;                   /* digests as if the entries had never moved */
    table_init(&b);
    for (int i = 0; i < N; i++) {
        u = upd("Bailey", ids[i], locs[i % 4 ? 1 : 0], i % 4 ? "200" : "100");
        table_offer(&b, &u);
    }
    CHECK(same_digests(&t, &b), "same digests");
    table_free(&b);
    /* shifting every client through the sizes keeps the memory bounded */
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < N; i++) {
            char tm[16];
            snprintf(tm, sizeof tm, "%d", 300 + round);
            u = upd("Bailey", ids[i], locs[round % 3], tm);
            table_offer(&t, &u);
        }
    }
    u = upd("Bailey", "last", locs[0], "1000");
    table_offer(&t, &u);
    CHECK(t.count == N + 1 && consistent(&t), "all there");
    CHECK(blocks_in_use(&t) <= 2 * full + 3 * 4 + 3, "%zu blocks in use, %zu for the first fill",
          blocks_in_use(&t), full);
    table_free(&t);
}

int main(void) {
    test_longest_fields();
    test_far_times();
    test_compaction();
    test_ties_at_the_bound();
    test_whole_line_ties();
    test_digests();
    test_bound();
    test_order_at_first_fill();
    test_ties();
    test_any_order();
    test_churn();
    table t;
    table_init(&t);
    table_update u = upd("Bailey", "kiwi", "+1.0+1.0", "100");
    CHECK(table_offer(&t, &u) != NULL, "first update stored");
    CHECK_STR(stored(&t, "kiwi"), "AT Bailey +0.000000001 kiwi +1.0+1.0 100");
    u = upd("Bona", "kiwi", "+2.0+2.0", "99.999999999");
    CHECK(table_offer(&t, &u) == NULL, "older refused");
    u = upd("Bona", "kiwi", "+0.5+0.5", "100.0000000001");
    CHECK(table_offer(&t, &u) == NULL, "equal time, smaller location refused");
    u = upd("Bailey", "kiwi", "+1.0+1.0", "100");
    CHECK(table_offer(&t, &u) == NULL, "identical refused");
    u = upd("Bona", "kiwi", "+1.0+1.0", "100");
    CHECK(table_offer(&t, &u) != NULL, "same time and place, larger origin wins");
    CHECK_STR(stored(&t, "kiwi"), "AT Bona +0.000000001 kiwi +1.0+1.0 100");
    u = upd("Bailey", "kiwi", "+1.1+1.0", "100");
    CHECK(table_offer(&t, &u) != NULL, "larger location wins over origin");
    u = upd("Bailey", "kiwi", "-9.0-9.0", "100.000000001");
    CHECK(table_offer(&t, &u) != NULL, "one nanosecond later wins");
    CHECK_STR(stored(&t, "kiwi"), "AT Bailey +0.000000001 kiwi -9.0-9.0 100.000000001");
    CHECK(t.count == 1, "one client");

    /* grow well past the first size; every id stays findable */
    char id[32];
    for (int i = 0; i < 200000; i++) {
        snprintf(id, sizeof id, "c%d", i);
        u = upd("Bailey", id, "+1.0+1.0", "1");
        table_offer(&t, &u);
    }
    CHECK(t.count == 200001, "count %zu", t.count);
    CHECK(t.count * 4 <= t.cap * 3, "load factor %zu/%zu", t.count, t.cap);
    int missing = 0;
    for (int i = 0; i < 200000; i++) {
        snprintf(id, sizeof id, "c%d", i);
        if (!table_get(&t, id, strlen(id))) missing++;
    }
    CHECK(missing == 0, "%d ids lost in growth", missing);
    CHECK(table_get(&t, "c200000", 7) == NULL, "absent id");
    /* ids with embedded NUL bytes are distinct keys */
    u = upd("Bailey", "x", "+1.0+1.0", "1");
    u.client = (proto_str){"a\0b", 3};
    CHECK(table_offer(&t, &u) != NULL && table_get(&t, "a\0b", 3) && !table_get(&t, "a", 1),
          "NUL inside an id");
    table_free(&t);
    return check_report("table");
}
