/* secret.c -- read and check the herd's key ring, or write its file; see secret.h. */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* The length of s[0..n) without its trailing white space. */
static size_t trimmed(const char *s, size_t n) {
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return n;
}

/* Put key[0..n) in the ring's next place, with its key id and line. */
static secret_key *ring_add(secret_ring *ring, const char *key, size_t n, int line) {
    secret_key *k = &ring->keys[ring->n];
    memcpy(k->key, key, n);
    k->key[n] = '\0';
    k->len = n;
    k->line = line;
    hs_key_id(k->key, n, k->id);
    return k;
}

/* HERD_SECRET: one secret, as it is (trailing white space dropped). */
static int env_ring(const char *env, const char *path, secret_ring *ring, char *err,
                    size_t errlen) {
    size_t n = trimmed(env, strnlen(env, SECRET_MAX_LEN));
    if (!n) {
        snprintf(err, errlen, "HERD_SECRET holds only white space, which would turn "
                 "every link off: set it to the herd's secret, or unset it to use %s",
                 path);
        return SECRET_EMPTY;
    }
    ring_add(ring, env, n, 0);
    ring->n = 1;
    return 1;
}

const char *secret_refused(const char *s, size_t n) {
    n = trimmed(s, n);
    if (!n) return "an empty secret";
    if (n > SECRET_MAX_LEN) return "a secret longer than 255 bytes";
    if (s[0] == '#') return "a secret starting with '#' (that is a comment line)";
    if (memchr(s, '\n', n)) return "a secret of more than one line";
    if (memchr(s, '\0', n)) return "a NUL byte in a secret";
    return NULL;
}

const secret_key *secret_find(const secret_ring *ring, const char *id) {
    for (int i = 0; i < ring->n; i++)
        if (!strcasecmp(ring->keys[i].id, id)) return &ring->keys[i];
    return NULL;
}

/* One line of the file, without its LF: skipped (0), a secret added (1),
 * or -1 with a message naming the file and line. */
static int parse_line(const char *p, size_t n, int line, const char *path, secret_ring *ring,
                      char *err, size_t errlen) {
    n = trimmed(p, n);
    if (!n || p[0] == '#') return 0;
    const char *why = secret_refused(p, n);
    if (!why && ring->n == SECRET_RING_MAX) why = "more than 8 secrets; remove old ones "
                                                  "(herd-supervisor --secret-remove KEYID)";
    if (why) {
        snprintf(err, errlen, "%s:%d: %s", path, line, why);
        return -1;
    }
    secret_key *k = ring_add(ring, p, n, line);
    const secret_key *same = secret_find(ring, k->id);
    if (same) {
        snprintf(err, errlen, "%s:%d: the secret of line %d again (key id %s)", path, line,
                 same->line, k->id);
        return -1;
    }
    ring->n++;
    return 1;
}

int secret_ring_parse(const char *text, size_t len, const char *path, secret_ring *ring,
                      char *err, size_t errlen) {
    ring->n = 0;
    int line = 0;
    for (size_t pos = 0; pos < len;) {
        const char *p = text + pos, *nl = memchr(p, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - p) : len - pos;
        pos += n + 1;
        if (parse_line(p, n, ++line, path, ring, err, errlen) < 0) return -1;
    }
    if (!ring->n) {
        snprintf(err, errlen, "%s is empty, which would turn every link off: put the herd's "
                 "secret in it, or run herd-supervisor -c CONFIG --init-secret to write a "
                 "new one (./start_servers.sh does)", path);
        return SECRET_EMPTY;
    }
    return ring->n;
}

int secret_file_read(const char *path, char *buf, size_t cap, char *err, size_t errlen) {
    buf[0] = '\0';
    /* O_NONBLOCK: a FIFO put there must not hang the start (with TERM caught) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return SECRET_MISSING;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    char more;
    ssize_t n = -1;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s is not a regular file: the herd's secret must be one",
                 path);
    } else if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s belongs to uid %u, who may read or change the herd's "
                 "secret; it must be this user's (uid %u) alone: chown it", path,
                 (unsigned)st.st_uid, (unsigned)geteuid());
    } else if (st.st_mode & 077) {
        snprintf(err, errlen, "%s: other users may read or change the herd's secret "
                 "(mode %04o); make it the owner's alone: chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
    } else if ((n = read(fd, buf, cap - 1)) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
    } else if ((size_t)n == cap - 1 && read(fd, &more, 1) == 1) {
        snprintf(err, errlen, "%s is larger than %zu bytes: not a herd secret file", path,
                 cap - 1);
        n = -1;
    }
    close(fd);
    if (n < 0) return -1;
    buf[n] = '\0';
    return (int)n;
}

int secret_ring_load(const char *path, secret_ring *ring, char *err, size_t errlen) {
    ring->n = 0;
    const char *env = getenv("HERD_SECRET");
    if (env && *env) return env_ring(env, path, ring, err, errlen);
    char buf[SECRET_FILE_MAX + 1];
    int n = secret_file_read(path, buf, sizeof buf, err, errlen);
    if (n == SECRET_MISSING) return 0;
    int r = n < 0 ? -1 : secret_ring_parse(buf, (size_t)n, path, ring, err, errlen);
    explicit_bzero(buf, sizeof buf);
    return r;
}

int secret_load(const char *path, char *out, size_t cap, char *err, size_t errlen) {
    secret_ring ring;
    int n = secret_ring_load(path, &ring, err, errlen);
    out[0] = '\0';
    if (n > 0) {
        snprintf(out, cap, "%s", ring.keys[0].key);
        n = (int)strlen(out);
    }
    explicit_bzero(&ring, sizeof ring);
    return n;
}

/* Write text[0..len) to path, mode 0600: created with O_EXCL (never
 * through a link), or with 'replace' through path.tmp.PID, fsynced and
 * renamed over path.  Returns 0; 1 when, without 'replace', path exists
 * (nothing written, no message); or -1 with a message in err. */
static int write_secret_file(const char *path, const char *text, size_t len, int replace,
                             char *err, size_t errlen) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    const char *target = replace ? tmp : path;
    int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST && !replace) return 1;
        snprintf(err, errlen, "cannot create %s: %s", target, strerror(errno));
        return -1;
    }
    int ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    close(fd);
    if (ok && replace) ok = rename(tmp, path) == 0;
    if (!ok) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(target);
        return -1;
    }
    return 0;
}

int secret_random(char out[65], char *err, size_t errlen) {
    unsigned char r[32];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        snprintf(err, errlen, "no randomness for the secret: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < sizeof r; i++) snprintf(out + 2 * i, 3, "%02x", r[i]);
    explicit_bzero(r, sizeof r);
    return 0;
}

int secret_create(const char *path, int replace, char *err, size_t errlen) {
    char hex[66];
    if (secret_random(hex, err, errlen) < 0) return -1;
    hex[64] = '\n';
    int r = write_secret_file(path, hex, 65, replace, err, errlen);
    explicit_bzero(hex, sizeof hex);
    if (r == 1) {
        /* another start made it, or path is a link to no file */
        char secret[256];
        if (secret_load(path, secret, sizeof secret, err, errlen) > 0) return 1;
        snprintf(err, errlen, "%s exists but holds no secret (a symbolic link to a "
                 "missing file?): create the file it names", path);
        return -1;
    }
    return r;
}

int secret_file_write(const char *path, const char *text, size_t len, char *err,
                      size_t errlen) {
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        snprintf(err, errlen, "%s is a symbolic link: the ring is rewritten by replacing "
                 "the file, never through a link; name the file itself in herd.secret_file",
                 path);
        return -1;
    }
    return write_secret_file(path, text, len, 1, err, errlen);
}
