/* test_log.c -- the log's edges (common/log.h): a rotation that cannot
 * rename, keep_files 0, a log that cannot be opened again (a folder in its
 * place, no descriptor left), a full disk, a broken pipe, a write that a
 * signal interrupts, lines that do not fit the stack buffer, the
 * "log-dropped" line that counts what was lost, and links and other users'
 * files the log must never write into.
 *
 * log.c keeps its state in one static struct, and several cases lower a
 * process limit (RLIMIT_NOFILE, RLIMIT_FSIZE) or change a signal's handling,
 * so each case runs in a forked child with a fresh log in its own folder.
 * The children run side by side (some wait out the log's one-second retry);
 * each checks the files byte for byte and exits 1 on a failed check, with
 * exit() so coverage counters are written.  Lines are compared without
 * their "2026-11-24T19:55:02.123Z " stamp, whose form is checked.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "check.h"
#include "clock.h"
#include "log.h"

#define STAMP 25       /* "2026-11-24T19:55:02.123Z " */
#define FILL 100       /* bytes of one fill() line, stamp and newline included */

static char root[64];            /* the temporary folder of every case */
static char dir[256];            /* this case's folder in it */
static struct rlimit nofile0, fsize0;   /* the limits the child started with */

/* ---------------------------------------------------------------- helpers */

/* 'name' in this case's folder, in one of four rotating buffers. */
static const char *at(const char *name) {
    static char p[4][512];
    static int i;
    char *r = p[i++ % 4];
    snprintf(r, sizeof p[0], "%s/%s", dir, name);
    return r;
}

/* The whole file (NUL-terminated, its length in *len), or NULL. */
static char *slurp(const char *path, size_t *len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    size_t cap = 4096, n = 0;
    char *t = malloc(cap);
    ssize_t r;
    while (t && (r = read(fd, t + n, cap - n - 1)) > 0) {
        n += (size_t)r;
        if (cap - n < 2) t = realloc(t, cap *= 2);
    }
    close(fd);
    if (t) t[n] = '\0';
    *len = n;
    return t;
}

/* "dddd-dd-ddTdd:dd:dd.dddZ " at s (n bytes available)? */
static int is_stamp(const char *s, size_t n) {
    static const char form[] = "dddd-dd-ddTdd:dd:dd.dddZ ";
    if (n < STAMP) return 0;
    for (int i = 0; i < STAMP; i++)
        if (form[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != form[i]) return 0;
    return 1;
}

/* 'text' (n bytes) without the stamp that starts each line; a line without
 * a well-formed stamp is kept whole behind "NO STAMP: ", so it shows.
 * Embedded NUL bytes come out as "\0" so that they show too. */
static char *unstamp(const char *text, size_t n) {
    char *out = malloc(2 * n + 16), *o = out;
    size_t i = 0;
    while (out && i < n) {
        const char *nl = memchr(text + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - text) + 1 : n;
        if (is_stamp(text + i, end - i)) {
            i += STAMP;
        } else {
            memcpy(o, "NO STAMP: ", 10);
            o += 10;
        }
        for (; i < end; i++) {
            if (text[i] == '\0') {
                *o++ = '\\';
                *o++ = '0';
            } else {
                *o++ = text[i];
            }
        }
    }
    if (out) *o = '\0';
    return out;
}

/* Check that 'path' holds exactly 'want' once the stamps are removed. */
#define CHECK_FILE(path, want) check_file(__LINE__, path, want)
static void check_file(int line, const char *path, const char *want) {
    size_t n = 0;
    char *raw = slurp(path, &n), *got = raw ? unstamp(raw, n) : NULL;
    CHECK(got && strcmp(got, want) == 0, "(test_log.c:%d) %s holds\n'%s'\nwant\n'%s'", line,
          path, got ? got : "(cannot read)", want);
    free(raw);
    free(got);
}

/* A fill line's details after "n=NNN ": FILL bytes in all. */
static const char XS[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
_Static_assert(sizeof XS - 1 == FILL - STAMP - 17, "a fill line is FILL bytes");

/* Log fill line 'i'. */
static void fill(int i) {
    log_msg(LOG_INFO, "fill", "n=%03d %s", i, XS);
}

/* Fill lines from..to as they read once unstamped. */
static const char *fills(int from, int to) {
    static char t[4][4096];
    static int k;
    char *r = t[k++ % 4], *o = r;
    for (int i = from; i <= to; i++)
        o += sprintf(o, "INFO fill n=%03d %s\n", i, XS);
    *o = '\0';
    return r;
}

/* Bytes of one line in the file: stamp, level, event, details, newline. */
static size_t line_bytes(const char *level, const char *event, const char *details) {
    return STAMP + strlen(level) + 1 + strlen(event) + (details ? 1 + strlen(details) : 0) + 1;
}

/* Lower (or restore) the soft limit on descriptors. */
static void set_nofile(rlim_t n) {
    struct rlimit r = nofile0;
    r.rlim_cur = n;
    CHECK(setrlimit(RLIMIT_NOFILE, &r) == 0, "setrlimit(NOFILE, %lu): %s", (unsigned long)n,
          strerror(errno));
}

/* The descriptor the next open() gets. */
static int lowest_free_fd(void) {
    int fd = open("/dev/null", O_RDONLY);
    if (fd >= 0) close(fd);
    return fd;
}

/* Let the log's one-second retry time pass. */
static void wait_retry(void) {
    nanosleep(&(struct timespec){1, 150 * 1000 * 1000}, NULL);
}

/* log_open() 'name' in this case's folder, with the given rotation. */
static void open_log_or_fail(const char *name, size_t max, int keep) {
    char err[256] = "";
    log_set_rotation(max, keep);
    CHECK(log_open(dir, name, 1000, err, sizeof err) == 0, "log_open %s: %s", name, err);
}

/* ------------------------------------------------------------------ cases */

/* Before log_open(): log_reopen() refuses; lines go to stderr; a broken
 * stderr loses the line but neither spins nor keeps it for later. */
static void case_before_open(void) {
    CHECK(log_reopen() == -1, "log_reopen() before log_open() must refuse");
    signal(SIGPIPE, SIG_IGN);
    char got[2][512];
    int keep = dup(2), left = 0;
    for (int k = 0; k < 2; k++) {
        int p[2];
        if (keep < 0 || pipe(p) < 0) {
            CHECK(0, "dup/pipe: %s", strerror(errno));
            return;
        }
        fcntl(p[0], F_SETFL, O_NONBLOCK);
        dup2(p[1], 2);
        close(p[1]);
        if (k == 0) {
            log_msg(LOG_WARN, "early", "x=%d", 1);
        } else {
            log_msg(LOG_INFO, "later", "z=%d", 3);
        }
        ssize_t n = read(p[0], got[k], sizeof got[k] - 1);
        got[k][n > 0 ? n : 0] = '\0';
        close(p[0]);
        if (k == 0) {               /* stderr is now a pipe nobody reads */
            log_msg(LOG_INFO, "lost", "y=%d", 2);
            left = log_next_flush_ms(log_now_ms());
        }
    }
    dup2(keep, 2);
    close(keep);
    char *u0 = unstamp(got[0], strlen(got[0])), *u1 = unstamp(got[1], strlen(got[1]));
    CHECK_STR(u0, "WARN early x=1\n");
    CHECK(left == -1, "a line stderr refused is still buffered (%d ms to its flush)", left);
    CHECK_STR(u1, "INFO later z=3\n");
    free(u0);
    free(u1);
}

/* A format longer than the 512-byte stack buffer goes through the heap;
 * an empty or NULL format gives the bare event; a format that fails still
 * leaves a line and does not disturb the next. */
static void case_formats(void) {
    open_log_or_fail("f", 1 << 20, 1);
    char big[700];
    memset(big, 'b', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_msg(LOG_INFO, "fits", "%.*s", 511, big);     /* 511 + NUL: the stack buffer */
    log_msg(LOG_INFO, "long", "%.*s", 512, big);     /* one more: the heap */
    log_msg(LOG_DEBUG, "longer", "v=%s;", big);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-zero-length"
#pragma GCC diagnostic ignored "-Wformat-security"
#pragma GCC diagnostic ignored "-Wformat"
    log_msg(LOG_INFO, "empty", "");
    log_msg(LOG_INFO, "none", NULL);
#pragma GCC diagnostic pop
    log_msg(LOG_ERROR, "badfmt", "%lc", (wint_t)0x263a);  /* EILSEQ in the C locale */
    log_msg(LOG_INFO, "after", "ok");
    log_flush();
    static char want[4096];
    snprintf(want, sizeof want,
             "INFO fits %.511s\nINFO long %.512s\nDEBUG longer v=%s;\n"
             "INFO empty\nINFO none\nERROR badfmt \nINFO after ok\n", big, big, big);
    CHECK_FILE(at("f.log"), want);
}

/* log_data: every byte value, with control bytes, DEL, '"' and '\' as
 * \xNN and the rest as is, between the prefix and the suffix; runs of
 * plain bytes of every length between escaped ones. */
static void case_data(void) {
    open_log_or_fail("q", 1 << 20, 1);
    char all[256], mixed[64];
    for (int i = 0; i < 256; i++) all[i] = (char)i;
    for (int i = 0; i < 64; i++) mixed[i] = i % 7 == 3 ? '"' : (char)('a' + i % 26);
    log_data(LOG_INFO, "bytes", "id=7 ", all, sizeof all, " tail=1");
    log_data(LOG_WARN, "mixed", "", mixed, sizeof mixed, NULL);
    log_data(LOG_INFO, "none", "p=", "", 0, NULL);
    log_flush();
    static char want[4096];
    size_t n = (size_t)snprintf(want, sizeof want, "INFO bytes id=7 \"");
    for (int i = 0; i < 256; i++) {
        int esc = i < 0x20 || i == 0x7f || i == '"' || i == '\\';
        if (esc) n += (size_t)snprintf(want + n, sizeof want - n, "\\x%02x", i);
        else want[n++] = (char)i;
    }
    n += (size_t)snprintf(want + n, sizeof want - n, "\" tail=1\nWARN mixed \"");
    for (int i = 0; i < 64; i++) {
        if (mixed[i] == '"') n += (size_t)snprintf(want + n, sizeof want - n, "\\x22");
        else want[n++] = mixed[i];
    }
    snprintf(want + n, sizeof want - n, "\"\nINFO none p=\"\"\n");
    CHECK_FILE(at("q.log"), want);
}

/* log_data finds plain runs eight bytes at a time: every byte value at
 * every place of a word (and in the tail past the last whole word), among
 * ASCII and among UTF-8 lead bytes, is escaped exactly when it should be. */
static void case_data_words(void) {
    open_log_or_fail("w", 8 << 20, 1);
    static const int places[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 21, 22};
    static const unsigned char fillers[] = {'a', 0xc3};
    size_t cap = 4u << 20, n = 0;
    char *want = malloc(cap);
    for (size_t f = 0; f < sizeof fillers; f++)
        for (size_t p = 0; p < sizeof places / sizeof *places; p++)
            for (int b = 0; b < 256; b++) {
                char data[23];
                memset(data, (char)fillers[f], sizeof data);
                data[places[p]] = (char)b;
                log_data(LOG_INFO, "w", "", data, sizeof data, NULL);
                n += (size_t)snprintf(want + n, cap - n, "INFO w \"");
                for (size_t i = 0; i < sizeof data; i++) {
                    unsigned char c = (unsigned char)data[i];
                    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
                        n += (size_t)snprintf(want + n, cap - n, "\\x%02x", c);
                    else
                        want[n++] = (char)c;
                }
                n += (size_t)snprintf(want + n, cap - n, "\"\n");
            }
    log_flush();
    want[n] = '\0';
    CHECK_FILE(at("w.log"), want);
    free(want);
}

/* A folder name too long is refused with a message; flush_ms 0 means
 * 200 ms; a line is due then, not before. */
static void case_path_and_flush_default(void) {
    char longdir[4200], err[256] = "";
    int n = snprintf(longdir, sizeof longdir, "%s/", dir);
    memset(longdir + n, 'd', 4090 - (size_t)n);
    longdir[4090] = '\0';
    CHECK(log_open(longdir, "x", 100, err, sizeof err) == -1, "a 4090-byte folder name was taken");
    CHECK_STR(err, "log path too long");

    CHECK(log_open(dir, "d", 0, err, sizeof err) == 0, "log_open: %s", err);
    int64_t t0 = log_now_ms();
    log_msg(LOG_INFO, "one", "a=1");
    int64_t t1 = log_now_ms();
    int left = log_next_flush_ms(t0);
    CHECK(left >= 200 && left <= 200 + (t1 - t0), "flush_ms 0: due in %d ms, want 200", left);
    CHECK(log_next_flush_ms(t1 + 100000) == 0, "an overdue flush is due now");
    log_tick(t0 + 199);
    CHECK_FILE(at("d.log"), "");
    log_tick(t1 + 200);
    CHECK_FILE(at("d.log"), "INFO one a=1\n");
    CHECK(log_next_flush_ms(t1) == -1, "nothing buffered after the tick's flush");
}

/* max_file_bytes 0 counts as 1: one line per file, and an empty file is
 * never rotated away (it would push out NAME.log.1).  A drop notice does
 * not fit in 2 x 1 bytes, so lines after a drop are lost too; the config's
 * floor of 4096 bytes keeps servers away from this. */
static void case_tiny_max(void) {
    signal(SIGXFSZ, SIG_IGN);
    open_log_or_fail("t", 0, 1);
    log_msg(LOG_INFO, "a", "n=1");
    log_flush();
    log_msg(LOG_INFO, "b", "n=2");
    log_flush();
    CHECK_FILE(at("t.log.1"), "INFO a n=1\n");
    CHECK_FILE(at("t.log"), "INFO b n=2\n");
    struct rlimit r = fsize0;
    r.rlim_cur = 0;                  /* every write fails with EFBIG */
    CHECK(setrlimit(RLIMIT_FSIZE, &r) == 0, "setrlimit(FSIZE): %s", strerror(errno));
    log_msg(LOG_INFO, "c", "n=3");   /* rotates b to t.log.1, then fails */
    log_flush();
    CHECK(setrlimit(RLIMIT_FSIZE, &fsize0) == 0, "setrlimit(FSIZE): %s", strerror(errno));
    log_msg(LOG_INFO, "d", "n=4");
    log_flush();
    CHECK_FILE(at("t.log.1"), "INFO b n=2\n");
    CHECK_FILE(at("t.log"), "");
}

/* keep_files 2 with a folder where NAME.log.2 should go: the shift of .1
 * onto .2 fails, but NAME.log still moves to .1 and a new file starts. */
static void case_keep_blocked_by_folder(void) {
    CHECK(mkdir(at("k.log.2"), 0700) == 0, "mkdir: %s", strerror(errno));
    int fd = open(at("k.log.1"), O_WRONLY | O_CREAT | O_TRUNC, 0640);
    CHECK(fd >= 0 && write(fd, "old\n", 4) == 4, "k.log.1: %s", strerror(errno));
    if (fd >= 0) close(fd);
    open_log_or_fail("k", 300, 2);
    for (int i = 0; i <= 2; i++) fill(i);
    log_flush();
    fill(3);
    log_flush();
    CHECK_FILE(at("k.log"), fills(3, 3));
    CHECK_FILE(at("k.log.1"), fills(0, 2));
    struct stat st;
    CHECK(stat(at("k.log.2"), &st) == 0 && S_ISDIR(st.st_mode), "k.log.2 is no longer a folder");
}

/* keep_files 0 when NAME.log was removed by someone else: nothing to
 * remove, the new file starts. */
static void case_keep0_file_gone(void) {
    open_log_or_fail("e", 300, 0);
    for (int i = 0; i <= 2; i++) fill(i);
    log_flush();
    CHECK(unlink(at("e.log")) == 0, "unlink: %s", strerror(errno));
    fill(3);
    log_flush();
    CHECK_FILE(at("e.log"), fills(3, 3));
    CHECK(access(at("e.log.1"), F_OK) < 0, "keep_files 0 made e.log.1");
}

/* keep_files 0 when a folder took NAME.log's place: it cannot be removed,
 * the failure is logged (once) and lines go on to the open file, up to
 * twice max_file_bytes. */
static void case_keep0_folder(void) {
    open_log_or_fail("e", 300, 0);
    for (int i = 0; i <= 2; i++) fill(i);
    log_flush();
    CHECK(link(at("e.log"), at("saved")) == 0, "link: %s", strerror(errno));
    CHECK(unlink(at("e.log")) == 0 && mkdir(at("e.log"), 0700) == 0, "%s", strerror(errno));
    fill(3);
    log_flush();
    static char want[4096];
    snprintf(want, sizeof want,
             "%sERROR log-rotate-failed path=%s step=rename reason=Is a directory; "
             "trying again every 1000 ms\n", fills(0, 3), at("e.log"));
    CHECK_FILE(at("saved"), want);
}

/* NAME.log.1 is a folder: rotation fails ("rename"), lines go on to
 * NAME.log up to twice the size, then are dropped for that reason.  When
 * the folder is gone the rename works but the new file cannot be opened
 * (no descriptor below the limit): the "open" failure drops more.  When
 * descriptors are back the log recovers, says how many lines were lost and
 * why the first was, and NAME.log.1 holds the first full file. */
static void case_rename_then_open_fail(void) {
    CHECK(mkdir(at("r.log.1"), 0700) == 0, "mkdir: %s", strerror(errno));
    int k = lowest_free_fd();
    open_log_or_fail("r", 300, 1);
    for (int i = 0; i <= 2; i++) fill(i);
    log_flush();
    for (int i = 3; i <= 8; i++) fill(i);    /* 3..5 fit in 2 x 300 bytes */
    log_flush();
    CHECK_FILE(at("r.log"), fills(0, 5));
    fill(9);                    /* dropped: the notice has no room either */
    log_flush();
    CHECK(rmdir(at("r.log.1")) == 0, "rmdir: %s", strerror(errno));
    wait_retry();
    set_nofile((rlim_t)k);      /* the log's descriptor is k: none left below */
    fill(10);
    log_flush();
    set_nofile(nofile0.rlim_cur);
    CHECK(access(at("r.log"), F_OK) < 0, "r.log was not moved away");
    CHECK_FILE(at("r.log.1"), fills(0, 5));
    wait_retry();
    fill(11);
    log_flush();
    static char rename_fail[512], open_fail[512], want[4096];
    snprintf(rename_fail, sizeof rename_fail,
             "path=%s step=rename reason=Is a directory; trying again every 1000 ms", at("r.log"));
    snprintf(open_fail, sizeof open_fail,
             "path=%s step=open reason=Too many open files; trying again every 1000 ms",
             at("r.log"));
    size_t lost = 5 * FILL + line_bytes("ERROR", "log-rotate-failed", rename_fail) +
                  line_bytes("ERROR", "log-rotate-failed", open_fail);
    snprintf(want, sizeof want,
             "WARN log-dropped lines=7 bytes=%zu reason=Is a directory\n%s"
             "INFO log-recovered path=%s\n", lost, fills(11, 11), at("r.log"));
    CHECK_FILE(at("r.log"), want);
}

/* A rotation whose new file cannot be opened (no descriptor below the
 * limit) loses the old descriptor too: the batch is dropped, counted, and
 * reported after the retry opens the file. */
static void case_rotation_open_fails(void) {
    int k = lowest_free_fd();
    open_log_or_fail("g", 300, 1);
    for (int i = 0; i <= 2; i++) fill(i);
    log_flush();
    set_nofile((rlim_t)k);
    fill(3);
    log_flush();
    set_nofile(nofile0.rlim_cur);
    CHECK(access(at("g.log"), F_OK) < 0, "g.log was not moved away");
    wait_retry();
    fill(4);
    log_flush();
    static char open_fail[512], want[4096];
    snprintf(open_fail, sizeof open_fail,
             "path=%s step=open reason=Too many open files; trying again every 1000 ms",
             at("g.log"));
    snprintf(want, sizeof want,
             "WARN log-dropped lines=2 bytes=%zu reason=Too many open files\n%s"
             "INFO log-recovered path=%s\n",
             FILL + line_bytes("ERROR", "log-rotate-failed", open_fail), fills(4, 4),
             at("g.log"));
    CHECK_FILE(at("g.log"), want);
    CHECK_FILE(at("g.log.1"), fills(0, 2));
}

/* No descriptor at all: log_open() fails with the reason; log_reopen()
 * gives up the old descriptor and drops lines, even once descriptors are
 * back, until the retry a second later opens the file again. */
static void case_no_descriptor(void) {
    char err[256] = "", want[1024];
    int k = lowest_free_fd();
    set_nofile((rlim_t)k);
    CHECK(log_open(dir, "o", 1000, err, sizeof err) == -1, "log_open without a descriptor");
    set_nofile(nofile0.rlim_cur);
    snprintf(want, sizeof want, "cannot open %s: Too many open files", at("o.log"));
    CHECK_STR(err, want);
    CHECK(log_open(dir, "o", 1000, err, sizeof err) == 0, "log_open: %s", err);
    log_msg(LOG_INFO, "first", "n=1");
    log_flush();
    set_nofile((rlim_t)k);      /* the log's descriptor is k: none left below */
    int64_t t0 = mono_ms();
    int rc = log_reopen();
    log_msg(LOG_INFO, "lost", "n=2");
    log_flush();
    set_nofile(nofile0.rlim_cur);
    log_msg(LOG_INFO, "soon", "n=3");
    log_flush();
    int early = mono_ms() - t0 < 1000;  /* else the retry may open the file for "soon" */
    CHECK(rc == -1, "log_reopen without a descriptor returned %d", rc);
    wait_retry();
    log_msg(LOG_INFO, "back", "n=4");
    log_flush();
    static char reopen[512], all[2048];
    snprintf(reopen, sizeof reopen,
             "cannot open %s: Too many open files; dropping lines, trying again every 1000 ms",
             at("o.log"));
    size_t lost = line_bytes("ERROR", "log-reopen", reopen) + line_bytes("INFO", "lost", "n=2");
    if (early)
        snprintf(all, sizeof all,
                 "INFO first n=1\nWARN log-dropped lines=3 bytes=%zu reason=Too many open files\n"
                 "INFO back n=4\nINFO log-recovered path=%s\n",
                 lost + line_bytes("INFO", "soon", "n=3"), at("o.log"));
    else
        snprintf(all, sizeof all,
                 "INFO first n=1\nWARN log-dropped lines=2 bytes=%zu reason=Too many open files\n"
                 "INFO soon n=3\nINFO log-recovered path=%s\nINFO back n=4\n",
                 lost, at("o.log"));
    CHECK_FILE(at("o.log"), all);
}

/* log_reopen() when a folder took NAME.log's place: the old file keeps
 * taking lines (up to twice max_file_bytes, no rotation while the open is
 * pending), the rest is dropped, and the retry opens the new file. */
static void case_reopen_folder(void) {
    open_log_or_fail("h", 300, 1);
    fill(0);
    log_flush();
    CHECK(link(at("h.log"), at("saved")) == 0, "link: %s", strerror(errno));
    CHECK(unlink(at("h.log")) == 0 && mkdir(at("h.log"), 0700) == 0, "%s", strerror(errno));
    CHECK(log_reopen() == -1, "log_reopen onto a folder succeeded");
    log_flush();
    /* pad the old file to exactly 300 bytes */
    struct stat st;
    CHECK(stat(at("saved"), &st) == 0, "stat: %s", strerror(errno));
    int pad = 300 - (int)st.st_size - (int)line_bytes("INFO", "pad", "");
    CHECK(pad > 0, "no room to pad: %lld bytes", (long long)st.st_size);
    static char xs[300];
    memset(xs, 'p', sizeof xs - 1);
    log_msg(LOG_INFO, "pad", "%.*s", pad, xs);
    for (int i = 1; i <= 4; i++) fill(i);     /* 1..3 fit in 2 x 300 bytes */
    log_flush();
    fill(5);                    /* dropped: the notice has no room either */
    log_flush();
    CHECK(rmdir(at("h.log")) == 0, "rmdir: %s", strerror(errno));
    wait_retry();
    fill(6);
    log_flush();
    static char want[4096];
    snprintf(want, sizeof want,
             "%sERROR log-reopen cannot open %s: Is a directory; writing to the old file, "
             "trying again every 1000 ms\nINFO pad %.*s\n%s",
             fills(0, 0), at("h.log"), pad, xs, fills(1, 3));
    CHECK_FILE(at("saved"), want);
    snprintf(want, sizeof want,
             "WARN log-dropped lines=2 bytes=%d reason=Is a directory\n%s"
             "INFO log-recovered path=%s\n", 2 * FILL, fills(6, 6), at("h.log"));
    CHECK_FILE(at("h.log"), want);
}

/* The log is never written through a link, nor into another user's file
 * (root only: a file given to uid 65534): log_open() refuses, saying why;
 * a link put in place of the open log makes the reopen fail and the old
 * file keep the lines; a rotation never writes through a link at a
 * rotated name (rename() moves the link). */
static void case_links(void) {
    const char *precious = "precious\n";
    int fd = open(at("target"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && write(fd, precious, 9) == 9, "target: %s", strerror(errno));
    close(fd);
    CHECK(symlink(at("target"), at("l.log")) == 0, "symlink: %s", strerror(errno));
    char err[512] = "", want[1024];
    log_set_rotation(300, 1);
    CHECK(log_open(dir, "l", 1000, err, sizeof err) == -1, "log_open through a link succeeded");
    snprintf(want, sizeof want, "cannot open %s: a symbolic link, which the log is never "
             "written through: remove it", at("l.log"));
    CHECK_STR(err, want);
    if (geteuid() == 0) {
        fd = open(at("o.log"), O_WRONLY | O_CREAT, 0640);
        CHECK(fd >= 0 && fchown(fd, 65534, 65534) == 0, "chown: %s", strerror(errno));
        close(fd);
        CHECK(log_open(dir, "o", 1000, err, sizeof err) == -1, "log_open of another's file");
        snprintf(want, sizeof want, "cannot open %s: another user's file: remove it",
                 at("o.log"));
        CHECK_STR(err, want);
    }
    open_log_or_fail("r", 300, 1);
    fill(0);
    log_flush();
    CHECK(rename(at("r.log"), at("moved")) == 0 && symlink(at("target"), at("r.log")) == 0,
          "%s", strerror(errno));
    CHECK(symlink(at("target"), at("r.log.1")) == 0, "symlink: %s", strerror(errno));
    CHECK(log_reopen() == -1, "log_reopen through a link succeeded");
    log_flush();
    snprintf(want, sizeof want, "%sERROR log-reopen cannot open %s: a symbolic link, which "
             "the log is never written through: remove it; writing to the old file, trying "
             "again every 1000 ms\n", fills(0, 0), at("r.log"));
    CHECK_FILE(at("moved"), want);
    CHECK(unlink(at("r.log")) == 0, "unlink: %s", strerror(errno));
    wait_retry();
    for (int i = 1; i <= 3; i++) fill(i);     /* a new r.log, then a rotation */
    log_flush();
    size_t n;
    char *kept = slurp(at("target"), &n);
    CHECK(kept && strcmp(kept, precious) == 0, "the link's target was written: %s", kept);
    free(kept);
    struct stat st;
    CHECK(lstat(at("r.log.1"), &st) == 0 && S_ISREG(st.st_mode), "r.log.1 is no file");
}

static volatile sig_atomic_t xfsz_seen;

/* SIGXFSZ arrives inside the log's write(): a flush from here must return
 * at once, not write the same batch again. */
static void on_xfsz(int sig) {
    (void)sig;
    xfsz_seen++;
    log_flush();
}

/* A full disk (RLIMIT_FSIZE: EFBIG) in the middle of a batch: what did
 * not fit is dropped, the notice itself finds no room and the count goes
 * on; once there is room the notice ends the cut line and says it all. */
static void case_full_disk(void) {
    struct sigaction sa = {.sa_handler = on_xfsz};
    sigaction(SIGXFSZ, &sa, NULL);
    open_log_or_fail("full", 1 << 20, 1);
    struct rlimit r = fsize0;
    r.rlim_cur = 250;
    CHECK(setrlimit(RLIMIT_FSIZE, &r) == 0, "setrlimit(FSIZE): %s", strerror(errno));
    for (int i = 0; i <= 4; i++) fill(i);     /* 250 of 500 bytes fit */
    log_flush();
    CHECK(xfsz_seen == 1, "SIGXFSZ seen %d times, want 1", (int)xfsz_seen);
    fill(5);
    log_flush();
    CHECK(xfsz_seen == 2, "SIGXFSZ seen %d times, want 2", (int)xfsz_seen);
    CHECK(setrlimit(RLIMIT_FSIZE, &fsize0) == 0, "setrlimit(FSIZE): %s", strerror(errno));
    fill(6);
    log_flush();
    static char want[4096];
    snprintf(want, sizeof want,
             "%s%.*s\nWARN log-dropped lines=4 bytes=%d reason=File too large\n%s",
             fills(0, 1), 250 - 2 * FILL - STAMP, fills(2, 2), 250 + FILL, fills(6, 6));
    CHECK_FILE(at("full.log"), want);
}

/* The log is a FIFO whose reader goes away: writes fail (EPIPE), the
 * notice too; when a reader comes back the notice comes first. */
static void case_fifo_reader_gone(void) {
    signal(SIGPIPE, SIG_IGN);
    CHECK(mkfifo(at("p.log"), 0600) == 0, "mkfifo: %s", strerror(errno));
    int rd = open(at("p.log"), O_RDONLY | O_NONBLOCK);
    open_log_or_fail("p", 1 << 20, 1);
    char got[2][1024];
    log_msg(LOG_INFO, "a", "n=1");
    log_flush();
    ssize_t n = read(rd, got[0], sizeof got[0] - 1);
    got[0][n > 0 ? n : 0] = '\0';
    close(rd);
    log_msg(LOG_INFO, "b", "n=2");
    log_flush();
    log_msg(LOG_INFO, "c", "n=3");
    log_flush();
    rd = open(at("p.log"), O_RDONLY | O_NONBLOCK);
    log_msg(LOG_INFO, "d", "n=4");
    log_flush();
    n = read(rd, got[1], sizeof got[1] - 1);
    got[1][n > 0 ? n : 0] = '\0';
    close(rd);
    char *u0 = unstamp(got[0], strlen(got[0])), *u1 = unstamp(got[1], strlen(got[1]));
    CHECK_STR(u0, "INFO a n=1\n");
    char want[256];
    snprintf(want, sizeof want, "WARN log-dropped lines=2 bytes=%zu reason=Broken pipe\nINFO d n=4\n",
             2 * line_bytes("INFO", "b", "n=2"));
    CHECK_STR(u1, want);
    free(u0);
    free(u1);
}

static volatile sig_atomic_t usr1_seen;

static void on_usr1(int sig) {
    (void)sig;
    usr1_seen++;
}

#define PREFILL 4090    /* bytes put in a 4096-byte pipe: no line fits after */

/* Make the pipe read by 'rd' hold 4096 bytes and fill it through 'wr' to
 * PREFILL, so that the log's next write blocks.  Then fork a reader that
 * waits until this process sleeps (in that write), interrupts it with
 * SIGUSR1 (no SA_RESTART: the write fails with EINTR), waits a little and
 * reads everything into the file 'got'.  Returns the reader's pid. */
static pid_t interrupt_and_drain(int rd, int wr) {
    static char pre[PREFILL];
    memset(pre, '.', sizeof pre);
    CHECK(fcntl(rd, F_SETPIPE_SZ, 4096) == 4096, "F_SETPIPE_SZ: %s", strerror(errno));
    CHECK(write(wr, pre, sizeof pre) == PREFILL, "prefill: %s", strerror(errno));
    struct sigaction sa = {.sa_handler = on_usr1};   /* sa_flags 0: no SA_RESTART */
    sigaction(SIGUSR1, &sa, NULL);
    const char *out = at("got");
    pid_t writer = getpid(), pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid != 0) return pid;
    char stat_path[64], st[512], buf[8192];
    snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", (int)writer);
    for (int i = 0; i < 500; i++) {       /* until the writer sleeps, 5 s at most */
        int fd = open(stat_path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, st, sizeof st - 1) : -1;
        if (fd >= 0) close(fd);
        st[n > 0 ? n : 0] = '\0';
        const char *paren = strrchr(st, ')');
        if (paren && paren[1] == ' ' && paren[2] == 'S') break;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    kill(writer, SIGUSR1);
    nanosleep(&(struct timespec){0, 200 * 1000 * 1000}, NULL);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    struct pollfd pfd = {.fd = rd, .events = POLLIN};
    while (poll(&pfd, 1, 500) > 0) {          /* until nothing comes for 0.5 s */
        ssize_t n = read(rd, buf, sizeof buf);
        if (n <= 0 || write(fd, buf, (size_t)n) != n) break;
    }
    close(fd);
    _exit(0);
}

/* What the reader of interrupt_and_drain() got after PREFILL bytes,
 * unstamped, or "(short)". */
static char *drained(pid_t reader) {
    int st = 0;
    if (reader > 0) waitpid(reader, &st, 0);
    size_t n = 0;
    char *raw = slurp(at("got"), &n), *u = NULL;
    if (raw && n >= PREFILL) u = unstamp(raw + PREFILL, n - PREFILL);
    free(raw);
    return u ? u : strdup("(short)");
}

/* A blocking log write interrupted by a signal is tried again: the log is
 * a FIFO whose reader is slow, and a signal comes while the write waits. */
static void case_interrupted_file_write(void) {
    signal(SIGPIPE, SIG_IGN);
    CHECK(mkfifo(at("i.log"), 0600) == 0, "mkfifo: %s", strerror(errno));
    int rd = open(at("i.log"), O_RDONLY | O_NONBLOCK), wr = open(at("i.log"), O_WRONLY);
    open_log_or_fail("i", 1 << 20, 1);
    pid_t reader = interrupt_and_drain(rd, wr);
    close(wr);
    close(rd);
    log_msg(LOG_INFO, "waited", "n=1");
    log_flush();
    char *got = drained(reader);
    CHECK(usr1_seen == 1, "SIGUSR1 seen %d times, want 1", (int)usr1_seen);
    CHECK_STR(got, "INFO waited n=1\n");
    free(got);
}

/* The same before log_open(), when lines go to stderr (a pipe). */
static void case_interrupted_stderr_write(void) {
    int p[2], keep = dup(2);
    if (keep < 0 || pipe(p) < 0) {
        CHECK(0, "dup/pipe: %s", strerror(errno));
        return;
    }
    pid_t reader = interrupt_and_drain(p[0], p[1]);
    close(p[0]);
    dup2(p[1], 2);
    close(p[1]);
    log_msg(LOG_WARN, "waited", "n=2");
    dup2(keep, 2);
    close(keep);
    char *got = drained(reader);
    CHECK(usr1_seen == 1, "SIGUSR1 seen %d times, want 1", (int)usr1_seen);
    CHECK_STR(got, "WARN waited n=2\n");
    free(got);
}

/* ----------------------------------------------------------------- runner */

static const struct {
    const char *name;
    void (*run)(void);
} cases[] = {
    {"before-open", case_before_open},
    {"formats", case_formats},
    {"data", case_data},
    {"data in words", case_data_words},
    {"defaults", case_path_and_flush_default},
    {"tiny-max", case_tiny_max},
    {"keep-blocked", case_keep_blocked_by_folder},
    {"keep0-gone", case_keep0_file_gone},
    {"keep0-folder", case_keep0_folder},
    {"rename-open", case_rename_then_open_fail},
    {"rotation-open", case_rotation_open_fails},
    {"no-descriptor", case_no_descriptor},
    {"reopen-folder", case_reopen_folder},
    {"links", case_links},
    {"full-disk", case_full_disk},
    {"fifo", case_fifo_reader_gone},
    {"eintr-file", case_interrupted_file_write},
    {"eintr-stderr", case_interrupted_stderr_write},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* In the child: run case i in its own folder, exit 0 when every check passed. */
static void run_child(size_t i) {
    static char errbuf[1 << 16];    /* one write at exit: no interleaving */
    setvbuf(stderr, errbuf, _IOFBF, sizeof errbuf);
    alarm(20);
    snprintf(dir, sizeof dir, "%s/%s", root, cases[i].name);
    mkdir(dir, 0700);
    getrlimit(RLIMIT_NOFILE, &nofile0);
    getrlimit(RLIMIT_FSIZE, &fsize0);
    cases[i].run();
    log_close();
    if (check_failed) fprintf(stderr, "case %s: %d failed\n", cases[i].name, check_failed);
    exit(check_failed ? 1 : 0);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/herdlogXXXXXX");
    if (!mkdtemp(root)) return 2;
    pid_t pid[NCASES];
    for (size_t i = 0; i < NCASES; i++) {
        fflush(NULL);
        pid[i] = fork();
        if (pid[i] == 0) run_child(i);
    }
    for (size_t i = 0; i < NCASES; i++) {
        int st = 0;
        CHECK(pid[i] > 0 && waitpid(pid[i], &st, 0) == pid[i] && WIFEXITED(st) &&
                  WEXITSTATUS(st) == 0,
              "case %s: status %d", cases[i].name, st);
    }
    check_rmtree(root);
    return check_report("log");
}
