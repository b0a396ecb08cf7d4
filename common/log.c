/* log.c -- buffered, escaped, batched log lines; see log.h. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

#define LOG_FLUSH_BYTES (64 * 1024)

static struct {
    int fd;                  /* -1: stderr */
    char path[4096];
    int flush_ms;
    buf_t buf;
    int64_t first_ms;        /* when the oldest buffered line was added */
    time_t stamp_sec;        /* second the cached stamp is for */
    char stamp[32];          /* "2026-11-24T19:55:02." */
} L = {.fd = -1, .flush_ms = 200, .stamp_sec = -1};

static const char *level_name[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int64_t log_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* mkdir -p for the folder of the log; errors show up at open(). */
static void make_dirs(const char *dir) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(tmp, 0755);
        *p = '/';
    }
    mkdir(tmp, 0755);
}

static int open_path(char *err, size_t errlen) {
    int fd = open(L.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        if (err) snprintf(err, errlen, "cannot open %s: %s", L.path, strerror(errno));
        return -1;
    }
    if (L.fd >= 0) close(L.fd);
    L.fd = fd;
    return 0;
}

int log_open(const char *dir, const char *name, int flush_ms, char *err,
             size_t errlen) {
    int n = snprintf(L.path, sizeof L.path, "%s/%s.log", dir, name);
    if (n < 0 || (size_t)n >= sizeof L.path) {
        snprintf(err, errlen, "log path too long");
        return -1;
    }
    L.flush_ms = flush_ms > 0 ? flush_ms : 200;
    make_dirs(dir);
    return open_path(err, errlen);
}

int log_reopen(void) {
    if (!L.path[0]) return -1;
    log_flush();
    char err[256];
    if (open_path(err, sizeof err) < 0) {
        log_msg(LOG_ERROR, "log-reopen", "%s", err);
        return -1;
    }
    log_msg(LOG_INFO, "log-reopen", "path=%s", L.path);
    return 0;
}

/* Start a line: timestamp, level, event. */
static void begin_line(log_level lvl, const char *event) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != L.stamp_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(L.stamp, sizeof L.stamp, "%Y-%m-%dT%H:%M:%S.", &tm);
        L.stamp_sec = ts.tv_sec;
    }
    if (buf_pending(&L.buf) == 0)
        L.first_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    /* by hand: this runs for every line, and printf is the slow part */
    size_t sl = strlen(L.stamp), ll = strlen(level_name[lvl]), el = strlen(event);
    buf_reserve(&L.buf, sl + 6 + ll + el);
    char *o = L.buf.p + L.buf.len;
    memcpy(o, L.stamp, sl);
    o += sl;
    long ms = ts.tv_nsec / 1000000;
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
    L.buf.len = (size_t)(o - L.buf.p);
}

static void end_line(void) {
    buf_append_char(&L.buf, '\n');
    if (L.fd < 0 || buf_pending(&L.buf) >= LOG_FLUSH_BYTES) log_flush();
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

void log_data(log_level lvl, const char *event, const char *prefix,
              const char *data, size_t len, const char *suffix) {
    static const char hex[] = "0123456789abcdef";
    begin_line(lvl, event);
    buf_append_char(&L.buf, ' ');
    buf_append_str(&L.buf, prefix);
    buf_reserve(&L.buf, len * 4 + 2);
    char *o = L.buf.p + L.buf.len;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    L.buf.len = (size_t)(o - L.buf.p);
    if (suffix) buf_append_str(&L.buf, suffix);
    end_line();
}

void log_flush(void) {
    int fd = L.fd >= 0 ? L.fd : STDERR_FILENO;
    while (buf_pending(&L.buf)) {
        ssize_t n = write(fd, buf_data(&L.buf), buf_pending(&L.buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;   /* disk full or closed: drop, never block */
        buf_consume(&L.buf, (size_t)n);
    }
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
    buf_free(&L.buf);
}
