/* placesidx.c -- the cell index of the local places; see placesidx.h.
 *
 * Why cubes around the sphere rather than a latitude/longitude grid or a
 * k-d tree: a lat/lng grid needs a longitude span that grows without bound
 * near the poles and wraps at the antimeridian, each a place to get an
 * exact bound wrong; a k-d tree answers the same question with a pointer
 * walk per query and more memory per place.  Cubes take the same unit
 * vectors the ranking already uses, and the box test is exact with a
 * margin of rounding (places.c), whatever the position.
 */
#include "placesidx.h"

#include <math.h>
#include <stdlib.h>

#include "xalloc.h"

#define GRID ((uint64_t)(2.0 / PLACESIDX_CELL) + 1)    /* cubes per axis */

/* The cube number of one coordinate in [-1, 1].  Monotonic in v (adding,
 * dividing by a positive constant, floor and clamping all are), so v in
 * [lo, hi] puts its cube in [cell(lo), cell(hi)]. */
static uint64_t cell(double v) {
    double c = floor((v + 1.0) / PLACESIDX_CELL);
    if (!(c > 0)) return 0;
    if (c > (double)(GRID - 1)) return GRID - 1;
    return (uint64_t)c;
}

static uint64_t key_of(uint64_t i, uint64_t j, uint64_t k) {
    return (i * GRID + j) * GRID + k;
}

uint64_t placesidx_key(double x, double y, double z) {
    return key_of(cell(x), cell(y), cell(z));
}

typedef struct {
    uint64_t key;
    uint32_t id;
} keyed;

static int cmp_keyed(const void *a, const void *b) {
    const keyed *p = a, *q = b;
    if (p->key != q->key) return p->key < q->key ? -1 : 1;
    return p->id < q->id ? -1 : p->id > q->id;
}

void placesidx_build(placesidx *ix, const uint64_t *key, size_t n) {
    keyed *t = xmalloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++) t[i] = (keyed){key[i], (uint32_t)i};
    qsort(t, n, sizeof *t, cmp_keyed);
    ix->ids = xmalloc(n * sizeof *ix->ids);
    ix->keys = xmalloc(n * sizeof *ix->keys);
    ix->start = xmalloc((n + 1) * sizeof *ix->start);
    ix->ncells = 0;
    for (size_t i = 0; i < n; i++) {
        ix->ids[i] = t[i].id;
        if (i == 0 || t[i].key != t[i - 1].key) {
            ix->keys[ix->ncells] = t[i].key;
            ix->start[ix->ncells++] = (uint32_t)i;
        }
    }
    ix->start[ix->ncells] = (uint32_t)n;
    ix->keys = xrealloc(ix->keys, ix->ncells * sizeof *ix->keys);
    ix->start = xrealloc(ix->start, (ix->ncells + 1) * sizeof *ix->start);
    free(t);
}

void placesidx_free(placesidx *ix) {
    free(ix->keys);
    free(ix->start);
    free(ix->ids);
    *ix = (placesidx){0};
}

/* The first cube at or after 'from' with a key >= k. */
static size_t lower_bound(const placesidx *ix, size_t from, uint64_t k) {
    size_t lo = from, hi = ix->ncells;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ix->keys[mid] < k) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int placesidx_visit(const placesidx *ix, const double q[3], double reach,
                    void (*visit)(void *arg, const uint32_t *ids, size_t n), void *arg) {
    if (!(reach < PLACESIDX_MAX_SPAN / 2 * PLACESIDX_CELL)) return -1;
    uint64_t lo[3], hi[3];
    for (int a = 0; a < 3; a++) {
        lo[a] = cell(q[a] - reach);
        hi[a] = cell(q[a] + reach);
    }
    size_t c = 0;   /* keys ascend with i, then j: each search starts past the last */
    for (uint64_t i = lo[0]; i <= hi[0]; i++) {
        for (uint64_t j = lo[1]; j <= hi[1]; j++) {
            uint64_t last = key_of(i, j, hi[2]);
            for (c = lower_bound(ix, c, key_of(i, j, lo[2]));
                 c < ix->ncells && ix->keys[c] <= last; c++)
                visit(arg, ix->ids + ix->start[c], ix->start[c + 1] - ix->start[c]);
        }
    }
    return 0;
}
