/* check.h -- the smallest test harness that does the job.
 *
 *   CHECK(cond, "what")      records a failure with file:line when false
 *   CHECK_STR(got, want)     compares C strings
 *   return check_report("name") at the end of main(): prints
 *   "name: N passed, M failed" and returns non-zero on any failure.
 */
#ifndef HERD_CHECK_H
#define HERD_CHECK_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) {                                                       \
            check_passed++;                                               \
        } else {                                                          \
            check_failed++;                                               \
            fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);         \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
        }                                                                 \
    } while (0)

#define CHECK_STR(got, want)                                              \
    do {                                                                  \
        const char *g_ = (got), *w_ = (want);                             \
        CHECK(g_ && w_ && strcmp(g_, w_) == 0, "got '%s', want '%s'",     \
              g_ ? g_ : "(null)", w_ ? w_ : "(null)");                    \
    } while (0)

static inline int check_remove_one(const char *path, const struct stat *st, int flag,
                                   struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -r dir (a test's scratch folder), links not followed. */
static inline void check_rmtree(const char *dir) {
    nftw(dir, check_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* dir/name, in one of four rotating buffers (a call may take a few). */
static inline const char *check_at(const char *dir, const char *name) {
    static char p[4][256];
    static int i;
    char *r = p[i++ % 4];
    snprintf(r, sizeof p[0], "%s/%s", dir, name);
    return r;
}

/* A test's random numbers: xorshift64*, the same runs everywhere; a test
 * keeps its own seed in check_rng_state (any value but 0). */
static uint64_t check_rng_state = 0x2545f4914f6cdd1du;

static inline uint64_t check_rng(void) {
    check_rng_state ^= check_rng_state >> 12;
    check_rng_state ^= check_rng_state << 25;
    check_rng_state ^= check_rng_state >> 27;
    return check_rng_state * 2685821657736338717u;
}

/* Uniform in [lo, hi). */
static inline double check_uniform(double lo, double hi) {
    return lo + (hi - lo) * (double)(check_rng() >> 11) / 9007199254740992.0;
}

static inline int check_report(const char *name) {
    printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
