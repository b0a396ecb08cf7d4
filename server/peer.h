/* peer.h -- links to the neighbours (peer.c): dial, TLS, catch-up, traffic.
 *
 * Owns: one peer_link per configured neighbour (server.links), the dials
 * and their back-off, the TLS handshakes of links (with tls.c), the catch-up
 * streams, and every line read from a link or a link's handshake.
 *
 * Promises: a link is up only once its TLS handshake proved the herd
 * secret both ways; nothing from a link is ever answered "? "; a link's
 * unsent output stays bounded (past limits.max_output_bytes it streams
 * the table again instead of queueing); peer_lost() is told of every
 * connection of a link that goes, and the link is dialled again.
 *
 * Callers: server.c (the loop: connections whose role is not ROLE_CLIENT,
 * the peer timer, flushes), forward.c (peer_send, peer_stream), commands.c
 * (peer_plain_hello), resolver.c (peer_resolved), tls.c (peer_find_link).
 */
#ifndef HERD_PEER_H
#define HERD_PEER_H

#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "secret.h"
#include "table.h"

struct server;
struct client;

/* One link to a neighbour. */
typedef struct {
    int server;                 /* index in config.servers */
    int dialer;                 /* we open this link (our name is smaller) */
    struct client *conn;        /* the authenticated connection, or NULL */
    struct client *accepting;   /* an incoming handshake that proved this
                                 * link's key, not done yet: the link's own
                                 * place, never a client's (or NULL) */
    struct client *dialing;     /* our connection being set up, or NULL */
    int resolving;              /* its host name is being looked up (resolver.c) */
    int64_t next_dial_ms;
    int backoff_ms;
    int failures;               /* dial failures since the last link-up */
    int streaming;              /* sending part of the table (stream_mask) */
    size_t stream_pos;
    uint64_t stream_layout;     /* the table's layout when the stream began */
    uint64_t stream_mask[TABLE_BUCKETS / 64];  /* buckets the stream sends */
    uint64_t stream_gen;        /* only entries stored by then (gen); or all */
    int resync;                 /* stream again once the current one ends */
    uint64_t sent, received;    /* updates, for the log */
    /* anti-entropy (forward.c) */
    int64_t next_sum_ms;        /* when to send our next SUM */
    uint64_t sum_gen, prev_gen; /* table.gen at our last two SUMs */
    uint64_t differ[TABLE_BUCKETS / 64];  /* buckets whose SUMS differ, this round */
    uint64_t differed[TABLE_BUCKETS / 64];  /* ... and the round before */
    int lsdb_due;               /* send every known LINK state (link just up) */
    int synced_due;             /* send SYNCED once the current stream ends */
    int caught_up;              /* since link-up, a SUM of theirs matched ours or
                                 * their repair stream ended (SYNCED) */
    /* agreement (forward.c): the settings both ends must share */
    int agree;                  /* PEER_AGREE_* (forward.h): what we know of the peer's */
    unsigned mismatch;          /* AGREE_KEY_* bits that differ */
} peer_link;

/* At start (server_init): the key ring, one link per neighbour.  0, or -1
 * with a message in err. */
int peer_init(struct server *s, char *err, size_t errlen);

/* A reload (reload.c), in two steps.  peer_drop_removed, while s->cfg is
 * still the old config: close every connection of a link to a server that
 * is not a neighbour of ours (index me) in 'next'.  peer_reconfigure, once
 * s->cfg and s->me are the new ones: one link per new neighbour, in the
 * new config's order; a link kept (by name) keeps its connection, its
 * catch-up and its back-off, a new one is dialled at once.  'old' is the
 * config the links were numbered by. */
void peer_drop_removed(struct server *s, const config *next, int me);
void peer_reconfigure(struct server *s, const config *old);

/* A reload of the key ring, in two steps, so that a reload checks
 * everything before it changes anything (reload.c); links that are up stay
 * up.  peer_secrets_read: the ring of the file at path (or HERD_SECRET)
 * into *ring; its size, or -1 with a message in err when the file cannot
 * be read, breaks the format, or is gone while a ring is loaded (*ring
 * then holds nothing, and the loaded ring stays).  peer_secrets_use: key
 * every handshake from now on with *ring (which it wipes), starting links
 * that had no secret; 0, or -1 with why when their TLS cannot be set up. */
int peer_secrets_read(const struct server *s, const char *path, secret_ring *ring, char *err,
                      size_t errlen);
int peer_secrets_use(struct server *s, secret_ring *ring, char *err, size_t errlen);

/* Write what each link has pending, now (the loop, before clients' replies). */
void peer_flush(struct server *s);

/* One line (without LF or CRLF) from c, a link or a link's handshake. */
void peer_line(struct server *s, struct client *c, const char *line, size_t len);

/* A client's "PEER HELLO ...": an earlier version's plain-text handshake;
 * logged when we have links (the line gets "? " like any bad line). */
void peer_plain_hello(struct server *s, struct client *c);

/* c, a connection that is not ROLE_CLIENT, is going away (client_kill). */
void peer_lost(struct server *s, struct client *c);

/* A dial finished connecting (POLLOUT): its TLS handshake starts. */
void peer_connected(struct server *s, struct client *c);

/* One AT line (table entry e) on link li, unless its backlog is full. */
void peer_send(struct server *s, const table_entry *e, int li);

/* Stream link li the entries of the buckets in mask stored by table.gen 'gen'. */
void peer_stream(struct server *s, int li, const uint64_t *mask, uint64_t gen);

/* c's first byte was 0x16: a neighbour's TLS handshake begins.  0, or -1
 * when links are off (c stays a client). */
int peer_tls_accept(struct server *s, struct client *c);

/* Go on with c's TLS handshake; the link is up when it is done. */
void peer_tls_step(struct server *s, struct client *c);

/* Is link L being set up, not up yet: our dial under way (name lookup,
 * TCP connect, TLS handshake) or due before any try failed (at start, or
 * once the link went down), or the neighbour's handshake that proved the
 * link's key?  Never with links off (no secret).  For the metrics. */
int peer_connecting(const struct server *s, const peer_link *L);

/* The link to the server named name[0..len), or -1. */
int peer_find_link(const struct server *s, const char *name, size_t len);

/* The answer for link li's host name: its address, or NULL and why not;
 * li -1: every question out failed (the helper went away). */
void peer_resolved(struct server *s, int li, const struct sockaddr_storage *sa, socklen_t len,
                   const char *why);

/* The peer timer (server.c runs it when due): the dials that are due, and
 * the next part of each catch-up stream with room in its link's output.
 * peer_next_due: when, on the loop's clock (server.now_ms; now while a
 * stream has room), or -1 when nothing waits. */
void peer_tick(struct server *s);
int64_t peer_next_due(const struct server *s);

#endif
