/* control.c -- the supervisor's control socket, <state_dir>/supervisor.sock.
 *
 * How an operator's command reaches a running supervisor (the scripts'
 * --reload and --restart, through herd-supervisor's own options; see
 * ctl.c): a Unix stream socket in the state folder, which is the herd
 * user's alone (mode 0700, folder.h), so the folder's mode is the access
 * check.  One request a connection: a line ("reload", "restart NAME"),
 * then the answer's lines and EOF.  The supervisor serves it from its
 * loop, at once (the work it starts, a server coming up, is for the
 * client to wait for, not the supervisor).
 *
 * Paths longer than a sockaddr_un holds (108 bytes) are common for state
 * folders, so both ends name the socket through the folder's descriptor:
 * /proc/self/fd/N/supervisor.sock.  A signal was the other choice, but a
 * signal carries no name and no answer: the reload's error would go to a
 * log the operator has to find.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "supervisor.h"

#define CONTROL_NAME "supervisor.sock"
#define CONTROL_READ_MS 200       /* a client sends its whole line at once */
#define CONTROL_PER_ROUND 8       /* connections served per call: the loop goes on */
#define CONTROL_ANSWER_S 30       /* a client waits this long for the answer */

/* addr for the socket in cfg's state folder, through dirfd (the caller
 * closes it after bind or connect).  Returns 0, or -1 with why. */
static int control_addr(const config *cfg, struct sockaddr_un *addr, int *dirfd, char *err,
                        size_t errlen) {
    *dirfd = open(cfg->herd.state_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (*dirfd < 0) {
        snprintf(err, errlen, "%s: %s", cfg->herd.state_dir, strerror(errno));
        return -1;
    }
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    snprintf(addr->sun_path, sizeof addr->sun_path, "/proc/self/fd/%d/" CONTROL_NAME, *dirfd);
    return 0;
}

int control_listen(const config *cfg, char *err, size_t errlen) {
    struct sockaddr_un addr;
    int dirfd;
    if (control_addr(cfg, &addr, &dirfd, err, errlen) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    unlinkat(dirfd, CONTROL_NAME, 0);   /* a previous supervisor's (we hold the lock) */
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 8) < 0) {
        snprintf(err, errlen, "control socket %s/" CONTROL_NAME ": %s", cfg->herd.state_dir,
                 strerror(errno));
        if (fd >= 0) close(fd);
        fd = -1;
    }
    close(dirfd);
    return fd;
}

void control_unlink(const config *cfg) {
    char path[CONFIG_MAX_PATH + 32];
    snprintf(path, sizeof path, "%s/" CONTROL_NAME, cfg->herd.state_dir);
    unlink(path);
}

/* Read one line (without its LF) from fd within CONTROL_READ_MS in all.
 * Returns its length, or -1. */
static int read_line(int fd, char *line, size_t cap) {
    size_t n = 0;
    int64_t deadline = mono_ms() + CONTROL_READ_MS;
    while (n + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - mono_ms();
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) return -1;
        ssize_t r = read(fd, line + n, 1);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0) return -1;
        if (line[n] == '\n') break;
        n++;
    }
    line[n] = '\0';
    return (int)n;
}

void control_serve(int lfd, control_handler *handle) {
    int fd;
    for (int served = 0; served < CONTROL_PER_ROUND &&
                         (fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0; served++) {
        char line[256], reply[8192];
        reply[0] = '\0';
        if (read_line(fd, line, sizeof line) < 0)
            snprintf(reply, sizeof reply, "error no request line\n");
        else
            handle(line, reply, sizeof reply);
        size_t len = strlen(reply), off = 0;
        while (off < len) {             /* a few hundred bytes: the buffer holds them */
            ssize_t w = send(fd, reply + off, len - off, MSG_NOSIGNAL);
            if (w <= 0) break;
            off += (size_t)w;
        }
        close(fd);
    }
}

int control_request(const config *cfg, const char *request, char *reply, size_t cap,
                    char *err, size_t errlen) {
    struct sockaddr_un addr;
    int dirfd;
    if (control_addr(cfg, &addr, &dirfd, err, errlen) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        snprintf(err, errlen, "%s/" CONTROL_NAME ": %s", cfg->herd.state_dir, strerror(errno));
        if (fd >= 0) close(fd);
        close(dirfd);
        return -1;
    }
    close(dirfd);
    struct timeval tv = {.tv_sec = CONTROL_ANSWER_S};   /* a stopped supervisor: give up */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char line[300];
    int n = snprintf(line, sizeof line, "%s\n", request);
    size_t got = 0;
    if (send(fd, line, (size_t)n, MSG_NOSIGNAL) != n) got = (size_t)-1;
    while (got != (size_t)-1 && got + 1 < cap) {
        ssize_t r = read(fd, reply + got, cap - 1 - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got == (size_t)-1 || got == 0) {
        snprintf(err, errlen, "the supervisor gave no answer within %d s (stopped or stuck?)",
                 CONTROL_ANSWER_S);
        return -1;
    }
    reply[got] = '\0';
    return 0;
}
