/* server.h -- one member of the herd: the server struct and its loop.
 *
 * server.c owns the poll() loop, the listening socket, client connections,
 * their buffers and limits.  The other modules have their own headers, each
 * with its contract: commands.h (a client's line), peer.h (links),
 * forward.h (updates and the herd's links), resolver.h (host names),
 * snapshot.h (the table on disk).  Everything runs on one thread; nothing
 * here blocks.
 */
#ifndef HERD_SERVER_H
#define HERD_SERVER_H

#include <poll.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "addrcap.h"
#include "buf.h"
#include "config.h"
#include "forward.h"
#include "http.h"
#include "metrics.h"
#include "net.h"
#include "peer.h"
#include "places.h"
#include "secret.h"
#include "table.h"

struct ssl_st;
struct ssl_ctx_st;

typedef enum {
    ROLE_CLIENT,        /* a plain client */
    ROLE_DIALING,       /* our connection to a neighbour, before the end of
                         * its TLS handshake */
    ROLE_ACCEPTED,      /* a TLS handshake came in (server/tls.c) */
    ROLE_PEER,          /* an authenticated link */
} client_role;

/* Where a connection is in its life; server.c alone moves it, one function
 * per step:
 *   CONN_OPEN      lines are read and handled.
 *   CONN_DRAINING  a last reply is due (client_close_after_reply: a line
 *                  too long): no more lines are handled, input is read and
 *                  thrown away; once the reply is out (client_write) our
 *                  side is shut down -> CONN_SHUT.
 *   CONN_SHUT      our side shut down for writing; input still thrown away.
 *   CONN_CLOSING   the other side half-closed (client_at_eof, from any of
 *                  the above): nothing more is read; what is left of its
 *                  input is served (held lines after a wait), and it closes
 *                  once every reply due is out and no WHATSAT waits
 *                  (client_write).
 *   CONN_DEAD      client_kill, from any state: freed after the poll round;
 *                  never left.
 * A drain has a deadline besides (drain_until_ms): closed then, even if
 * the other side half-closed meanwhile. */
typedef enum {
    CONN_OPEN,
    CONN_DRAINING,
    CONN_SHUT,
    CONN_CLOSING,
    CONN_DEAD,
} conn_state;

typedef struct client {
    int fd;
    client_role role;
    conn_state state;
    int link;                   /* index in server.links, or -1 */
    int64_t handshake_until_ms; /* a handshake not done by then is dropped */
    size_t slot;                /* index in the poll set */
    uint64_t id;                /* for log lines */
    char addr[NET_ADDRSTRLEN];  /* "ip:port" or "[ip]:port" of the other end */
    buf_t in, out;
    size_t scanned;             /* bytes of 'in' already searched for LF */
    int64_t last_ms;            /* last read or write progress */
    int64_t drain_until_ms;     /* set with CONN_DRAINING: closed by then; 0: none */
    int64_t partial_since_ms;   /* an unfinished line began then; 0: none */
    struct timespec rx_time;    /* wall clock of the last read with data */
    /* Flags (beside 'state').  Who sets and clears each, and which may go
     * together; once the state is CONN_DEAD every flag is moot:
     *  connecting     peer.c dial (ROLE_DIALING only), cleared by
     *                 peer_connected.  Polls for POLLOUT instead of POLLIN.
     *  quiet          peer.c dial: no conn-open/close lines; cleared at
     *                 link-up.  Links and dials only.
     *  waiting        google.c, ROLE_CLIENT only: a WHATSAT waits upstream;
     *                 further lines are held in 'in' until it clears.
     *  cold           server.c make_cold / cold_remove.  Only a CONN_OPEN
     *                 ROLE_CLIENT that is not probation or waiting, with
     *                 nothing queued to write or read, may be cold.
     *  queued         server.c queue_write / write_queued: in server.wq.
     *  counted        client_add (every new connection); cleared once by
     *                 client_uncount (role change to a link, a handshake
     *                 that proved its link's key, or client_kill), never
     *                 set again for this connection.
     *  probation      accept_clients past a full table (implies counted, and
     *                 in server.probation; ROLE_CLIENT, or ROLE_ACCEPTED once
     *                 its TLS handshake began); cleared by client_uncount.
     *  addr_counted   accept_clients when per-address caps are on; cleared
     *                 by client_uncount.
     * A link (ROLE_DIALING, ROLE_PEER) is never counted, probation,
     * addr_counted, waiting or cold.  ROLE_ACCEPTED keeps counted, probation
     * and addr_counted from the client it came in as (peer_tls_accept) until
     * its PSK identity names a link and the key is proven (peer.c
     * hold_link_place: it then holds that link's own place, peer_link.
     * accepting) or it is killed; it is never waiting or cold. */
    unsigned connecting : 1;    /* a dial in progress: wait for POLLOUT */
    unsigned quiet : 1;         /* no conn-open/close lines (dials) */
    unsigned waiting : 1;       /* a WHATSAT waits upstream: hold the rest */
    unsigned cold : 1;          /* idle: parked in the cold set, not polled */
    unsigned queued : 1;        /* in server.wq: replies to write this round */
    unsigned counted : 1;       /* counted in nclients or on probation (a plain
                                 * client since its accept; never again once
                                 * it was part of a link, whatever its role) */
    unsigned probation : 1;     /* taken past a full table: must start TLS */
    unsigned addr_counted : 1;  /* counted in server.per_addr */
    unsigned tls_hs : 1;        /* the TLS handshake is not done yet */
    unsigned tls_want_write : 1;/* the last TLS call waits for POLLOUT */
    unsigned sniffed : 1;       /* first byte looked at: TLS or a client */
    unsigned tls_more : 1;      /* OpenSSL may hold bytes the socket no longer
                                 * shows: read next round without waiting */
    addrcap_key addr_key;       /* its address, as per_addr counts it (addr_counted) */
    const char *busy_line;      /* on probation: the "? " line if it is refused */
    size_t cold_slot;           /* index in server.cold while cold */
    const char *close_reason;
    struct ssl_st *ssl;         /* a TLS link or handshake; NULL: plain TCP */
    const char *tls_why;        /* why the PSK lookup found nothing */
} client;

typedef struct server {
    const config *cfg;          /* replaced by a reload (reload.c) */
    int cfg_owned;              /* cfg was allocated by a reload: free it */
    const config_server *me;
    int lfd;                    /* listening socket */
    int sig_r, sig_w;           /* self-pipe for signals */
    int spare_fd;               /* kept open to shed connections on EMFILE */
    struct pollfd *pfd;         /* [0] listener, [1] signals, [2] cold set, [3] resolver
                                 * (fd -1 until needed), then clients */
    client **conn;              /* parallel to pfd; NULL for the first four */
    size_t npfd, cap;
    size_t nclients;            /* clients against max_clients: active and cold */
    client *probation[CONFIG_MAX_SERVERS];  /* on probation, oldest first: */
    size_t nprobation;          /* at most n_links (see accept_clients) */
    int max_clients;            /* limits.max_clients, lowered to fit the fd limit */
    addrcap per_addr;           /* clients per address */
    int hb_fd;                  /* heartbeat pipe to the supervisor, or -1 */
    int64_t next_beat_ms;
    size_t ndead;               /* marked dead this round */
    client **wq;                /* clients with replies to write after the */
    size_t nwq, wqcap;          /* links are flushed (so acks follow floods) */
    int cold_fd;                /* epoll set of idle clients */
    client **cold;
    size_t ncold, coldcap;
    uint64_t next_id;
    int64_t now_ms;
    int64_t next_sweep_ms;
    int stop;
    table tab;
    places_local places;
    struct stat places_st;      /* the local file's, taken before it was read: a
                                 * reload reads it again when it differs */
    peer_link links[CONFIG_MAX_SERVERS];
    int n_links;
    unsigned links_gen;         /* links renumbered (a reload): resolver answers
                                 * asked before are dropped */
    forward_state fw;
    secret_ring secrets;        /* the first dials, any accepts; none: links are disabled */
    struct ssl_ctx_st *tls_ctx; /* with a secret and links (server/tls.c) */
    int table_dirty;            /* changed since the last snapshot */
    int64_t next_snapshot_ms;
    pid_t snapshot_pid;         /* a child writing a snapshot, or 0 */
    int64_t snapshot_reap_ms;   /* when to look for its end again */
    int resolver_fd;            /* to the host name helper (resolver.c), or -1 */
    pid_t resolver_pid;
    int resolver_out;           /* questions it has not answered yet */
    int64_t resolver_busy_ms;   /* when it began the lookup under way */
    http http;                  /* libcurl multi, for the google providers */
    struct google *google;      /* NULL with the local provider */
    metrics metrics;            /* counters for NAME.prom (metrics.c) */
} server;

#define SERVER_RESOLVER_SLOT 3
#define SERVER_FIRST_CLIENT 4

/* Set up everything (log, places, listener).  Returns 0, or -1 with a
 * message in err. */
int server_init(server *s, const config *cfg, int me, char *err, size_t errlen);

/* Run the loop until SIGTERM or SIGINT.  Returns the exit status. */
int server_run(server *s);

/* The loop's timers (server.c): ms until the first is due (0: one is due
 * now), or -1 when none is; and run each that is due at s->now_ms. */
int server_timer_wait(const server *s);
void server_timers_run(server *s);

void server_free(server *s);

/* server.c, for a reload: max_clients fitted again under the descriptor
 * limit (the links may have changed), per-address counts under the new
 * cap.  0, or -1 with why in err (nothing changed then). */
int server_refit_limits(server *s, char *err, size_t errlen);

/* reload.c (SIGUSR1): read the config file again and apply it in place. */
void server_reload(server *s);

/* server.c: a heartbeat now if one is due, from long work on the loop (a
 * reload reading a large places file), which the supervisor must not take
 * for a hang. */
void server_beat(server *s);

/* server.c: mark c to be closed after this round, with a reason to log. */
void client_kill(server *s, client *c, const char *reason);

/* server.c: a new connection in the poll set (role ROLE_CLIENT). */
client *client_add(server *s, int fd, const char *addr);

/* server.c: change c's role; a client that becomes part of a link stops
 * counting against max_clients and its address's cap. */
void client_set_role(server *s, client *c, client_role role);

/* server.c: c is on probation and said something other than a neighbour's
 * TLS handshake: send its "too many connections" line and close it. */
void client_refuse_busy(server *s, client *c);

/* server.c: go on with c's buffered commands after a wait, and write. */
void client_resume(server *s, client *c);

/* server.c: write what c has pending, now. */
void client_write(server *s, client *c);

#endif
