/* lock.c -- proof that a herd runs, and which processes are its own.
 *
 * A pid file alone proves nothing: after a SIGKILL, an OOM kill or a reboot
 * its pids may belong to anybody.  So the supervisor holds an exclusive
 * flock() on servers.lock (beside the config) for its whole life and keeps
 * its pid in it; the kernel drops the lock when the process dies, however
 * it dies.  A supervisor is live when the lock is held and the pid in the
 * file runs herd-supervisor; a server is the herd's when it runs
 * herd-server and its parent is that supervisor.  The shell scripts make
 * the same checks with flock(1) and /proc.
 *
 * The file is never removed: a second supervisor must find the very inode
 * the first one locked.  Its second line is the real path of the config
 * the supervisor runs: two configs in one folder share servers.lock and
 * servers.pid, and a herd is only cfg's when that line names cfg (a script
 * asked to stop one config must not stop the other's herd).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "supervisor.h"

#define LOCK_TRIES 50          /* 10 ms apart: a script's test holds it briefly */

void herd_lock_path(const config *cfg, char *out, size_t n) {
    snprintf(out, n, "%s/servers.lock", cfg->dir);
}

/* The pid written in the lock file, or 0. */
static long lock_file_pid(int fd) {
    char text[32];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n <= 0) return 0;
    text[n] = '\0';
    long pid = 0;
    return sscanf(text, "%ld", &pid) == 1 && pid > 0 ? pid : 0;
}

/* The config path written in the lock file (its second line) into out;
 * "" when there is none (a lock file of an older supervisor). */
static void lock_file_config(int fd, char *out, size_t n) {
    char text[PATH_MAX + 64];
    out[0] = '\0';
    ssize_t len = pread(fd, text, sizeof text - 1, 0);
    if (len <= 0) return;
    text[len] = '\0';
    char *line = strchr(text, '\n');
    if (!line) return;
    line++;
    line[strcspn(line, "\n")] = '\0';
    snprintf(out, n, "%s", line);
}

/* cfg's config file as the lock file names it: its real path. */
static void config_id(const config *cfg, char *out, size_t n) {
    char real[PATH_MAX];
    snprintf(out, n, "%s", realpath(cfg->path, real) ? real : cfg->path);
}

/* True when process pid runs the program named 'prog' (the last part of
 * /proc/PID/exe, also after the file was rebuilt under it). */
static int runs(long pid, const char *prog) {
    char path[64], exe[4096];
    snprintf(path, sizeof path, "/proc/%ld/exe", pid);
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    if (n <= 0) return 0;
    exe[n] = '\0';
    char *del = strstr(exe, " (deleted)");
    if (del && del[10] == '\0') *del = '\0';
    const char *base = strrchr(exe, '/');
    return !strcmp(base ? base + 1 : exe, prog);
}

int herd_lock_take(const config *cfg, char *err, size_t errlen) {
    char path[4200];
    herd_lock_path(cfg, path, sizeof path);
    /* no link followed: one planted there would make us truncate its target */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s%s", path, strerror(errno),
                 errno == ELOOP ? " (a symbolic link: remove it)" : "");
        return -1;
    }
    for (int tries = 1; flock(fd, LOCK_EX | LOCK_NB) < 0; tries++) {
        if (errno != EWOULDBLOCK || tries == LOCK_TRIES) {
            int e = errno;
            long other = lock_file_pid(fd);
            char mine[PATH_MAX], theirs[PATH_MAX];
            config_id(cfg, mine, sizeof mine);
            lock_file_config(fd, theirs, sizeof theirs);
            if (e != EWOULDBLOCK)
                snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
            else if (other && theirs[0] && strcmp(theirs, mine))
                snprintf(err, errlen, "the supervisor (pid %ld) of another config, %s, runs "
                         "in this folder (it holds %s): one folder holds one herd's files; "
                         "give %s a folder of its own", other, theirs, path, cfg->path);
            else if (other)
                snprintf(err, errlen, "another supervisor (pid %ld) runs the herd of %s "
                         "(it holds %s); stop it first with ./stop_servers.sh", other,
                         cfg->path, path);
            else
                snprintf(err, errlen, "another process holds %s: a supervisor of %s is "
                         "starting or running", path, cfg->path);
            close(fd);
            return -1;
        }
        usleep(10 * 1000);
    }
    char text[PATH_MAX + 32], id[PATH_MAX];
    config_id(cfg, id, sizeof id);
    int len = snprintf(text, sizeof text, "%ld\n%s\n", (long)getpid(), id);
    ssize_t w = ftruncate(fd, 0) < 0 ? -1 : pwrite(fd, text, (size_t)len, 0);
    if (w != len) {   /* a short write (no room left) sets no errno */
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(w < 0 ? errno : EFBIG));
        close(fd);
        return -1;
    }
    return fd;
}

int herd_lock_keep(const config *cfg, int *fd, char *err, size_t errlen) {
    char path[4200];
    struct stat on_disk, held;
    herd_lock_path(cfg, path, sizeof path);
    if (lstat(path, &on_disk) == 0 && fstat(*fd, &held) == 0 &&
        on_disk.st_dev == held.st_dev && on_disk.st_ino == held.st_ino)
        return 0;
    int nfd = herd_lock_take(cfg, err, errlen);
    if (nfd < 0) return -1;
    close(*fd);
    *fd = nfd;
    return 1;
}

long herd_supervisor_pid(const config *cfg) {
    char path[4200];
    herd_lock_path(cfg, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);   /* a FIFO there: no hang */
    if (fd < 0) return 0;
    long pid = 0;
    char mine[PATH_MAX], theirs[PATH_MAX];
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) flock(fd, LOCK_UN);   /* nobody holds it */
    else if (errno == EWOULDBLOCK) pid = lock_file_pid(fd);
    config_id(cfg, mine, sizeof mine);
    lock_file_config(fd, theirs, sizeof theirs);
    if (theirs[0] && strcmp(theirs, mine)) pid = 0;   /* another config's herd */
    close(fd);
    return pid && runs(pid, "herd-supervisor") ? pid : 0;
}

int herd_is_server(long pid, long supervisor) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = pid > 0 ? fopen(path, "r") : NULL;
    if (!f) return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *end = strrchr(text, ')');   /* the command name may hold anything */
    char state;
    long ppid;
    if (!end || sscanf(end + 1, " %c %ld", &state, &ppid) != 2) return 0;
    return state != 'Z' && ppid == supervisor && runs(pid, "herd-server");
}
