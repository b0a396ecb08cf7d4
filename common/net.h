/* net.h -- small TCP socket helpers, IPv4 and IPv6.
 *
 * Each takes the caller's error buffer and returns a descriptor or -1, so
 * the caller decides what to log.  Every socket is non-blocking and
 * close-on-exec.
 *
 * A host is an IPv4 literal, an IPv6 literal (no brackets) or a name.  A
 * literal is parsed without any lookup (AI_NUMERICHOST).  A name goes to
 * getaddrinfo(), which answers at once for /etc/hosts names and may wait
 * for the resolver's timeout on a DNS name (so the server's loop leaves
 * that to server/resolver.c, docs/DESIGN.md); of its
 * answers the first IPv4 address is taken, else the first IPv6 one, so
 * `localhost` is 127.0.0.1 and both ends of a link agree on the address.
 * Addresses are written "1.2.3.4:port" and "[::1]:port".
 */
#ifndef HERD_NET_H
#define HERD_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Room for "[IPv6]:port" or "name:port" as net.c writes them. */
#define NET_ADDRSTRLEN 64

/* Resolve host:port as the header says into *sa (*len its size).  Returns 0,
 * or -1 with a reason in err. */
int net_resolve(const char *host, int port, struct sockaddr_storage *sa, socklen_t *len,
                char *err, size_t errlen);

/* The same for a literal only, never a lookup (so never a wait): 0, or -1
 * when host is a name. */
int net_literal(const char *host, int port, struct sockaddr_storage *sa, socklen_t *len);

/* host:port as text, with brackets around an IPv6 literal. */
void net_format(const char *host, int port, char *out, size_t n);

/* A socket address as "ip:port" or "[ip]:port". */
void net_format_sa(const struct sockaddr *sa, char *out, size_t n);

/* The local address a socket is bound to, formatted as net_format_sa. */
void net_sockname(int fd, char *out, size_t n);

/* Is host an address of this machine: loopback (127.0.0.0/8, ::1), the
 * wildcard (0.0.0.0, ::) or an address of one of its interfaces
 * (getifaddrs)?  Returns 1 or 0, or -1
 * with a reason in err when it cannot be resolved. */
int net_is_local(const char *host, char *err, size_t errlen);

/* Listen on host:port with SO_REUSEADDR (an IPv6 socket only takes IPv6).
 * Returns the fd or -1.  A port in use says who holds it, when /proc
 * tells (ports_holder): "... Address already in use (held by pid 123
 * (python3))". */
int net_listen(const char *host, int port, int backlog, char *err, size_t errlen);

/* Accept one connection; 'addr' (NET_ADDRSTRLEN) gets "ip:port" or
 * "[ip]:port", and *peer (unless NULL) the peer's address.  Returns the
 * fd, or -1 with errno set (EAGAIN when there is nothing to accept).
 * Retries on EINTR. */
int net_accept(int lfd, char *addr, size_t addrlen, struct sockaddr_storage *peer);

/* Resolve host (net_resolve: a name may wait for DNS) and start a
 * non-blocking connect to host:port.  Returns the fd (connection in
 * progress or done) or -1 with a reason in err. */
int net_connect(const char *host, int port, char *err, size_t errlen);

/* Start a non-blocking connect to an address already resolved; 'addr'
 * (unless NULL) gets it as net_format_sa writes it.  The fd, or -1 with a
 * reason in err. */
int net_connect_sa(const struct sockaddr_storage *sa, socklen_t len, char *addr, size_t addrlen,
                   char *err, size_t errlen);

/* Turn off Nagle's algorithm: replies are whole lines, sent at once. */
void net_nodelay(int fd);

/* Raise the soft limit on open files to the hard limit; returns the
 * limit now in force, or -1 when it cannot be read. */
long net_raise_fd_limit(void);

#endif
