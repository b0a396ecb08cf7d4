/* secret.c -- read and check the herd's secret, or create its file; see secret.h. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* Drop trailing white space; returns the new length. */
static size_t trim(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return n;
}

int secret_load(const char *path, char *out, size_t cap, char *err, size_t errlen) {
    const char *env = getenv("HERD_SECRET");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        size_t len = trim(out);
        if (!len) {
            snprintf(err, errlen, "HERD_SECRET holds only white space, which would turn "
                     "every link off: set it to the herd's secret, or unset it to use %s",
                     path);
            return SECRET_EMPTY;
        }
        return (int)len;
    }
    out[0] = '\0';
    /* O_NONBLOCK: a FIFO put there must not hang the start (with TERM caught) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file: the herd's secret must be one",
                 path);
        close(fd);
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s belongs to uid %u, who may read or change the herd's "
                 "secret; it must be this user's (uid %u) alone: chown it", path,
                 (unsigned)st.st_uid, (unsigned)geteuid());
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen, "%s: other users may read or change the herd's secret "
                 "(mode %04o); make it the owner's alone: chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return -1;
    }
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    out[n] = '\0';
    size_t len = trim(out);
    if (!len) {
        snprintf(err, errlen, "%s is empty, which would turn every link off: put the herd's "
                 "secret in it, or run herd-supervisor -c CONFIG --init-secret to write a "
                 "new one (./start_servers.sh does)", path);
        return SECRET_EMPTY;
    }
    return (int)len;
}

int secret_create(const char *path, int replace, char *err, size_t errlen) {
    unsigned char r[32];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        snprintf(err, errlen, "no randomness for the secret: %s", strerror(errno));
        return -1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    const char *target = replace ? tmp : path;
    int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST && !replace) {
            /* another start made it, or path is a link to no file */
            char secret[256];
            if (secret_load(path, secret, sizeof secret, err, errlen) > 0) return 1;
            snprintf(err, errlen, "%s exists but holds no secret (a symbolic link to a "
                     "missing file?): create the file it names", path);
            return -1;
        }
        snprintf(err, errlen, "cannot create %s: %s", target, strerror(errno));
        return -1;
    }
    char hex[66];
    for (size_t i = 0; i < sizeof r; i++) snprintf(hex + 2 * i, 3, "%02x", r[i]);
    hex[64] = '\n';
    int ok = write(fd, hex, 65) == 65 && fsync(fd) == 0;
    close(fd);
    if (ok && replace) ok = rename(tmp, path) == 0;
    if (!ok) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(target);
        return -1;
    }
    return 0;
}
