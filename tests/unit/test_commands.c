/* test_commands.c -- a reply appended to output that is partly written.
 *
 * A client's output buffer keeps what the socket has not taken yet, from
 * an offset.  Appending a reply may compact it (move the pending bytes to
 * the front).  The reply must still be logged whole and exactly: a position
 * taken before the append, from the start of the allocation, pointed past
 * the end after a compaction, and the server spun for ever on a length
 * that had wrapped around.
 */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "commands.h"
#include "log.h"
#include "server.h"

static const char CONFIG[] =
    "servers:\n"
    "  Unit: {host: 127.0.0.1, port: 1, neighbors: []}\n"
    "places:\n"
    "  provider: local\n";

static char logdir[64];

/* The log's text so far. */
static char *read_log(void) {
    log_flush();
    char path[96];
    snprintf(path, sizeof path, "%s/Unit.log", logdir);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    static char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    return text;
}

/* c->out as a 256-byte buffer holding 'pending' unwritten bytes ("x"s)
 * that end 'tail' bytes before its end. */
static void partly_written(client *c, size_t pending, size_t tail) {
    buf_free(&c->out);
    char x[256];
    memset(x, 'x', sizeof x);
    buf_append(&c->out, x, 256 - tail);
    buf_consume(&c->out, 256 - tail - pending);
}

static void test_iamat_after_partial_write(server *s, client *c) {
    partly_written(c, 50, 6);
    CHECK(c->out.cap == 256 && c->out.off == 200 && buf_pending(&c->out) == 50,
          "setup: cap %zu off %zu pending %zu", c->out.cap, c->out.off, buf_pending(&c->out));
    const char line[] = "IAMAT kiwi +34.068930-118.445127 1621464827.959498503";
    command_handle(s, c, line, sizeof line - 1);
    CHECK(c->out.off == 0, "the append compacted the buffer (off %zu)", c->out.off);
    const char *d = buf_data(&c->out);
    size_t n = buf_pending(&c->out);
    CHECK(n > 50 && d[49] == 'x' && d[50] == 'A' && d[n - 1] == '\n', "pending output");
    /* the reply as sent, and the log line it must appear in */
    char want[256];
    snprintf(want, sizeof want, "send id=7 \"%.*s\"", (int)(n - 51), d + 50);
    const char *text = read_log();
    CHECK(text && strstr(text, want), "log has '%s':\n%s", want, text ? text : "(none)");
}

/* The AT line fits at the tail, the JSON after it does not: the buffer is
 * compacted while the JSON is written. */
static void test_whatsat_after_partial_write(server *s, client *c) {
    const char line[] = "WHATSAT kiwi 10 5";
    partly_written(c, 0, 256);                 /* learn the reply's parts */
    command_handle(s, c, line, sizeof line - 1);
    const char *d = buf_data(&c->out);
    size_t at_len = (size_t)((const char *)memchr(d, '\n', buf_pending(&c->out)) - d) + 1;
    size_t json_len = buf_pending(&c->out) - at_len - 2;
    CHECK(10 + at_len + json_len + 2 <= 256, "the reply fits once compacted");
    partly_written(c, 10, at_len + json_len / 2);
    command_handle(s, c, line, sizeof line - 1);
    CHECK(c->out.off == 0, "the JSON compacted the buffer (off %zu)", c->out.off);
    d = buf_data(&c->out);
    size_t n = buf_pending(&c->out);
    const char *json = memchr(d + 10, '\n', n - 10);
    CHECK(json && n >= 2 && d[n - 2] == '\n' && d[n - 1] == '\n', "reply shape");
    if (!json) return;
    char want[64];
    snprintf(want, sizeof want, " json_bytes=%zu results=0 ", (size_t)(d + n - 2 - (json + 1)));
    const char *text = read_log();
    int seen = 0;                   /* once for each of the two WHATSATs */
    for (const char *p = text; p && (p = strstr(p, want)); p++) seen++;
    CHECK(seen == 2, "log has '%s' %d times, want 2:\n%s", want, seen, text ? text : "(none)");
}

int main(void) {
    alarm(20);    /* the bug spun for ever: fail instead of hanging the suite */
    strcpy(logdir, "/tmp/herdcmdsXXXXXX");
    if (!mkdtemp(logdir)) return 2;
    static config cfg;
    char err[256];
    if (config_load_text("unit.yml", CONFIG, sizeof CONFIG - 1, &cfg, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    cfg.logging.log_lines = 1;
    if (log_open(logdir, "Unit", 1000, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    static server s;
    s.cfg = &cfg;
    s.me = &cfg.servers[0];
    table_init(&s.tab);
    static client c;
    c.role = ROLE_CLIENT;
    c.id = 7;
    clock_gettime(CLOCK_REALTIME, &c.rx_time);   /* the line was read now */
    test_iamat_after_partial_write(&s, &c);
    test_whatsat_after_partial_write(&s, &c);
    buf_free(&c.out);
    table_free(&s.tab);
    log_close();
    char path[96];
    snprintf(path, sizeof path, "%s/Unit.log", logdir);
    unlink(path);
    rmdir(logdir);
    return check_report("commands");
}
