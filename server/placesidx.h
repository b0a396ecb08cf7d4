/* placesidx.h -- nearest places first: the ranking the local provider
 * answers WHATSAT with, and a k-d tree over the places' unit vectors that
 * finds the same answer as a scan of every place.
 *
 * Ranking: by the squared chord between unit vectors (placesidx_chord2),
 * within a bound on it (the radius's chord), equal distances in file order,
 * at most 'bound' places: placesidx_top.  A scan offers every place to a
 * top; the tree offers every place it cannot rule out.
 *
 * The tree: the places' unit vectors in one array, each range split at its
 * median on the axis where the range spreads most (a node is the middle of
 * its range; the left half is <= it on that axis, the right half >=).  A
 * search goes down the side of the query first, and into the other side
 * only when the distance to the splitting plane could still beat what the
 * top would keep, so it stops early in a dense town (the few nearest are
 * close) and in an empty ocean (nothing within the radius) alike.
 */
#ifndef HERD_PLACESIDX_H
#define HERD_PLACESIDX_H

#include <stddef.h>
#include <stdint.h>

/* The one measure: the scan and the tree compute it alike, to the bit. */
static inline double placesidx_chord2(const double p[3], const double q[3]) {
    double dx = p[0] - q[0], dy = p[1] - q[1], dz = p[2] - q[2];
    return dx * dx + dy * dy + dz * dz;
}

#define PLACESIDX_MAX_BOUND 20

/* The best places offered so far, nearest first. */
typedef struct {
    double q[3];                /* the query's unit vector */
    double max2;                /* places farther than this are not kept */
    int n, bound;
    double d[PLACESIDX_MAX_BOUND];
    size_t id[PLACESIDX_MAX_BOUND];
} placesidx_top;

/* At most 'bound' (1..20; more is 20) places within max2 of q. */
void placesidx_top_init(placesidx_top *t, const double q[3], double max2, int bound);
/* Offer place 'id' at unit vector u: kept if within max2 and before the
 * worst kept one (nearer, or as near and earlier in the file). */
void placesidx_top_offer(placesidx_top *t, const double u[3], size_t id);

typedef struct {
    double u[3];
    uint32_t id;                /* the place's index in the file */
} placesidx_node;

typedef struct {
    placesidx_node *node;       /* in tree order */
    unsigned char *axis;        /* the splitting axis of each node */
    size_t n;
} placesidx;

/* Build the tree over n nodes (n < 2^32), taking the array (malloc'ed). */
void placesidx_build(placesidx *ix, placesidx_node *nodes, size_t n);
void placesidx_free(placesidx *ix);

/* Offer t every place that could be in its answer. */
void placesidx_search(const placesidx *ix, placesidx_top *t);

#endif
