/* ports.h -- TCP ports of this machine: the ones an operator should not
 * choose, and who holds one that is taken (ports.c).
 *
 * The kernel picks the source port of every outgoing connection from its
 * ephemeral range (net.ipv4.ip_local_port_range); a server port inside it
 * may be held by any such connection the moment the server lets go of it,
 * and its restart then fails to bind.  The lookups read /proc only, and
 * are bounded (PORTS_MAX_LINES table lines, PORTS_HOLDER_MS for a walk of
 * the processes): they are for an error path or a status command, never
 * for the server's loop.
 */
#ifndef HERD_PORTS_H
#define HERD_PORTS_H

#include <stddef.h>

#define PORTS_RANGE_FILE "/proc/sys/net/ipv4/ip_local_port_range"
#define PORTS_MAX_LINES 200000   /* of each of /proc/net/tcp and tcp6 */
#define PORTS_HOLDER_MS 2000     /* for the walk of /proc/PID/fd (a failed start only) */

/* "LOW HIGH" (the range file's text, tabs or spaces, a newline or not) into
 * *lo and *hi: 0, or -1 when it is not two ports with lo <= hi. */
int ports_parse_range(const char *text, int *lo, int *hi);

/* This machine's ephemeral range: 0, or -1 when the file cannot be read. */
int ports_ephemeral_range(int *lo, int *hi);

/* When 'port' of server 'name' lies in this machine's ephemeral range:
 * write why it should not (a sentence naming the range) in out, return 1;
 * else (or when the range cannot be read) 0. */
int ports_ephemeral_warning(const char *name, int port, char *out, size_t n);

/* The inodes of the sockets bound to local 'port' in /proc/net/tcp and
 * tcp6 (only those in LISTEN state when listen_only), in a malloc'ed array
 * (*out, *n; free it); -1 when neither table can be read or memory runs
 * out. */
int ports_inodes(int port, int listen_only, unsigned long **out, size_t *n);

/* Does process pid hold one of the socket inodes[0..n)?  1 or 0, or -1
 * when its descriptors may not be read (another user's process). */
int ports_pid_holds(long pid, const unsigned long *inodes, size_t n);

/* Who holds 'port' (listening or connected), for an EADDRINUSE message:
 * "held by pid 123 (python3)", "held by a process this user may not
 * inspect (another user's)", or "" when no socket on it is found. */
void ports_holder(int port, char *out, size_t n);

#endif
