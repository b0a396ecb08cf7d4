/* snapshot.h -- the client table on disk, state/NAME.snap (snapshot.c).
 *
 * Owns: the snapshot file and its temporary files, and the forked child
 * that writes the periodic snapshot.
 *
 * Promises: a crash leaves the old snapshot or the new one, never a part
 * of one; the loop never waits on the disk (the periodic snapshot is
 * written by a child); a snapshot that cannot be trusted is set aside and
 * the server starts empty; nothing is written through a symbolic link.
 *
 * Callers: server.c (the load at start, the timer), main.c (the write at
 * a graceful stop).
 */
#ifndef HERD_SNAPSHOT_H
#define HERD_SNAPSHOT_H

#include <stdint.h>

struct server;

/* At start, into the empty table (server_init set its bound: a smaller bound
 * than the snapshot was written with keeps its newest clients). */
void snapshot_load(struct server *s);

/* The snapshot timer (server.c runs it when due): a child that ended is
 * reaped (looked for once a second while it writes), and a changed table is
 * written by a new child, at most every herd.snapshot_interval_s.
 * snapshot_next_due: when, on the loop's clock (server.now_ms), or -1. */
void snapshot_tick(struct server *s);
int64_t snapshot_next_due(const struct server *s);

/* Now, in this process (a graceful stop): 0, or -1 (logged). */
int snapshot_write(struct server *s);

#endif
