/* supervisor.c -- herd-supervisor: one herd-server child per configured name
 * whose host is an address of this machine (local.c); the others are run by
 * the supervisors of their own hosts, from a copy of the same config.
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
 * Only one supervisor runs per config: it holds servers.lock for its whole
 * life (lock.c), and removes servers.pid at exit only while the file still
 * names it.  Servers start with TERM, INT and HUP blocked, from before fork
 * until herd-server has its handlers (common/signals.h), so a signal
 * forwarded to a starting server cannot kill it.
 *
 * state/supervisor.state (for --status, mode 0600) holds one line per server:
 *   NAME PID STARTED_UNIX_MS RESTARTS STATE
 * servers.pid stays 0644: pids are public in /proc anyway, and the file
 * names nothing else.
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

#include "clock.h"
#include "config.h"
#include "folder.h"
#include "log.h"
#include "ports.h"
#include "secret.h"
#include "signals.h"
#include "supervisor.h"

typedef enum { CH_RUNNING, CH_WAITING, CH_GIVEN_UP, CH_STOPPED } child_state;

static const char *state_name[] = {"running", "waiting", "given-up", "stopped"};

typedef struct {
    char name[CONFIG_MAX_NAME];   /* a copy: a reload replaces the config */
    pid_t pid;
    child_state state;
    int64_t started_ms;           /* wall clock, for --status */
    int64_t next_start_ms;        /* monotonic, while waiting */
    int restarts;
    int64_t crashes[CONFIG_RESTART_MAX + 1];   /* monotonic times within the window */
    int n_crashes;
    int hb_r, hb_w;               /* heartbeat pipe (see heartbeat_prepare), or -1 */
    int64_t last_beat_ms;         /* monotonic; 0: no beat yet, not watched */
    int restart_asked;            /* TERM sent for a restart (ctl, reload): start
                                   * it again at its exit, not a crash */
    int retiring;                 /* TERM sent: gone from the config (reload) */
    int64_t kill_at_ms;           /* monotonic: SIGKILL if it still runs; 0: none */
} child;

static struct {
    const config *cfg;            /* replaced by a reload */
    int cfg_owned;                /* ... which allocated it */
    int ctl_fd;                   /* the control socket (control.c), or -1 */
    char server_path[PATH_MAX];
    char pid_path[PATH_MAX + 32];
    char state_path[PATH_MAX + 32];
    child kids[CONFIG_MAX_SERVERS];
    int n;
    int sig_r, sig_w;
    int stopping;
    int64_t stop_deadline;
    int dirty;                    /* the files need rewriting */
    int lock_fd;                  /* servers.lock, held until exit */
    char self_path[PATH_MAX];     /* this program, for a re-exec */
    int execs;                    /* re-execs so far (reexec) */
    int reexec_due;               /* asked, answered: exec at the end of the round */
} S;

/* --------------------------------------------------------------- files */

/* Write 'text' to path (created with 'mode') through a new temporary file
 * and rename().  A stale temporary file or a link planted at its name is
 * removed first (unlink() never follows a link) and O_EXCL makes a new
 * one, so nothing is written through a link. */
static int write_atomic(const char *path, const char *text, mode_t mode) {
    char tmp[PATH_MAX + 64];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
    if (!f) {
        if (fd >= 0) close(fd);
        return -1;
    }
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
    if (write_atomic(S.pid_path, pids, 0644) < 0)
        log_msg(LOG_ERROR, "pidfile", "cannot write %s: %s", S.pid_path, strerror(errno));
    mkdir(S.cfg->herd.state_dir, 0700);
    write_atomic(S.state_path, states, 0600);
}

/* Remove servers.pid if it still names this supervisor.  Returns 1 when
 * removed, 0 when the file is gone or another's. */
static int remove_own_pid_file(void) {
    FILE *f = fopen(S.pid_path, "r");
    if (!f) return 0;
    long pid = 0;
    int mine = fscanf(f, "supervisor %ld", &pid) == 1 && pid == (long)getpid();
    fclose(f);
    if (mine) unlink(S.pid_path);
    return mine;
}

/* ----------------------------------------------------------- heartbeat
 *
 * A server stopped (SIGSTOP) or spinning in a bug still holds its port, so
 * it looks alive to everyone.  Each child gets the write end of a pipe,
 * named by HERD_HEARTBEAT_FD, and writes one byte from its loop at most
 * once a second.  The supervisor polls the read ends with its self-pipe;
 * a child silent for supervisor.hang_timeout_s after its first beat is
 * logged as child-hung and SIGKILLed, and the ordinary restart path (where
 * it counts as a crash) starts it again.  The first beat comes once the
 * server listens, so loading a large snapshot at start is never a hang;
 * after that the loop does long work (catch-up) in slices, so it beats
 * through it.  hang_timeout_s 0: no pipe, no beats, no watch.
 */

/* Before fork: a fresh pipe for k (close-on-exec, so no other child gets
 * it; the child keeps its own end across exec). */
static void heartbeat_prepare(child *k) {
    if (k->hb_r >= 0) close(k->hb_r);
    k->hb_r = k->hb_w = -1;
    k->last_beat_ms = 0;
    int p[2];
    if (!S.cfg->supervisor.hang_timeout_s) return;
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0) {
        log_msg(LOG_WARN, "heartbeat", "server=%s pipe: %s: not watched for hangs", k->name,
                strerror(errno));
        return;
    }
    k->hb_r = p[0];
    k->hb_w = p[1];
}

/* In the child, before exec: keep the write end and name it. */
static void heartbeat_in_child(const child *k) {
    if (k->hb_w < 0) return;
    char fd[16];
    snprintf(fd, sizeof fd, "%d", k->hb_w);
    fcntl(k->hb_w, F_SETFD, 0);
    setenv("HERD_HEARTBEAT_FD", fd, 1);
}

/* In the supervisor after fork: the write end is the child's alone. */
static void heartbeat_started(child *k) {
    if (k->hb_w >= 0) close(k->hb_w);
    k->hb_w = -1;
}

/* The read ends of the running children, after pfd[0] (the self-pipe):
 * a beat wakes the loop.  Returns the number of entries. */
static int heartbeat_pollset(struct pollfd *pfd) {
    int n = 1;
    for (int i = 0; i < S.n; i++)
        if (S.kids[i].state == CH_RUNNING && S.kids[i].hb_r >= 0)
            pfd[n++] = (struct pollfd){.fd = S.kids[i].hb_r, .events = POLLIN};
    return n;
}

/* Record the beats that came, from every pipe, just before they are
 * checked: however long this round took (a slow control client, a slow
 * name lookup), a child that beat meanwhile is not taken for hung.  A
 * closed pipe (the child is exiting) is not watched any more. */
static void heartbeat_drain(int64_t now) {
    for (int i = 0; i < S.n; i++) {
        child *k = &S.kids[i];
        if (k->state != CH_RUNNING || k->hb_r < 0) continue;
        char buf[64];
        ssize_t r;
        while ((r = read(k->hb_r, buf, sizeof buf)) > 0) k->last_beat_ms = now;
        if (r == 0) {
            close(k->hb_r);
            k->hb_r = -1;
        }
    }
}

/* The earliest time a watched child would be overdue, or INT64_MAX. */
static int64_t heartbeat_deadline(void) {
    int64_t t = INT64_MAX, timeout = (int64_t)S.cfg->supervisor.hang_timeout_s * 1000;
    for (int i = 0; i < S.n; i++) {
        const child *k = &S.kids[i];
        if (k->state == CH_RUNNING && k->hb_r >= 0 && k->last_beat_ms &&
            k->last_beat_ms + timeout < t)
            t = k->last_beat_ms + timeout;
    }
    return t;
}

/* Kill each child overdue; reap() and child_exited() restart it. */
static void heartbeat_check(int64_t now) {
    int64_t timeout = (int64_t)S.cfg->supervisor.hang_timeout_s * 1000;
    if (!timeout || S.stopping) return;   /* a stop has its own timeout */
    for (int i = 0; i < S.n; i++) {
        child *k = &S.kids[i];
        if (k->state != CH_RUNNING || k->hb_r < 0 || !k->last_beat_ms ||
            now - k->last_beat_ms < timeout)
            continue;
        log_msg(LOG_ERROR, "child-hung", "server=%s pid=%ld no heartbeat for %lld ms "
                "(hang_timeout_s %d): SIGKILL", k->name, (long)k->pid,
                (long long)(now - k->last_beat_ms), S.cfg->supervisor.hang_timeout_s);
        kill(k->pid, SIGKILL);
        k->last_beat_ms = 0;              /* once; SIGCHLD follows */
    }
}

/* ------------------------------------------------------------ children */

/* In the child: stderr to <logging.dir>/NAME.stderr (appended, mode 0640,
 * never through a link); the inherited stderr stays, and says why, when
 * that file cannot be opened. */
static void child_stderr(const char *name) {
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s.stderr", S.cfg->logging.dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0640);
    if (fd < 0) {
        fprintf(stderr, "herd-supervisor: cannot open %s: %s; %s's stderr stays here\n", path,
                errno == ELOOP ? "a symbolic link, never written through" : strerror(errno),
                name);
        return;
    }
    if (fd != STDERR_FILENO) {
        dup2(fd, STDERR_FILENO);
        close(fd);
    }
}

/* The signals held while a process changes hands -- around a fork, across
 * a server's exec until its handlers are in place, across our own re-exec:
 * TERM, INT, HUP and USR1, and CHLD with 'chld'. */
static void held_signals(sigset_t *set, int chld) {
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    sigemptyset(set);
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) sigaddset(set, sigs[i]);
    if (chld) sigaddset(set, SIGCHLD);
}

/* In a new child: default handlers, TERM, INT, HUP and USR1 left blocked across
 * exec (herd-server unblocks them once its handlers are in place), die with
 * the supervisor, become herd-server. */
static void exec_server(const child *k, pid_t parent) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGUSR1, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigset_t keep;                      /* a reload before its handler: held */
    held_signals(&keep, 0);
    sigprocmask(SIG_SETMASK, &keep, NULL);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);   /* the supervisor is already gone */
    child_stderr(k->name);
    heartbeat_in_child(k);
    execl(S.server_path, "herd-server", k->name, "-c", S.cfg->path, (char *)NULL);
    fprintf(stderr, "herd-supervisor: cannot run %s: %s\n", S.server_path, strerror(errno));
    _exit(127);
}

static void start_child(child *k) {
    pid_t parent = getpid();
    heartbeat_prepare(k);
    sigset_t block, old;   /* no signal reaches the child before exec_server() */
    held_signals(&block, 1);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t pid = fork();
    if (pid == 0) exec_server(k, parent);
    sigprocmask(SIG_SETMASK, &old, NULL);
    heartbeat_started(k);
    if (pid < 0) {
        log_msg(LOG_ERROR, "fork", "server=%s: %s", k->name, strerror(errno));
        k->state = CH_WAITING;
        k->next_start_ms = mono_ms() + S.cfg->supervisor.backoff_max_ms;
        return;
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
    k->kill_at_ms = 0;
    S.dirty = 1;
    if (S.stopping || k->retiring) {
        k->state = CH_STOPPED;
        log_msg(LOG_INFO, "child-stopped", "server=%s %s", k->name, how);
        return;
    }
    int64_t now = mono_ms();
    if (k->restart_asked) {             /* asked for: not a crash */
        k->restart_asked = 0;
        log_msg(LOG_INFO, "child-stopped", "server=%s (restarted as asked) %s", k->name, how);
        k->state = CH_WAITING;
        k->next_start_ms = now;
        return;
    }
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
    k->crashes[k->n_crashes++] = now;   /* room for restart_max + 1 */
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

/* ------------------------------------------------------------ commands
 *
 * What the control socket (control.c) asks: "reload" and "restart NAME".
 * Each answers at once with what it set going, one line per server; the
 * client (ctl.c) waits for the servers to come up.
 */

static child *find_kid(const char *name) {
    for (int i = 0; i < S.n; i++)
        if (!S.kids[i].retiring && !strcmp(S.kids[i].name, name)) return &S.kids[i];
    return NULL;
}

/* A child removed from the config that is still stopping. */
static child *find_retiring(const char *name) {
    for (int i = 0; i < S.n; i++)
        if (S.kids[i].retiring && S.kids[i].state == CH_RUNNING && !strcmp(S.kids[i].name, name))
            return &S.kids[i];
    return NULL;
}

/* SIGTERM, and SIGKILL after stop_timeout_s (kill_overdue). */
static void ask_to_stop(child *k) {
    kill(k->pid, SIGTERM);
    k->kill_at_ms = mono_ms() + (int64_t)S.cfg->supervisor.stop_timeout_s * 1000;
}

static void kill_overdue(int64_t now) {
    for (int i = 0; i < S.n; i++) {
        child *k = &S.kids[i];
        if (k->state != CH_RUNNING || !k->kill_at_ms || now < k->kill_at_ms) continue;
        log_msg(LOG_WARN, "stop-timeout", "server=%s pid=%ld did not stop in %d s: SIGKILL",
                k->name, (long)k->pid, S.cfg->supervisor.stop_timeout_s);
        kill(k->pid, SIGKILL);
        k->kill_at_ms = 0;
    }
}

/* A child given up (or waiting out a back-off) starts now, afresh. */
static void revive(child *k) {
    k->n_crashes = 0;
    k->state = CH_WAITING;
    k->next_start_ms = mono_ms();
}

/* Restart k: a running one is asked to stop and started again at its exit;
 * one that does not run starts now.  Appends what it did to out. */
static void restart_kid(child *k, const char *why, char *out, size_t n) {
    size_t len = strlen(out);
    if (k->state == CH_RUNNING) {
        k->restart_asked = 1;
        ask_to_stop(k);
        snprintf(out + len, n - len, "restart %s pid %ld%s%s\n", k->name, (long)k->pid,
                 why ? ": " : "", why ? why : "");
    } else {
        snprintf(out + len, n - len, "start %s (it was %s)\n", k->name, state_name[k->state]);
        revive(k);
    }
}

static void command_restart(const char *name, char *reply, size_t n) {
    child *k = find_kid(name);
    if (!k) {
        snprintf(reply, n, "error no server named '%s' runs on this machine\n", name);
        return;
    }
    snprintf(reply, n, "ok\n");
    log_msg(LOG_INFO, "restart", "server=%s asked by the control socket", name);
    restart_kid(k, NULL, reply, n);
}

/* The servers of this machine under the new config 'next': removed ones
 * stop, new ones start, changed ones reload in place (SIGUSR1) or restart
 * (config_needs_restart), given-up ones start again. */
static void apply_config(const config *next, const int *local, char *reply, size_t n) {
    char why[256];
    for (int i = 0; i < S.n; i++) {
        child *k = &S.kids[i];
        size_t len = strlen(reply);
        if (k->retiring) continue;
        int j = config_find_server(next, k->name);
        if (j < 0 || !local[j]) {
            k->retiring = 1;
            if (k->state == CH_RUNNING) ask_to_stop(k);
            else k->state = CH_STOPPED;
            snprintf(reply + len, n - len, "stop %s\n", k->name);
        } else if (k->state == CH_GIVEN_UP || k->state == CH_WAITING) {
            restart_kid(k, NULL, reply, n);     /* at once, its crashes forgotten */
        } else if (config_needs_restart(S.cfg, next, k->name, why, sizeof why)) {
            restart_kid(k, why, reply, n);
        } else if (k->state == CH_RUNNING) {
            kill(k->pid, SIGUSR1);
            snprintf(reply + len, n - len, "reload %s pid %ld\n", k->name, (long)k->pid);
        }
    }
    for (int j = 0; j < next->n_servers; j++) {
        if (!local[j] || find_kid(next->servers[j].name)) continue;
        child *old = find_retiring(next->servers[j].name);
        if (old) {                      /* removed by the last reload, not gone yet: */
            old->retiring = 0;          /* it starts again once it has exited */
            old->restart_asked = 1;
            size_t len = strlen(reply);
            snprintf(reply + len, n - len, "restart %s pid %ld (it was stopping)\n", old->name,
                     (long)old->pid);
            continue;
        }
        if (S.n == CONFIG_MAX_SERVERS) continue;
        child *k = &S.kids[S.n++];
        memset(k, 0, sizeof *k);
        snprintf(k->name, sizeof k->name, "%s", next->servers[j].name);
        k->hb_r = k->hb_w = -1;
        start_child(k);
        size_t len = strlen(reply);
        snprintf(reply + len, n - len, "start %s\n", k->name);
    }
}

static void command_reload(char *reply, size_t n) {
    char err[4400];
    config *next = malloc(sizeof *next);
    int local[CONFIG_MAX_SERVERS];
    if (!next || config_load(S.cfg->path, next, err, sizeof err) < 0) {
        snprintf(reply, n, "error %s\n", next ? err : "out of memory");
        log_msg(LOG_ERROR, "reload-refused", "%s; nothing changed", next ? err : "out of memory");
        free(next);
        return;
    }
    if (herd_local_servers(next, local, 1) == 0) {
        snprintf(reply, n, "error %s: none of its servers is on this machine\n", next->path);
        log_msg(LOG_ERROR, "reload-refused", "%s: none of its servers is on this machine; "
                "nothing changed", next->path);
        free(next);
        return;
    }
    snprintf(reply, n, "ok\n");
    apply_config(next, local, reply, n);
    if (S.cfg_owned) free((config *)S.cfg);
    S.cfg = next;
    S.cfg_owned = 1;
    snprintf(S.state_path, sizeof S.state_path, "%s/supervisor.state", next->herd.state_dir);
    log_set_rotation(next->logging.max_file_bytes, next->logging.keep_files);
    log_set_flush_ms(next->logging.flush_ms);
    S.dirty = 1;
    for (char *p = reply + 3, *nl; (nl = strchr(p, '\n')); p = nl + 1)
        log_msg(LOG_INFO, "reload", "%.*s", (int)(nl - p), p);
    int here = 0;
    for (int i = 0; i < S.n; i++) here += !S.kids[i].retiring;
    log_msg(LOG_INFO, "reloaded", "config=%s servers=%d here", next->path, here);
}

/* ------------------------------------------------------------- re-exec
 *
 * A new herd-supervisor binary without stopping the servers, as nginx
 * upgrades its master in place: the supervisor execs its own path again
 * and keeps its pid, so the servers stay its children.  What it knows of
 * them and the descriptors it keeps (servers.lock, the control socket, the
 * heartbeat pipes) cross the exec in HERD_SUPERVISOR_RESUME:
 *   "EXECS LOCKFD CTLFD;NAME PID STATE STARTED_MS RESTARTS HBFD FLAGS KILL_IN_MS;..."
 * (FLAGS: 1 retiring, 2 restart asked; KILL_IN_MS: -1, or when a stop asked
 * turns into SIGKILL).  A signal that came before the exec, still in the
 * self-pipe, is raised again while blocked, so the new image gets it.
 * Before it goes, the new binary is tried (--local on the config): one that
 * does not run, or refuses the config, leaves this supervisor as it was.
 * TERM, INT, HUP, USR1 and CHLD stay blocked across the exec; the new image
 * unblocks them with its handlers in place, and its first round reaps any
 * server that exited meanwhile.
 */

#define RESUME_ENV "HERD_SUPERVISOR_RESUME"
#define TRY_BINARY_MS 10000       /* the new binary's --local must end by then */

/* Does the program at S.self_path run and accept our config?  0, or -1
 * with why. */
static int try_new_binary(char *why, size_t n) {
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, STDOUT_FILENO);
        execl(S.self_path, "herd-supervisor", "-c", S.cfg->path, "--local", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    pid_t done = 0;
    for (int64_t until = mono_ms() + TRY_BINARY_MS; pid > 0 && !done && mono_ms() < until;) {
        done = waitpid(pid, &st, WNOHANG);
        if (!done) usleep(10 * 1000);
    }
    if (pid > 0 && !done) {             /* it hangs: not the binary to run */
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        snprintf(why, n, "%s --local did not finish in %d s: not re-executed", S.self_path,
                 TRY_BINARY_MS / 1000);
        return -1;
    }
    if (pid < 0 || done < 0) {
        snprintf(why, n, "cannot try %s: %s", S.self_path, strerror(errno));
        return -1;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 0;
    describe(st, why, n);
    size_t len = strlen(why);
    snprintf(why + len, n - len, " from %s --local: not re-executed", S.self_path);
    return -1;
}

static void keep_across_exec(int fd, int keep) {
    if (fd >= 0) fcntl(fd, F_SETFD, keep ? 0 : FD_CLOEXEC);
}

static void reexec(void) {
    char state[CONFIG_MAX_SERVERS * (CONFIG_MAX_NAME + 80) + 64];
    size_t k = (size_t)snprintf(state, sizeof state, "%d %d %d;", S.execs + 1, S.lock_fd,
                                S.ctl_fd);
    int64_t now = mono_ms();
    for (int i = 0; i < S.n; i++) {
        child *c = &S.kids[i];
        if (c->retiring && c->state != CH_RUNNING) continue;
        k += (size_t)snprintf(state + k, sizeof state - k, "%s %ld %d %lld %d %d %d %lld;",
                              c->name, (long)c->pid, (int)c->state, (long long)c->started_ms,
                              c->restarts, c->hb_r, c->retiring | c->restart_asked << 1,
                              c->kill_at_ms ? (long long)(c->kill_at_ms - now) : -1LL);
        keep_across_exec(c->hb_r, 1);
    }
    keep_across_exec(S.lock_fd, 1);
    keep_across_exec(S.ctl_fd, 1);
    sigset_t block, old;
    held_signals(&block, 1);
    sigprocmask(SIG_BLOCK, &block, &old);
    unsigned char sigs_in[64];         /* caught before the block: pending again */
    ssize_t got;
    while ((got = read(S.sig_r, sigs_in, sizeof sigs_in)) > 0)
        for (ssize_t i = 0; i < got; i++) raise(sigs_in[i]);
    setenv(RESUME_ENV, state, 1);
    log_msg(LOG_INFO, "reexec", "pid=%ld binary=%s servers=%d", (long)getpid(), S.self_path,
            S.n);
    log_flush();
    execl(S.self_path, "herd-supervisor", "-c", S.cfg->path, (char *)NULL);
    int e = errno;                       /* still here: nothing changed */
    unsetenv(RESUME_ENV);
    sigprocmask(SIG_SETMASK, &old, NULL);
    keep_across_exec(S.lock_fd, 0);
    keep_across_exec(S.ctl_fd, 0);
    for (int i = 0; i < S.n; i++) keep_across_exec(S.kids[i].hb_r, 0);
    log_msg(LOG_ERROR, "reexec", "cannot run %s: %s; this supervisor goes on", S.self_path,
            strerror(e));
}

static void command_reexec(char *reply, size_t n) {
    char why[PATH_MAX + 256];
    if (try_new_binary(why, sizeof why) < 0) {
        snprintf(reply, n, "error %s\n", why);
        log_msg(LOG_ERROR, "reexec", "%s", why);
        return;
    }
    snprintf(reply, n, "ok\nreexec supervisor pid %ld\n", (long)getpid());
    S.reexec_due = 1;
}

/* The state a previous image left in RESUME_ENV: its children adopted,
 * its descriptors taken over.  Returns 1 when there was one. */
static int resume(void) {
    const char *text = getenv(RESUME_ENV);
    if (!text) return 0;
    char *copy = strdup(text), *save = NULL;
    unsetenv(RESUME_ENV);               /* the servers started later must not see it */
    char *part = copy ? strtok_r(copy, ";", &save) : NULL;
    if (!part || sscanf(part, "%d %d %d", &S.execs, &S.lock_fd, &S.ctl_fd) != 3) {
        free(copy);
        return 0;
    }
    keep_across_exec(S.lock_fd, 0);
    keep_across_exec(S.ctl_fd, 0);
    S.n = 0;
    while ((part = strtok_r(NULL, ";", &save)) && S.n < CONFIG_MAX_SERVERS) {
        child *c = &S.kids[S.n];
        long pid;
        int state, flags;
        long long started, kill_in;
        memset(c, 0, sizeof *c);
        c->hb_w = -1;
        if (sscanf(part, "%63s %ld %d %lld %d %d %d %lld", c->name, &pid, &state, &started,
                   &c->restarts, &c->hb_r, &flags, &kill_in) != 8 ||
            state < CH_RUNNING || state > CH_STOPPED)
            continue;
        c->retiring = flags & 1;
        c->restart_asked = flags >> 1 & 1;
        if (kill_in >= 0) c->kill_at_ms = mono_ms() + kill_in;
        c->pid = (pid_t)pid;
        c->state = (child_state)state;
        c->started_ms = started;
        if (c->state == CH_WAITING) c->next_start_ms = mono_ms();
        keep_across_exec(c->hb_r, 0);
        S.n++;
    }
    free(copy);
    return 1;
}

static void command(const char *request, char *reply, size_t n) {
    if (!strcmp(request, "reload")) command_reload(reply, n);
    else if (!strcmp(request, "reexec")) command_reexec(reply, n);
    else if (!strcmp(request, "ping"))
        snprintf(reply, n, "ok pid %ld execs %d\n", (long)getpid(), S.execs);
    else if (!strncmp(request, "restart ", 8)) command_restart(request + 8, reply, n);
    else snprintf(reply, n, "error unknown request '%.64s' (reload, restart NAME, reexec, "
                  "ping)\n", request);
}

/* Children gone for good (removed by a reload) leave the table. */
static void forget_retired(void) {
    int m = 0;
    for (int i = 0; i < S.n; i++) {
        child *k = &S.kids[i];
        if (k->retiring && k->state != CH_RUNNING) {
            if (k->hb_r >= 0) close(k->hb_r);
            S.dirty = 1;
            continue;
        }
        S.kids[m++] = *k;
    }
    S.n = m;
}

/* ----------------------------------------------------------------- main */

/* TERM, INT, HUP and CHLD to the self-pipe (common/signals.c). */
static int setup(char *err, size_t errlen) {
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGCHLD};
    return signals_to_pipe(sigs, 4, &S.sig_r, &S.sig_w, err, errlen);
}

/* servers.lock removed or replaced under us: take it again, said once. */
static void keep_lock(int64_t now) {
    static int64_t next_ms;
    static int failing;
    if (now < next_ms) return;
    next_ms = now + 1000;
    char err[4400];
    int rc = herd_lock_keep(S.cfg, &S.lock_fd, err, sizeof err);
    if (rc > 0)
        log_msg(LOG_WARN, "lock-renewed", "servers.lock was removed or replaced; "
                "this supervisor holds a new one (never delete it while the herd runs)");
    else if (rc < 0 && !failing)
        log_msg(LOG_ERROR, "lock-lost", "servers.lock was removed or replaced and cannot "
                "be taken again: %s", err);
    failing = rc < 0;
}

/* One WARN line per local server whose port is in the ephemeral range, in
 * the log and on stderr (start_servers.sh shows it): a warning, not a
 * refusal. */
static void warn_ephemeral_ports(const config *cfg, const int *local) {
    char why[512];
    for (int i = 0; i < cfg->n_servers; i++) {
        const config_server *c = &cfg->servers[i];
        if (!local[i] || !ports_ephemeral_warning(c->name, c->port, why, sizeof why)) continue;
        log_msg(LOG_WARN, "ephemeral-port", "%s", why);
        fprintf(stderr, "herd-supervisor: warning: %s\n", why);
    }
}

int supervisor_run(const config *cfg, const char *server_path) {
    char err[4400];
    S.cfg = cfg;
    snprintf(S.server_path, sizeof S.server_path, "%s", server_path);
    snprintf(S.pid_path, sizeof S.pid_path, "%s/servers.pid", cfg->dir);
    snprintf(S.state_path, sizeof S.state_path, "%s/supervisor.state", cfg->herd.state_dir);
    log_set_rotation(cfg->logging.max_file_bytes, cfg->logging.keep_files);
    char secret[256];   /* refuse a secret file the servers would refuse */
    int local[CONFIG_MAX_SERVERS];
    if (herd_local_servers(cfg, local, 0) == 0) return 1;   /* it said why */
    ssize_t self = readlink("/proc/self/exe", S.self_path, sizeof S.self_path - 1);
    S.self_path[self > 0 ? self : 0] = '\0';
    int resumed = resume();
    if (!resumed) S.lock_fd = herd_lock_take(cfg, err, sizeof err);
    /* nothing is written in a folder another user may write in (folder.h) */
    if (S.lock_fd < 0 ||
        folder_check(cfg->herd.state_dir, "herd.state_dir", 0700, err, sizeof err) < 0 ||
        folder_check(cfg->logging.dir, "logging.dir", 0750, err, sizeof err) < 0 ||
        secret_load(cfg->herd.secret_file, secret, sizeof secret, err, sizeof err) < 0 ||
        log_open(cfg->logging.dir, "supervisor", cfg->logging.flush_ms, err, sizeof err) < 0 ||
        setup(err, sizeof err) < 0) {
        fprintf(stderr, "herd-supervisor: %s\n", err);
        return 1;
    }
    if (resumed) {
        log_msg(LOG_INFO, "resumed", "pid=%ld binary=%s config=%s servers=%d adopted "
                "(re-exec %d) server-binary=%s", (long)getpid(), S.self_path, cfg->path, S.n,
                S.execs, server_path);
    } else {
        S.ctl_fd = control_listen(cfg, err, sizeof err);
        if (S.ctl_fd < 0)               /* the herd runs; reloads cannot reach it */
            log_msg(LOG_ERROR, "control", "%s: --reload and --restart will not work", err);
        S.n = 0;
        for (int i = 0; i < cfg->n_servers; i++)
            if (local[i])
                snprintf(S.kids[S.n++].name, sizeof S.kids[0].name, "%s", cfg->servers[i].name);
        log_msg(LOG_INFO, "start", "pid=%ld config=%s servers=%d of %d here server-binary=%s",
                (long)getpid(), cfg->path, S.n, cfg->n_servers, server_path);
        warn_ephemeral_ports(cfg, local);
        for (int i = 0; i < S.n; i++) {
            S.kids[i].hb_r = S.kids[i].hb_w = -1;
            start_child(&S.kids[i]);
        }
    }
    write_files();
    S.dirty = 0;   /* written: a second write a round later could replace a file
                    * someone else wrote meanwhile, which the exit then removes */
    struct pollfd pfd[2 + CONFIG_MAX_SERVERS];
    pfd[0] = (struct pollfd){.fd = S.sig_r, .events = POLLIN};
    for (;;) {
        int64_t now = mono_ms(), wake = now + 1000;
        for (int i = 0; i < S.n && !S.stopping; i++)
            if (S.kids[i].state == CH_WAITING && S.kids[i].next_start_ms < wake)
                wake = S.kids[i].next_start_ms;
        if (S.stopping && S.stop_deadline < wake) wake = S.stop_deadline;
        if (!S.stopping && heartbeat_deadline() < wake) wake = heartbeat_deadline();
        int lf = log_next_flush_ms(log_now_ms());
        if (lf >= 0 && now + lf < wake) wake = now + lf;
        for (int i = 0; i < S.n; i++)
            if (S.kids[i].kill_at_ms && S.kids[i].kill_at_ms < wake) wake = S.kids[i].kill_at_ms;
        int timeout = wake > now ? (int)(wake - now) : 0;
        int npfd = heartbeat_pollset(pfd);
        pfd[npfd] = (struct pollfd){.fd = S.stopping ? -1 : S.ctl_fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)npfd + 1, timeout) > 0) {
            if (pfd[0].revents) handle_signals();
            if (pfd[npfd].revents && !S.stopping) control_serve(S.ctl_fd, command);
        }
        if (S.reexec_due && !S.stopping) {
            S.reexec_due = 0;
            reexec();                   /* returns only when the exec failed */
        }
        reap();   /* a SIGCHLD may have come before the handler was set */
        forget_retired();
        now = mono_ms();
        keep_lock(now);
        heartbeat_drain(now);
        heartbeat_check(now);
        if (!S.stopping) kill_overdue(now);
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
                        running_children(), S.cfg->supervisor.stop_timeout_s);
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
    if (S.ctl_fd >= 0) {
        close(S.ctl_fd);
        control_unlink(S.cfg);
    }
    int removed = remove_own_pid_file();
    for (int i = 0; i < S.n; i++)
        if (S.kids[i].state != CH_GIVEN_UP) S.kids[i].state = CH_STOPPED;
    write_atomic(S.state_path, "", 0600);
    log_msg(LOG_INFO, "stopped", "every server has exited; %s %s", S.pid_path,
            removed ? "removed" : "left alone (it is not this supervisor's)");
    log_close();
    return 0;
}
