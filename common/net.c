/* net.c -- TCP socket helpers; see net.h. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static int fill_addr(struct sockaddr_in *sa, const char *host, int port,
                     char *err, size_t errlen) {
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        snprintf(err, errlen, "'%s' is not an IPv4 address", host);
        return -1;
    }
    return 0;
}

/* A non-blocking TCP socket for host:port, its address in *sa; or -1. */
static int new_socket(struct sockaddr_in *sa, const char *host, int port, char *err,
                      size_t errlen) {
    if (fill_addr(sa, host, port, err, errlen) < 0) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) snprintf(err, errlen, "socket: %s", strerror(errno));
    return fd;
}

int net_listen(const char *host, int port, int backlog, char *err, size_t errlen) {
    struct sockaddr_in sa;
    int fd = new_socket(&sa, host, port, err, errlen);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, backlog) < 0) {
        snprintf(err, errlen, "listen on %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int net_accept(int lfd, char *addr, size_t addrlen, uint32_t *ip) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd;
    do {
        fd = accept4(lfd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) return -1;
    char text[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &sa.sin_addr, text, sizeof text);
    snprintf(addr, addrlen, "%s:%d", text, ntohs(sa.sin_port));
    if (ip) *ip = ntohl(sa.sin_addr.s_addr);
    return fd;
}

int net_connect(const char *host, int port, char *err, size_t errlen) {
    struct sockaddr_in sa;
    int fd = new_socket(&sa, host, port, err, errlen);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "connect to %s:%d: %s", host, port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
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
