/* commands.h -- a client's line in, its reply out (commands.c).
 *
 * Owns: the client commands of docs/PROTOCOL.md (IAMAT, WHATSAT) and the
 * "? " answer to anything else.
 *
 * Promises: each reply is appended whole to the client's output (one
 * write carries it); an IAMAT's update goes to update_apply() (forward.h)
 * after its AT reply is queued; a WHATSAT answered upstream (google.c)
 * makes the client wait, with its later lines held, so replies keep their
 * order; a connection on probation is refused instead of served.
 *
 * Callers: server.c, for every line of a ROLE_CLIENT connection.
 */
#ifndef HERD_COMMANDS_H
#define HERD_COMMANDS_H

#include <stddef.h>

struct server;
struct client;

/* Handle one line (without LF or CRLF) from c, a ROLE_CLIENT connection,
 * appending the reply to c->out. */
void command_handle(struct server *s, struct client *c, const char *line, size_t len);

#endif
