/* secret.c -- read and check the herd's secret; see secret.h. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
