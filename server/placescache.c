/* placescache.c -- the places cache a host's servers share; see
 * placescache.h. */
#include "placescache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "folder.h"
#include "log.h"

#define CACHE_MAGIC "HERDPLC\n"
/* The format; bump it too when what places_local_load() makes of a file
 * changes (the rendered text, a place's fields, the tree): a cache holds
 * that, and an older build's cache would answer with it.  2: ctime. */
#define CACHE_VERSION 2u
#define CACHE_ORDER 0x01020304u     /* as this machine stores it */
#define CACHE_ALIGN 64
#define CACHE_TMP PLACES_CACHE_FILE ".tmp."
#define LOCK_POLL_MS 5
#define WHY_NONE "none yet"
#define WHY_STALE "stale: the places file changed"

/* ------------------------------------------------------------- checksum */

/* Four independent lanes of multiply-rotate over 8-byte words: it finds a
 * torn or flipped file (it is no defence against a forger: the folder is
 * the user's own) at about memory speed. */
static uint64_t mix(uint64_t h, uint64_t w) {
    h ^= w * 0x9E3779B97F4A7C15ull;
    h = (h << 31) | (h >> 33);
    return h * 0xC2B2AE3D27D4EB4Full;
}

static uint64_t checksum(uint64_t seed, const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t lane[4] = {seed, seed + 1, seed + 2, seed + 3}, w;
    for (; len >= 32; p += 32, len -= 32)
        for (int k = 0; k < 4; k++) {
            memcpy(&w, p + 8 * k, 8);
            lane[k] = mix(lane[k], w);
        }
    uint64_t h = mix(seed, len);
    for (int k = 0; k < 4; k++) h = mix(h, lane[k]);
    for (; len >= 8; p += 8, len -= 8) {
        memcpy(&w, p, 8);
        h = mix(h, w);
    }
    w = 0;
    memcpy(&w, p, len);
    return mix(h, w);
}

/* --------------------------------------------------------------- layout */

static uint64_t align_up(uint64_t x) {
    return (x + CACHE_ALIGN - 1) / CACHE_ALIGN * CACHE_ALIGN;
}

/* Where each section goes for n places and text_len bytes of text. */
static void layout(places_cache_head *h, uint64_t n, uint64_t text_len) {
    h->n = n;
    h->text_len = text_len;
    h->v_off = align_up(sizeof *h);
    h->node_off = align_up(h->v_off + n * sizeof(place));
    h->axis_off = align_up(h->node_off + n * sizeof(placesidx_node));
    h->text_off = align_up(h->axis_off + n);
    h->total = h->text_off + text_len;
}

static void identity(places_cache_head *h, const struct stat *src, const char *path) {
    h->dev = (uint64_t)src->st_dev;
    h->ino = (uint64_t)src->st_ino;
    h->size = (uint64_t)src->st_size;
    h->mtime_s = (uint64_t)src->st_mtim.tv_sec;
    h->mtime_ns = (uint64_t)src->st_mtim.tv_nsec;
    h->ctime_s = (uint64_t)src->st_ctim.tv_sec;
    h->ctime_ns = (uint64_t)src->st_ctim.tv_nsec;
    snprintf(h->path, sizeof h->path, "%s", path);
}

/* Over the header (its sum 0) and the sections, as a reader finds them in
 * the file and as a writer has them in memory. */
static uint64_t places_sum(const places_cache_head *h, const places_local *pl) {
    places_cache_head zero = *h;
    zero.sum = 0;
    uint64_t s = checksum(0, &zero, sizeof zero);
    s = checksum(s, pl->v, pl->n * sizeof(place));
    s = checksum(s, pl->idx.node, pl->n * sizeof(placesidx_node));
    s = checksum(s, pl->idx.axis, pl->n);
    return checksum(s, pl->text, h->text_len);
}

/* ----------------------------------------------------------------- read */

/* pl's arrays where a cache at 'base' (its header checked) holds them. */
static void sections(places_local *pl, char *base) {
    const places_cache_head *h = (const places_cache_head *)base;
    pl->v = (place *)(base + h->v_off);
    pl->n = h->n;
    pl->text = base + h->text_off;
    pl->idx = (placesidx){(placesidx_node *)(base + h->node_off),
                          (unsigned char *)(base + h->axis_off), h->n};
}

void places_cache_reseal(void *file) {
    places_local pl;
    sections(&pl, file);
    ((places_cache_head *)file)->sum = places_sum(file, &pl);
}

/* The header's own fields; NULL or why the file is not a cache to use. */
static const char *check_head(const places_cache_head *h, uint64_t file_len) {
    if (memcmp(h->magic, CACHE_MAGIC, sizeof h->magic)) return "not a places cache (magic)";
    if (h->version != CACHE_VERSION) return "another format version";
    if (h->order != CACHE_ORDER) return "another byte order";
    if (h->size_place != sizeof(place) || h->size_node != sizeof(placesidx_node) ||
        h->size_word != sizeof(size_t))
        return "another machine's struct sizes";
    if (!memchr(h->path, '\0', sizeof h->path)) return "path not terminated";
    if (h->n >= UINT32_MAX || h->text_len > UINT64_MAX / 4) return "counts out of range";
    places_cache_head want = *h;
    layout(&want, h->n, h->text_len);
    if (want.v_off != h->v_off || want.node_off != h->node_off ||
        want.axis_off != h->axis_off || want.text_off != h->text_off ||
        want.total != h->total)
        return "section offsets out of place";
    if (h->total != file_len) return "truncated or overlong (size differs from the header)";
    return NULL;
}

static int same_source(const places_cache_head *h, const struct stat *src, const char *path) {
    places_cache_head now;
    identity(&now, src, path);
    return h->dev == now.dev && h->ino == now.ino && h->size == now.size &&
           h->mtime_s == now.mtime_s && h->mtime_ns == now.mtime_ns &&
           h->ctime_s == now.ctime_s && h->ctime_ns == now.ctime_ns &&
           !strcmp(h->path, now.path);
}

/* Every id and offset the sections hold; NULL or why not. */
static const char *check_sections(const places_local *pl, size_t text_len) {
    for (size_t i = 0; i < pl->n; i++) {
        const place *p = &pl->v[i];
        if (p->json_off > text_len || p->json_len > text_len ||
            p->json_off + p->json_len > text_len)
            return "a place's text out of range";
        if (pl->idx.node[i].id >= pl->n) return "a node id out of range";
        if (pl->idx.axis[i] > 2) return "a node axis out of range";
    }
    return NULL;
}

static const char *map_checked(places_local *pl, int fd, const char *path,
                               char *why, size_t whylen) {
    struct stat st, src;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid())
        return "not a regular file of this user's";
    if ((uint64_t)st.st_size < sizeof(places_cache_head) || (uint64_t)st.st_size > SIZE_MAX / 2)
        return "truncated (shorter than its header)";
    if (stat(path, &src) < 0) return "the places file cannot be read";
    size_t len = (size_t)st.st_size;
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (m == MAP_FAILED) {
        snprintf(why, whylen, "cannot map: %s", strerror(errno));
        return why;
    }
    const places_cache_head *h = m;
    const char *bad = check_head(h, len);
    if (!bad && !same_source(h, &src, path)) bad = WHY_STALE;
    places_local got = {.map = m, .map_len = len};
    if (!bad) {                 /* the offsets are the layout's: within the file */
        sections(&got, m);
        if (places_sum(h, &got) != h->sum) bad = "checksum mismatch";
    }
    if (!bad) bad = check_sections(&got, h->text_len);
    if (bad) {
        munmap(m, len);
        return bad;
    }
    *pl = got;
    return NULL;
}

int places_cache_map(places_local *pl, const char *file, const char *path, char *why,
                     size_t whylen) {
    int fd = open(file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whylen, "%s", errno == ENOENT ? WHY_NONE : strerror(errno));
        return -1;
    }
    const char *bad = map_checked(pl, fd, path, why, whylen);
    close(fd);
    if (bad && bad != why) snprintf(why, whylen, "%s", bad);
    return bad ? -1 : 0;
}

/* ---------------------------------------------------------------- write */

static int put(int fd, const void *p, size_t len, uint64_t off) {
    for (const char *c = p; len;) {
        ssize_t k = pwrite(fd, c, len, (off_t)off);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c += k;
        len -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int write_sections(int fd, const places_cache_head *h, const places_local *pl) {
    if (ftruncate(fd, (off_t)h->total) < 0) return -1;      /* the gaps read as zeros */
    return put(fd, h, sizeof *h, 0) || put(fd, pl->v, pl->n * sizeof(place), h->v_off) ||
           put(fd, pl->idx.node, pl->n * sizeof(placesidx_node), h->node_off) ||
           put(fd, pl->idx.axis, pl->n, h->axis_off) ||
           put(fd, pl->text, h->text_len, h->text_off) ? -1 : 0;
}

/* Write pl as the cache 'file' (through FILE.tmp.PID, renamed); 0, or -1
 * with errno set. */
static int cache_write(const places_local *pl, const char *file, const struct stat *src,
                       const char *path) {
    places_cache_head h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CACHE_MAGIC, sizeof h.magic);
    h.version = CACHE_VERSION;
    h.order = CACHE_ORDER;
    h.size_place = sizeof(place);
    h.size_node = sizeof(placesidx_node);
    h.size_word = sizeof(size_t);
    identity(&h, src, path);
    /* the places' texts lie in file order, one after the other */
    size_t text_len = pl->n ? pl->v[pl->n - 1].json_off + pl->v[pl->n - 1].json_len : 0;
    layout(&h, pl->n, text_len);
    h.sum = places_sum(&h, pl);
    char tmp[4500];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", file, (long)getpid());
    unlink(tmp);
    /* read-only: a server that maps it dies of SIGBUS if it is cut short
     * in place, so `> places.cache` or cp over it must fail */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
    if (fd < 0) return -1;
    int rc = write_sections(fd, &h, pl);
    int saved = errno;
    if (close(fd) < 0 && rc == 0) rc = -1, saved = errno;
    if (rc == 0 && rename(tmp, file) < 0) rc = -1, saved = errno;
    if (rc < 0) unlink(tmp);
    errno = saved;
    return rc;
}

/* ----------------------------------------------------------------- lock */

/* The lock, taken within wait_ms; its descriptor (*waited: another server
 * had it first), or -1 with why (*held: another server has it, else the
 * lock file itself is at fault). */
static int lock_take(const char *dir, int wait_ms, char *why, size_t whylen, int *held,
                     int *waited) {
    char path[4400];
    *held = *waited = 0;
    snprintf(path, sizeof path, "%s/%s", dir, PLACES_CACHE_LOCK);
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    for (int64_t start = mono_ms();;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
        if (errno != EWOULDBLOCK && errno != EINTR) break;
        *waited = 1;
        int64_t ms = mono_ms() - start;
        if (ms >= wait_ms) {
            *held = 1;
            snprintf(why, whylen, "%s held by another server (waited %lld ms); "
                     "places read privately", path, (long long)ms);
            close(fd);
            return -1;
        }
        places_progress();
        nanosleep(&(struct timespec){0, LOCK_POLL_MS * 1000000L}, NULL);
    }
    snprintf(why, whylen, "cannot lock %s: %s", path, strerror(errno));
    close(fd);
    return -1;
}

/* ----------------------------------------------------------------- load */

/* Under the lock: the cache if it is good, else the file read and the cache
 * written (and mapped in place of what was read).  After a wait for the
 * server that held the lock, no good cache means it could make none (no
 * room, a folder in the way: it logged why, or it died): 1, the file is to
 * be read after the lock, alongside the others, not once more in turn. */
static int load_locked(places_local *pl, const char *path, const char *file, int waited,
                       char *err, size_t errlen) {
    char why[256], wrote[256];
    struct stat src;
    if (stat(path, &src) < 0) return places_local_load(pl, path, err, errlen);  /* says why */
    if (places_cache_map(pl, file, path, why, sizeof why) == 0) {
        log_msg(LOG_INFO, "places-cache", "result=used cache=%s places=%zu", file, pl->n);
        return 0;
    }
    if (waited) {
        log_msg(LOG_INFO, "places-cache", "result=ignored cache=%s reason=\"%s, after the "
                "server that held the lock; places read privately\"", file, why);
        return 1;
    }
    int damaged = strcmp(why, WHY_NONE) && strcmp(why, WHY_STALE);
    if (damaged) log_msg(LOG_WARN, "places-cache", "result=ignored cache=%s reason=\"%s\"; "
                         "rebuilt", file, why);
    if (places_local_load(pl, path, err, errlen) < 0) return -1;
    places_local mapped;
    if (cache_write(pl, file, &src, path) < 0) {
        log_msg(LOG_WARN, "places-cache", "result=ignored cache=%s reason=\"cannot write: "
                "%s\"; places held privately", file, strerror(errno));
    } else if (places_cache_map(&mapped, file, path, wrote, sizeof wrote) < 0) {
        log_msg(LOG_WARN, "places-cache", "result=ignored cache=%s reason=\"written, then "
                "%s\"; places held privately", file, wrote);
    } else {
        places_local_free(pl);
        *pl = mapped;
        log_msg(LOG_INFO, "places-cache", "result=built cache=%s places=%zu reason=\"%s\"",
                file, pl->n, damaged ? "damaged" : why);
    }
    return 0;
}

int places_cache_load(places_local *pl, const char *path, const char *dir, int wait_ms,
                      char *err, size_t errlen) {
    char why[4600], file[4400];
    memset(pl, 0, sizeof *pl);
    int held, waited, lock = lock_take(dir, wait_ms, why, sizeof why, &held, &waited);
    if (lock < 0) {     /* a lock file that cannot be had keeps the cache off: a WARN */
        log_msg(held ? LOG_INFO : LOG_WARN, "places-cache", "result=ignored reason=\"%s\"",
                why);
        return places_local_load(pl, path, err, errlen);
    }
    /* under the lock no writer is at work: a temporary file is a dead one's */
    folder_remove_leftovers(dir, CACHE_TMP, "places-cache-leftover",
                            "a cache writer stopped while writing it");
    snprintf(file, sizeof file, "%s/%s", dir, PLACES_CACHE_FILE);
    int rc = load_locked(pl, path, file, waited, err, errlen);
    close(lock);
    return rc == 1 ? places_local_load(pl, path, err, errlen) : rc;
}
