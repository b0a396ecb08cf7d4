/* test_protocol.c -- the line grammar of docs/PROTOCOL.md, the newer order
 * and the diff format. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"
#include "protocol.h"

#define A "IAMAT kiwi +34.068930-118.445127 1621464827.959498503"

typedef struct {
    const char *line;
    size_t len;              /* 0: strlen(line) */
    proto_kind want;
} row;

static char long_id[400], emoji_ok[400], emoji_long[400], huge_time[1100],
    huge_coord[1100], client_256[400], client_257[400];
/* The field limits at their edges: 30 fraction digits pass, 31 do not. */
static char lat_frac30[128], lat_frac31[128], lng_frac30[128], lng_frac31[128],
    time_frac30[128], time_frac31[128], zeros_8k[8300], frac_8k[8300];

static void build_long_lines(void) {
    char id[260];
    memset(id, 'x', 256);
    id[256] = '\0';
    snprintf(client_256, sizeof client_256, "IAMAT %s +1.0+1.0 1", id);
    id[256] = 'x'; id[257] = '\0';
    snprintf(client_257, sizeof client_257, "IAMAT %s +1.0+1.0 1", id);
    char e[300] = "";
    for (int i = 0; i < 64; i++) strcat(e, "\xf0\x9f\xa5\x9d");      /* 64 kiwis: 256 bytes */
    snprintf(emoji_ok, sizeof emoji_ok, "IAMAT %s +1.0+1.0 1", e);
    strcat(e, "\xf0\x9f\xa5\x9d");                                      /* 65: 260 bytes */
    snprintf(emoji_long, sizeof emoji_long, "IAMAT %s +1.0+1.0 1", e);
    char digits[1001];
    memset(digits, '7', 1000);
    digits[1000] = '\0';
    snprintf(huge_time, sizeof huge_time, "IAMAT kiwi +1.0+1.0 %s", digits);
    snprintf(huge_coord, sizeof huge_coord, "IAMAT kiwi +%s.0+1.0 1", digits);
    snprintf(long_id, sizeof long_id, "WHATSAT %.256s 10 5", client_256 + 6);
    char d30[32], d31[33];
    memset(d30, '1', 30); d30[30] = '\0';
    memset(d31, '1', 31); d31[31] = '\0';
    snprintf(lat_frac30, sizeof lat_frac30, "IAMAT kiwi +34.%s-118.5 1", d30);
    snprintf(lat_frac31, sizeof lat_frac31, "IAMAT kiwi +34.%s-118.5 1", d31);
    snprintf(lng_frac30, sizeof lng_frac30, "IAMAT kiwi +34.5-118.%s 1", d30);
    snprintf(lng_frac31, sizeof lng_frac31, "IAMAT kiwi +34.5-118.%s 1", d31);
    snprintf(time_frac30, sizeof time_frac30, "IAMAT kiwi +34.5-118.5 1700000000.%s", d30);
    snprintf(time_frac31, sizeof time_frac31, "IAMAT kiwi +34.5-118.5 1700000000.%s", d31);
    /* 8 KB of leading zeros: a valid value once, and 8 KB in every table */
    char z[8001];
    memset(z, '0', 8000);
    z[8000] = '\0';
    snprintf(zeros_8k, sizeof zeros_8k, "IAMAT kiwi +%s1.0+1.0 1", z);
    snprintf(frac_8k, sizeof frac_8k, "IAMAT kiwi +1.%s1+1.0 1", z);
}

static void test_table(void) {
    const row rows[] = {
        /* valid IAMAT */
        {A, 0, PROTO_IAMAT},
        {"IAMAT kiwi -90.0+180.0 0", 0, PROTO_IAMAT},
        {"IAMAT kiwi +90.000-180.000 0.5", 0, PROTO_IAMAT},
        {"IAMAT kiwi +00.0+000.0 1", 0, PROTO_IAMAT},
        {"IAMAT kiwi -0.0-0.0 1", 0, PROTO_IAMAT},
        {"IAMAT kiwi +89.999999999999-179.99999999999 1", 0, PROTO_IAMAT},
        {"IAMAT kiwi +34.068930-118.445127 999999999999999999", 0, PROTO_IAMAT},
        {"IAMAT kiwi +34.068930-118.445127 999999999999999999.999999999", 0, PROTO_IAMAT},
        {"IAMAT kiwi +34.068930-118.445127 1.1234567891234", 0, PROTO_IAMAT},
        {"IAMAT kiwi +34.068930-118.445127 0000000001.5", 0, PROTO_IAMAT},
        {"IAMAT h\xc3\xa9llo +1.0+1.0 1", 0, PROTO_IAMAT},
        {"IAMAT \xf0\x9f\xa5\x9d\xf0\x9f\x8d\x8b +1.0+1.0 1", 0, PROTO_IAMAT},
        {client_256, 0, PROTO_IAMAT},
        {emoji_ok, 0, PROTO_IAMAT},
        {"IAMAT a\0b +1.0+1.0 1", 20, PROTO_IAMAT},
        {"IAMAT ? +1.0+1.0 1", 0, PROTO_IAMAT},
        /* white space forms */
        {"  IAMAT kiwi +1.0+1.0 1  ", 0, PROTO_IAMAT},
        {"IAMAT\tkiwi\t+1.0+1.0\t1", 0, PROTO_IAMAT},
        {"IAMAT \t \v\f kiwi    +1.0+1.0 \t 1\r", 0, PROTO_IAMAT},
        {"IAMAT kiwi\r+1.0+1.0\r1", 0, PROTO_IAMAT},
        {"\vIAMAT kiwi +1.0+1.0 1\f", 0, PROTO_IAMAT},
        /* invalid locations */
        {"IAMAT kiwi +34-118 1", 0, PROTO_INVALID},
        {"IAMAT kiwi 34.06-118.44 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +34.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +34.-118. 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +.5-118.4 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +90.0000001+0.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +91.0+0.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +0.0+180.1 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +0.0-180.0000000001 1", 0, PROTO_INVALID},
        {"IAMAT kiwi ++1.0-2.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0-2.0x 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +1e1-2.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0-2.0+3.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +1,0-2,0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +\xd9\xa1.0-2.0 1", 0, PROTO_INVALID},   /* Arabic-Indic digit */
        {huge_coord, 0, PROTO_INVALID},
        /* length limits (docs/PROTOCOL.md): 3 digits before a coordinate's
         * point, 30 after; 18 before a time's point, 30 after */
        {"IAMAT kiwi +090.0-180.0 1", 0, PROTO_IAMAT},
        {"IAMAT kiwi +000.5+000.5 1", 0, PROTO_IAMAT},
        {"IAMAT kiwi +0090.0+1.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +0001.0+1.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0-0180.0 1", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+0000.5 1", 0, PROTO_INVALID},
        {lat_frac30, 0, PROTO_IAMAT},
        {lat_frac31, 0, PROTO_INVALID},
        {lng_frac30, 0, PROTO_IAMAT},
        {lng_frac31, 0, PROTO_INVALID},
        {time_frac30, 0, PROTO_IAMAT},
        {time_frac31, 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 000000000000000001.5", 0, PROTO_IAMAT},
        {"IAMAT kiwi +1.0+1.0 0000000000000000001.5", 0, PROTO_INVALID},
        {zeros_8k, 0, PROTO_INVALID},
        {frac_8k, 0, PROTO_INVALID},
        /* invalid times */
        {"IAMAT kiwi +1.0+1.0 1234567890123456789", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 -1", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 +1", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 1.", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 .5", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 1e9", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 nan", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 inf", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 0x10", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 1.2.3", 0, PROTO_INVALID},
        {huge_time, 0, PROTO_INVALID},
        /* field counts, ids */
        {"IAMAT kiwi +1.0+1.0", 0, PROTO_INVALID},
        {"IAMAT kiwi +1.0+1.0 1 extra", 0, PROTO_INVALID},
        {"IAMAT", 0, PROTO_INVALID},
        {"IAMAT a b c d e f g h i j", 0, PROTO_INVALID},
        {client_257, 0, PROTO_INVALID},
        {emoji_long, 0, PROTO_INVALID},
        /* WHATSAT */
        {"WHATSAT kiwi 10 5", 0, PROTO_WHATSAT},
        {"WHATSAT kiwi 0.001 1", 0, PROTO_WHATSAT},
        {"WHATSAT kiwi 50 20", 0, PROTO_WHATSAT},
        {"WHATSAT kiwi 50.000 20", 0, PROTO_WHATSAT},
        {"WHATSAT kiwi 05 05", 0, PROTO_WHATSAT},   /* leading zeros: the value counts */
        {long_id, 0, PROTO_WHATSAT},
        {"\tWHATSAT  kiwi\t10\t5\r", 0, PROTO_WHATSAT},
        {"WHATSAT kiwi 0 5", 0, PROTO_INVALID},
        {"WHATSAT kiwi 0.0 5", 0, PROTO_INVALID},
        {"WHATSAT kiwi 50.0001 5", 0, PROTO_INVALID},
        {"WHATSAT kiwi 51 5", 0, PROTO_INVALID},
        {"WHATSAT kiwi -1 5", 0, PROTO_INVALID},
        {"WHATSAT kiwi 1e1 5", 0, PROTO_INVALID},
        {"WHATSAT kiwi .5 5", 0, PROTO_INVALID},
        {"WHATSAT kiwi 5. 5", 0, PROTO_INVALID},
        {"WHATSAT kiwi 10 0", 0, PROTO_INVALID},
        {"WHATSAT kiwi 10 21", 0, PROTO_INVALID},
        {"WHATSAT kiwi 10 -1", 0, PROTO_INVALID},
        {"WHATSAT kiwi 10 1.0", 0, PROTO_INVALID},
        {"WHATSAT kiwi 10 99999999999999999999999", 0, PROTO_INVALID},
        {"WHATSAT kiwi 10", 0, PROTO_INVALID},
        {"WHATSAT kiwi 10 5 5", 0, PROTO_INVALID},
        /* not ours at all */
        {"", 0, PROTO_EMPTY},
        {"   \t\r\v\f", 0, PROTO_EMPTY},
        {"iamat kiwi +1.0+1.0 1", 0, PROTO_OTHER},
        {"Whatsat kiwi 10 5", 0, PROTO_OTHER},
        {"AT Bailey +0.1 kiwi +1.0+1.0 1", 0, PROTO_OTHER},
        {"HELLO", 0, PROTO_OTHER},
        {"IAMATkiwi +1.0+1.0 1", 0, PROTO_OTHER},
        {"\x01\x02\x7f", 0, PROTO_OTHER},
    };
    size_t n = sizeof rows / sizeof rows[0];
    CHECK(n >= 60, "the table has %zu rows", n);
    for (size_t i = 0; i < n; i++) {
        proto_iamat ia;
        proto_whatsat ws;
        const char *why = NULL;
        size_t len = rows[i].len ? rows[i].len : strlen(rows[i].line);
        proto_kind got = proto_parse(rows[i].line, len, &ia, &ws, &why);
        CHECK(got == rows[i].want, "row %zu '%.60s': got %d want %d", i, rows[i].line,
              got, rows[i].want);
        if (got == PROTO_INVALID) CHECK(why != NULL, "row %zu: a reason", i);
    }
}

/* The fields point at the caller's bytes: echoes are verbatim. */
static void test_fields(void) {
    proto_iamat ia;
    proto_whatsat ws;
    const char *line = "IAMAT  kiwi.cs.ucla.edu\t+34.068930-118.445127 1621464827.959498503\r";
    CHECK(proto_parse(line, strlen(line), &ia, &ws, NULL) == PROTO_IAMAT, "parse");
    CHECK(ia.client.p == line + 7 && ia.client.len == 16, "client slice");
    CHECK(ia.location.len == 21 && !memcmp(ia.location.p, "+34.068930-118.445127", 21), "location");
    CHECK(ia.time.len == 20 && !memcmp(ia.time.p, "1621464827.959498503", 20), "time");
    CHECK(ia.t.sec == 1621464827 && ia.t.nsec == 959498503, "time %lld.%d",
          (long long)ia.t.sec, ia.t.nsec);
    double lat = 0, lng = 0;
    CHECK(proto_parse_location(ia.location.p, ia.location.len, &lat, &lng) == 0, "degrees");
    CHECK(lat > 34.06892999 && lat < 34.06893001, "lat %.9f", lat);
    CHECK(lng > -118.44512701 && lng < -118.44512699, "lng %.9f", lng);

    static const struct { const char *s; int64_t sec; int32_t nsec; } times[] = {
        {"0", 0, 0}, {"0.5", 0, 500000000}, {"1.1234567891234", 1, 123456789},
        {"1.000000001", 1, 1}, {"1.0000000009", 1, 0}, {"00012", 12, 0},
        {"999999999999999999.999999999", 999999999999999999LL, 999999999},
    };
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        proto_time t = {-1, -1};
        CHECK(proto_parse_time(times[i].s, strlen(times[i].s), &t) == 0 &&
              t.sec == times[i].sec && t.nsec == times[i].nsec,
              "time '%s' -> %lld.%09d", times[i].s, (long long)t.sec, t.nsec);
    }
    /* found by fuzzing: a tiny positive radius once rounded to 0 */
    double km = -1;
    const char *tiny = "000000000.0000000000000000000000000000000087";
    CHECK(proto_parse_radius(tiny, strlen(tiny), &km) == 0 && km > 0 && km < 1e-30,
          "tiny radius %g", km);
    char tinier[700] = "0.";     /* 1e-600: below any double, still > 0 */
    memset(tinier + 2, '0', 599);
    strcpy(tinier + 601, "1");
    CHECK(proto_parse_radius(tinier, strlen(tinier), &km) == 0 && km > 0, "tinier %g", km);
    lat = lng = 0;
    const char *tiny_lat = "+0.000000000000000000000000000001-0.5";   /* 30 digits */
    CHECK(proto_parse_location(tiny_lat, strlen(tiny_lat), &lat, &lng) == 0 && lat > 0 &&
          lat < 1e-29, "tiny latitude %g", lat);
    line = "WHATSAT kiwi 12.5 7";
    CHECK(proto_parse(line, strlen(line), &ia, &ws, NULL) == PROTO_WHATSAT &&
          ws.radius_km == 12.5 && ws.bound == 7 && ws.client.len == 4, "whatsat fields");

    /* an AT line from a peer or a snapshot obeys the same field limits */
    proto_at at;
    const char *why = NULL;
    char at_line[200];
    const char *d30 = "123456789012345678901234567890";
    snprintf(at_line, sizeof at_line, "AT Bona +0.000000001 kiwi +1.%s-1.%s 1.%s", d30, d30, d30);
    CHECK(proto_parse_at(at_line, strlen(at_line), &at, &why) == 0, "AT with 30 digits: %s", why);
    snprintf(at_line, sizeof at_line, "AT Bona +0.000000001 kiwi +1.%s1-1.0 1", d30);
    CHECK(proto_parse_at(at_line, strlen(at_line), &at, &why) < 0, "AT with 31 digits");
    snprintf(at_line, sizeof at_line, "AT Bona +0.000000001 kiwi +0090.0+1.0 1");
    CHECK(proto_parse_at(at_line, strlen(at_line), &at, &why) < 0, "AT with 4 digits");
    snprintf(at_line, sizeof at_line, "AT Bona +0.000000001 kiwi +1.0+1.0 1.%s1", d30);
    CHECK(proto_parse_at(at_line, strlen(at_line), &at, &why) < 0, "AT with a 31-digit time");

    proto_str f[3];
    CHECK(proto_split("a b c d", 7, f, 3) == 4, "more fields than max");
    CHECK(proto_split(" a  b ", 6, f, 3) == 2 && f[1].p[0] == 'b' && f[1].len == 1, "split");
}

static proto_str S(const char *s) { return (proto_str){s, strlen(s)}; }

static void test_newer_order(void) {
    proto_time t100 = {100, 0}, t100n = {100, 1}, t99 = {99, 999999999};
    CHECK(proto_update_cmp(t100n, S("+1.0+1.0"), S("A"), t100, S("+9.0+9.0"), S("Z")) > 0,
          "one nanosecond later wins over everything else");
    CHECK(proto_update_cmp(t99, S("+9.0+9.0"), S("Z"), t100, S("+1.0+1.0"), S("A")) < 0,
          "older loses");
    CHECK(proto_update_cmp(t100, S("+2.0+1.0"), S("A"), t100, S("+1.0+1.0"), S("Z")) > 0,
          "equal time: larger location bytes win");
    CHECK(proto_update_cmp(t100, S("-1.0+1.0"), S("Z"), t100, S("+1.0+1.0"), S("A")) > 0,
          "'-' (0x2d) is larger than '+' (0x2b)");
    CHECK(proto_update_cmp(t100, S("+1.0+1.00"), S("A"), t100, S("+1.0+1.0"), S("A")) > 0,
          "a prefix is smaller");
    CHECK(proto_update_cmp(t100, S("+1.0+1.0"), S("Bona"), t100, S("+1.0+1.0"), S("Bailey")) > 0,
          "then the larger origin");
    CHECK(proto_update_cmp(t100, S("+1.0+1.0"), S("Bona"), t100, S("+1.0+1.0"), S("Bona")) == 0,
          "identical");
    CHECK(proto_bytes_cmp("\xff", 1, "a", 1) > 0, "bytes compare unsigned");
    proto_time a, b;
    proto_parse_time("5.1234567891", 12, &a);
    proto_parse_time("5.1234567899", 12, &b);
    CHECK(proto_time_cmp(a, b) == 0, "digits past the ninth are ignored");
    CHECK(proto_time_cmp((proto_time){1, 0}, (proto_time){0, 999999999}) > 0, "seconds first");
}

static void check_diff(proto_time now, proto_time t, const char *want) {
    char out[PROTO_DIFF_MAX];
    size_t n = proto_format_diff(out, now, t);
    CHECK(n == strlen(want) && strcmp(out, want) == 0, "diff got '%s' want '%s'", out, want);
}

static void test_diff(void) {
    check_diff((proto_time){100, 500}, (proto_time){99, 400}, "+1.000000100");
    check_diff((proto_time){5, 0}, (proto_time){5, 1}, "-0.000000001");
    check_diff((proto_time){5, 0}, (proto_time){7, 200000000}, "-2.200000000");
    check_diff((proto_time){5, 7}, (proto_time){5, 7}, "+0.000000000");
    check_diff((proto_time){1700000000, 263873386}, (proto_time){1700000000, 0}, "+0.263873386");
    check_diff((proto_time){1700000000, 0}, (proto_time){1699999999, 999999999}, "+0.000000001");
    check_diff((proto_time){1700000000, 0}, (proto_time){999999999999999999LL, 999999999},
               "-999999998299999999.999999999");
    check_diff((proto_time){1700000000, 5}, (proto_time){0, 0}, "+1700000000.000000005");
    check_diff((proto_time){0, 0}, (proto_time){999999999999999999LL, 999999999},
               "-999999999999999999.999999999");      /* the longest */
    check_diff((proto_time){999999999999999999LL, 0}, (proto_time){0, 1},
               "+999999999999999998.999999999");
    check_diff((proto_time){10, 0}, (proto_time){0, 0}, "+10.000000000");
}

int main(void) {
    build_long_lines();
    test_table();
    test_fields();
    test_newer_order();
    test_diff();
    return check_report("protocol");
}
