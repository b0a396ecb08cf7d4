/* places.c -- the local places provider and the legacy JSON printer; see
 * places.h. */
#include "places.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xalloc.h"

#define PROGRESS_EVERY 16384     /* places between two progress calls */

static struct {
    void (*fn)(void *);
    void *arg;
} progress;                      /* places_set_progress */

#define PLACES_MAX_FILE (256u << 20)
#define INDENT 3
#define EARTH_KM 6371.0088      /* mean radius */

/* ---------------------------------------------------------- JSON printer */

static void indent(buf_t *out, int depth) {
    buf_reserve(out, (size_t)depth * INDENT);
    memset(out->p + out->len, ' ', (size_t)depth * INDENT);
    out->len += (size_t)depth * INDENT;
}

static int plain_char(unsigned char c) {
    return c >= 0x20 && c != 0x7f && c != '"' && c != '\\';
}

/* Runs of plain bytes are copied at once: a million places' strings are
 * printed at start. */
static void put_string(buf_t *out, const char *s) {
    static const char hex[] = "0123456789abcdef";
    buf_append_char(out, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        const unsigned char *run = p;
        while (plain_char(*p)) p++;
        buf_append(out, run, (size_t)(p - run));
        if (!*p) break;
        if (*p == '"' || *p == '\\') {
            buf_append_char(out, '\\');
            buf_append_char(out, (char)*p);
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            buf_append(out, e, 6);
        }
    }
    buf_append_char(out, '"');
}

/* d as "%.15g" prints it, when that is d's shortest decimal with at most
 * 15 digits, 1e-4 <= |d| < 1e15 and a fraction: the integer m = d * 10^k
 * for the least k with m / 10^k == d (both exact, the division rounded
 * once, so that is reading the text back), its point put in by hand.
 * Returns 0 when d is not such a number.  The coordinates of a million
 * places are printed at start; snprintf("%g") was a fifth of it. */
static int put_short_decimal(buf_t *out, double d) {
    static const double p10[16] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8,
                                   1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    double a = fabs(d);
    if (!(a >= 1e-4 && a < 1e15)) return 0;
    for (int k = 1; k < 16; k++) {
        double m = nearbyint(a * p10[k]);
        if (m >= 1e15) return 0;
        if (m / p10[k] != a) continue;
        char tmp[40], *e = tmp + sizeof tmp, *s = e;
        long long v = (long long)m;
        for (int i = 0; i < k; i++, v /= 10) *--s = (char)('0' + v % 10);
        *--s = '.';
        do *--s = (char)('0' + v % 10); while (v /= 10);
        if (d < 0) *--s = '-';
        buf_append(out, s, (size_t)(e - s));
        return 1;
    }
    return 0;
}

/* The shortest text that reads back as the same double. */
static void put_number(buf_t *out, double d) {
    char tmp[40];
    if (!isfinite(d)) {
        buf_append_str(out, "null");
        return;
    }
    if (fabs(d) < 1e15 && d == (double)(long long)d) {   /* no cast out of range */
        snprintf(tmp, sizeof tmp, "%lld", (long long)d);
    } else if (put_short_decimal(out, d)) {
        return;
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(tmp, sizeof tmp, "%.*g", prec, d);
            if (strtod(tmp, NULL) == d) break;
        }
    }
    buf_append_str(out, tmp);
}

void places_json_pretty(const cJSON *v, int depth, buf_t *out) {
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        int obj = cJSON_IsObject(v);
        const cJSON *c = v->child;
        if (!c) {
            buf_append_str(out, obj ? "{}" : "[]");
            return;
        }
        buf_append_str(out, obj ? "{\n" : "[\n");
        for (; c; c = c->next) {
            indent(out, depth + 1);
            if (obj) {
                put_string(out, c->string ? c->string : "");
                buf_append_str(out, " : ");
            }
            places_json_pretty(c, depth + 1, out);
            buf_append_str(out, c->next ? ",\n" : "\n");
        }
        indent(out, depth);
        buf_append_char(out, obj ? '}' : ']');
    } else if (cJSON_IsString(v)) {
        put_string(out, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        put_number(out, v->valuedouble);
    } else if (cJSON_IsTrue(v)) {
        buf_append_str(out, "true");
    } else if (cJSON_IsFalse(v)) {
        buf_append_str(out, "false");
    } else {
        buf_append_str(out, "null");
    }
}

static void render_head(buf_t *out) {
    buf_append_str(out, "{\n   \"html_attributions\" : [],\n   \"results\" : ");
}

static void render_tail(buf_t *out, const char *status) {
    buf_append_str(out, ",\n   \"status\" : ");
    put_string(out, status);
    buf_append_str(out, "\n}");
}

void places_render_error(buf_t *out, const char *status, const char *message) {
    buf_append_str(out, "{\n   \"error_message\" : ");
    put_string(out, message);
    buf_append_str(out, ",\n   \"html_attributions\" : [],\n   \"results\" : []");
    render_tail(out, status);
}

/* ------------------------------------------------------------- distance */

double places_distance_km(double lat1, double lng1, double lat2, double lng2) {
    const double r = EARTH_KM, rad = M_PI / 180.0;
    double dlat = (lat2 - lat1) * rad, dlng = (lng2 - lng1) * rad;
    double a = sin(dlat / 2) * sin(dlat / 2) +
               cos(lat1 * rad) * cos(lat2 * rad) * sin(dlng / 2) * sin(dlng / 2);
    if (a > 1) a = 1;
    return 2 * r * asin(sqrt(a));
}

static void unit_vector(double lat, double lng, double u[3]) {
    const double rad = M_PI / 180.0;
    double cl = cos(lat * rad);
    u[0] = cl * cos(lng * rad);
    u[1] = cl * sin(lng * rad);
    u[2] = sin(lat * rad);
}

/* Places are ranked by the squared chord between unit vectors, which grows
 * with the great-circle distance, so a query costs one sin/cos set and no
 * trigonometry per place (the haversine per place was 18% of a WHATSAT). */
static void top_init(placesidx_top *t, double lat, double lng, double radius_km, int bound) {
    double q[3];
    unit_vector(lat, lng, q);
    double angle = radius_km / EARTH_KM;
    if (angle > M_PI) angle = M_PI;
    double chord = 2 * sin(angle / 2);
    placesidx_top_init(t, q, chord * chord * (1 + 1e-12), bound);
}

static int top_result(const placesidx_top *t, size_t *idx) {
    memcpy(idx, t->id, (size_t)t->n * sizeof *idx);
    return t->n;
}

int places_local_search_scan(const places_local *pl, double lat, double lng,
                             double radius_km, int bound, size_t *idx) {
    placesidx_top t;
    top_init(&t, lat, lng, radius_km, bound);
    for (size_t i = 0; i < pl->n; i++) placesidx_top_offer(&t, pl->v[i].u, i);
    return top_result(&t, idx);
}

int places_local_search(const places_local *pl, double lat, double lng,
                        double radius_km, int bound, size_t *idx) {
    placesidx_top t;
    top_init(&t, lat, lng, radius_km, bound);
    placesidx_search(&pl->idx, &t);
    return top_result(&t, idx);
}

int places_local_render(const places_local *pl, double lat, double lng,
                        double radius_km, int bound, buf_t *out) {
    size_t idx[32];
    int n = places_local_search(pl, lat, lng, radius_km, bound, idx);
    render_head(out);
    if (n == 0) {
        buf_append_str(out, "[]");
        render_tail(out, "ZERO_RESULTS");
        return 0;
    }
    buf_append_str(out, "[\n");
    for (int i = 0; i < n; i++) {
        const place *p = &pl->v[idx[i]];
        indent(out, 2);
        buf_append(out, pl->text + p->json_off, p->json_len);
        buf_append_str(out, i + 1 < n ? ",\n" : "\n");
    }
    indent(out, 1);
    buf_append_char(out, ']');
    render_tail(out, "OK");
    return n;
}

/* ------------------------------------------------------------ GeoJSON */

/* The file is mapped and read once, front to back: the top-level object
 * is walked by hand, and each feature (and each other top-level value) is
 * parsed alone by cJSON, so memory holds one feature's tree at a time
 * rather than the whole file's.  JSON is accepted as cJSON accepts it
 * (bytes up to space count as white space; a UTF-8 BOM and anything after
 * the top-level value are ignored). */
typedef struct {
    const char *base, *end, *path;
    char *err;
    size_t errlen;
} source;

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (unsigned char)*p <= ' ') p++;
    return p;
}

static const char *string_end(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return NULL;
}

/* The end of the JSON value starting at p, found by brackets and quotes
 * alone (cJSON then checks it); NULL when the file ends first. */
static const char *value_end(const char *p, const char *end) {
    if (p < end && *p == '"') return string_end(p, end);
    if (p < end && (*p == '{' || *p == '[')) {
        size_t depth = 0;
        for (; p < end; p++) {
            if (*p == '"') {
                if (!(p = string_end(p, end))) return NULL;
                p--;
            } else if (*p == '{' || *p == '[') {
                depth++;
            } else if ((*p == '}' || *p == ']') && --depth == 0) {
                return p + 1;
            }
        }
        return NULL;
    }
    while (p < end && !strchr(",]}", *p) && (unsigned char)*p > ' ') p++;
    return p;
}

static size_t line_of(const source *s, const char *at) {
    size_t line = 1;
    for (const char *p = s->base; p < at && (p = memchr(p, '\n', (size_t)(at - p))); p++)
        line++;
    return line;
}

static int fail_at(const source *s, const char *at, const char *why) {
    snprintf(s->err, s->errlen, "%s:%zu: %s", s->path, line_of(s, at), why);
    return -1;
}

/* Parse the value in [p, end) with cJSON; NULL (and err set) unless it is
 * exactly one valid value. */
static cJSON *parse_value(const source *s, const char *p, const char *end) {
    const char *stop = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &stop, 0);
    if (v && stop == end) return v;
    const char *at = v ? stop : cJSON_GetErrorPtr();
    cJSON_Delete(v);
    fail_at(s, at && at >= p && at <= end ? at : p, "not valid JSON");
    return NULL;
}

/* Append the legacy result object of one place, as places_json_pretty()
 * prints it at depth 2: geometry.location from the coordinates, then the
 * properties but "geometry" in file order, then "types" and "vicinity"
 * when the file has none. */
static void render_place(const cJSON *props, double lat, double lng, buf_t *out) {
    buf_append_str(out, "{\n");
    indent(out, 3);
    buf_append_str(out, "\"geometry\" : {\n");
    indent(out, 4);
    buf_append_str(out, "\"location\" : {\n");
    indent(out, 5);
    buf_append_str(out, "\"lat\" : ");
    put_number(out, lat);
    buf_append_str(out, ",\n");
    indent(out, 5);
    buf_append_str(out, "\"lng\" : ");
    put_number(out, lng);
    buf_append_char(out, '\n');
    indent(out, 4);
    buf_append_str(out, "}\n");
    indent(out, 3);
    buf_append_char(out, '}');
    for (const cJSON *p = props->child; p; p = p->next) {
        if (!strcmp(p->string, "geometry")) continue;
        buf_append_str(out, ",\n");
        indent(out, 3);
        put_string(out, p->string);
        buf_append_str(out, " : ");
        places_json_pretty(p, 3, out);
    }
    if (!cJSON_GetObjectItemCaseSensitive(props, "types")) {
        buf_append_str(out, ",\n");
        indent(out, 3);
        buf_append_str(out, "\"types\" : []");
    }
    if (!cJSON_GetObjectItemCaseSensitive(props, "vicinity")) {
        buf_append_str(out, ",\n");
        indent(out, 3);
        buf_append_str(out, "\"vicinity\" : \"\"");
    }
    buf_append_char(out, '\n');
    indent(out, 2);
    buf_append_char(out, '}');
}

/* Check one feature and render its result into 'text'; NULL, or a reason. */
static const char *feature_to_place(const cJSON *feat, place *pl, buf_t *text) {
    const cJSON *geom = cJSON_GetObjectItemCaseSensitive(feat, "geometry");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(feat, "properties");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(geom, "type");
    const cJSON *coords = cJSON_GetObjectItemCaseSensitive(geom, "coordinates");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "Point"))
        return "geometry is not a Point";
    if (!cJSON_IsArray(coords) || cJSON_GetArraySize(coords) < 2 ||
        !cJSON_IsNumber(cJSON_GetArrayItem(coords, 0)) ||
        !cJSON_IsNumber(cJSON_GetArrayItem(coords, 1)))
        return "coordinates must be [longitude, latitude]";
    pl->lng = cJSON_GetArrayItem(coords, 0)->valuedouble;
    pl->lat = cJSON_GetArrayItem(coords, 1)->valuedouble;
    if (fabs(pl->lat) > 90 || fabs(pl->lng) > 180) return "coordinates out of range";
    if (!cJSON_IsObject(props) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(props, "name")))
        return "properties.name is missing";
    unit_vector(pl->lat, pl->lng, pl->u);
    size_t at = text->len;
    render_place(props, pl->lat, pl->lng, text);
    pl->json_off = at;
    pl->json_len = text->len - at;
    return NULL;
}

/* The "features" array starting at p ('['): every element becomes a place.
 * Returns the end of the array, or NULL with err set. */
static const char *load_features(places_local *pl, const source *s, const char *p,
                                 buf_t *text, size_t *cap) {
    p = skip_ws(p + 1, s->end);
    if (p < s->end && *p == ']') return p + 1;
    for (size_t i = 1;; i++) {
        p = skip_ws(p, s->end);
        const char *vend = value_end(p, s->end);
        if (!vend) return fail_at(s, s->end, "not valid JSON"), NULL;
        cJSON *feat = parse_value(s, p, vend);
        if (!feat) return NULL;
        if (pl->n == *cap) {
            *cap = *cap ? *cap * 2 : 1024;
            pl->v = xrealloc(pl->v, *cap * sizeof *pl->v);
        }
        const char *why = feature_to_place(feat, &pl->v[pl->n], text);
        cJSON_Delete(feat);
        if (why) {
            char what[128];
            snprintf(what, sizeof what, "feature %zu: %s", i, why);
            return fail_at(s, p, what), NULL;
        }
        if (++pl->n % PROGRESS_EVERY == 0) places_progress();
        p = skip_ws(vend, s->end);
        if (p < s->end && *p == ']') return p + 1;
        if (p >= s->end || *p != ',') return fail_at(s, p, "not valid JSON"), NULL;
        p++;
    }
}

/* One "key" : value member of the top-level object at p: the first
 * "features" array is loaded, any other value only checked.  Returns the
 * end of the member, or NULL with err set. */
static const char *load_member(places_local *pl, const source *s, const char *p,
                               buf_t *text, size_t *cap, int *found) {
    const char *kend = p < s->end && *p == '"' ? string_end(p, s->end) : NULL;
    cJSON *key = kend ? parse_value(s, p, kend) : NULL;
    if (!key) return kend ? NULL : (fail_at(s, p, "not valid JSON"), NULL);
    int features = !*found && !strcmp(key->valuestring, "features");
    cJSON_Delete(key);
    p = skip_ws(kend, s->end);
    if (p >= s->end || *p != ':') return fail_at(s, p, "not valid JSON"), NULL;
    p = skip_ws(p + 1, s->end);
    if (features && p < s->end && *p == '[') {
        *found = 1;
        return load_features(pl, s, p, text, cap);
    }
    const char *vend = value_end(p, s->end);
    cJSON *v = vend ? parse_value(s, p, vend) : NULL;
    if (!v) return vend ? NULL : (fail_at(s, s->end, "not valid JSON"), NULL);
    cJSON_Delete(v);
    return vend;
}

static int load_collection(places_local *pl, const source *s, buf_t *text) {
    const char *p = s->base;
    size_t cap = 0;
    int found = 0;
    if (s->end - p >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3;
    p = skip_ws(p, s->end);
    if (p < s->end && *p == '{') {
        p = skip_ws(p + 1, s->end);
        if (p < s->end && *p == '}') goto done;
        for (;;) {
            if (!(p = load_member(pl, s, p, text, &cap, &found))) return -1;
            p = skip_ws(p, s->end);
            if (p < s->end && *p == '}') break;
            if (p >= s->end || *p != ',') return fail_at(s, p, "not valid JSON");
            p = skip_ws(p + 1, s->end);
        }
    } else {
        const char *vend = value_end(p, s->end);
        cJSON *v = vend ? parse_value(s, p, vend) : NULL;
        if (!v) return vend ? -1 : fail_at(s, s->end, "not valid JSON");
        cJSON_Delete(v);
    }
done:
    if (!found) {
        snprintf(s->err, s->errlen,
                 "%s: expected a GeoJSON FeatureCollection with a \"features\" list", s->path);
        return -1;
    }
    return 0;
}

/* Map the file; NULL with a reason in err. */
static const char *map_file(const char *path, size_t *len, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    const char *data = NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
    } else if (st.st_size > (off_t)PLACES_MAX_FILE) {
        snprintf(err, errlen, "%s: too large (at most %u MiB)", path, PLACES_MAX_FILE >> 20);
    } else if (st.st_size == 0) {
        data = "";
    } else {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        else
            data = m;
        if (data) madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
    }
    *len = data ? (size_t)st.st_size : 0;
    close(fd);
    return data;
}

/* Keep the text and the places at their size, and index them. */
static void finish_load(places_local *pl, buf_t *text) {
    pl->text = xrealloc(text->p, text->len);
    pl->v = xrealloc(pl->v, pl->n * sizeof *pl->v);
    placesidx_node *nodes = xcalloc(pl->n, sizeof *nodes);    /* padding zeroed: a cache writes it */
    for (size_t i = 0; i < pl->n; i++) {
        memcpy(nodes[i].u, pl->v[i].u, sizeof nodes[i].u);
        nodes[i].id = (uint32_t)i;
    }
    placesidx_build(&pl->idx, nodes, pl->n);
}

void places_set_progress(void (*fn)(void *), void *arg) {
    progress.fn = fn;
    progress.arg = arg;
}

void places_progress(void) {
    if (progress.fn) progress.fn(progress.arg);
}

int places_local_load(places_local *pl, const char *path, char *err, size_t errlen) {
    memset(pl, 0, sizeof *pl);
    size_t len;
    const char *data = map_file(path, &len, err, errlen);
    if (!data) return -1;
    source s = {data, data + len, path, err, errlen};
    buf_t text = {0};
    int rc = load_collection(pl, &s, &text);
    if (len) munmap((void *)data, len);
    if (rc < 0) {
        buf_free(&text);
        places_local_free(pl);
        return -1;
    }
    finish_load(pl, &text);
    return 0;
}

void places_local_free(places_local *pl) {
    if (pl->map) {
        munmap(pl->map, pl->map_len);
        memset(pl, 0, sizeof *pl);
        return;
    }
    free(pl->v);
    free(pl->text);
    placesidx_free(&pl->idx);
    memset(pl, 0, sizeof *pl);
}
