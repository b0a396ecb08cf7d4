/* placesidx.h -- a cell index over the local places' unit vectors.
 *
 * Space around the unit sphere is cut into cubes of side PLACESIDX_CELL
 * (in unit-vector coordinates, about 6.4 km of the Earth's surface); each
 * place belongs to the cube holding its unit vector.  A place within chord
 * c of a query point has each coordinate within c of the query's, so the
 * cubes meeting [q - c, q + c]^3 hold every place a search may return: the
 * caller measures and ranks those exactly as a full scan would.  Poles and
 * the antimeridian need no special case (no angle is ever cut), and a
 * cube's number needs no trigonometry.
 *
 * The non-empty cubes are kept as sorted 64-bit keys (x, y, z cell numbers,
 * z last), each with the run of place indexes it holds, in file order.  A
 * query binary-searches once per (x, y) column of the box and walks the
 * keys of its z range: 3 x 3 columns for the 5 km of the benchmarks, 17 x
 * 17 for the protocol's 50 km.
 */
#ifndef HERD_PLACESIDX_H
#define HERD_PLACESIDX_H

#include <stddef.h>
#include <stdint.h>

#define PLACESIDX_CELL 0.001    /* cube side, in unit-vector coordinates */

typedef struct {
    uint64_t *keys;             /* non-empty cubes, ascending */
    uint32_t *start;            /* cube c holds ids[start[c] .. start[c+1]) */
    uint32_t *ids;              /* place indexes, grouped by cube */
    size_t ncells;
} placesidx;

/* The cube of unit vector (x, y, z), as a key. */
uint64_t placesidx_key(double x, double y, double z);

/* Index n places, key[i] being place i's placesidx_key() (n < 2^32). */
void placesidx_build(placesidx *ix, const uint64_t *key, size_t n);
void placesidx_free(placesidx *ix);

/* Call visit() with the run of place indexes of each cube that may hold a
 * point within 'reach' (a chord) of q, in no particular order of cubes.
 * Returns 0, or -1 without a call when the box spans more than
 * PLACESIDX_MAX_SPAN cubes on an axis (a scan then costs less). */
#define PLACESIDX_MAX_SPAN 64
int placesidx_visit(const placesidx *ix, const double q[3], double reach,
                    void (*visit)(void *arg, const uint32_t *ids, size_t n), void *arg);

#endif
