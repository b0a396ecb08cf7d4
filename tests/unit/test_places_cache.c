/* test_places_cache.c -- the places cache (server/placescache.c): built
 * once, then mapped, with replies byte-identical to the file read into
 * memory; a damaged cache (truncated, a header field changed, an id, an
 * offset or an axis out of range behind a valid checksum, a byte flipped)
 * is refused with its reason and rebuilt, never used; a changed places
 * file makes it stale. */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "placescache.h"


/* n places around a few towns, with properties of every JSON kind. */
static void write_places(const char *path, size_t n, int seed) {
    FILE *f = fopen(path, "w");
    fputs("{\"type\":\"FeatureCollection\",\"features\":[\n", f);
    for (size_t i = 0; i < n; i++) {
        double lat = (double)(seed + (int)(i % 5) * 10) + check_uniform(-0.5, 0.5);
        double lng = -118.4 + (double)(i % 3) + check_uniform(-0.5, 0.5);
        fprintf(f, "%s{\"type\":\"Feature\",\"geometry\":{\"type\":\"Point\",\"coordinates\":"
                "[%.17g,%.17g]},\"properties\":{\"name\":\"p%zu \\\"q\\\" \\u00e9\","
                "\"rating\":%.1f,\"open\":%s,\"tags\":[\"a\",{\"k\":null}]}}\n",
                i ? "," : "", lng, lat, i, check_uniform(0, 5), i % 2 ? "true" : "false");
    }
    fputs("]}\n", f);
    fclose(f);
}

/* Every reply to a set of queries, one after the other. */
static void replies(const places_local *pl, int seed, buf_t *out) {
    uint64_t saved = check_rng_state;
    check_rng_state = 0x9e3779b97f4a7c15u + (uint64_t)seed;
    for (int q = 0; q < 300; q++) {
        double lat = (double)(seed + (int)(check_rng() % 5) * 10) + check_uniform(-0.6, 0.6);
        double lng = -118.4 + (double)(check_rng() % 3) + check_uniform(-0.6, 0.6);
        places_local_render(pl, lat, lng, check_uniform(0.5, 40), 1 + (int)(check_rng() % 20), out);
    }
    check_rng_state = saved;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    char *p = malloc(*len);
    if (fread(p, 1, *len, f) != *len) *len = 0;
    fclose(f);
    return p;
}

/* A new file in path's place (a cache is read-only). */
static void write_all(const char *path, const char *p, size_t len) {
    unlink(path);
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, len, f);
    fclose(f);
}

static char dir[64];
static const char *places_path, *cache_path;

/* Loaded through the cache: mapped, and the replies are 'want'. */
static void check_loads(const buf_t *want, int seed, const char *what) {
    places_local pl;
    char err[512] = "";
    CHECK(places_cache_load(&pl, places_path, dir, 0, err, sizeof err) == 0, "%s: %s", what, err);
    CHECK(pl.map != NULL, "%s: not mapped from the cache", what);
    buf_t got = {0};
    replies(&pl, seed, &got);
    CHECK(got.len == want->len && !memcmp(got.p, want->p, got.len),
          "%s: replies differ from the file read into memory", what);
    buf_free(&got);
    places_local_free(&pl);
}

/* The cache as it is now must be refused for 'reason'. */
static void check_refused(const char *reason, const char *what) {
    places_local pl;
    char why[256] = "";
    int rc = places_cache_map(&pl, cache_path, places_path, why, sizeof why);
    CHECK(rc < 0 && strstr(why, reason), "%s: mapped=%d why='%s', want '%s'", what, rc == 0, why,
          reason);
    if (rc == 0) places_local_free(&pl);
}

typedef struct {
    const char *what, *reason;
    size_t at;                  /* the header field changed */
    int reseal;                 /* checksum made right again: the deeper checks */
    void (*change)(char *img, size_t *len, size_t at);
} damage;

static void flip(char *img, size_t *len, size_t at) { (void)len; img[at] ^= 0x10; }
static void add_one(char *img, size_t *len, size_t at) {
    (void)len;
    uint64_t v;
    memcpy(&v, img + at, 8);
    v += 64;
    memcpy(img + at, &v, 8);
}
static void cut_half(char *img, size_t *len, size_t at) { (void)img; (void)at; *len /= 2; }
static void cut_last(char *img, size_t *len, size_t at) { (void)img; (void)at; *len -= 1; }
static void cut_head(char *img, size_t *len, size_t at) {
    (void)img; (void)at;
    *len = sizeof(places_cache_head) - 1;
}
static void no_nul(char *img, size_t *len, size_t at) {
    (void)len;
    memset(img + at, 'x', sizeof ((places_cache_head *)0)->path);
}
static void node_id(char *img, size_t *len, size_t at) {
    (void)len; (void)at;
    const places_cache_head *h = (const places_cache_head *)img;
    placesidx_node *nd = (placesidx_node *)(img + h->node_off);
    nd[h->n / 2].id = (uint32_t)h->n;
}
static void json_off(char *img, size_t *len, size_t at) {
    (void)len; (void)at;
    const places_cache_head *h = (const places_cache_head *)img;
    place *p = (place *)(img + h->v_off);
    p[h->n - 1].json_off = h->text_len - p[h->n - 1].json_len + 1;
}
static void json_len(char *img, size_t *len, size_t at) {
    (void)len; (void)at;
    const places_cache_head *h = (const places_cache_head *)img;
    place *p = (place *)(img + h->v_off);
    p[7].json_len = SIZE_MAX - 3;
}
static void axis(char *img, size_t *len, size_t at) {
    (void)len; (void)at;
    const places_cache_head *h = (const places_cache_head *)img;
    img[h->axis_off + h->n / 3] = 7;
}
static void text_byte(char *img, size_t *len, size_t at) {
    (void)len; (void)at;
    const places_cache_head *h = (const places_cache_head *)img;
    img[h->text_off + h->text_len / 2] ^= 1;
}

#define AT(f) offsetof(places_cache_head, f)

static const damage damages[] = {
    {"truncated to half", "truncated", 0, 0, cut_half},
    {"one byte short", "truncated", 0, 0, cut_last},
    {"shorter than a header", "shorter than its header", 0, 0, cut_head},
    {"magic", "magic", AT(magic), 0, flip},
    {"version", "version", AT(version), 0, flip},
    {"byte order", "byte order", AT(order), 0, flip},
    {"sizeof(place)", "struct sizes", AT(size_place), 0, flip},
    {"place count", "offsets", AT(n), 0, add_one},
    {"text length", "offsets", AT(text_len), 0, add_one},
    {"place offset", "offsets", AT(v_off), 0, add_one},
    {"node offset", "offsets", AT(node_off), 0, add_one},
    {"text offset", "offsets", AT(text_off), 0, add_one},
    {"total", "offsets", AT(total), 0, add_one},
    {"path unterminated", "path", AT(path), 0, no_nul},
    {"checksum", "checksum", AT(sum), 0, flip},
    {"a text byte", "checksum", 0, 0, text_byte},
    {"a node id", "checksum", 0, 0, node_id},
    {"a node id, resealed", "node id", 0, 1, node_id},
    {"a text offset, resealed", "text out of range", 0, 1, json_off},
    {"a text length, resealed", "text out of range", 0, 1, json_len},
    {"an axis, resealed", "axis", 0, 1, axis},
};

static void test_damaged_caches_are_rebuilt(const buf_t *want) {
    size_t good_len;
    char *good = read_all(cache_path, &good_len);
    for (size_t k = 0; k < sizeof damages / sizeof damages[0]; k++) {
        const damage *d = &damages[k];
        size_t len = good_len;
        char *img = malloc(len);
        memcpy(img, good, len);
        d->change(img, &len, d->at);
        if (d->reseal) places_cache_reseal(img);
        write_all(cache_path, img, len);
        free(img);
        check_refused(d->reason, d->what);
        check_loads(want, 20, d->what);         /* rebuilt, then used */
        check_loads(want, 20, d->what);
    }
    free(good);
}

/* The replies of the places file read as without a cache, into want. */
static void uncached_replies(int seed, buf_t *want) {
    places_local mem;
    char err[256] = "";
    CHECK(places_local_load(&mem, places_path, err, sizeof err) == 0, "load: %s", err);
    replies(&mem, seed, want);
    places_local_free(&mem);
}

/* The places file touched, then rewritten: stale, rebuilt, the new places. */
static void test_a_changed_file_makes_it_stale(void) {
    struct timespec ts[2] = {{0, UTIME_OMIT}, {1700000000, 123456789}};
    CHECK(utimensat(AT_FDCWD, places_path, ts, 0) == 0, "utimensat");
    check_refused("stale", "touched");
    write_places(places_path, 2500, 40);
    buf_t want = {0};
    uncached_replies(40, &want);
    check_loads(&want, 40, "rewritten");
    buf_free(&want);
}

int main(void) {
    strcpy(dir, "/tmp/herdplacescacheXXXXXX");
    if (!mkdtemp(dir)) return 1;
    places_path = strdup(check_at(dir, "places.geojson"));
    cache_path = strdup(check_at(dir, PLACES_CACHE_FILE));
    write_places(places_path, 3000, 20);
    buf_t want = {0};
    uncached_replies(20, &want);
    CHECK(want.len > 100000, "the queries found places: %zu bytes", want.len);

    check_loads(&want, 20, "built");
    check_loads(&want, 20, "used");
    test_damaged_caches_are_rebuilt(&want);
    test_a_changed_file_makes_it_stale();

    buf_free(&want);
    check_rmtree(dir);
    return check_report("test_places_cache");
}
