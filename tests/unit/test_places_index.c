/* test_places_index.c -- the local provider's k-d tree answers exactly as
 * the full scan does: the same places in the same order, on random queries
 * over uniform and clustered place sets, near the poles and the
 * antimeridian, with duplicate coordinates and places on the radius. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "places.h"


static double gauss(void) {
    double u = check_uniform(1e-12, 1), v = check_uniform(0, 1);
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
    const double *s = spots[check_rng() % NSPOTS];
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
        if (i > 0 && check_rng() % 20 == 0) {
            size_t j = check_rng() % i;
            lat = ll[2 * j];
            lng = ll[2 * j + 1];
        } else if (clustered) {
            static const double spreads[] = {0.0005, 0.02, 0.3, 2};
            spot_near(&lat, &lng, spreads[check_rng() % 4]);
        } else {
            lat = asin(check_uniform(-1, 1)) * 180 / M_PI;
            lng = check_uniform(-180, 180);
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
    const place *p = &pl->v[check_rng() % pl->n];
    switch (check_rng() % 6) {
    case 0: *lat = p->lat; *lng = p->lng; return;
    case 1:
        *lat = p->lat + check_uniform(-0.2, 0.2);
        *lng = p->lng + check_uniform(-0.2, 0.2);
        break;
    case 2:
        *lat = (check_rng() & 1 ? 1 : -1) * (check_rng() % 4 ? 90 - check_uniform(0, 0.6) : 90);
        *lng = check_uniform(-180, 180);
        return;
    case 3:
        *lat = check_uniform(-60, 60);
        *lng = (check_rng() & 1 ? 1 : -1) * (check_rng() % 4 ? 180 - check_uniform(0, 0.4) : 180);
        return;
    case 4: spot_near(lat, lng, 0.3); return;
    default:
        *lat = asin(check_uniform(-1, 1)) * 180 / M_PI;
        *lng = check_uniform(-180, 180);
    }
    fold(lat, lng);
}

/* A radius: the protocol's range, tiny ones, exactly some place's
 * distance (a place on the radius), or past the index's reach. */
static double query_radius(const places_local *pl, double lat, double lng) {
    switch (check_rng() % 5) {
    case 0: return check_uniform(0.0001, 1);
    case 1: {
        const place *p = &pl->v[check_rng() % pl->n];
        double d = places_distance_km(lat, lng, p->lat, p->lng);
        if (d > 0 && d <= 50) return d;
        return check_uniform(1, 50);
    }
    case 2: return check_rng() % 10 ? check_uniform(50, 300) : 50;
    default: return check_uniform(0.0001, 50);
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
        int bound = 1 + (int)(check_rng() % 20);
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

/* Places at the same distance on four sides of the query, so in four
 * branches of the tree, listed in several orders: ties come out in file
 * order, whatever the bound. */
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

/* Places on lines where a unit-vector coordinate is the same for all of
 * them (the equator: z = 0; meridians 0 and 180: y = sin(0) and
 * sin(pi)), many at the same point, so that the tree splits on values
 * that many places share; queries beside the lines, each with a place on
 * its radius.  The index must find what the scan finds, the place on the
 * radius included. */
static void test_places_on_shared_planes(void) {
    const char *path = write_places(0, 0);
    FILE *f = fopen(path, "w");
    double ll[1200][2];
    fputs("{\"features\":[", f);
    for (int i = 0; i < 1200; i++) {
        int point = i / 3;                                  /* three places at each point */
        double t = (double)(point / 4) * 0.006 - 0.3;
        switch (point % 4) {
        case 0: ll[i][0] = 0; ll[i][1] = t; break;
        case 1: ll[i][0] = 0; ll[i][1] = t >= 0 ? 180 - t : -180 - t; break;
        case 2: ll[i][0] = t; ll[i][1] = 0; break;
        default: ll[i][0] = t; ll[i][1] = 180; break;
        }
        fprintf(f, "%s{\"geometry\":{\"type\":\"Point\",\"coordinates\":[%.17g,%.17g]},"
                "\"properties\":{\"name\":\"l%d\"}}", i ? "," : "", ll[i][1], ll[i][0], i);
    }
    fputs("]}", f);
    fclose(f);
    places_local pl;
    char err[256] = "";
    CHECK(places_local_load(&pl, path, err, sizeof err) == 0 && pl.n == 1200, "load: %s", err);
    int mismatches = 0, missed = 0;
    for (int q = 0; q < 3000 && pl.n == 1200; q++) {
        size_t target = check_rng() % 1200;
        double lat = ll[target][0] + check_uniform(-0.01, 0.01), lng = ll[target][1] + check_uniform(-0.01, 0.01);
        fold(&lat, &lng);
        /* on the radius to 1e-10: chords of a few hundred metres near lng
         * 180 are only that exact (the angle in radians rounds near pi) */
        double r = places_distance_km(lat, lng, ll[target][0], ll[target][1]) * (1 + 1e-10);
        int bound = 1 + (int)(check_rng() % 20);
        size_t a[20], b[20];
        int na = places_local_search(&pl, lat, lng, r, bound, a);
        int nb = places_local_search_scan(&pl, lat, lng, r, bound, b);
        mismatches += na != nb || memcmp(a, b, (size_t)na * sizeof a[0]);
        if (nb < bound) {
            int found = 0;
            for (int k = 0; k < nb; k++) found |= b[k] == target;
            missed += !found;
        }
    }
    CHECK(mismatches == 0, "%d of 3000 queries differ", mismatches);
    CHECK(missed == 0, "the place on the radius missed %d times", missed);
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
    check_rng_state = 0x9e3779b97f4a7c15u;   /* this test's runs, as before */
    test_ties_across_cubes();
    test_places_on_shared_planes();
    test_empty();
    compare_on(30000, 0, 10000);
    compare_on(30000, 1, 10000);
    compare_on(3000, 1, 20000);
    return check_report("places_index");
}
