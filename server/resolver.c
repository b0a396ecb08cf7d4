/* resolver.c -- neighbours' host names looked up off the loop.
 *
 * A name only DNS knows can take the resolver's whole timeout (seconds per
 * nameserver and attempt); the loop must not wait for it, or clients go
 * unanswered and the supervisor's hang watch kills a healthy server.  So a
 * dial to a neighbour named by a host name asks a helper process: forked
 * on the first such dial, it does one lookup at a time (net_resolve, the
 * same rule as everywhere) and answers over a SOCK_SEQPACKET socket pair
 * polled by the loop (poll slot SERVER_RESOLVER_SLOT).  The helper is a
 * fresh herd-server (exec'd with RESOLVER_ARG), not a forked copy: it
 * holds none of the server's memory.  A literal never
 * gets here (peer.c connects to it at once).  The helper holds no socket of
 * the server, ignores the server's signals, dies with it
 * (PR_SET_PDEATHSIG), and when it goes away its questions fail as dial
 * failures and the next dial starts another one.  So does a helper that
 * has answered nothing for RESOLVER_STUCK_MS while questions are out (a
 * stopped or stuck process: its links would wait for ever).  A helper
 * given up on is killed (SIGKILL) and reaped without waiting (WNOHANG) from
 * the loop, never with a blocking waitpid: one stuck in the kernel (or
 * held by a tracer) does not hold the loop until it goes.  Each link has
 * at most one question out, so the socket buffer never fills.
 */
#include "resolver.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "net.h"
#include "peer.h"
#include "server.h"

/* Longer than one lookup can take with the resolver's defaults (5 s per
 * nameserver and attempt, 2 attempts, 3 nameservers: 30 s), twice over. */
#define RESOLVER_STUCK_MS 60000

/* Helpers killed but not reaped yet (killed ones go in a moment; one
 * stuck in the kernel when it goes).  Past the bound, a helper that never
 * goes stays a zombie until the server exits: logged. */
#define RESOLVER_KILLED_MAX 8
#define RESOLVER_REAP_MS 1000    /* how often the loop wakes to reap them */
static pid_t killed[RESOLVER_KILLED_MAX];
static int nkilled;
static int64_t reap_due_ms;      /* the timer's next look at them */

typedef struct {
    int link;
    unsigned gen;               /* server.links_gen when asked */
    int port;
    char host[sizeof ((config_server *)0)->host];
} question;

typedef struct {
    int link;
    unsigned gen;
    int ok;
    socklen_t len;
    struct sockaddr_storage sa;
    char err[512];              /* as dial() has: a 253-byte name and the reason fit */
} answer;

/* The helper, in a herd-server started afresh (main.c, RESOLVER_ARG):
 * answer each question on fd until the server closes its end. */
int resolver_main(const char *fd_arg) {
    char *end;
    long v = strtol(fd_arg, &end, 10);
    if (*end || v < 0 || v > 65535) return 2;
    int fd = (int)v;
    prctl(PR_SET_NAME, "herd-resolver");
    int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGPIPE};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) signal(sigs[i], SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (;;) {
        question q;
        ssize_t n = recv(fd, &q, sizeof q, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) _exit(0);
        if (n != (ssize_t)sizeof q) continue;
        q.host[sizeof q.host - 1] = '\0';
        answer a = {.link = q.link, .gen = q.gen};
        a.ok = net_resolve(q.host, q.port, &a.sa, &a.len, a.err, sizeof a.err) == 0;
        if (send(fd, &a, sizeof a, MSG_NOSIGNAL) < 0) _exit(1);
    }
}

/* The forked child: die with the server, keep only fd (and stdio), and run
 * the helper in a new image of this program.  A forked copy that went on
 * running would keep the server's memory as it was at the fork (the whole
 * table, the secret): each page the server changes afterwards is one more
 * for the machine.  Only async-signal-safe calls before the exec. */
static void exec_helper(int fd, pid_t parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent) _exit(1);
    if (fcntl(fd, F_SETFD, 0) < 0) _exit(1);       /* kept across the exec */
    if (fd > 3) close_range(3, (unsigned)fd - 1, 0);
    close_range((unsigned)fd + 1, ~0U, 0);
    char arg[16];
    int n = 0;
    for (int v = fd; n == 0 || v; v /= 10) arg[n++] = (char)('0' + v % 10);
    for (int i = 0; i < n / 2; i++) {
        char c = arg[i];
        arg[i] = arg[n - 1 - i];
        arg[n - 1 - i] = c;
    }
    arg[n] = '\0';
    /* the program's path first: under valgrind, /proc/self/exe is
     * valgrind's tool (which refuses to run so); then /proc/self/exe, the
     * very file even if replaced since ("PATH (deleted)") */
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    static const char gone[] = " (deleted)";
    const ssize_t glen = (ssize_t)sizeof gone - 1;
    if (len > 0 && (len < glen || memcmp(self + len - glen, gone, (size_t)glen))) {
        self[len] = '\0';
        execl(self, "herd-server", RESOLVER_ARG, arg, (char *)NULL);
    }
    execl("/proc/self/exe", "herd-server", RESOLVER_ARG, arg, (char *)NULL);
    _exit(127);
}

static int start(server *s, char *err, size_t errlen) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        snprintf(err, errlen, "resolver: socketpair: %s", strerror(errno));
        return -1;
    }
    log_flush();                 /* the helper must not inherit unwritten lines */
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "resolver: fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) exec_helper(sv[1], parent);
    close(sv[1]);
    s->resolver_fd = sv[0];
    s->resolver_pid = pid;
    s->pfd[SERVER_RESOLVER_SLOT].fd = sv[0];
    return 0;
}

/* Reap the killed helpers that are gone; never waits. */
static void reap_gone(void) {
    for (int i = 0; i < nkilled;) {
        pid_t r = waitpid(killed[i], NULL, WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR)) {
            i++;
            continue;
        }
        killed[i] = killed[--nkilled];   /* reaped, or no child of ours (ECHILD) */
    }
}

/* Close our end, kill the helper and reap it if it went already; else
 * the loop reaps it (reap_gone), so a helper that does not go at once
 * never holds the loop. */
static void stop(server *s) {
    if (s->resolver_fd < 0) return;
    close(s->resolver_fd);
    s->resolver_fd = -1;
    s->pfd[SERVER_RESOLVER_SLOT].fd = -1;
    s->resolver_out = 0;
    kill(s->resolver_pid, SIGKILL);
    if (nkilled < RESOLVER_KILLED_MAX) killed[nkilled++] = s->resolver_pid;
    else log_msg(LOG_WARN, "resolver", "pid=%ld killed; %d killed helpers not gone yet: "
                 "not waited for", (long)s->resolver_pid, nkilled);
    s->resolver_pid = 0;
    reap_gone();
}

/* The helper is gone or no longer usable: stop it, and every question
 * still out fails as a dial failure (else its link waits for ever). */
static void lost(server *s) {
    stop(s);
    peer_resolved(s, -1, NULL, 0, "the resolver process went away");
}

int resolver_ask(server *s, int link, const char *host, int port, char *err, size_t errlen) {
    if (s->resolver_fd < 0 && start(s, err, errlen) < 0) return -1;
    question q = {.link = link, .gen = s->links_gen, .port = port};
    snprintf(q.host, sizeof q.host, "%s", host);
    if (send(s->resolver_fd, &q, sizeof q, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)sizeof q) {
        if (s->resolver_out++ == 0) s->resolver_busy_ms = s->now_ms;   /* it starts now */
        return 0;
    }
    snprintf(err, errlen, "resolver: %s", strerror(errno));
    lost(s);
    return -1;
}

void resolver_read(server *s) {
    for (;;) {
        answer a;
        ssize_t n = recv(s->resolver_fd, &a, sizeof a, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n == (ssize_t)sizeof a) {
            a.err[sizeof a.err - 1] = '\0';
            if (s->resolver_out > 0) s->resolver_out--;
            s->resolver_busy_ms = s->now_ms;    /* the next question starts now */
            if (a.gen == s->links_gen)          /* else asked before a reload */
                peer_resolved(s, a.link, a.ok ? &a.sa : NULL, a.len, a.err);
            continue;
        }
        log_msg(LOG_WARN, "resolver", "pid=%ld went away (%s); started again at the next dial",
                (long)s->resolver_pid, n < 0 ? strerror(errno) : "closed");
        lost(s);
        return;
    }
}

void resolver_tick(server *s) {
    reap_gone();
    reap_due_ms = s->now_ms + RESOLVER_REAP_MS;
    if (!s->resolver_out || s->now_ms - s->resolver_busy_ms < RESOLVER_STUCK_MS) return;
    log_msg(LOG_WARN, "resolver", "pid=%ld answered nothing in %d s (stopped or stuck); "
            "killed, started again at the next dial", (long)s->resolver_pid,
            RESOLVER_STUCK_MS / 1000);
    lost(s);
}

int64_t resolver_next_due(const server *s) {
    int64_t due = nkilled ? reap_due_ms : -1;
    int64_t stuck = s->resolver_busy_ms + RESOLVER_STUCK_MS;
    if (s->resolver_out && (due < 0 || stuck < due)) due = stuck;
    return due;
}

/* At the stop: kill the helper, and give the killed ones a moment to go
 * (an exit leaves no zombie behind); whatever still lives then dies with
 * the server (PR_SET_PDEATHSIG) and is reaped by whoever inherits it. */
void resolver_free(server *s) {
    stop(s);
    for (int i = 0; nkilled && i < 50; i++) {
        usleep(10 * 1000);
        reap_gone();
    }
}
