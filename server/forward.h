/* forward.h -- where an update goes, and the herd's view of its links (forward.c).
 *
 * Owns: update_apply(), the one path of every update into the table; the
 * LINK states of every server and the trees computed from them; each
 * link's AGREE (the settings both ends must share) and anti-entropy (SUM,
 * SUMS and the repair streams they start).
 *
 * Promises: an update is stored only when newer than what the table holds
 * (table.c's order), and each stored one is forwarded on its origin's
 * tree, or flooded whenever the tree may be wrong; a link whose peer
 * disagrees on what anti-entropy needs gets no repairs, and the mismatch
 * is logged once per link-up (docs/PROTOCOL.md, "Between servers" and
 * "Settings neighbours must share").
 *
 * Callers: commands.c (update_apply for IAMAT), peer.c (update_apply for
 * AT lines, forward_line, forward_first_line, forward_link_changed,
 * forward_repairs, forward_init), server.c (the timer, the stats at stop).
 */
#ifndef HERD_FORWARD_H
#define HERD_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "table.h"

struct server;

/* What forward.c knows of the herd's links (docs/PROTOCOL.md, "Between
 * servers"): each server's newest LINK state, the trees computed from them. */
typedef struct {
    uint64_t seq[CONFIG_MAX_SERVERS];   /* newest LINK seq per server; 0: none */
    uint64_t up[CONFIG_MAX_SERVERS];    /* bit j: it says its link to j is up */
    int8_t parent[CONFIG_MAX_SERVERS][CONFIG_MAX_SERVERS];  /* per origin; -1 none */
    uint64_t tree_ok;                   /* bit o: parent[o] is computed */
    int64_t flux_until_ms;              /* flood until then: states in flux */
    int announce;                       /* our own state changed: send it */
    int64_t next_stats_ms;
    uint64_t logged_sent;               /* link_updates_sent at the last log */
    /* counters (the forward-stats log line; the updates themselves are
     * counted in server.metrics) */
    uint64_t tree_sends, flood_sends;   /* updates forwarded each way */
    uint64_t ctl_sent, ctl_bytes;       /* LINK, SUM, SUMS lines sent */
    uint64_t announced;                 /* our own states sent */
} forward_state;

/* What a link knows of its peer's AGREE line (docs/PROTOCOL.md, "Settings
 * neighbours must share"). */
enum {
    PEER_AGREE_WAIT,            /* up, its first line not read yet */
    PEER_AGREE_OK,              /* its AGREE read (mismatch says what differs) */
    PEER_AGREE_NONE,            /* its first line was no AGREE: an earlier server */
};
#define AGREE_KEY_VERSION 1u
#define AGREE_KEY_MAX_STORED 2u
#define AGREE_KEY_FORWARDING 4u
/* The link protocol's version in AGREE (1: the servers before AGREE). */
#define LINK_PROTOCOL_VERSION 2

/* The longest control line (LINK, SUM, SUMS) forward.c sends: a link takes
 * lines this long whatever limits.max_line_bytes, which bounds clients'. */
#define FORWARD_CTL_MAX (CONFIG_MAX_SERVERS * 72)

/* The one path of an update, from a client (from_link -1) or from link
 * from_link: store it when newer than what the table holds, mark the table
 * for the next snapshot, log it, forward it.  Returns the stored entry, or
 * NULL when it was not newer. */
table_entry *update_apply(struct server *s, const table_update *u, int from_link);

void forward_init(struct server *s);
void forward_link_changed(struct server *s, int li);  /* link li came up or went down */
/* A reload renumbered the servers (s->cfg is new, 'old' the one before):
 * the link states we know follow their servers by name, ours is announced
 * again, and a change in a setting that must agree is told to every link
 * in a new AGREE (which the peer checks again, as at link-up). */
void forward_reconfigure(struct server *s, const config *old);
void forward_line(struct server *s, int li, const char *line, size_t len);  /* LINK, SUM, SUMS */

/* Every line from link li passes here first: 1 when it is an AGREE (read
 * here, nothing more to do), else 0.  A peer whose first line is no AGREE
 * is of an earlier version: a version mismatch. */
int forward_first_line(struct server *s, int li, const char *line, size_t len);

/* Anti-entropy runs on link li: its peer's settings, if it said them,
 * agree with ours on what anti-entropy needs. */
int forward_repairs(const struct server *s, int li);

/* The forward timer (server.c runs it when due): our own LINK state when
 * it changed, every known state to a link just up, each link's SUM when
 * its period is over, the forward-stats line every 10 s.
 * forward_next_due: when, on the loop's clock (server.now_ms), or -1. */
void forward_tick(struct server *s);
int64_t forward_next_due(const struct server *s);
void forward_log_stats(struct server *s);

#endif
