/* google.c -- the google and google-legacy providers; see google.h.
 *
 * Places API (New):  POST {base}/v1/places:searchNearby with the key in
 *   X-Goog-Api-Key, a field mask naming only the fields the legacy shape
 *   needs (the mask decides what Google bills), and a body with
 *   locationRestriction.circle (metres) and maxResultCount = bound.
 * Legacy:  GET {base}/maps/api/place/nearbysearch/json?location=LAT,LNG
 *   &radius=METRES&key=KEY, results trimmed to bound.
 * Every answer is printed in the legacy shape by places_json_pretty().
 */
#include "google.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "xalloc.h"

#define NEW_FIELD_MASK                                                           \
    "places.id,places.displayName,places.shortFormattedAddress,places.types,"    \
    "places.location,places.rating,places.userRatingCount,places.businessStatus," \
    "places.priceLevel,places.currentOpeningHours.openNow"
#define CACHE_BUCKETS 16384

typedef struct waiter {
    client *c;
    char *at;                   /* the AT line at the time of the command */
    size_t at_len;
    struct waiter *next;
} waiter;

typedef struct upstream {
    struct upstream *next;      /* in flight */
    char *key;                  /* the question, without the API key */
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    buf_t resp;
    int too_large;
    size_t max;                 /* places.max_response_bytes */
    int bound;
    int64_t start_ms;
    waiter *waiters;
    char errbuf[CURL_ERROR_SIZE];
} upstream;

typedef struct centry {
    struct centry *hnext, *newer, *older;
    char *key;
    char *json;
    size_t json_len;
    int results;
    int64_t expires_ms;
} centry;

struct google {
    server *s;
    upstream *inflight;
    centry *buckets[CACHE_BUCKETS];
    centry *oldest, *newest;
    size_t count;
    char base[1024];
};

/* ----------------------------------------------------------------- cache */

static size_t key_hash(const char *k) {
    size_t h = 1469598103934665603ULL;
    for (; *k; k++) h = (h ^ (unsigned char)*k) * 1099511628211ULL;
    return h & (CACHE_BUCKETS - 1);
}

static void cache_unlink(struct google *g, centry *e) {
    centry **pp = &g->buckets[key_hash(e->key)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->older) e->older->newer = e->newer; else g->oldest = e->newer;
    if (e->newer) e->newer->older = e->older; else g->newest = e->older;
    free(e->key);
    free(e->json);
    free(e);
    g->count--;
}

static centry *cache_get(struct google *g, const char *key, int64_t now) {
    for (centry *e = g->buckets[key_hash(key)]; e; e = e->hnext) {
        if (strcmp(e->key, key)) continue;
        if (now < e->expires_ms) return e;
        cache_unlink(g, e);
        return NULL;
    }
    return NULL;
}

static void cache_put(struct google *g, const char *key, const char *json, size_t len,
                      int results) {
    const config_places *p = &g->s->cfg->places;
    if (p->cache_ttl_s <= 0 || p->cache_max_entries <= 0) return;
    int64_t now = mono_ms();
    centry *old = cache_get(g, key, now);
    if (old) cache_unlink(g, old);
    while (g->count >= (size_t)p->cache_max_entries) cache_unlink(g, g->oldest);
    centry *e = xcalloc(1, sizeof *e);
    e->key = strdup(key);
    e->json = xmalloc(len + 1);
    memcpy(e->json, json, len);
    e->json[len] = '\0';
    e->json_len = len;
    e->results = results;
    e->expires_ms = now + (int64_t)p->cache_ttl_s * 1000;
    size_t b = key_hash(key);
    e->hnext = g->buckets[b];
    g->buckets[b] = e;
    e->older = g->newest;
    if (g->newest) g->newest->newer = e; else g->oldest = e;
    g->newest = e;
    g->count++;
}

/* --------------------------------------------------------------- replies */

static void log_send(server *s, client *c, const char *at, size_t at_len, size_t json_len,
                     int results, const char *status, const char *how) {
    if (!s->cfg->logging.log_lines) return;
    char prefix[48], suffix[160];
    snprintf(prefix, sizeof prefix, "id=%llu ", (unsigned long long)c->id);
    snprintf(suffix, sizeof suffix, " json_bytes=%zu results=%d status=%s source=%s",
             json_len, results, status, how);
    log_data(LOG_INFO, "send", prefix, at, at_len, suffix);
}

static void append_reply(client *c, const char *at, size_t at_len, const char *json,
                         size_t json_len) {
    buf_reserve(&c->out, at_len + json_len + 3);
    buf_append(&c->out, at, at_len);
    buf_append_char(&c->out, '\n');
    buf_append(&c->out, json, json_len);
    buf_append(&c->out, "\n\n", 2);
}

/* ------------------------------------------------------------- mapping */

static const char *legacy_status(const char *new_status, long http_code) {
    if (new_status) {
        if (!strcmp(new_status, "PERMISSION_DENIED") || !strcmp(new_status, "UNAUTHENTICATED"))
            return "REQUEST_DENIED";
        if (!strcmp(new_status, "RESOURCE_EXHAUSTED")) return "OVER_QUERY_LIMIT";
        if (!strcmp(new_status, "INVALID_ARGUMENT")) return "INVALID_REQUEST";
    }
    if (http_code == 401 || http_code == 403) return "REQUEST_DENIED";
    if (http_code == 429) return "OVER_QUERY_LIMIT";
    if (http_code == 400) return "INVALID_REQUEST";
    return "UNKNOWN_ERROR";
}

static int price_level(const char *s) {
    static const char *names[] = {"PRICE_LEVEL_FREE", "PRICE_LEVEL_INEXPENSIVE",
                                  "PRICE_LEVEL_MODERATE", "PRICE_LEVEL_EXPENSIVE",
                                  "PRICE_LEVEL_VERY_EXPENSIVE"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

/* One Places API (New) place as a legacy result, keys in Google's order. */
static cJSON *map_place(const cJSON *p) {
    cJSON *r = cJSON_CreateObject();
    const cJSON *v;
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(p, "businessStatus")))
        cJSON_AddStringToObject(r, "business_status", v->valuestring);
    const cJSON *loc = cJSON_GetObjectItemCaseSensitive(p, "location");
    cJSON *g = cJSON_AddObjectToObject(r, "geometry");
    cJSON *gl = cJSON_AddObjectToObject(g, "location");
    v = cJSON_GetObjectItemCaseSensitive(loc, "latitude");
    cJSON_AddNumberToObject(gl, "lat", cJSON_IsNumber(v) ? v->valuedouble : 0);
    v = cJSON_GetObjectItemCaseSensitive(loc, "longitude");
    cJSON_AddNumberToObject(gl, "lng", cJSON_IsNumber(v) ? v->valuedouble : 0);
    v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "displayName"), "text");
    cJSON_AddStringToObject(r, "name", cJSON_IsString(v) ? v->valuestring : "");
    v = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(p, "currentOpeningHours"), "openNow");
    if (cJSON_IsBool(v))
        cJSON_AddBoolToObject(cJSON_AddObjectToObject(r, "opening_hours"), "open_now",
                              cJSON_IsTrue(v));
    v = cJSON_GetObjectItemCaseSensitive(p, "id");
    cJSON_AddStringToObject(r, "place_id", cJSON_IsString(v) ? v->valuestring : "");
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(p, "priceLevel")) &&
        price_level(v->valuestring) >= 0)
        cJSON_AddNumberToObject(r, "price_level", price_level(v->valuestring));
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(p, "rating")))
        cJSON_AddNumberToObject(r, "rating", v->valuedouble);
    v = cJSON_GetObjectItemCaseSensitive(p, "types");
    cJSON_AddItemToObject(r, "types", cJSON_IsArray(v) ? cJSON_Duplicate(v, 1) : cJSON_CreateArray());
    if (cJSON_IsNumber(v = cJSON_GetObjectItemCaseSensitive(p, "userRatingCount")))
        cJSON_AddNumberToObject(r, "user_ratings_total", v->valuedouble);
    v = cJSON_GetObjectItemCaseSensitive(p, "shortFormattedAddress");
    if (!cJSON_IsString(v)) v = cJSON_GetObjectItemCaseSensitive(p, "formattedAddress");
    cJSON_AddStringToObject(r, "vicinity", cJSON_IsString(v) ? v->valuestring : "");
    return r;
}

/* {"html_attributions": attrs, "results": results, "status": ...} printed. */
static char *render_doc(cJSON *attrs, cJSON *results, int *n) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddItemToObject(doc, "html_attributions", attrs ? attrs : cJSON_CreateArray());
    cJSON_AddItemToObject(doc, "results", results);
    *n = cJSON_GetArraySize(results);
    cJSON_AddStringToObject(doc, "status", *n ? "OK" : "ZERO_RESULTS");
    buf_t b = {0};
    places_json_pretty(doc, 0, &b);
    buf_append_char(&b, '\0');
    cJSON_Delete(doc);
    return b.p;
}

char *google_map_new_answer(const char *answer, size_t len, int bound, int *results) {
    cJSON *root = cJSON_ParseWithLength(answer, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return NULL;
    }
    const cJSON *places = cJSON_GetObjectItemCaseSensitive(root, "places");
    if (places && !cJSON_IsArray(places)) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON *out = cJSON_CreateArray();
    int i = 0;
    for (const cJSON *p = places ? places->child : NULL; p && i < bound; p = p->next, i++)
        cJSON_AddItemToArray(out, map_place(p));
    cJSON_Delete(root);
    return render_doc(NULL, out, results);
}

/* The legacy API's answer: status passed on, results trimmed to bound. */
static char *map_legacy_answer(cJSON *root, int bound, int *results, const char **status,
                               const char **message) {
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "status");
    cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "results");
    if (!cJSON_IsString(st)) {
        *status = "UNKNOWN_ERROR";
        *message = "upstream answer has no status";
        return NULL;
    }
    if (strcmp(st->valuestring, "OK") && strcmp(st->valuestring, "ZERO_RESULTS")) {
        static const char *known[] = {"REQUEST_DENIED", "OVER_QUERY_LIMIT", "INVALID_REQUEST"};
        *status = "UNKNOWN_ERROR";
        for (int i = 0; i < 3; i++)
            if (!strcmp(st->valuestring, known[i])) *status = known[i];
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "error_message");
        *message = cJSON_IsString(m) ? m->valuestring : st->valuestring;
        return NULL;
    }
    if (res && !cJSON_IsArray(res)) {
        *status = "UNKNOWN_ERROR";
        *message = "upstream results are not a list";
        return NULL;
    }
    cJSON *out = res ? cJSON_DetachItemFromObjectCaseSensitive(root, "results")
                     : cJSON_CreateArray();
    while (cJSON_GetArraySize(out) > bound) cJSON_DeleteItemFromArray(out, bound);
    cJSON *attrs = cJSON_DetachItemFromObjectCaseSensitive(root, "html_attributions");
    if (attrs && !cJSON_IsArray(attrs)) {
        cJSON_Delete(attrs);
        attrs = NULL;
    }
    return render_doc(attrs, out, results);
}

#define ERROR_TEXT_MAX 511      /* bytes of an error text a reply shows */

/* Replace every copy of the key in msg (it must never be shown). */
static void scrub(char *msg, const char *key) {
    size_t k = strlen(key);
    if (!k) return;
    for (char *p = strstr(msg, key); p; p = strstr(p, key)) {
        memset(p, '*', k);
        p += k;
    }
}

/* The error text as a reply may show it: the key scrubbed, raw and
 * URL-escaped (as in a legacy request's URL), from the whole text, and only
 * then cut to ERROR_TEXT_MAX bytes (at a UTF-8 boundary), so no part of a
 * key that straddles the cut survives.  NUL-terminates m. */
static void error_text(buf_t *m, CURL *easy, const char *key) {
    buf_append_char(m, '\0');
    scrub(m->p, key);
    char *esc = key[0] ? curl_easy_escape(easy, key, 0) : NULL;
    if (esc) scrub(m->p, esc);
    curl_free(esc);
    size_t n = strlen(m->p);
    if (n > ERROR_TEXT_MAX) {
        n = ERROR_TEXT_MAX;
        while (n && ((unsigned char)m->p[n] & 0xC0) == 0x80) n--;
        m->p[n] = '\0';
    }
}

/* --------------------------------------------------------------- requests */

static size_t on_body(char *data, size_t size, size_t n, void *arg) {
    upstream *u = arg;
    size_t len = size * n;
    if (u->resp.len + len > u->max) {
        u->too_large = 1;
        return 0;                 /* libcurl stops with CURLE_WRITE_ERROR */
    }
    buf_append(&u->resp, data, len);
    return len;
}

static void upstream_free(upstream *u) {
    for (waiter *w = u->waiters, *next; w; w = next) {
        next = w->next;
        free(w->at);
        free(w);
    }
    if (u->easy) curl_easy_cleanup(u->easy);
    curl_slist_free_all(u->headers);
    free(u->body);
    free(u->key);
    buf_free(&u->resp);
    free(u);
}

/* The question without the key, which also names the request. */
static void make_key(const server *s, double lat, double lng, const proto_whatsat *ws,
                     char *key, size_t n) {
    snprintf(key, n, "%s %.7f,%.7f r=%.17g b=%d", config_provider_name(s->cfg->places.provider),
             lat, lng, ws->radius_km * 1000.0, ws->bound);
}

static upstream *start_request(server *s, const char *key, double lat, double lng,
                               const proto_whatsat *ws) {
    struct google *g = s->google;
    const config_places *p = &s->cfg->places;
    upstream *u = xcalloc(1, sizeof *u);
    u->key = strdup(key);
    u->bound = ws->bound;
    u->max = p->max_response_bytes;
    u->start_ms = mono_ms();
    u->easy = curl_easy_init();
    if (!u->easy) {
        upstream_free(u);
        return NULL;
    }
    char url[2048], metres[64];
    snprintf(metres, sizeof metres, "%.17g", ws->radius_km * 1000.0);
    if (p->provider == PLACES_GOOGLE) {
        snprintf(url, sizeof url, "%s/v1/places:searchNearby", g->base);
        char body[512];
        snprintf(body, sizeof body,
                 "{\"maxResultCount\": %d, \"locationRestriction\": {\"circle\": "
                 "{\"center\": {\"latitude\": %.7f, \"longitude\": %.7f}, \"radius\": %s}}}",
                 ws->bound, lat, lng, metres);
        u->body = strdup(body);
        char hdr[700];
        u->headers = curl_slist_append(u->headers, "Content-Type: application/json");
        snprintf(hdr, sizeof hdr, "X-Goog-Api-Key: %s", p->api_key);
        u->headers = curl_slist_append(u->headers, hdr);
        u->headers = curl_slist_append(u->headers, "X-Goog-FieldMask: " NEW_FIELD_MASK);
        curl_easy_setopt(u->easy, CURLOPT_POSTFIELDS, u->body);
        curl_easy_setopt(u->easy, CURLOPT_HTTPHEADER, u->headers);
    } else {
        char *k = curl_easy_escape(u->easy, p->api_key, 0);
        snprintf(url, sizeof url, "%s/maps/api/place/nearbysearch/json?location=%.7f%%2C%.7f"
                 "&radius=%s&key=%s", g->base, lat, lng, metres, k ? k : "");
        curl_free(k);
    }
    curl_easy_setopt(u->easy, CURLOPT_URL, url);
    curl_easy_setopt(u->easy, CURLOPT_PRIVATE, u);
    curl_easy_setopt(u->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(u->easy, CURLOPT_WRITEDATA, u);
    curl_easy_setopt(u->easy, CURLOPT_ERRORBUFFER, u->errbuf);
    curl_easy_setopt(u->easy, CURLOPT_TIMEOUT_MS, (long)p->timeout_ms);
    curl_easy_setopt(u->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(u->easy, CURLOPT_USERAGENT, "proxyherd/1");
    curl_easy_setopt(u->easy, CURLOPT_ACCEPT_ENCODING, "");
    if (http_add(&s->http, u->easy) < 0) {
        upstream_free(u);
        return NULL;
    }
    u->next = g->inflight;
    g->inflight = u;
    return u;
}

static void add_waiter(upstream *u, client *c, const table_entry *e) {
    waiter *w = xcalloc(1, sizeof *w);
    w->c = c;
    w->at = xmalloc(e->line_len);
    memcpy(w->at, e->line, e->line_len);
    w->at_len = e->line_len;
    waiter **pp = &u->waiters;       /* keep arrival order */
    while (*pp) pp = &(*pp)->next;
    *pp = w;
    c->waiting = 1;
}

int google_whatsat(server *s, client *c, const table_entry *e, const proto_whatsat *ws) {
    struct google *g = s->google;
    char key[256];
    double lat, lng;
    table_entry_latlng(e, &lat, &lng);
    make_key(s, lat, lng, ws, key, sizeof key);
    centry *hit = cache_get(g, key, mono_ms());
    if (hit) {
        s->metrics.upstream_cache_hits++;
        append_reply(c, e->line, e->line_len, hit->json, hit->json_len);
        log_send(s, c, e->line, e->line_len, hit->json_len, hit->results,
                 hit->results ? "OK" : "ZERO_RESULTS", "cache");
        return 0;
    }
    for (upstream *u = g->inflight; u; u = u->next)
        if (!strcmp(u->key, key)) {
            add_waiter(u, c, e);
            return 1;
        }
    upstream *u = start_request(s, key, lat, lng, ws);
    if (!u) {
        buf_t b = {0};
        places_render_error(&b, "UNKNOWN_ERROR", "cannot start the upstream request");
        append_reply(c, e->line, e->line_len, b.p, b.len);
        log_send(s, c, e->line, e->line_len, b.len, 0, "UNKNOWN_ERROR", "error");
        buf_free(&b);
        return 0;
    }
    add_waiter(u, c, e);
    return 1;
}

void google_detach(server *s, client *c) {
    if (!s->google) return;
    for (upstream *u = s->google->inflight; u; u = u->next)
        for (waiter **pp = &u->waiters; *pp;) {
            waiter *w = *pp;
            if (w->c != c) {
                pp = &w->next;
                continue;
            }
            *pp = w->next;
            free(w->at);
            free(w);
        }
    c->waiting = 0;
}

/* Turn a finished transfer into the reply JSON (malloc'ed, NUL-terminated). */
static char *answer_json(server *s, upstream *u, CURLcode rc, long code, const char **status,
                         int *results) {
    const config_places *p = &s->cfg->places;
    buf_t msg = {0};            /* the error text, whole until scrubbed */
    const char *message = NULL;
    char *json = NULL;
    *results = 0;
    *status = "UNKNOWN_ERROR";
    if (rc != CURLE_OK) {
        if (u->too_large)
            buf_printf(&msg, "upstream answer larger than %zu bytes", u->max);
        else if (rc == CURLE_OPERATION_TIMEDOUT)
            buf_printf(&msg, "upstream timed out after %d ms", p->timeout_ms);
        else
            buf_printf(&msg, "upstream request failed: %s",
                       u->errbuf[0] ? u->errbuf : curl_easy_strerror(rc));
    } else {
        cJSON *root = cJSON_ParseWithLength(u->resp.p ? u->resp.p : "", u->resp.len);
        if (!cJSON_IsObject(root)) {
            *status = legacy_status(NULL, code);
            if (code >= 300) buf_printf(&msg, "upstream answered HTTP %ld", code);
            else buf_printf(&msg, "upstream answer is not valid JSON");
        } else if (p->provider == PLACES_GOOGLE) {
            const cJSON *err = cJSON_GetObjectItemCaseSensitive(root, "error");
            if (err || code != 200) {
                const cJSON *st = cJSON_GetObjectItemCaseSensitive(err, "status");
                const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
                *status = legacy_status(cJSON_IsString(st) ? st->valuestring : NULL, code);
                buf_printf(&msg, "upstream answered HTTP %ld: %s", code,
                           cJSON_IsString(m) ? m->valuestring : "no message");
            } else {
                json = google_map_new_answer(u->resp.p, u->resp.len, u->bound, results);
                if (json) *status = *results ? "OK" : "ZERO_RESULTS";
                else buf_printf(&msg, "upstream answer has no places list");
            }
        } else {
            json = map_legacy_answer(root, u->bound, results, status, &message);
            if (!json) buf_printf(&msg, "%s", message);
            else *status = *results ? "OK" : "ZERO_RESULTS";
        }
        cJSON_Delete(root);
    }
    if (!json) {
        error_text(&msg, u->easy, p->api_key);
        buf_t b = {0};
        places_render_error(&b, *status, msg.p);
        buf_append_char(&b, '\0');
        json = b.p;
    }
    buf_free(&msg);
    return json;
}

static void on_done(CURL *easy, CURLcode rc, void *arg) {
    server *s = arg;
    struct google *g = s->google;
    upstream *u = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&u);
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    for (upstream **pp = &g->inflight; *pp; pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            break;
        }
    const char *status;
    int results, waiters = 0;
    char *json = answer_json(s, u, rc, code, &status, &results);
    size_t json_len = strlen(json);
    for (waiter *w = u->waiters; w; w = w->next) waiters++;
    log_msg(rc == CURLE_OK && code == 200 ? LOG_INFO : LOG_WARN, "upstream",
            "provider=%s http=%ld ms=%lld status=%s results=%d waiters=%d bytes=%zu",
            config_provider_name(s->cfg->places.provider), code,
            (long long)(mono_ms() - u->start_ms), status, results, waiters, u->resp.len);
    metrics_upstream(&s->metrics, status);
    if (!strcmp(status, "OK") || !strcmp(status, "ZERO_RESULTS"))
        cache_put(g, u->key, json, json_len, results);
    waiter *list = u->waiters;
    u->waiters = NULL;
    for (waiter *w = list, *next; w; w = next) {
        next = w->next;
        client *c = w->c;
        append_reply(c, w->at, w->at_len, json, json_len);
        log_send(s, c, w->at, w->at_len, json_len, results, status, "upstream");
        c->waiting = 0;
        free(w->at);
        free(w);
        client_resume(s, c);
    }
    free(json);
    upstream_free(u);
}

int google_init(server *s, char *err, size_t errlen) {
    struct google *g = xcalloc(1, sizeof *g);
    g->s = s;
    const char *base = s->cfg->places.base_url;
    if (!base[0])
        base = s->cfg->places.provider == PLACES_GOOGLE ? "https://places.googleapis.com"
                                                        : "https://maps.googleapis.com";
    snprintf(g->base, sizeof g->base, "%s", base);
    size_t n = strlen(g->base);
    while (n && g->base[n - 1] == '/') g->base[--n] = '\0';
    s->google = g;
    if (http_init(&s->http, on_done, s) < 0) {
        snprintf(err, errlen, "cannot initialise libcurl");
        return -1;
    }
    return 0;
}

void google_free(server *s) {
    struct google *g = s->google;
    if (!g) return;
    for (upstream *u = g->inflight, *next; u; u = next) {
        next = u->next;
        curl_multi_remove_handle(s->http.multi, u->easy);
        upstream_free(u);
    }
    while (g->oldest) cache_unlink(g, g->oldest);
    http_free(&s->http);
    free(g);
    s->google = NULL;
}
