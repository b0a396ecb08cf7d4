/* log.c -- buffered, escaped, batched, size-bounded log lines; see log.h.
 *
 * The buffer is written by log_flush() in chunks of whole lines: each chunk
 * fills the open file up to max_file_bytes, then the file is rotated (a
 * rename chain, then one open) and the next chunk goes to the new file.  A
 * write that fails drops what is left of the batch and counts it; the next
 * batch starts with a line saying how many were dropped.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "folder.h"

#define LOG_FLUSH_BYTES (64 * 1024)
#define LOG_RETRY_MS 1000      /* after a failed open or rotation */
#define LOG_FILE_MODE 0640     /* the logs hold every client's location */

static struct {
    int fd;                  /* the open log; -1: none */
    int opened;              /* log_open() succeeded: lines go to 'path', not stderr */
    char dir[4096];
    char path[4096];
    int flush_ms;
    size_t max_bytes;        /* rotate before the file passes this */
    int keep;                /* old files: NAME.log.1 .. NAME.log.keep */
    size_t size;             /* bytes in the open file */
    int need_open;           /* 'path' is still to be opened (fd is stale or -1) */
    int64_t retry_ms;        /* monotonic: no open or rotation before this */
    int fail_errno;          /* the last open/rotation failure, logged once */
    int in_flush;            /* lines logged by log_flush() itself wait for it */
    int mid_line;            /* the file ends inside a line (a write cut short) */
    uint64_t dropped_lines, dropped_bytes;   /* bytes > 0 whenever anything was dropped */
    int drop_errno;          /* why the first dropped line was dropped */
    buf_t buf;
    int64_t first_ms;        /* when the oldest buffered line was added */
    time_t stamp_sec;        /* second the cached stamp is for */
    char stamp[32];          /* "2026-11-24T19:55:02." */
    size_t stamp_len;
} L = {.fd = -1, .flush_ms = 200, .stamp_sec = -1,
       .max_bytes = LOG_DEFAULT_MAX_FILE_BYTES, .keep = LOG_DEFAULT_KEEP_FILES};

static const char *level_name[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const size_t level_len[] = {5, 4, 4, 5};

int64_t log_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void log_set_rotation(size_t max_file_bytes, int keep_files) {
    L.max_bytes = max_file_bytes > 0 ? max_file_bytes : 1;
    L.keep = keep_files > 0 ? keep_files : 0;
}

void log_set_flush_ms(int flush_ms) {
    L.flush_ms = flush_ms > 0 ? flush_ms : 200;
}

/* ------------------------------------------------------------- the file */

/* Why open_file() failed, for the log line: a link and another's file get
 * words of their own. */
static const char *open_reason(int err) {
    if (err == ELOOP) return "a symbolic link, which the log is never written through: remove it";
    if (err == EPERM) return "another user's file: remove it";
    return strerror(err);
}

/* Open 'path' for appending, creating it (and its folder) 0640 and
 * tightening an existing file that others may read.  Never through a link
 * (ELOOP), and never into another user's file (EPERM: a hard link, or a
 * file left while the folder was open to others).  Returns the fd or -1
 * with errno set; *size gets the file's length. */
static int open_file(size_t *size) {
    const int flags = O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC;
    int fd = open(L.path, flags, LOG_FILE_MODE);
    if (fd < 0 && errno == ENOENT) {
        folder_make(L.dir, 0750);
        fd = open(L.path, flags, LOG_FILE_MODE);
    }
    if (fd < 0) return -1;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_uid != geteuid()) {
        close(fd);
        errno = EPERM;
        return -1;
    }
    *size = (size_t)st.st_size;
    if (st.st_mode & 07777 & ~LOG_FILE_MODE) fchmod(fd, st.st_mode & LOG_FILE_MODE);
    return fd;
}

/* Make a fresh open of 'path' the log.  When descriptors run out, the old
 * one is closed first, so the reopen needs none beyond it.  On failure the
 * old descriptor (if still open) keeps taking lines and the open is tried
 * again after LOG_RETRY_MS.  Returns 0 or -1 with errno set. */
static int open_log(void) {
    size_t size;
    int fd = open_file(&size);
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && L.fd >= 0) {
        close(L.fd);
        L.fd = -1;
        fd = open_file(&size);
    }
    if (fd < 0) {
        int e = errno;
        L.need_open = 1;
        L.retry_ms = mono_ms() + LOG_RETRY_MS;
        errno = e;
        return -1;
    }
    if (L.fd >= 0) close(L.fd);
    L.fd = fd;
    L.size = size;
    L.need_open = 0;
    L.mid_line = 0;
    return 0;
}

/* 'path' with ".N" appended (N > 0), or 'path' itself for N == 0. */
static void numbered(char *dst, size_t size, int n) {
    if (n == 0) snprintf(dst, size, "%s", L.path);
    else snprintf(dst, size, "%s.%d", L.path, n);
}

/* Shift NAME.log.K-1 .. NAME.log.1 up by one (the rename onto NAME.log.K
 * removes the oldest), move NAME.log to NAME.log.1 (with K = 0: remove it),
 * then open a new NAME.log.  No descriptor is needed but the new file's.
 * Returns 0, or -1 with errno set: the open file keeps taking lines. */
static int rotate(void) {
    char from[4200], to[4200];
    int rc = 0;
    for (int i = L.keep; i >= 1; i--) {
        numbered(from, sizeof from, i - 1);
        numbered(to, sizeof to, i);
        /* NAME.log that cannot move stays in place: keep writing to it */
        if (rename(from, to) < 0 && errno != ENOENT && i == 1) rc = -1;
    }
    if (L.keep == 0 && unlink(L.path) < 0 && errno != ENOENT) rc = -1;
    if (rc == 0) return open_log();
    int e = errno;
    L.retry_ms = mono_ms() + LOG_RETRY_MS;
    errno = e;
    return -1;
}

/* Log a failed open or rotation once per distinct reason, and the recovery.
 * Runs inside log_flush(): the line joins the batch being written. */
static void note_outcome(const char *what, int rc, int err) {
    if (rc < 0 && err != L.fail_errno) {
        L.fail_errno = err;
        log_msg(LOG_ERROR, "log-rotate-failed", "path=%s step=%s reason=%s; trying again every %d ms",
                L.path, what, open_reason(err), LOG_RETRY_MS);
    } else if (rc == 0 && L.fail_errno) {
        L.fail_errno = 0;
        log_msg(LOG_INFO, "log-recovered", "path=%s", L.path);
    }
}

/* ---------------------------------------------------------------- lines */

/* Write "TIME LEVEL event" for 'ts' at 'o' (room for 28 + the level and
 * event); returns the length.  By hand: this runs for every line, and printf
 * is the slow part. */
static size_t format_head(char *o, const struct timespec *ts, log_level lvl,
                          const char *event) {
    if (ts->tv_sec != L.stamp_sec) {
        struct tm tm;
        gmtime_r(&ts->tv_sec, &tm);
        L.stamp_len = strftime(L.stamp, sizeof L.stamp, "%Y-%m-%dT%H:%M:%S.", &tm);
        L.stamp_sec = ts->tv_sec;
    }
    char *start = o;
    size_t sl = L.stamp_len, ll = level_len[lvl], el = strlen(event);
    memcpy(o, L.stamp, sl);
    o += sl;
    long ms = ts->tv_nsec / 1000000;
    *o++ = (char)('0' + ms / 100);
    *o++ = (char)('0' + ms / 10 % 10);
    *o++ = (char)('0' + ms % 10);
    *o++ = 'Z';
    *o++ = ' ';
    memcpy(o, level_name[lvl], ll);
    o += ll;
    *o++ = ' ';
    memcpy(o, event, el);
    o += el;
    return (size_t)(o - start);
}

/* Start a line: timestamp, level, event. */
static void begin_line(log_level lvl, const char *event) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (buf_pending(&L.buf) == 0)
        L.first_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    buf_reserve(&L.buf, sizeof L.stamp + 6 + strlen(level_name[lvl]) + strlen(event));
    L.buf.len += format_head(L.buf.p + L.buf.len, &ts, lvl, event);
}

static void end_line(void) {
    buf_append_char(&L.buf, '\n');
    if (L.in_flush) return;
    if (!L.opened || buf_pending(&L.buf) >= LOG_FLUSH_BYTES) log_flush();
}

int log_open(const char *dir, const char *name, int flush_ms, char *err,
             size_t errlen) {
    int n = snprintf(L.path, sizeof L.path, "%s/%s.log", dir, name);
    /* room for ".NNN" on rotated names (then dir, shorter, fits L.dir) */
    if (n < 0 || (size_t)n + 8 >= sizeof L.path) {
        L.path[0] = '\0';
        snprintf(err, errlen, "log path too long");
        return -1;
    }
    snprintf(L.dir, sizeof L.dir, "%s", dir);
    log_set_flush_ms(flush_ms);
    if (open_log() < 0) {
        snprintf(err, errlen, "cannot open %s: %s", L.path, open_reason(errno));
        return -1;
    }
    L.opened = 1;
    return 0;
}

int log_reopen(void) {
    if (!L.opened) return -1;
    log_flush();
    if (open_log() < 0) {
        int e = errno;
        L.fail_errno = e;
        log_msg(LOG_ERROR, "log-reopen", "cannot open %s: %s; %s, trying again every %d ms",
                L.path, open_reason(e), L.fd >= 0 ? "writing to the old file" : "dropping lines",
                LOG_RETRY_MS);
        return -1;
    }
    L.fail_errno = 0;
    log_msg(LOG_INFO, "log-reopen", "path=%s", L.path);
    return 0;
}

void log_msg(log_level lvl, const char *event, const char *fmt, ...) {
    begin_line(lvl, event);
    if (fmt && *fmt) {
        buf_append_char(&L.buf, ' ');
        va_list ap;
        va_start(ap, fmt);
        char small[512];
        int n = vsnprintf(small, sizeof small, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < sizeof small) {
            buf_append(&L.buf, small, (size_t)n);
        } else if (n > 0) {
            buf_reserve(&L.buf, (size_t)n + 1);
            va_start(ap, fmt);
            vsnprintf(L.buf.p + L.buf.len, (size_t)n + 1, fmt, ap);
            va_end(ap);
            L.buf.len += (size_t)n;
        }
    }
    end_line();
}

/* Bytes a log line shows as \xNN: control bytes, DEL, '"' and '\'. */
static int escaped(unsigned char c) {
    return c < 0x20 || c == 0x7f || c == '"' || c == '\\';
}

/* Whether any byte of w is below 0x20, or one of DEL, '"' and '\'
 * (escaped() eight bytes at once; a byte after a hit may count too, so a
 * hit is only a reason to look byte by byte). */
static int word_escapes(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
#define HAS_ZERO(v) (((v) - ones) & ~(v) & highs)
    uint64_t below = (w - 0x20 * ones) & ~w & highs;
    return (below | HAS_ZERO(w ^ (0x7f * ones)) | HAS_ZERO(w ^ ('"' * ones)) |
            HAS_ZERO(w ^ ('\\' * ones))) != 0;
#undef HAS_ZERO
}

/* How many bytes from data[i] need no escape. */
static size_t plain_run(const char *data, size_t i, size_t len) {
    size_t run = i;
    for (uint64_t w; run + 8 <= len; run += 8) {
        memcpy(&w, data + run, 8);
        if (word_escapes(w)) break;
    }
    while (run < len && !escaped((unsigned char)data[run])) run++;
    return run;
}

/* data at o, escaped; returns the end.  Runs of plain bytes (a whole
 * client line, as a rule) are found eight bytes at a time and copied at
 * once: this runs for every line a client or a link sends. */
static char *put_escaped(char *o, const char *data, size_t len) {
    static const char hex[] = "0123456789abcdef";
    size_t i = 0;
    while (i < len) {
        size_t run = plain_run(data, i, len);
        memcpy(o, data + i, run - i);
        o += run - i;
        if (run == len) break;
        unsigned char c = (unsigned char)data[run];
        *o++ = '\\';
        *o++ = 'x';
        *o++ = hex[c >> 4];
        *o++ = hex[c & 15];
        i = run + 1;
    }
    return o;
}

void log_data(log_level lvl, const char *event, const char *prefix,
              const char *data, size_t len, const char *suffix) {
    size_t plen = strlen(prefix);
    begin_line(lvl, event);
    buf_reserve(&L.buf, 1 + plen + len * 4 + 2);
    char *o = L.buf.p + L.buf.len;
    *o++ = ' ';
    memcpy(o, prefix, plen);
    o += plen;
    *o++ = '"';
    o = put_escaped(o, data, len);
    *o++ = '"';
    L.buf.len = (size_t)(o - L.buf.p);
    if (suffix) buf_append_str(&L.buf, suffix);
    end_line();
}

/* --------------------------------------------------------------- writing */

/* write() all of p[0..n) to the open file; *done gets how much went.
 * Returns 0, or -1 with errno set when the file refused (a full disk). */
static int write_out(const char *p, size_t n, size_t *done) {
    *done = 0;
    while (*done < n) {
        ssize_t w = write(L.fd, p + *done, n - *done);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        *done += (size_t)w;
        L.size += (size_t)w;
        L.mid_line = p[*done - 1] != '\n';
    }
    return 0;
}

/* How many buffered bytes go to the open file before it holds 'cap': whole
 * lines; the whole first line when the file is empty (a line longer than
 * 'cap' is written whole, never cut); 0 when the next line does not fit. */
static size_t next_chunk(size_t cap) {
    const char *d = buf_data(&L.buf);
    size_t pending = buf_pending(&L.buf);
    size_t room = L.size < cap ? cap - L.size : 0;
    if (pending <= room) return pending;
    const char *nl = room ? memrchr(d, '\n', room) : NULL;
    if (nl) return (size_t)(nl - d) + 1;
    if (L.size > 0) return 0;
    nl = memchr(d, '\n', pending);
    return nl ? (size_t)(nl - d) + 1 : pending;
}

/* Count what is buffered as dropped, for the reason 'err', and empty the
 * buffer. */
static void drop_pending(int err) {
    if (!buf_pending(&L.buf)) return;
    const char *d = buf_data(&L.buf), *end = d + buf_pending(&L.buf);
    if (!L.dropped_bytes) L.drop_errno = err;
    L.dropped_bytes += buf_pending(&L.buf);
    for (const char *p = d; (p = memchr(p, '\n', (size_t)(end - p))); p++)
        L.dropped_lines++;
    buf_clear(&L.buf);
}

/* The line saying how many lines were dropped, written ahead of the batch
 * (after a newline that ends a line cut short), while the file stays within
 * 'cap'.  Returns 0 when it reached the file and the count starts again,
 * -1 with errno set otherwise (EFBIG: no room; the count goes on). */
static int write_drop_notice(size_t cap) {
    char line[512];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    size_t n = 0, done;
    if (L.mid_line) line[n++] = '\n';
    n += format_head(line + n, &ts, LOG_WARN, "log-dropped");
    snprintf(line + n, sizeof line - n, " lines=%llu bytes=%llu reason=%s\n",
             (unsigned long long)L.dropped_lines, (unsigned long long)L.dropped_bytes,
             strerror(L.drop_errno));
    n = strlen(line);
    if (L.size + n > cap) {
        errno = EFBIG;
        return -1;
    }
    if (write_out(line, n, &done) < 0) return -1;
    L.dropped_lines = L.dropped_bytes = 0;
    return 0;
}

/* Before log_open() and after log_close(): stderr, best effort. */
static void flush_to_stderr(void) {
    while (buf_pending(&L.buf)) {
        ssize_t n = write(STDERR_FILENO, buf_data(&L.buf), buf_pending(&L.buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        buf_consume(&L.buf, (size_t)n);
    }
    buf_clear(&L.buf);
}

/* Why a line does not fit: the failed rotation or open when there is one
 * (it is what the "log-dropped" line should name), else EFBIG. */
static int why_full(void) {
    return L.fail_errno ? L.fail_errno : EFBIG;
}

/* Write the batch in chunks, rotating between them; drop what cannot be
 * written.  Never waits: a full disk fails at once.  Every round writes,
 * stops, or rotates a non-empty file, and a rotation that yields a
 * non-empty file ends the rotating, so the loop ends. */
static void flush_to_file(void) {
    int64_t now = mono_ms();
    if (L.need_open && now >= L.retry_ms) {
        int rc = open_log();
        note_outcome("open", rc, errno);
    }
    if (L.fd < 0) {
        drop_pending(L.fail_errno ? L.fail_errno : EBADF);
        return;
    }
    int stuck = 0;    /* a rotation left a non-empty file: no more this batch */
    if (L.dropped_bytes) {
        /* the notice counts against the bound too: make room first */
        if (L.size >= L.max_bytes && !L.need_open && now >= L.retry_ms) {
            int rc = rotate();
            note_outcome(L.need_open ? "open" : "rename", rc, errno);
            stuck = L.size > 0;
        }
        if (L.fd < 0 || write_drop_notice(2 * L.max_bytes) < 0) {
            drop_pending(L.fd < 0 || errno == EFBIG ? why_full() : errno);
            return;
        }
    }
    while (L.fd >= 0 && buf_pending(&L.buf)) {
        /* while rotation is failing, the old file may grow to twice the size */
        int may_rotate = !stuck && !L.need_open && now >= L.retry_ms;
        size_t n = next_chunk(may_rotate ? L.max_bytes : 2 * L.max_bytes), done;
        if (n == 0 && may_rotate) {
            int rc = rotate();
            note_outcome(L.need_open ? "open" : "rename", rc, errno);
            stuck = L.size > 0;
            continue;
        }
        if (n == 0) {
            drop_pending(why_full());
            return;
        }
        int rc = write_out(buf_data(&L.buf), n, &done), err = errno;
        buf_consume(&L.buf, done);
        if (rc < 0) {
            drop_pending(err);
            return;
        }
    }
    if (buf_pending(&L.buf)) drop_pending(L.fail_errno ? L.fail_errno : EBADF);
}

void log_flush(void) {
    if (L.in_flush) return;
    L.in_flush = 1;
    if (L.opened) flush_to_file();
    else flush_to_stderr();
    L.in_flush = 0;
    buf_clear(&L.buf);
    buf_shrink_if_empty(&L.buf, 1 << 20);
}

void log_tick(int64_t now_ms) {
    if (buf_pending(&L.buf) && now_ms - L.first_ms >= L.flush_ms) log_flush();
}

int log_next_flush_ms(int64_t now_ms) {
    if (!buf_pending(&L.buf)) return -1;
    int64_t left = L.first_ms + L.flush_ms - now_ms;
    return left < 0 ? 0 : (int)left;
}

void log_close(void) {
    log_flush();
    if (L.fd >= 0) close(L.fd);
    L.fd = -1;
    L.opened = 0;
    buf_free(&L.buf);
}
