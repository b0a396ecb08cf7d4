/* places.c -- the local places provider and the legacy JSON printer; see
 * places.h. */
#include "places.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "xalloc.h"

#define PLACES_MAX_FILE (256u << 20)
#define INDENT 3
#define EARTH_KM 6371.0088      /* mean radius */

/* ---------------------------------------------------------- JSON printer */

static void indent(buf_t *out, int depth) {
    buf_reserve(out, (size_t)depth * INDENT);
    memset(out->p + out->len, ' ', (size_t)depth * INDENT);
    out->len += (size_t)depth * INDENT;
}

static void put_string(buf_t *out, const char *s) {
    static const char hex[] = "0123456789abcdef";
    buf_append_char(out, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            buf_append_char(out, '\\');
            buf_append_char(out, (char)*p);
        } else if (*p < 0x20 || *p == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            buf_append(out, e, 6);
        } else {
            buf_append_char(out, (char)*p);
        }
    }
    buf_append_char(out, '"');
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

static void unit_vector(double lat, double lng, double *x, double *y, double *z) {
    const double rad = M_PI / 180.0;
    double cl = cos(lat * rad);
    *x = cl * cos(lng * rad);
    *y = cl * sin(lng * rad);
    *z = sin(lat * rad);
}

/* Places are ranked by the squared chord between unit vectors, which grows
 * with the great-circle distance, so a query costs one sin/cos set and no
 * trigonometry per place (the haversine per place was 18% of a WHATSAT). */
int places_local_search(const places_local *pl, double lat, double lng,
                        double radius_km, int bound, size_t *idx) {
    double dist[32], qx, qy, qz;
    int n = 0;
    if (bound > 20) bound = 20;
    unit_vector(lat, lng, &qx, &qy, &qz);
    double angle = radius_km / EARTH_KM;
    if (angle > M_PI) angle = M_PI;
    double chord = 2 * sin(angle / 2), max2 = chord * chord * (1 + 1e-12);
    for (size_t i = 0; i < pl->n; i++) {
        const place *p = &pl->v[i];
        double dx = p->x - qx, dy = p->y - qy, dz = p->z - qz;
        double d = dx * dx + dy * dy + dz * dz;
        if (d > max2) continue;
        if (n == bound && d >= dist[n - 1]) continue;
        int k = n < bound ? n++ : n - 1;     /* insertion into a sorted top-k */
        while (k > 0 && dist[k - 1] > d) {
            dist[k] = dist[k - 1];
            idx[k] = idx[k - 1];
            k--;
        }
        dist[k] = d;
        idx[k] = i;
    }
    return n;
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
        buf_append(out, p->json, p->json_len);
        buf_append_str(out, i + 1 < n ? ",\n" : "\n");
    }
    indent(out, 1);
    buf_append_char(out, ']');
    render_tail(out, "OK");
    return n;
}

/* ------------------------------------------------------------ GeoJSON */

static char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) < 0 || st.st_size > (off_t)PLACES_MAX_FILE) {
        snprintf(err, errlen, "%s: too large (at most %u MiB)", path, PLACES_MAX_FILE >> 20);
        fclose(f);
        return NULL;
    }
    char *data = xmalloc((size_t)st.st_size + 1);
    *len = fread(data, 1, (size_t)st.st_size, f);
    data[*len] = '\0';
    fclose(f);
    return data;
}

/* Build the legacy result object for one feature; NULL with a reason. */
static cJSON *feature_to_result(const cJSON *feat, double *lat, double *lng,
                                const char **why) {
    const cJSON *geom = cJSON_GetObjectItemCaseSensitive(feat, "geometry");
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(feat, "properties");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(geom, "type");
    const cJSON *coords = cJSON_GetObjectItemCaseSensitive(geom, "coordinates");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "Point")) {
        *why = "geometry is not a Point";
        return NULL;
    }
    if (!cJSON_IsArray(coords) || cJSON_GetArraySize(coords) < 2 ||
        !cJSON_IsNumber(cJSON_GetArrayItem(coords, 0)) ||
        !cJSON_IsNumber(cJSON_GetArrayItem(coords, 1))) {
        *why = "coordinates must be [longitude, latitude]";
        return NULL;
    }
    *lng = cJSON_GetArrayItem(coords, 0)->valuedouble;
    *lat = cJSON_GetArrayItem(coords, 1)->valuedouble;
    if (fabs(*lat) > 90 || fabs(*lng) > 180) {
        *why = "coordinates out of range";
        return NULL;
    }
    if (!cJSON_IsObject(props) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(props, "name"))) {
        *why = "properties.name is missing";
        return NULL;
    }
    cJSON *r = cJSON_CreateObject();
    cJSON *g = cJSON_AddObjectToObject(r, "geometry");
    cJSON *loc = cJSON_AddObjectToObject(g, "location");
    cJSON_AddNumberToObject(loc, "lat", *lat);
    cJSON_AddNumberToObject(loc, "lng", *lng);
    for (const cJSON *p = props->child; p; p = p->next)
        if (strcmp(p->string, "geometry"))
            cJSON_AddItemToObject(r, p->string, cJSON_Duplicate(p, 1));
    if (!cJSON_GetObjectItemCaseSensitive(r, "types"))
        cJSON_AddItemToObject(r, "types", cJSON_CreateArray());
    if (!cJSON_GetObjectItemCaseSensitive(r, "vicinity"))
        cJSON_AddStringToObject(r, "vicinity", "");
    return r;
}

int places_local_load(places_local *pl, const char *path, char *err, size_t errlen) {
    memset(pl, 0, sizeof *pl);
    size_t len;
    char *data = read_file(path, &len, err, errlen);
    if (!data) return -1;
    cJSON *root = cJSON_ParseWithLength(data, len);
    free(data);
    if (!root) {
        snprintf(err, errlen, "%s: not valid JSON", path);
        return -1;
    }
    int rc = -1;
    const cJSON *feats = cJSON_GetObjectItemCaseSensitive(root, "features");
    if (!cJSON_IsArray(feats)) {
        snprintf(err, errlen, "%s: expected a GeoJSON FeatureCollection with a \"features\" list", path);
        goto out;
    }
    pl->v = xcalloc((size_t)cJSON_GetArraySize(feats) + 1, sizeof *pl->v);
    int i = 0;
    for (const cJSON *f = feats->child; f; f = f->next, i++) {
        const char *why = NULL;
        place *p = &pl->v[pl->n];
        cJSON *r = feature_to_result(f, &p->lat, &p->lng, &why);
        if (!r) {
            snprintf(err, errlen, "%s: feature %d: %s", path, i + 1, why);
            places_local_free(pl);
            goto out;
        }
        unit_vector(p->lat, p->lng, &p->x, &p->y, &p->z);
        buf_t b = {0};
        places_json_pretty(r, 2, &b);
        cJSON_Delete(r);
        p->json = b.p;
        p->json_len = b.len;
        pl->n++;
    }
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

void places_local_free(places_local *pl) {
    for (size_t i = 0; i < pl->n; i++) free(pl->v[i].json);
    free(pl->v);
    memset(pl, 0, sizeof *pl);
}
