/* server.h -- one member of the herd: its state and the pieces of its loop.
 *
 * server.c owns the poll() loop, the listening socket, client connections,
 * their buffers and limits.  commands.c turns one client line into its
 * reply.  Everything runs on one thread; nothing here blocks.
 */
#ifndef HERD_SERVER_H
#define HERD_SERVER_H

#include <poll.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "places.h"
#include "table.h"

typedef struct client {
    int fd;
    size_t slot;                /* index in the poll set */
    uint64_t id;                /* for log lines */
    char addr[48];              /* "ip:port" of the other end */
    buf_t in, out;
    size_t scanned;             /* bytes of 'in' already searched for LF */
    int64_t last_ms;            /* last read or write progress */
    int64_t drain_until_ms;     /* while draining: when to give up */
    unsigned eof : 1;           /* the client half-closed */
    unsigned close_after_flush : 1;
    unsigned draining : 1;      /* sent "line too long"; discarding input */
    unsigned shut : 1;          /* our side is shut down for writing */
    unsigned dead : 1;          /* free after this poll round */
    const char *close_reason;
} client;

typedef struct server {
    const config *cfg;
    const config_server *me;
    int lfd;                    /* listening socket */
    int sig_r, sig_w;           /* self-pipe for signals */
    int spare_fd;               /* kept open to shed connections on EMFILE */
    struct pollfd *pfd;         /* [0] listener, [1] signals, then clients */
    client **conn;              /* parallel to pfd; NULL for the first two */
    size_t npfd, cap;
    size_t nclients;
    uint64_t next_id;
    int64_t now_ms;
    int64_t next_sweep_ms;
    int stop;
    table tab;
    places_local places;
} server;

#define SERVER_FIRST_CLIENT 2

/* Set up everything (log, places, listener).  Returns 0, or -1 with a
 * message in err. */
int server_init(server *s, const config *cfg, int me, char *err, size_t errlen);

/* Run the loop until SIGTERM or SIGINT.  Returns the exit status. */
int server_run(server *s);

void server_free(server *s);

/* commands.c: handle one line (without LF or CRLF) from client c, appending
 * the reply to c->out. */
void command_handle(server *s, client *c, const char *line, size_t len);

/* server.c: mark c to be closed after this round, with a reason to log. */
void client_kill(server *s, client *c, const char *reason);

#endif
