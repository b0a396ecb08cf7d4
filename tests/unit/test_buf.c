/* test_buf.c -- buf_reserve() on sizes that do not fit.
 *
 * A size whose total overflows (or passes PTRDIFF_MAX, beyond any
 * allocation) must stop the process loudly, as running out of memory does:
 * it once doubled the capacity until it wrapped to 0 and spun for ever.
 * Each case runs in a forked child; the parent waits with a deadline and
 * wants SIGABRT and the message on stderr.
 */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "check.h"

/* Run buf_reserve(extra more) on a buffer holding one byte in a child.
 * Returns the wait status, or -1 when the child still ran after 3 s. */
static int reserve_in_child(size_t extra, char *err, size_t errlen) {
    int p[2];
    if (pipe(p) < 0) return -2;
    pid_t pid = fork();
    if (pid < 0) return -2;
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        buf_t b = {0};
        buf_append(&b, "x", 1);  /* capacity 256: doubling once wrapped to 0 */
        buf_reserve(&b, extra);
        _exit(0);
    }
    close(p[1]);
    int st = 0;
    pid_t r = 0;
    for (int i = 0; i < 300 && (r = waitpid(pid, &st, WNOHANG)) == 0; i++)
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        st = -1;
    }
    ssize_t n = read(p[0], err, errlen - 1);
    err[n > 0 ? n : 0] = '\0';
    close(p[0]);
    return st;
}

static void expect_abort(size_t extra, const char *what) {
    char err[512];
    int st = reserve_in_child(extra, err, sizeof err);
    CHECK(st != -1, "%s: still running after 3 s (an endless loop)", what);
    CHECK(st >= 0 && WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
          "%s: want SIGABRT, got status %d", what, st);
    CHECK(strstr(err, "buffer size overflow") != NULL, "%s: stderr '%s'", what, err);
}

int main(void) {
    expect_abort(SIZE_MAX, "len + extra wraps to 0");
    expect_abort(SIZE_MAX - 10, "doubling the capacity wraps");
    expect_abort((size_t)PTRDIFF_MAX, "just past PTRDIFF_MAX");
    /* a size that fits still works, with the data kept */
    buf_t b = {0};
    buf_append(&b, "abc", 3);
    buf_reserve(&b, 100000);
    CHECK(b.cap >= 100003 && memcmp(b.p, "abc", 3) == 0, "cap %zu", b.cap);
    buf_free(&b);
    return check_report("buf");
}
