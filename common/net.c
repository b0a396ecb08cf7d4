/* net.c -- TCP socket helpers, IPv4 and IPv6; see net.h. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ports.h"

void net_format(const char *host, int port, char *out, size_t n) {
    snprintf(out, n, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

void net_format_sa(const struct sockaddr *sa, char *out, size_t n) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, text, sizeof text);
        snprintf(out, n, "[%s]:%d", text, ntohs(s6->sin6_port));
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, text, sizeof text);
        snprintf(out, n, "%s:%d", text, ntohs(s4->sin_port));
    } else {
        snprintf(out, n, "?");
    }
}

void net_sockname(int fd, char *out, size_t n) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) snprintf(out, n, "?");
    else net_format_sa((struct sockaddr *)&ss, out, n);
}

/* One getaddrinfo() call; keeps the first IPv4 answer, else the first
 * IPv6 one.  Returns 0, or the EAI_ code. */
static int lookup(const char *host, int port, int flags, struct sockaddr_storage *sa,
                  socklen_t *len) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = flags | AI_NUMERICSERV}, *res, *pick = NULL;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc) return rc;
    for (struct addrinfo *a = res; a; a = a->ai_next)
        if (a->ai_family == AF_INET || (a->ai_family == AF_INET6 && !pick)) {
            pick = a;
            if (a->ai_family == AF_INET) break;
        }
    if (pick) {
        memcpy(sa, pick->ai_addr, pick->ai_addrlen);
        *len = pick->ai_addrlen;
    }
    freeaddrinfo(res);
    return pick ? 0 : EAI_NONAME;
}

int net_literal(const char *host, int port, struct sockaddr_storage *sa, socklen_t *len) {
    memset(sa, 0, sizeof *sa);
    return lookup(host, port, AI_NUMERICHOST, sa, len) ? -1 : 0;
}

int net_resolve(const char *host, int port, struct sockaddr_storage *sa, socklen_t *len,
                char *err, size_t errlen) {
    memset(sa, 0, sizeof *sa);
    int rc = lookup(host, port, AI_NUMERICHOST, sa, len);   /* a literal: no lookup */
    if (rc == EAI_NONAME) rc = lookup(host, port, 0, sa, len);
    if (rc) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host,
                 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return -1;
    }
    return 0;
}

/* A non-blocking TCP socket for host:port, its address in *sa; or -1. */
static int new_socket(struct sockaddr_storage *sa, socklen_t *len, const char *host, int port,
                      char *err, size_t errlen) {
    if (net_resolve(host, port, sa, len, err, errlen) < 0) return -1;
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) snprintf(err, errlen, "socket: %s", strerror(errno));
    return fd;
}

int net_listen(const char *host, int port, int backlog, char *err, size_t errlen) {
    struct sockaddr_storage sa;
    socklen_t len;
    char where[NET_ADDRSTRLEN + 300];
    int fd = new_socket(&sa, &len, host, port, err, errlen);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (sa.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    net_format(host, port, where, sizeof where);
    if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
        int e = errno;
        char holder[128] = "";
        if (e == EADDRINUSE) ports_holder(port, holder, sizeof holder);   /* failure only */
        snprintf(err, errlen, "cannot listen on %s: %s%s%s%s", where, strerror(e),
                 *holder ? " (" : "", holder, *holder ? ")" : "");
        close(fd);
        return -1;
    }
    if (listen(fd, backlog) < 0) {
        snprintf(err, errlen, "listen on %s: %s", where, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int net_accept(int lfd, char *addr, size_t addrlen, struct sockaddr_storage *peer) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd;
    do {
        fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return -1;
    net_format_sa((struct sockaddr *)&ss, addr, addrlen);
    if (peer) *peer = ss;
    return fd;
}

int net_connect_sa(const struct sockaddr_storage *sa, socklen_t len, char *addr, size_t addrlen,
                   char *err, size_t errlen) {
    char where[NET_ADDRSTRLEN];
    net_format_sa((const struct sockaddr *)sa, where, sizeof where);
    if (addr) snprintf(addr, addrlen, "%s", where);
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)sa, len) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect to %s: %s", where, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int net_connect(const char *host, int port, char *err, size_t errlen) {
    struct sockaddr_storage sa;
    socklen_t len;
    if (net_resolve(host, port, &sa, &len, err, errlen) < 0) return -1;
    return net_connect_sa(&sa, len, NULL, 0, err, errlen);
}

/* Same address, ports aside (an IPv6 scope too). */
static int same_addr(const struct sockaddr *a, const struct sockaddr *b) {
    if (a->sa_family != b->sa_family) return 0;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return !memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                   &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr));
}

int net_is_local(const char *host, char *err, size_t errlen) {
    struct sockaddr_storage sa;
    socklen_t len;
    if (net_resolve(host, 0, &sa, &len, err, errlen) < 0) return -1;
    if (sa.ss_family == AF_INET &&
        (ntohl(((struct sockaddr_in *)&sa)->sin_addr.s_addr) >> 24) == 127)
        return 1;
    if (sa.ss_family == AF_INET &&
        ((struct sockaddr_in *)&sa)->sin_addr.s_addr == htonl(INADDR_ANY))
        return 1;                              /* 0.0.0.0: every address here */
    const struct in6_addr *a6 = &((struct sockaddr_in6 *)&sa)->sin6_addr;
    if (sa.ss_family == AF_INET6 && (IN6_IS_ADDR_LOOPBACK(a6) || IN6_IS_ADDR_UNSPECIFIED(a6)))
        return 1;
    struct ifaddrs *ifs;
    if (getifaddrs(&ifs) < 0) {
        snprintf(err, errlen, "getifaddrs: %s", strerror(errno));
        return -1;
    }
    int local = 0;
    for (struct ifaddrs *i = ifs; i && !local; i = i->ifa_next)
        if (i->ifa_addr && same_addr(i->ifa_addr, (struct sockaddr *)&sa)) local = 1;
    freeifaddrs(ifs);
    return local;
}

void net_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

long net_raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);   /* the hard limit may be refused */
    }
    return rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > LONG_MAX ? LONG_MAX : (long)rl.rlim_cur;
}
