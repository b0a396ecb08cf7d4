/* placesidx.c -- the ranking of places and the k-d tree; see placesidx.h.
 *
 * Why a k-d tree on the unit vectors: it takes the vectors the ranking
 * already uses, so the poles and the antimeridian are no special case (no
 * angle is ever cut or wrapped), and it finds the few nearest places
 * without visiting a whole neighbourhood.  A grid of cells (tried first:
 * cubes of 6.4 km) must visit every place of the cells the radius reaches:
 * in a town of 90 places per km2, 30,000 per query, 900 WHATSAT/s; a
 * geohash or S2-like cell index has the same trade-off between cell size
 * and radius.  The tree costs 33 bytes per place and one sort-like build.
 */
#include "placesidx.h"

#include <stdlib.h>

#include "xalloc.h"

/* ---------------------------------------------------------------- top */

void placesidx_top_init(placesidx_top *t, const double q[3], double max2, int bound) {
    for (int a = 0; a < 3; a++) t->q[a] = q[a];
    t->max2 = max2;
    t->n = 0;
    t->bound = bound > PLACESIDX_MAX_BOUND ? PLACESIDX_MAX_BOUND : bound;
}

static int before(double d, size_t id, double d2, size_t id2) {
    return d < d2 || (d == d2 && id < id2);
}

void placesidx_top_offer(placesidx_top *t, const double u[3], size_t id) {
    double d = placesidx_chord2(u, t->q);
    if (d > t->max2 || t->bound < 1) return;
    if (t->n == t->bound && !before(d, id, t->d[t->n - 1], t->id[t->n - 1])) return;
    int k = t->n < t->bound ? t->n++ : t->n - 1;     /* insertion into a sorted top-k */
    while (k > 0 && before(d, id, t->d[k - 1], t->id[k - 1])) {
        t->d[k] = t->d[k - 1];
        t->id[k] = t->id[k - 1];
        k--;
    }
    t->d[k] = d;
    t->id[k] = id;
}

/* Places farther than this cannot be kept (one as far may, if earlier). */
static double top_reach(const placesidx_top *t) {
    return t->n == t->bound && t->bound > 0 ? t->d[t->n - 1] : t->max2;
}

/* --------------------------------------------------------------- build */

static void swap(placesidx_node *a, placesidx_node *b) {
    placesidx_node t = *a;
    *a = *b;
    *b = t;
}

/* Reorder v[0..n) so that v[k] is where sorting on axis a would put it,
 * with nothing greater before it and nothing smaller after (quickselect,
 * median-of-three pivots, Hoare partitions: equal values split evenly). */
static void select_nth(placesidx_node *v, size_t n, size_t k, int a) {
    ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, want = (ptrdiff_t)k;
    while (lo < hi) {
        double x = v[lo].u[a], y = v[lo + (hi - lo) / 2].u[a], z = v[hi].u[a];
        double pivot = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        ptrdiff_t i = lo, j = hi;
        while (i <= j) {
            while (v[i].u[a] < pivot) i++;
            while (v[j].u[a] > pivot) j--;
            if (i <= j) swap(&v[i++], &v[j--]);
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return;    /* between the two halves: equal to the pivot */
    }
}

/* The axis the range spreads most on, judged from about 1,000 of its
 * places (the choice only makes searches faster or slower). */
static int widest_axis(const placesidx_node *v, size_t n) {
    double lo[3], hi[3];
    size_t step = n / 1024 + 1;
    for (int a = 0; a < 3; a++) lo[a] = hi[a] = v[0].u[a];
    for (size_t i = step; i < n; i += step)
        for (int a = 0; a < 3; a++) {
            if (v[i].u[a] < lo[a]) lo[a] = v[i].u[a];
            if (v[i].u[a] > hi[a]) hi[a] = v[i].u[a];
        }
    int best = 0;
    for (int a = 1; a < 3; a++)
        if (hi[a] - lo[a] > hi[best] - lo[best]) best = a;
    return best;
}

static void build(placesidx *ix, size_t lo, size_t hi) {
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        int a = widest_axis(ix->node + lo, hi - lo);
        select_nth(ix->node + lo, hi - lo, mid - lo, a);
        ix->axis[mid] = (unsigned char)a;
        build(ix, lo, mid);
        lo = mid + 1;
    }
}

void placesidx_build(placesidx *ix, placesidx_node *nodes, size_t n) {
    ix->node = nodes;
    ix->n = n;
    ix->axis = xcalloc(n, 1);
    build(ix, 0, n);
}

void placesidx_free(placesidx *ix) {
    free(ix->node);
    free(ix->axis);
    *ix = (placesidx){0};
}

/* -------------------------------------------------------------- search */

/* The far side of a node is skipped only when even its nearest possible
 * place is strictly beyond the top's reach: a place there is at least the
 * plane's distance away on that axis, and its computed chord2 is short of
 * the computed square of that distance by a few units in the last place at
 * most, which the factor covers many times over. */
static void search(const placesidx *ix, size_t lo, size_t hi, placesidx_top *t) {
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const placesidx_node *nd = &ix->node[mid];
        placesidx_top_offer(t, nd->u, nd->id);
        double diff = t->q[ix->axis[mid]] - nd->u[ix->axis[mid]];
        if (diff < 0) {
            search(ix, lo, mid, t);
            lo = mid + 1;
        } else {
            search(ix, mid + 1, hi, t);
            hi = mid;
        }
        if (diff * diff * (1 - 1e-9) > top_reach(t)) return;
    }
}

void placesidx_search(const placesidx *ix, placesidx_top *t) {
    search(ix, 0, ix->n, t);
}
