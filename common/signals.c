/* signals.c -- signals as bytes on a self-pipe; see signals.h. */
#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int pipe_w = -1;

static void on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(pipe_w, &b, 1) < 0) { /* pipe full: a wake-up is pending anyway */ }
    errno = saved;
}

int signals_to_pipe(const int *sigs, int n, int *read_fd, int *write_fd, char *err,
                    size_t errlen) {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    pipe_w = p[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < n; i++) {
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&set, sigs[i]);
    }
    signal(SIGPIPE, SIG_IGN);
    sigprocmask(SIG_UNBLOCK, &set, NULL);   /* pending ones arrive now, at the pipe */
    *read_fd = p[0];
    *write_fd = p[1];
    return 0;
}
