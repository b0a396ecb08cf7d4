/* snapshot.c -- the client table on disk: state/NAME.snap.
 *
 * Format, one text line each:
 *   HERDSNAP 1 <server name>
 *   AT <origin> <diff> <client> <location> <time>     (one per client)
 *   END <number of AT lines>
 * Written to a temporary file, fsync'ed, renamed over the old one, and the
 * folder fsync'ed, so a crash leaves the old or the new snapshot, never half
 * of one.  The periodic snapshot is written by a forked child, as Redis
 * does, so the loop never waits on the disk; the one at a graceful stop is
 * written in process, after the child under way (if any) ended; one that
 * has not ended in SNAPSHOT_STOP_WAIT_MS (stopped, or stuck in the kernel)
 * is killed and logged, and the stop writes the snapshot anyway.  The
 * child closes every descriptor but stdio first
 * (the listener above all: a restarted server must be able to bind its
 * port while a slow child still writes) and dies with its parent
 * (PR_SET_PDEATHSIG).  Temporary files a killed child left behind,
 * NAME.snap.tmp.PID, are removed at start and logged.
 * A snapshot that does not parse, is no regular file (a directory, a FIFO
 * that would hold the start until a writer came), is another user's file,
 * is cut short or belongs to another server is renamed
 * NAME.snap.bad-<time>, logged, and the server starts empty: the herd's
 * catch-up fills it again.  A symbolic link there is never followed: it is
 * logged and the server starts empty too.  The temporary file is created
 * anew (O_EXCL after an unlink) and renamed over NAME.snap (rename() moves
 * or replaces a link, never its target), so nothing is written through a
 * link.
 */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "folder.h"
#include "log.h"
#include "protocol.h"
#include "server.h"

/* Far longer than any AT line the protocol's field limits allow (under 500
 * bytes), so a longer line is damage; the loader never holds more of a
 * line than this, whatever the file holds. */
#define SNAP_LINE_MAX 4096

static void snap_path(const server *s, char *out, size_t n, const char *suffix) {
    snprintf(out, n, "%s/%s.snap%s", s->cfg->herd.state_dir, s->me->name, suffix);
}

static int write_entry(const table_entry *e, void *arg) {
    FILE *f = arg;
    fwrite(e->line, 1, e->line_len, f);
    return putc('\n', f) == EOF;
}

/* Write the snapshot; returns 0 or -1 with errno set.  Uses no log call, so
 * a forked child can run it. */
static int write_file(const server *s) {
    char path[4200], tmp[4300];
    snap_path(s, path, sizeof path, "");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    mkdir(s->cfg->herd.state_dir, 0700);
    /* every client's location: the owner's alone from the first byte (no
     * window for another user to open it), never through a planted link */
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
    if (!f) {
        if (fd >= 0) close(fd);
        return -1;
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    fprintf(f, "HERDSNAP 1 %s\n", s->me->name);
    table_each(&s->tab, write_entry, f);
    fprintf(f, "END %zu\n", s->tab.count);
    int rc = 0;
    if (fflush(f) == EOF || fsync(fileno(f)) < 0) rc = -1;
    int saved = errno;
    if (fclose(f) == EOF) rc = -1;
    if (rc == 0 && rename(tmp, path) < 0) rc = -1;
    if (rc < 0) {
        saved = errno;
        unlink(tmp);
        errno = saved;
        return -1;
    }
    int dfd = open(s->cfg->herd.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* How long a graceful stop waits for a snapshot child still writing: well
 * under the supervisor's stop timeout (supervisor.stop_timeout_s, 10 s by
 * default), whose SIGKILL would cost the final snapshot.  Then the child
 * is killed and given SNAPSHOT_KILL_WAIT_MS to go. */
#define SNAPSHOT_STOP_WAIT_MS 3000
#define SNAPSHOT_KILL_WAIT_MS 1000

/* Reap the snapshot child if it ended; never waits. */
static void reap_child(server *s) {
    if (!s->snapshot_pid) return;
    int st = 0;
    pid_t r = waitpid(s->snapshot_pid, &st, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) return;
    if (r < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        log_msg(LOG_ERROR, "snapshot-failed", "child=%ld status=%d", (long)s->snapshot_pid, st);
        s->table_dirty = 1;   /* try again next time */
    }
    s->snapshot_pid = 0;
}

/* Reap the snapshot child within ms; 0 once there is none, -1 if it lives. */
static int reap_child_within(server *s, int ms) {
    int64_t until = log_now_ms() + ms;
    for (;;) {
        reap_child(s);
        if (!s->snapshot_pid) return 0;
        if (log_now_ms() >= until) return -1;
        usleep(10 * 1000);
    }
}

/* Before the snapshot of a stop: let the child under way end, else its
 * rename could land after ours with an older table.  One that does not
 * end in time is killed (its temporary file removed); one that does not
 * even die is left behind (PR_SET_PDEATHSIG takes it with us). */
static void stop_child(server *s) {
    pid_t pid = s->snapshot_pid;
    if (!pid || reap_child_within(s, SNAPSHOT_STOP_WAIT_MS) == 0) return;
    log_msg(LOG_WARN, "snapshot-child-killed", "child=%ld did not end in %d ms (stopped or "
            "stuck): SIGKILL; the stop writes the snapshot itself", (long)pid,
            SNAPSHOT_STOP_WAIT_MS);
    kill(pid, SIGKILL);
    if (reap_child_within(s, SNAPSHOT_KILL_WAIT_MS) < 0) {
        log_msg(LOG_WARN, "snapshot-child-killed", "child=%ld still there after %d ms: "
                "left behind", (long)pid, SNAPSHOT_KILL_WAIT_MS);
        s->snapshot_pid = 0;
    }
    char path[4200], tmp[4300];
    snap_path(s, path, sizeof path, "");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)pid);
    unlink(tmp);
}

int snapshot_write(server *s) {
    stop_child(s);
    int64_t t0 = log_now_ms();
    if (write_file(s) < 0) {
        log_msg(LOG_ERROR, "snapshot-failed", "dir=%s reason=%s", s->cfg->herd.state_dir,
                strerror(errno));
        return -1;
    }
    s->table_dirty = 0;
    log_msg(LOG_INFO, "snapshot", "clients=%zu ms=%lld", s->tab.count,
            (long long)(log_now_ms() - t0));
    return 0;
}

/* The forked child: die with the parent, hold no socket of the server
 * (listener, clients, links, libcurl's), write, exit.  Never returns.  The
 * death signal is set first, so a child seen without the server's sockets
 * is sure to go with it. */
static void snapshot_child(const server *s, pid_t parent) {
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent) _exit(1);
    close_range(3, ~0U, 0);
    _exit(write_file(s) < 0 ? 1 : 0);
}

/* How often the timer looks for the end of a child still writing. */
#define SNAPSHOT_REAP_MS 1000

int64_t snapshot_next_due(const server *s) {
    if (s->snapshot_pid) return s->snapshot_reap_ms;
    return s->table_dirty ? s->next_snapshot_ms : -1;
}

void snapshot_tick(server *s) {
    reap_child(s);
    s->snapshot_reap_ms = s->now_ms + SNAPSHOT_REAP_MS;
    if (!s->table_dirty || s->snapshot_pid || s->now_ms < s->next_snapshot_ms) return;
    s->next_snapshot_ms = s->now_ms + (int64_t)s->cfg->herd.snapshot_interval_s * 1000;
    log_flush();              /* the child must not inherit unwritten lines */
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        log_msg(LOG_ERROR, "snapshot-failed", "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) snapshot_child(s, parent);
    s->snapshot_pid = pid;
    s->table_dirty = 0;
}

static void set_aside(server *s, const char *path, const char *why, long line) {
    char bad[4300];
    snprintf(bad, sizeof bad, "%s.bad-%ld", path, (long)time(NULL));
    rename(path, bad);
    log_msg(LOG_WARN, "snapshot-damaged", "file=%s line=%ld reason=%s moved-to=%s", path,
            line, why, bad);
    table_clear(&s->tab);
}

/* Remove NAME.snap.tmp.* left by a snapshot child killed while writing. */
static void remove_leftovers(server *s) {
    char prefix[200];
    snprintf(prefix, sizeof prefix, "%s.snap.tmp.", s->me->name);
    folder_remove_leftovers(s->cfg->herd.state_dir, prefix, "snapshot-leftover",
                            "a snapshot child stopped while writing it");
}

void snapshot_load(server *s) {
    char path[4200];
    remove_leftovers(s);
    snap_path(s, path, sizeof path, "");
    /* O_NONBLOCK: a FIFO put there would hold the start until a writer
     * came; what is no regular file of this user's (a FIFO, a device, a
     * directory, another user's file) is set aside unread.  A link is
     * never followed (ELOOP): it is logged, and the next snapshot's rename
     * replaces the link itself. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && (!S_ISREG(st.st_mode) || st.st_uid != geteuid())) {
        close(fd);
        set_aside(s, path, S_ISDIR(st.st_mode) ? strerror(EISDIR)
                  : !S_ISREG(st.st_mode) ? "not a regular file"
                  : "another user's file", 0);
        return;
    }
    FILE *f = fd >= 0 ? fdopen(fd, "r") : NULL;
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd);
        errno = e;
        if (errno != ENOENT)
            log_msg(LOG_WARN, "snapshot-unreadable", "file=%s reason=%s%s", path, strerror(errno),
                    errno == ELOOP ? " (a symbolic link, never followed): starting empty" : "");
        else
            log_msg(LOG_INFO, "snapshot", "file=%s none: starting empty", path);
        return;
    }
    char line[SNAP_LINE_MAX];
    long lineno = 0, count = 0;
    const char *why = NULL;
    int ended = 0;
    while (fgets(line, sizeof line, f)) {
        size_t n = strlen(line);
        lineno++;
        if (n == 0 || line[n - 1] != '\n') {   /* read no further: memory stays bounded */
            why = feof(f) ? "cut short" : n + 1 == sizeof line ? "line too long" : "NUL byte";
            break;
        }
        line[--n] = '\0';
        if (ended) { why = "data after END"; break; }
        if (lineno == 1) {
            char want[128];
            snprintf(want, sizeof want, "HERDSNAP 1 %s", s->me->name);
            if (strncmp(line, "HERDSNAP ", 9) != 0) { why = "not a snapshot"; break; }
            if (strcmp(line, want) != 0) { why = "another server's snapshot"; break; }
            continue;
        }
        if (strncmp(line, "END ", 4) == 0) {
            if (strtol(line + 4, NULL, 10) != count) { why = "count does not match"; break; }
            ended = 1;
            continue;
        }
        proto_at at;
        if (proto_parse_at(line, n, &at, &why) < 0) break;
        table_update u = {
            .origin = at.origin, .diff = at.diff, .client = at.u.client,
            .location = at.u.location, .time = at.u.time, .t = at.u.t
        };
        table_offer(&s->tab, &u);
        count++;
    }
    int read_errno = ferror(f) ? errno : 0;   /* a read that failed is no end of file */
    fclose(f);
    if (!why && read_errno) why = strerror(read_errno);   /* a directory: EISDIR */
    if (!why && !ended) why = lineno ? "cut short (no END line)" : "empty file";
    if (why) {
        set_aside(s, path, why, lineno);
        return;
    }
    log_msg(LOG_INFO, "snapshot-loaded", "file=%s clients=%zu", path, s->tab.count);
}
