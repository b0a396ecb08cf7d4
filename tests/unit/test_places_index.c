/* test_places_index.c -- the local provider's cell index answers exactly as
 * the full scan does: the same places in the same order, on random queries
 * over uniform and clustered place sets, near the poles and the
 * antimeridian, with duplicate coordinates and places on the radius. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "places.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng(void) {             /* xorshift64*: the same runs everywhere */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

static double uniform(double lo, double hi) {
    return lo + (hi - lo) * (double)(rng() >> 11) / 9007199254740992.0;
}

static double gauss(void) {
    double u = uniform(1e-12, 1), v = uniform(0, 1);
    return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

/* Latitude and longitude folded back into [-90, 90] and [-180, 180]. */
static void fold(double *lat, double *lng) {
    if (*lat > 90) { *lat = 180 - *lat; *lng += 180; }
    if (*lat < -90) { *lat = -180 - *lat; *lng += 180; }
    while (*lng > 180) *lng -= 360;
    while (*lng < -180) *lng += 360;
}

/* Awkward spots: the poles, both sides of the antimeridian, (0, 0). */
static const double spots[][2] = {
    {90, 0}, {-89.999, 10}, {12.5, 180}, {12.5, -180}, {-40, 179.999},
    {0, 0}, {51.5, -0.12}, {89.7, -179.9}, {34.06893, -118.445127},
};
#define NSPOTS (sizeof spots / sizeof spots[0])

static void spot_near(double *lat, double *lng, double spread_deg) {
    const double *s = spots[rng() % NSPOTS];
    *lat = s[0] + gauss() * spread_deg;
    *lng = s[1] + gauss() * spread_deg / fmax(cos(fmin(fabs(*lat), 89.9) * M_PI / 180), 0.01);
    fold(lat, lng);
}

/* Write n places (clustered or uniform, one in 20 repeating an earlier
 * place's coordinates) as GeoJSON into a temp file; returns its path. */
static const char *write_places(size_t n, int clustered) {
    static char path[64];
    strcpy(path, "/tmp/herdplacesidxXXXXXX");
    int fd = mkstemp(path);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
    if (!f) return NULL;
    double *ll = malloc(2 * n * sizeof *ll);
    fputs("{\"type\":\"FeatureCollection\",\"features\":[\n", f);
    for (size_t i = 0; i < n; i++) {
        double lat, lng;
        if (i > 0 && rng() % 20 == 0) {
            size_t j = rng() % i;
            lat = ll[2 * j];
            lng = ll[2 * j + 1];
        } else if (clustered) {
            static const double spreads[] = {0.0005, 0.02, 0.3, 2};
            spot_near(&lat, &lng, spreads[rng() % 4]);
        } else {
            lat = asin(uniform(-1, 1)) * 180 / M_PI;
            lng = uniform(-180, 180);
        }
        ll[2 * i] = lat;
        ll[2 * i + 1] = lng;
        fprintf(f, "%s{\"type\":\"Feature\",\"geometry\":{\"type\":\"Point\",\"coordinates\":"
                "[%.17g,%.17g]},\"properties\":{\"name\":\"p%zu\"}}\n", i ? "," : "", lng, lat, i);
    }
    fputs("]}\n", f);
    fclose(f);
    free(ll);
    return path;
}

/* A query centre: at a place, near one, at or near a pole or the
 * antimeridian, or anywhere. */
static void query_centre(const places_local *pl, double *lat, double *lng) {
    const place *p = &pl->v[rng() % pl->n];
    switch (rng() % 6) {
    case 0: *lat = p->lat; *lng = p->lng; return;
    case 1:
        *lat = p->lat + uniform(-0.2, 0.2);
        *lng = p->lng + uniform(-0.2, 0.2);
        break;
    case 2:
        *lat = (rng() & 1 ? 1 : -1) * (rng() % 4 ? 90 - uniform(0, 0.6) : 90);
        *lng = uniform(-180, 180);
        return;
    case 3:
        *lat = uniform(-60, 60);
        *lng = (rng() & 1 ? 1 : -1) * (rng() % 4 ? 180 - uniform(0, 0.4) : 180);
        return;
    case 4: spot_near(lat, lng, 0.3); return;
    default:
        *lat = asin(uniform(-1, 1)) * 180 / M_PI;
        *lng = uniform(-180, 180);
    }
    fold(lat, lng);
}

/* A radius: the protocol's range, tiny ones, exactly some place's
 * distance (a place on the radius), or past the index's reach. */
static double query_radius(const places_local *pl, double lat, double lng) {
    switch (rng() % 5) {
    case 0: return uniform(0.0001, 1);
    case 1: {
        const place *p = &pl->v[rng() % pl->n];
        double d = places_distance_km(lat, lng, p->lat, p->lng);
        if (d > 0 && d <= 50) return d;
        return uniform(1, 50);
    }
    case 2: return rng() % 10 ? uniform(50, 300) : 50;
    default: return uniform(0.0001, 50);
    }
}

/* Many random queries; every answer of the index equals the scan's. */
static void compare_on(size_t nplaces, int clustered, int queries) {
    const char *path = write_places(nplaces, clustered);
    CHECK(path != NULL, "temp file");
    places_local pl;
    char err[256] = "";
    CHECK(places_local_load(&pl, path, err, sizeof err) == 0, "load: %s", err);
    CHECK(pl.n == nplaces, "%zu places, got %zu", nplaces, pl.n);
    int mismatches = 0;
    long found = 0, full = 0;
    for (int q = 0; q < queries; q++) {
        double lat, lng;
        query_centre(&pl, &lat, &lng);
        double r = query_radius(&pl, lat, lng);
        int bound = 1 + (int)(rng() % 20);
        size_t a[20], b[20];
        int na = places_local_search(&pl, lat, lng, r, bound, a);
        int nb = places_local_search_scan(&pl, lat, lng, r, bound, b);
        found += na;
        full += na == bound;
        if (na != nb || memcmp(a, b, (size_t)na * sizeof a[0])) {
            if (mismatches++ < 5)
                fprintf(stderr, "query (%.17g, %.17g) r=%.17g bound %d: index %d places "
                        "(first %zu), scan %d (first %zu)\n", lat, lng, r, bound,
                        na, na ? a[0] : 0, nb, nb ? b[0] : 0);
        }
    }
    CHECK(mismatches == 0, "%s: %d of %d queries differ", clustered ? "clustered" : "uniform",
          mismatches, queries);
    /* not a vacuous test: many answers, many of them cut by the bound */
    CHECK(found > queries && full > queries / 20, "%ld places found, %ld full answers", found, full);
    places_local_free(&pl);
    unlink(path);
}

/* Places at the same distance in four different cubes, listed in the file
 * in the reverse of the index's order of cubes: ties still come out in
 * file order, whatever the bound. */
static void test_ties_across_cubes(void) {
    const char *path = write_places(0, 0);
    FILE *f = fopen(path, "w");
    fputs("{\"features\":["
          "{\"geometry\":{\"type\":\"Point\",\"coordinates\":[0.1,0]},\"properties\":{\"name\":\"e\"}},"
          "{\"geometry\":{\"type\":\"Point\",\"coordinates\":[0,0.1]},\"properties\":{\"name\":\"n\"}},"
          "{\"geometry\":{\"type\":\"Point\",\"coordinates\":[0,-0.1]},\"properties\":{\"name\":\"s\"}},"
          "{\"geometry\":{\"type\":\"Point\",\"coordinates\":[-0.1,0]},\"properties\":{\"name\":\"w\"}}]}", f);
    fclose(f);
    places_local pl;
    char err[256] = "";
    CHECK(places_local_load(&pl, path, err, sizeof err) == 0, "load: %s", err);
    for (int bound = 1; bound <= 4; bound++) {
        size_t a[20], b[20];
        int na = places_local_search(&pl, 0, 0, 20, bound, a);
        int nb = places_local_search_scan(&pl, 0, 0, 20, bound, b);
        CHECK(na == bound && nb == bound, "bound %d: %d and %d places", bound, na, nb);
        for (int i = 0; i < na && i < nb; i++)
            CHECK(a[i] == (size_t)i && b[i] == (size_t)i, "bound %d, position %d: index %zu, scan %zu",
                  bound, i, a[i], b[i]);
    }
    places_local_free(&pl);
    unlink(path);
}

/* Lines across cube faces near 0 on each axis: t moves a point along a
 * great circle (the equator near lng 0, 90 and 180, a meridian near the
 * equator). */
static void along(int family, double t, double *lat, double *lng) {
    static const double base[][2] = {{0, 0}, {0, 90}, {0, -90}, {0, 180}, {0, 0}, {0, 180}};
    *lat = base[family][0];
    *lng = base[family][1];
    if (family >= 4) *lat += t;
    else *lng += t;
    fold(lat, lng);
}
#define NFAMILIES 6

static uint64_t key_at(int family, double t) {
    double lat, lng, rad = M_PI / 180.0;    /* as places.c makes unit vectors */
    along(family, t, &lat, &lng);
    double cl = cos(lat * rad);
    return placesidx_key(cl * cos(lng * rad), cl * sin(lng * rad), sin(lat * rad));
}

/* The two neighbouring values of t around 0 where the cube changes. */
static void face(int family, double *lo, double *hi) {
    *lo = -1e-3;
    *hi = 1e-3;
    while (nextafter(*lo, *hi) < *hi) {
        double mid = *lo + (*hi - *lo) / 2;
        if (mid == *lo || mid == *hi) break;
        if (key_at(family, mid) == key_at(family, *lo)) *lo = mid;
        else *hi = mid;
    }
}

/* A place just past a cube face, a query 0.001 degrees before it with the
 * place on the radius: the box must reach past the face (the rounding
 * margin), on every axis and from both sides.  A box short by one part in
 * a billion misses it. */
static void test_place_on_radius_across_a_face(void) {
    const char *path = write_places(0, 0);
    FILE *f = fopen(path, "w");
    double q[2 * NFAMILIES][2], p[2 * NFAMILIES][2];
    fputs("{\"features\":[", f);
    for (int i = 0; i < 2 * NFAMILIES; i++) {
        int fam = i / 2;
        double lo, hi;
        face(fam, &lo, &hi);
        CHECK(key_at(fam, lo) != key_at(fam, hi), "family %d: a face near 0", fam);
        double at = i % 2 ? lo : hi, from = i % 2 ? lo + 0.001 : hi - 0.001;
        along(fam, at, &p[i][0], &p[i][1]);
        along(fam, from, &q[i][0], &q[i][1]);
        fprintf(f, "%s{\"geometry\":{\"type\":\"Point\",\"coordinates\":[%.17g,%.17g]},"
                "\"properties\":{\"name\":\"f%d\"}}", i ? "," : "", p[i][1], p[i][0], i);
    }
    fputs("]}", f);
    fclose(f);
    places_local pl;
    char err[256] = "";
    CHECK(places_local_load(&pl, path, err, sizeof err) == 0, "load: %s", err);
    for (int i = 0; i < 2 * NFAMILIES && pl.n == 2 * NFAMILIES; i++) {
        /* on the radius to 1e-10: the chords of 111 m near lng 180 are
         * only that exact (the angle in radians rounds near pi) */
        double r = places_distance_km(q[i][0], q[i][1], p[i][0], p[i][1]) * (1 + 1e-10);
        size_t a[20], b[20];
        int na = places_local_search(&pl, q[i][0], q[i][1], r, 20, a);
        int nb = places_local_search_scan(&pl, q[i][0], q[i][1], r, 20, b);
        int found = 0;
        for (int k = 0; k < nb; k++) found |= b[k] == (size_t)i;
        CHECK(found, "case %d: the scan finds the place on the radius", i);
        CHECK(na == nb && !memcmp(a, b, (size_t)na * sizeof a[0]),
              "case %d (%.17g, %.17g) r=%.17g: index %d places, scan %d", i, q[i][0], q[i][1],
              r, na, nb);
    }
    places_local_free(&pl);
    unlink(path);
}

/* No places: every search finds nothing. */
static void test_empty(void) {
    const char *path = write_places(0, 0);
    places_local pl;
    char err[256] = "";
    CHECK(places_local_load(&pl, path, err, sizeof err) == 0 && pl.n == 0, "load: %s", err);
    size_t a[20];
    CHECK(places_local_search(&pl, 90, 0, 50, 20, a) == 0, "nothing near the pole");
    CHECK(places_local_search(&pl, 0, 0, 20000, 20, a) == 0, "nothing anywhere");
    places_local_free(&pl);
    unlink(path);
}

int main(void) {
    test_ties_across_cubes();
    test_place_on_radius_across_a_face();
    test_empty();
    compare_on(30000, 0, 10000);
    compare_on(30000, 1, 10000);
    compare_on(3000, 1, 20000);
    return check_report("places_index");
}
