/* placescache.h -- the local places, prepared once per host and shared.
 *
 * Reading a large GeoJSON file costs seconds of CPU and its places
 * hundreds of MB in each server.  The first server that needs a file writes
 * what places_local_load() made of it (the place array, the k-d tree's
 * nodes and axes, the rendered text) into <state_dir>/places.cache; every
 * server then maps that file read-only and shared, so the servers of one
 * host hold one copy of the pages and load in a fraction of a second.
 *
 * The file: a header (magic, format version, this machine's byte order and
 * struct sizes, the places file's identity -- device, inode, size, mtime
 * and ctime to the ns (a file rewritten in place with its size and mtime
 * kept, cp -p or touch -r, still has a new ctime), its path as configured
 * -- the counts, each section's offset, a checksum of the whole) then the
 * sections.  Everything read from it is
 * checked before it is used (offsets and lengths against the layout and
 * the file's size, the checksum, every node id < n, every axis < 3, every
 * place's text within the text); a cache that fails is logged
 * ("places-cache result=ignored", WARN, with the reason) and rebuilt.  A
 * changed places file makes it stale: rebuilt.
 *
 * It is written to places.cache.tmp.PID and renamed into place, never
 * rewritten in place, so a server that maps the old one keeps a valid
 * mapping; one cache per state folder.  It is made mode 0400: a file
 * mapped shared that is truncated in place (`> places.cache`, cp over it)
 * kills every server that maps it with SIGBUS, so a user's write must
 * fail (root's still succeeds: remove it instead, it is rebuilt).
 * "Check, else build and write" runs under an flock() on
 * <state_dir>/places.lock, so the servers of a herd started at once build
 * it once; under that lock leftover temporary files (a writer that died)
 * are removed.  A server that does not get the lock in time reads the
 * file privately, into memory, as without a cache; so does one that
 * waited for the lock and finds no cache for its file after (the holder
 * could write none: no room, a folder in the way; or it died), at once,
 * rather than the herd's servers each reading the file and failing to
 * write it in turn.
 */
#ifndef HERD_PLACESCACHE_H
#define HERD_PLACESCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "places.h"

#define PLACES_CACHE_FILE "places.cache"
#define PLACES_CACHE_LOCK "places.lock"

/* The file's header; the sections follow at 64-byte boundaries: the place
 * array (n places), the tree's nodes (n), its axes (n bytes), the text. */
typedef struct {
    char magic[8];              /* "HERDPLC\n" */
    uint32_t version, order;    /* order: 0x01020304 as the writer stores it */
    uint32_t size_place, size_node, size_word, reserved;
    uint64_t dev, ino, size, mtime_s, mtime_ns;     /* the places file's identity */
    uint64_t ctime_s, ctime_ns;
    uint64_t n, text_len;
    uint64_t v_off, node_off, axis_off, text_off, total;
    uint64_t sum;               /* of the header (sum 0) and every section */
    char path[4096];            /* the places file as configured, NUL-terminated */
} places_cache_head;

/* How long a server waits for the lock at start (before it listens), and
 * a reload on the loop (its heartbeat going: places_progress()): the
 * holder is most likely building the cache for the same file, which is
 * then mapped at once; read privately instead, the file would block the
 * loop as long and cost the server its own copy of the places. */
#define PLACES_CACHE_WAIT_MS 30000
#define PLACES_CACHE_RELOAD_WAIT_MS 10000

/* Load the places file 'path' into pl through the cache in 'dir', waiting
 * at most wait_ms for the lock (0: only try).  Logs one "places-cache"
 * line with result=used, built or ignored (and a WARN line for a cache
 * that fails its checks).  Returns 0, or -1 with the places file's own
 * error in err (the cache's problems only cost time). */
int places_cache_load(places_local *pl, const char *path, const char *dir, int wait_ms,
                      char *err, size_t errlen);

/* The cache's checks alone: map 'file' for the places file 'path' into pl.
 * Returns 0, or -1 with the reason in why (pl untouched). */
int places_cache_map(places_local *pl, const char *file, const char *path, char *why,
                     size_t whylen);

/* Tests that damage a cache on purpose: set the checksum of the cache
 * image 'file' (its header's layout intact) to what its bytes now are, so
 * that the checks behind the checksum are reached. */
void places_cache_reseal(void *file);

#endif
