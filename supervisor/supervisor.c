/* supervisor.c -- herd-supervisor: one herd-server child per configured name.
 *
 * It forks and execs the servers, keeps servers.pid (beside the config)
 * current, restarts a crashed child at once the first time and with growing
 * back-off after, gives a child up after supervisor.restart_max crashes
 * within restart_window_s, forwards HUP, and on TERM or INT stops every
 * child (SIGKILL after stop_timeout_s) before it exits.  Signals only write
 * a byte to a self-pipe; the loop does the rest.  Children ask the kernel
 * for SIGTERM when the supervisor dies, so a SIGKILLed supervisor leaves no
 * orphan behind.
 *
 * state/supervisor.state (for --status) holds one line per server:
 *   NAME PID STARTED_UNIX_MS RESTARTS STATE
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "supervisor.h"

typedef enum { CH_RUNNING, CH_WAITING, CH_GIVEN_UP, CH_STOPPED } child_state;

static const char *state_name[] = {"running", "waiting", "given-up", "stopped"};

typedef struct {
    const char *name;
    pid_t pid;
    child_state state;
    int64_t started_ms;           /* wall clock, for --status */
    int64_t next_start_ms;        /* monotonic, while waiting */
    int restarts;
    int64_t crashes[64];          /* monotonic times within the window */
    int n_crashes;
} child;

static struct {
    const config *cfg;
    char server_path[PATH_MAX];
    char pid_path[PATH_MAX + 32];
    char state_path[PATH_MAX + 32];
    child kids[CONFIG_MAX_SERVERS];
    int n;
    int sig_r, sig_w;
    int stopping;
    int64_t stop_deadline;
    int dirty;                    /* the files need rewriting */
} S;

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_signal(int sig) {
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(S.sig_w, &b, 1) < 0) { /* full: a wake-up is pending anyway */ }
    errno = saved;
}

/* --------------------------------------------------------------- files */

/* Write 'text' to path through a temporary file and rename(). */
static int write_atomic(const char *path, const char *text) {
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fputs(text, f);
    int rc = (fflush(f) == EOF || fsync(fileno(f)) < 0) ? -1 : 0;
    if (fclose(f) == EOF) rc = -1;
    if (rc == 0 && rename(tmp, path) < 0) rc = -1;
    if (rc < 0) unlink(tmp);
    return rc;
}

static void write_files(void) {
    char pids[8192], states[8192];
    int p = snprintf(pids, sizeof pids, "supervisor %ld\n", (long)getpid());
    int q = 0;
    for (int i = 0; i < S.n; i++) {
        child *k = &S.kids[i];
        if (k->state == CH_RUNNING)
            p += snprintf(pids + p, sizeof pids - (size_t)p, "%s %ld\n", k->name, (long)k->pid);
        q += snprintf(states + q, sizeof states - (size_t)q, "%s %ld %lld %d %s\n", k->name,
                      k->state == CH_RUNNING ? (long)k->pid : 0L, (long long)k->started_ms,
                      k->restarts, state_name[k->state]);
    }
    if (write_atomic(S.pid_path, pids) < 0)
        log_msg(LOG_ERROR, "pidfile", "cannot write %s: %s", S.pid_path, strerror(errno));
    mkdir(S.cfg->herd.state_dir, 0755);
    write_atomic(S.state_path, states);
}

/* ------------------------------------------------------------ children */

/* In the child: stderr to <logging.dir>/NAME.stderr (appended, mode 0640);
 * the inherited stderr stays when that file cannot be opened. */
static void child_stderr(const char *name) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s.stderr", S.cfg->logging.dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0640);
    if (fd < 0) return;
    if (fd != STDERR_FILENO) {
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
}

static void start_child(child *k) {
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        log_msg(LOG_ERROR, "fork", "server=%s: %s", k->name, strerror(errno));
        k->state = CH_WAITING;
        k->next_start_ms = mono_ms() + S.cfg->supervisor.backoff_max_ms;
        return;
    }
    if (pid == 0) {
        /* default handlers, nothing blocked, die with the supervisor */
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);   /* the supervisor is already gone */
        child_stderr(k->name);
        execl(S.server_path, "herd-server", k->name, "-c", S.cfg->path, (char *)NULL);
        fprintf(stderr, "herd-supervisor: cannot run %s: %s\n", S.server_path, strerror(errno));
        _exit(127);
    }
    S.dirty = 1;
    k->pid = pid;
    k->state = CH_RUNNING;
    k->started_ms = log_now_ms();
    log_msg(LOG_INFO, "child-start", "server=%s pid=%ld restarts=%d", k->name, (long)pid,
            k->restarts);
}

/* Exit status in words, for the log. */
static void describe(int st, char *out, size_t n) {
    if (WIFEXITED(st)) snprintf(out, n, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st)) snprintf(out, n, "killed by signal %d (%s)", WTERMSIG(st),
                                       strsignal(WTERMSIG(st)));
    else snprintf(out, n, "status %d", st);
}

static void child_exited(child *k, int st) {
    char how[96];
    describe(st, how, sizeof how);
    pid_t pid = k->pid;
    k->pid = 0;
    S.dirty = 1;
    if (S.stopping) {
        k->state = CH_STOPPED;
        log_msg(LOG_INFO, "child-stopped", "server=%s %s", k->name, how);
        return;
    }
    int64_t now = mono_ms();
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        /* not asked to stop, yet clean: start it again, it is not a crash */
        log_msg(LOG_WARN, "child-exit", "server=%s exited cleanly; starting it again", k->name);
        k->state = CH_WAITING;
        k->next_start_ms = now + S.cfg->supervisor.backoff_initial_ms;
        return;
    }
    int64_t window = (int64_t)S.cfg->supervisor.restart_window_s * 1000;
    int m = 0;   /* age out crashes older than the window */
    for (int i = 0; i < k->n_crashes; i++)
        if (now - k->crashes[i] < window) k->crashes[m++] = k->crashes[i];
    k->n_crashes = m;
    if (k->n_crashes < 64) k->crashes[k->n_crashes++] = now;
    if (k->n_crashes > S.cfg->supervisor.restart_max) {
        k->state = CH_GIVEN_UP;
        log_msg(LOG_ERROR, "child-given-up",
                "server=%s %s: %d crashes within %d s; not restarting it (see its log)",
                k->name, how, k->n_crashes, S.cfg->supervisor.restart_window_s);
        return;
    }
    int64_t delay = 0;
    if (k->n_crashes > 1) {
        delay = S.cfg->supervisor.backoff_initial_ms;
        for (int i = 2; i < k->n_crashes && delay < S.cfg->supervisor.backoff_max_ms; i++)
            delay *= 2;
        if (delay > S.cfg->supervisor.backoff_max_ms) delay = S.cfg->supervisor.backoff_max_ms;
    }
    k->state = CH_WAITING;
    k->next_start_ms = now + delay;
    log_msg(LOG_WARN, "child-crash", "server=%s pid=%ld %s; restart %d in %lld ms",
            k->name, (long)pid, how, k->restarts + 1, (long long)delay);
}

static void reap(void) {
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < S.n; i++)
            if (S.kids[i].pid == pid && S.kids[i].state == CH_RUNNING) {
                child_exited(&S.kids[i], st);
                break;
            }
    }
}

static void signal_children(int sig) {
    for (int i = 0; i < S.n; i++)
        if (S.kids[i].state == CH_RUNNING) kill(S.kids[i].pid, sig);
}

static int running_children(void) {
    int n = 0;
    for (int i = 0; i < S.n; i++) n += S.kids[i].state == CH_RUNNING;
    return n;
}

static void begin_stop(const char *why) {
    if (S.stopping) return;
    S.stopping = 1;
    S.stop_deadline = mono_ms() + (int64_t)S.cfg->supervisor.stop_timeout_s * 1000;
    log_msg(LOG_INFO, "stopping", "signal=%s children=%d", why, running_children());
    signal_children(SIGTERM);
}

static void handle_signals(void) {
    unsigned char sigs[64];
    ssize_t n;
    while ((n = read(S.sig_r, sigs, sizeof sigs)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (sigs[i] == SIGCHLD) {
                reap();
            } else if (sigs[i] == SIGHUP) {
                log_reopen();
                signal_children(SIGHUP);
                log_msg(LOG_INFO, "reopen", "asked every server to reopen its log");
            } else {
                begin_stop(sigs[i] == SIGINT ? "INT" : "TERM");
            }
        }
    }
}

/* ----------------------------------------------------------------- main */

static int setup(char *err, size_t errlen) {
    int p[2];
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    S.sig_r = p[0];
    S.sig_w = p[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int supervisor_run(const config *cfg, const char *server_path) {
    char err[512];
    S.cfg = cfg;
    snprintf(S.server_path, sizeof S.server_path, "%s", server_path);
    snprintf(S.pid_path, sizeof S.pid_path, "%s/servers.pid", cfg->dir);
    snprintf(S.state_path, sizeof S.state_path, "%s/supervisor.state", cfg->herd.state_dir);
    if (log_open(cfg->logging.dir, "supervisor", cfg->logging.flush_ms, err, sizeof err) < 0 ||
        setup(err, sizeof err) < 0) {
        fprintf(stderr, "herd-supervisor: %s\n", err);
        return 1;
    }
    log_msg(LOG_INFO, "start", "pid=%ld config=%s servers=%d server-binary=%s",
            (long)getpid(), cfg->path, cfg->n_servers, server_path);
    S.n = cfg->n_servers;
    for (int i = 0; i < S.n; i++) {
        S.kids[i].name = cfg->servers[i].name;
        start_child(&S.kids[i]);
    }
    write_files();
    struct pollfd pfd = {.fd = S.sig_r, .events = POLLIN};
    for (;;) {
        int64_t now = mono_ms(), wake = now + 1000;
        for (int i = 0; i < S.n && !S.stopping; i++)
            if (S.kids[i].state == CH_WAITING && S.kids[i].next_start_ms < wake)
                wake = S.kids[i].next_start_ms;
        if (S.stopping && S.stop_deadline < wake) wake = S.stop_deadline;
        int lf = log_next_flush_ms(log_now_ms());
        if (lf >= 0 && now + lf < wake) wake = now + lf;
        int timeout = wake > now ? (int)(wake - now) : 0;
        if (poll(&pfd, 1, timeout) > 0) handle_signals();
        reap();   /* a SIGCHLD may have come before the handler was set */
        now = mono_ms();
        for (int i = 0; i < S.n && !S.stopping; i++) {
            child *k = &S.kids[i];
            if (k->state == CH_WAITING && now >= k->next_start_ms) {
                k->restarts++;
                start_child(k);
            }
        }
        if (S.stopping) {
            if (running_children() == 0) break;
            if (now >= S.stop_deadline) {
                log_msg(LOG_WARN, "stop-timeout", "%d servers did not stop in %d s: SIGKILL",
                        running_children(), cfg->supervisor.stop_timeout_s);
                signal_children(SIGKILL);
                S.stop_deadline = now + 60000;
            }
        }
        if (S.dirty && !S.stopping) {
            write_files();
            S.dirty = 0;
        }
        log_tick(log_now_ms());
    }
    unlink(S.pid_path);
    for (int i = 0; i < S.n; i++)
        if (S.kids[i].state != CH_GIVEN_UP) S.kids[i].state = CH_STOPPED;
    write_atomic(S.state_path, "");
    log_msg(LOG_INFO, "stopped", "every server has exited; %s removed", S.pid_path);
    log_close();
    return 0;
}
