/* test_places.c -- the local provider: distance, order, bound, JSON shape. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "places.h"

static const char *write_tmp(const char *text) {
    static char path[64];
    strcpy(path, "/tmp/herdplacesXXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    if (write(fd, text, strlen(text)) < 0) { close(fd); return NULL; }
    close(fd);
    return path;
}

#define FEATURE(name, lng, lat) \
    "{\"type\":\"Feature\",\"geometry\":{\"type\":\"Point\",\"coordinates\":[" #lng "," #lat "]}," \
    "\"properties\":{\"name\":\"" name "\",\"place_id\":\"id-" name "\",\"types\":[\"cafe\"]}}"

static void test_distance(void) {
    /* one degree of latitude on the mean sphere: 6371.0088 * pi / 180 */
    double d = places_distance_km(0, 0, 1, 0);
    CHECK(fabs(d - 111.1950802) < 1e-6, "1 degree = %.7f km", d);
    CHECK(places_distance_km(34.06893, -118.445127, 34.06893, -118.445127) == 0, "zero");
    /* UCLA to LAX, about 13.1 km by great circle */
    d = places_distance_km(34.06893, -118.445127, 33.9416, -118.4085);
    CHECK(d > 14.0 && d < 14.6, "UCLA-LAX %.3f km", d);
    /* antipodes: half the circumference */
    d = places_distance_km(0, 0, 0, 180);
    CHECK(fabs(d - 6371.0088 * M_PI) < 1e-6, "antipode %.3f", d);
    d = places_distance_km(10, 170, 10, -170);
    CHECK(d < 2200 && d > 2180, "across the date line %.1f", d);
}

static void test_order_and_bound(void) {
    const char *path = write_tmp(
        "{\"type\":\"FeatureCollection\",\"features\":["
        FEATURE("far", 0.0, 0.3) ","
        FEATURE("near", 0.0, 0.01) ","
        FEATURE("mid", 0.05, 0.0) ","
        FEATURE("tie-a", 0.0, -0.1) ","
        FEATURE("tie-b", -0.1, 0.0) ","
        FEATURE("outside", 0.0, 1.0) "]}");
    CHECK(path != NULL, "temp file");
    places_local pl;
    char err[256];
    CHECK(places_local_load(&pl, path, err, sizeof err) == 0, "load: %s", err);
    CHECK(pl.n == 6, "six places, got %zu", pl.n);
    size_t idx[32];
    int n = places_local_search(&pl, 0, 0, 50, 20, idx);
    CHECK(n == 5, "five within 50 km, got %d", n);
    /* near (1.1 km), mid (5.6), tie-a and tie-b (11.1, file order), far (33.4) */
    size_t want[] = {1, 2, 3, 4, 0};
    for (int i = 0; i < n && i < 5; i++)
        CHECK(idx[i] == want[i], "position %d: got %zu want %zu", i, idx[i], want[i]);
    n = places_local_search(&pl, 0, 0, 50, 2, idx);
    CHECK(n == 2 && idx[0] == 1 && idx[1] == 2, "bound 2 keeps the two nearest");
    n = places_local_search(&pl, 0, 0, 1.0, 20, idx);
    CHECK(n == 0, "nothing within 1 km (near is 1.11 km)");
    n = places_local_search(&pl, 0, 0, 1.12, 20, idx);
    CHECK(n == 1 && idx[0] == 1, "near is within 1.12 km");

    buf_t out = {0};
    places_local_render(&pl, 0, 0, 50, 3, &out);
    buf_append_char(&out, '\0');
    CHECK(strstr(out.p, "\n\n") == NULL, "no empty line");
    CHECK(out.p[out.len - 2] == '}', "ends with } and no LF");
    CHECK(strncmp(out.p, "{\n   \"html_attributions\" : [],\n   \"results\" : [\n      {\n", 55) == 0,
          "legacy pretty shape: %.60s", out.p);
    cJSON *js = cJSON_Parse(out.p);
    CHECK(js != NULL, "valid JSON");
    cJSON *res = cJSON_GetObjectItem(js, "results");
    CHECK(cJSON_GetArraySize(res) == 3, "three results");
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetArrayItem(res, 0), "name")->valuestring, "near");
    CHECK_STR(cJSON_GetObjectItem(js, "status")->valuestring, "OK");
    cJSON *loc = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetArrayItem(res, 1), "geometry"), "location");
    CHECK(cJSON_GetObjectItem(loc, "lng")->valuedouble == 0.05, "lng kept exactly");
    CHECK(cJSON_GetObjectItem(cJSON_GetArrayItem(res, 1), "vicinity") != NULL, "vicinity always present");
    cJSON_Delete(js);

    buf_clear(&out);
    places_local_render(&pl, 0, 0, 0.5, 3, &out);
    buf_append_char(&out, '\0');
    CHECK_STR(out.p, "{\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"ZERO_RESULTS\"\n}");
    buf_clear(&out);
    places_render_error(&out, "REQUEST_DENIED", "bad \"key\"");
    buf_append_char(&out, '\0');
    CHECK_STR(out.p, "{\n   \"error_message\" : \"bad \\\"key\\\"\",\n   \"html_attributions\" : [],\n"
                     "   \"results\" : [],\n   \"status\" : \"REQUEST_DENIED\"\n}");
    buf_free(&out);
    places_local_free(&pl);
    unlink(path);
}

static void test_bad_files(void) {
    static const struct { const char *text, *want; } cases[] = {
        {"not json", "not valid JSON"},
        {"{\"type\":\"FeatureCollection\"}", "\"features\" list"},
        {"{\"features\":[{\"geometry\":{\"type\":\"LineString\"}}]}", "feature 1: geometry is not a Point"},
        {"{\"features\":[" FEATURE("a", 1, 1) ",{\"geometry\":{\"type\":\"Point\",\"coordinates\":[1]}}]}",
         "feature 2: coordinates"},
        {"{\"features\":[" FEATURE("a", 200, 1) "]}", "feature 1: coordinates out of range"},
        {"{\"features\":[{\"geometry\":{\"type\":\"Point\",\"coordinates\":[1,2]},\"properties\":{}}]}",
         "feature 1: properties.name"},
        /* each other way a feature can be wrong, each named with its number */
        {"{\"features\":[{\"properties\":{\"name\":\"no geometry\"}}]}",
         "feature 1: geometry is not a Point"},
        {"{\"features\":[{\"geometry\":{\"type\":7,\"coordinates\":[1,2]},\"properties\":{\"name\":\"a\"}}]}",
         "feature 1: geometry is not a Point"},
        {"{\"features\":[" FEATURE("a", 1, 1) ",{\"geometry\":{\"type\":\"Point\",\"coordinates\":{\"lng\":1,\"lat\":2}}}]}",
         "feature 2: coordinates must be [longitude, latitude]"},
        {"{\"features\":[{\"geometry\":{\"type\":\"Point\",\"coordinates\":[\"1\",2]}}]}",
         "feature 1: coordinates must be [longitude, latitude]"},
        {"{\"features\":[{\"geometry\":{\"type\":\"Point\",\"coordinates\":[1,null]}}]}",
         "feature 1: coordinates must be [longitude, latitude]"},
        {"{\"features\":[" FEATURE("a", 1, 90.5) "]}", "feature 1: coordinates out of range"},
        {"{\"features\":[{\"geometry\":{\"type\":\"Point\",\"coordinates\":[1,2]},\"properties\":[\"name\"]}]}",
         "feature 1: properties.name is missing"},
        {"{\"features\":[{\"geometry\":{\"type\":\"Point\",\"coordinates\":[1,2]},\"properties\":{\"name\":3}}]}",
         "feature 1: properties.name is missing"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_tmp(cases[i].text);
        places_local pl;
        char err[256] = "";
        CHECK(places_local_load(&pl, path, err, sizeof err) < 0, "case %zu refused", i);
        CHECK(strstr(err, cases[i].want) && strstr(err, path), "case %zu: '%s'", i, err);
        unlink(path);
    }
    places_local pl;
    char err[256];
    CHECK(places_local_load(&pl, "/nonexistent/x.geojson", err, sizeof err) < 0 &&
          strstr(err, "cannot open"), "missing file: %s", err);
}

/* The file is read as a stream: an error names the line it is on, JSON
 * is refused wherever it breaks, and what cJSON accepted still loads. */
static void test_stream_errors_and_lines(void) {
    static const struct { const char *text, *want; size_t places; } cases[] = {
        {"{\"features\":[\n" FEATURE("a", 1, 1) ",\n"
         "{\"geometry\":{\"type\":\"Point\",\"coordinates\":[1]}}]}", ":3: feature 2: coordinates", 0},
        {"{\"type\":\"FeatureCollection\",\n\"features\":[\n" FEATURE("a", 1, 1) ",\n]}",
         ":4: not valid JSON", 0},
        {"{\"features\":[" FEATURE("a", 1, 1), ":1: not valid JSON", 0},
        {"{\"features\":[" FEATURE("a", 1, 1) "]", ":1: not valid JSON", 0},
        {"{\"features\":[12abc]}", ":1: not valid JSON", 0},
        {"{\"features\":[" FEATURE("a", 1, 1) "],\n\"bbox\":[1,2,}", ":2: not valid JSON", 0},
        {"{\"features\":[" FEATURE("a", 1, 1) "] \"x\":1}", ":1: not valid JSON", 0},
        {"{\"features\":{}}", "\"features\" list", 0},
        {"[" FEATURE("a", 1, 1) "]", "\"features\" list", 0},
        {"", ":1: not valid JSON", 0},
        /* accepted: a BOM, other members before and after, a second
         * "features" (only the first counts), anything after the object */
        {"\xEF\xBB\xBF{\"type\":\"FeatureCollection\",\"features\":[" FEATURE("a", 1, 1) ","
         FEATURE("b", 2, 2) "],\"features\":[7],\"crs\":{\"x\":[\"]}\"]}} trailing", NULL, 2},
        {"{\"features\":[ ]}", NULL, 0},
        {"{\"f\\u0065atures\":[" FEATURE("a", 1, 1) "]}", NULL, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = write_tmp(cases[i].text);
        places_local pl;
        char err[256] = "";
        int rc = places_local_load(&pl, path, err, sizeof err);
        if (cases[i].want) {
            CHECK(rc < 0 && strstr(err, cases[i].want) && !strncmp(err, path, strlen(path)),
                  "case %zu: '%s'", i, err);
        } else {
            CHECK(rc == 0 && pl.n == cases[i].places, "case %zu: %zu places: %s", i, pl.n, err);
            places_local_free(&pl);
        }
        unlink(path);
    }
}

/* A file past the 256 MiB bound is refused before a byte is read (a sparse
 * file: no disk used), with a message naming it and the bound. */
static void test_file_too_large(void) {
    const char *path = write_tmp("{\"features\":[]}");
    CHECK(path != NULL && truncate(path, (256 << 20) + 1) == 0, "sparse file");
    places_local pl;
    char err[256] = "", want[128];
    snprintf(want, sizeof want, "%s: too large (at most 256 MiB)", path);
    CHECK(places_local_load(&pl, path, err, sizeof err) < 0, "refused");
    CHECK_STR(err, want);
    CHECK(pl.n == 0 && pl.v == NULL, "nothing kept");
    unlink(path);
}

/* A feature's properties become its result: a "geometry" property cannot
 * replace the computed one, "types" and "vicinity" are there even when the
 * file has none, and every JSON value prints the legacy way (false, an empty
 * object, escapes of quotes, backslashes and control bytes). */
static void test_feature_properties(void) {
    const char *path = write_tmp(
        "{\"features\":[{\"geometry\":{\"type\":\"Point\",\"coordinates\":[2.5,-1]},"
        "\"properties\":{\"name\":\"a\\\\b\\\"c\\td\\u007f\",\"geometry\":\"forged\","
        "\"open_now\":false,\"extra\":{},\"list\":[true,null]}}]}");
    places_local pl;
    char err[256] = "";
    CHECK(places_local_load(&pl, path, err, sizeof err) == 0, "load: %s", err);
    CHECK(pl.n == 1 && pl.v[0].lat == -1 && pl.v[0].lng == 2.5, "one place at -1, 2.5");
    buf_t out = {0};
    CHECK(places_local_render(&pl, -1, 2.5, 1, 20, &out) == 1, "found where it is");
    buf_append_char(&out, '\0');
    CHECK_STR(out.p,
        "{\n   \"html_attributions\" : [],\n   \"results\" : [\n"
        "      {\n"
        "         \"geometry\" : {\n"
        "            \"location\" : {\n"
        "               \"lat\" : -1,\n"
        "               \"lng\" : 2.5\n"
        "            }\n"
        "         },\n"
        "         \"name\" : \"a\\\\b\\\"c\\u0009d\\u007f\",\n"
        "         \"open_now\" : false,\n"
        "         \"extra\" : {},\n"
        "         \"list\" : [\n"
        "            true,\n"
        "            null\n"
        "         ],\n"
        "         \"types\" : [],\n"
        "         \"vicinity\" : \"\"\n"
        "      }\n"
        "   ],\n   \"status\" : \"OK\"\n}");
    buf_free(&out);
    places_local_free(&pl);
    unlink(path);
}

/* Values no parsed file holds but a caller may build: a number that is not
 * finite prints as null (JSON has no inf), an object member without a name
 * as "". */
static void test_printer_odd_values(void) {
    buf_t b = {0};
    cJSON *arr = cJSON_CreateArray();
    cJSON_AddItemToArray(arr, cJSON_CreateNumber(INFINITY));
    cJSON_AddItemToArray(arr, cJSON_CreateNumber(NAN));
    places_json_pretty(arr, 0, &b);
    buf_append_char(&b, '\0');
    CHECK_STR(b.p, "[\n   null,\n   null\n]");
    cJSON_Delete(arr);
    buf_clear(&b);
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddItemToArray(obj, cJSON_CreateString("unnamed"));   /* no ->string */
    places_json_pretty(obj, 0, &b);
    buf_append_char(&b, '\0');
    CHECK_STR(b.p, "{\n   \"\" : \"unnamed\"\n}");
    cJSON_Delete(obj);
    buf_free(&b);
}

/* The search's own bounds: at most 20 results whatever 'bound' asks, and a
 * radius past half the Earth's circumference reaches the antipode (the
 * chord is taken for at most a half turn). */
static void test_search_bounds(void) {
    buf_t text = {0};
    buf_append_str(&text, "{\"features\":[");
    for (int i = 0; i < 25; i++) {
        char f[200];
        snprintf(f, sizeof f, "%s{\"geometry\":{\"type\":\"Point\",\"coordinates\":[0,%d]},"
                 "\"properties\":{\"name\":\"p%d\"}}", i ? "," : "", i, i);
        buf_append_str(&text, f);
    }
    buf_append_str(&text, ",{\"geometry\":{\"type\":\"Point\",\"coordinates\":[180,0]},"
                   "\"properties\":{\"name\":\"antipode\"}}]}");
    buf_append_char(&text, '\0');
    const char *path = write_tmp(text.p);
    buf_free(&text);
    places_local pl;
    char err[256] = "";
    CHECK(places_local_load(&pl, path, err, sizeof err) == 0, "load: %s", err);
    CHECK(pl.n == 26, "26 places, got %zu", pl.n);
    size_t idx[32];
    int n = places_local_search(&pl, 0, 0, 5000, 25, idx);
    CHECK(n == 20, "a bound of 25 gives 20, got %d", n);
    for (int i = 0; i < n && i < 20; i++)
        CHECK(idx[i] == (size_t)i, "position %d: got %zu", i, idx[i]);
    /* from (0,180): the antipode place, then p24 (156 degrees away) .. p6
     * (174); past pi * R, so within reach only with the angle capped at pi
     * (else the chord of 30000 km is that of 90 degrees) */
    n = places_local_search(&pl, 0, 180, 30000, 20, idx);
    CHECK(n == 20 && idx[0] == 25 && idx[1] == 24 && idx[19] == 6,
          "30000 km from (0,180): got %d: %zu %zu .. %zu", n, idx[0], idx[1], idx[19]);
    places_local_free(&pl);
    unlink(path);
}

/* Antipodes whose haversine term rounds just past 1: the distance is half
 * the circumference, not NaN (asin of more than 1). */
static void test_distance_rounding(void) {
    double d = places_distance_km(8, -179, -8, 1);
    CHECK(d == 6371.0088 * M_PI, "antipodes (8,-179) (-8,1): %.17g", d);
}

/* The shipped sample: at least 40 real places around the default spot. */
static void test_sample_file(void) {
    places_local pl;
    char err[256];
    CHECK(places_local_load(&pl, "data/places.geojson", err, sizeof err) == 0, "%s", err);
    CHECK(pl.n >= 40, "%zu places", pl.n);
    size_t idx[32];
    int n = places_local_search(&pl, 34.068930, -118.445127, 2, 20, idx);
    CHECK(n == 20, "20 places within 2 km, got %d", n);
    places_local_free(&pl);
}

/* Found by fuzzing: a number too large for long long was cast to it. */
static void test_printer_numbers(void) {
    static const struct { double d; const char *want; } cases[] = {
        {1e300, "1e+300"}, {-1e300, "-1e+300"}, {34.0689, "34.0689"}, {612, "612"},
        {-118.445127, "-118.445127"}, {0.1, "0.1"}, {1e15, "1e+15"}, {9.2233720368547758e18, "9.223372036854776e+18"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *n = cJSON_CreateNumber(cases[i].d);
        buf_t b = {0};
        places_json_pretty(n, 0, &b);
        buf_append_char(&b, '\0');
        CHECK_STR(b.p, cases[i].want);
        buf_free(&b);
        cJSON_Delete(n);
    }
}

/* The shortest text of a double, the slow way: "%.15g", 16, 17 digits,
 * the first that reads back. */
static void shortest_reference(double d, char *out, size_t len) {
    if (fabs(d) < 1e15 && d == (double)(long long)d) {
        snprintf(out, len, "%lld", (long long)d);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, d);
        if (strtod(out, NULL) == d) return;
    }
}

/* The printer's fast path for short decimals prints what the slow way
 * prints: decimals of 1 to 15 digits at every magnitude, both signs, the
 * ends of the fast path's range, and doubles with no short decimal. */
static void test_printer_numbers_as_slow_way(void) {
    unsigned long long x = 88172645463325252ull;
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        double d;
        char text[64];
        if (i % 4 == 3) {
            memcpy(&d, &x, sizeof d);
            if (!isfinite(d)) continue;
        } else {
            int digits = 1 + (int)(x % 15), exp = (int)(x >> 8) % 24 - 8;
            long long m = (long long)((x >> 16) % 1000000000000000ull);
            while (m >= 10 && (int)log10((double)m) + 1 > digits) m /= 10;
            snprintf(text, sizeof text, "%s%llde%d", x >> 63 ? "-" : "", m, exp);
            d = strtod(text, NULL);
        }
        static const double ends[] = {1e-4, 0.00010000000000000002, 9.9999999999999e-5,
                                      999999999999999.9, 1e15 - 0.5, 0.1, 0.3, 1.0 / 3};
        if (i < 8) d = ends[i];
        char want[64];
        shortest_reference(d, want, sizeof want);
        cJSON *n = cJSON_CreateNumber(d);
        buf_t b = {0};
        places_json_pretty(n, 0, &b);
        buf_append_char(&b, '\0');
        if (strcmp(b.p, want) && bad++ < 5) fprintf(stderr, "%.17g: got %s, want %s\n", d, b.p, want);
        buf_free(&b);
        cJSON_Delete(n);
    }
    CHECK(bad == 0, "%d numbers printed otherwise than the slow way", bad);
}

int main(void) {
    test_printer_numbers();
    test_printer_numbers_as_slow_way();
    test_distance();
    test_order_and_bound();
    test_bad_files();
    test_stream_errors_and_lines();
    test_file_too_large();
    test_feature_properties();
    test_printer_odd_values();
    test_search_bounds();
    test_distance_rounding();
    test_sample_file();
    return check_report("places");
}
