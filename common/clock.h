/* clock.h -- the monotonic clock every timer and timeout of the herd uses,
 * and the wall clock for dates. */
#ifndef HERD_CLOCK_H
#define HERD_CLOCK_H

#include <stdint.h>

/* Milliseconds from the monotonic clock: never jumps with the wall clock,
 * so good for deadlines and intervals, meaningless as a date. */
int64_t mono_ms(void);

/* Seconds since the Unix epoch, from the wall clock: for dates that others
 * read (metrics, a reload's time), never for a deadline. */
double wall_s(void);

#endif
