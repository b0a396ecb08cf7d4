/* places.h -- the places JSON a WHATSAT reply carries.
 *
 * The reply is the legacy Nearby Search shape, pretty-printed the way
 * Google's own legacy API prints it (three-space indent, "key" : value), with
 * no empty line and no trailing LF:
 *
 *   {
 *      "html_attributions" : [],
 *      "results" : [ ...at most bound places, nearest first... ],
 *      "status" : "OK"
 *   }
 *
 * The 'local' provider reads a GeoJSON FeatureCollection of Point places at
 * start, renders each place's JSON once and indexes the places in a k-d
 * tree (placesidx.h); a query walks a few branches of the tree, then a few
 * memcpy()s.
 */
#ifndef HERD_PLACES_H
#define HERD_PLACES_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "buf.h"
#include "placesidx.h"

typedef struct {
    double lat, lng;
    double u[3];                /* unit vector: distances without trigonometry */
    size_t json_off, json_len;  /* the rendered result object, indented, in text */
} place;

typedef struct {
    place *v;                   /* in file order */
    size_t n;
    char *text;                 /* every place's JSON, one after the other */
    placesidx idx;
    void *map;                  /* non-NULL: v, text and idx point into this */
    size_t map_len;             /* read-only mapping of a cache (placescache.h) */
} places_local;

/* Read a GeoJSON file (at most 256 MiB) and index it.  Returns 0, or -1
 * with "FILE: reason" or "FILE:LINE: reason" in err. */
int places_local_load(places_local *pl, const char *path, char *err, size_t errlen);
void places_local_free(places_local *pl);

/* While a file loads, fn(arg) every few thousand places (fn NULL: none):
 * a reload on the server's loop keeps its heartbeat going through a large
 * file. */
void places_set_progress(void (*fn)(void *), void *arg);

/* fn(arg) now, if set: a long wait on the way to a load (the places
 * cache's lock) keeps the heartbeat going too. */
void places_progress(void);

/* Great-circle distance in km (haversine, mean Earth radius 6371.0088 km). */
double places_distance_km(double lat1, double lng1, double lat2, double lng2);

/* Indexes of the places within radius_km of (lat, lng), nearest first
 * (equal distances in file order), at most 'bound' of them (bound <= 20)
 * into idx.  Returns how many. */
int places_local_search(const places_local *pl, double lat, double lng,
                        double radius_km, int bound, size_t *idx);

/* The same answer from a scan of every place: the reference the index is
 * tested against. */
int places_local_search_scan(const places_local *pl, double lat, double lng,
                             double radius_km, int bound, size_t *idx);

/* Append the whole reply JSON for a local search to out.  Returns the
 * number of results. */
int places_local_render(const places_local *pl, double lat, double lng,
                         double radius_km, int bound, buf_t *out);

/* Append a reply JSON with no results, a status and an error_message. */
void places_render_error(buf_t *out, const char *status, const char *message);

/* Append 'v' pretty-printed at nesting depth 'depth' (no leading indent,
 * no trailing LF). */
void places_json_pretty(const cJSON *v, int depth, buf_t *out);

#endif
