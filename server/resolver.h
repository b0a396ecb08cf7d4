/* resolver.h -- neighbours' host names looked up off the loop (resolver.c).
 *
 * Owns: the helper process that does the lookups (a fresh herd-server run
 * with RESOLVER_ARG), its socket (poll slot SERVER_RESOLVER_SLOT) and the
 * helpers killed but not reaped yet.
 *
 * Promises: the loop never waits on DNS; every question asked gets an
 * answer through peer_resolved() -- the address, or a failure when the
 * helper goes away or answers nothing for too long; a helper given up on
 * is killed and reaped without a blocking wait.
 *
 * Callers: peer.c (resolver_ask, for a dial to a host name), server.c (the
 * readable slot, the timer, the stop), main.c (resolver_main).
 */
#ifndef HERD_RESOLVER_H
#define HERD_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

struct server;

/* Look host:port up for link li in the helper (started when needed); the
 * answer comes to peer_resolved() from resolver_read().  0, or -1 with err. */
int resolver_ask(struct server *s, int li, const char *host, int port, char *err,
                 size_t errlen);

/* SERVER_RESOLVER_SLOT is readable: hand each answer to peer_resolved(). */
void resolver_read(struct server *s);

/* The resolver's timer (server.c runs it when due): killed helpers are
 * reaped (looked at once a second while there are any), and a helper that
 * answered nothing for too long is given up on.  resolver_next_due: when,
 * on the loop's clock (server.now_ms), or -1 when there is nothing to do. */
void resolver_tick(struct server *s);
int64_t resolver_next_due(const struct server *s);

/* At the stop: kill the helper, reap what goes within a moment. */
void resolver_free(struct server *s);

/* herd-server RESOLVER_ARG FD runs the helper on socket FD (main.c); it
 * returns only on a bad FD. */
#define RESOLVER_ARG "--resolver-helper"
int resolver_main(const char *fd_arg);

#endif
