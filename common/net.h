/* net.h -- small TCP socket helpers.
 *
 * Each takes the caller's error buffer and returns a descriptor or -1, so
 * the caller decides what to log.  Every socket is non-blocking and
 * close-on-exec.
 */
#ifndef HERD_NET_H
#define HERD_NET_H

#include <stddef.h>
#include <stdint.h>

/* Listen on host:port (IPv4) with SO_REUSEADDR.  Returns the fd or -1. */
int net_listen(const char *host, int port, int backlog, char *err, size_t errlen);

/* Accept one connection; 'addr' gets "ip:port" and *ip (unless NULL) the
 * IPv4 address in host order.  Returns the fd, or -1 with errno set (EAGAIN
 * when there is nothing to accept).  Retries on EINTR. */
int net_accept(int lfd, char *addr, size_t addrlen, uint32_t *ip);

/* Start a non-blocking connect to host:port.  Returns the fd (connection
 * in progress or done) or -1 with a reason in err. */
int net_connect(const char *host, int port, char *err, size_t errlen);

/* Turn off Nagle's algorithm: replies are whole lines, sent at once. */
void net_nodelay(int fd);

/* Raise the soft limit on open files to the hard limit; returns the
 * limit now in force, or -1 when it cannot be read. */
long net_raise_fd_limit(void);

#endif
