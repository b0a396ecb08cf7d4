/* test_at_lines.c -- the AT lines servers send each other (docs/PROTOCOL.md,
 * the herd section) and read back from snapshots: what proto_parse_at()
 * accepts and refuses.  Found missing by make test-mutation: a peer's bad
 * diff or location would be stored and shown to every client. */
#include "check.h"
#include "protocol.h"

static int parse(const char *line, proto_at *at, const char **why) {
    *why = NULL;
    return proto_parse_at(line, strlen(line), at, why);
}

static void test_good_line(void) {
    proto_at at;
    const char *why;
    const char *line = "AT Bailey -0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 "
                       "1621464827.959498503";
    CHECK(parse(line, &at, &why) == 0, "a valid AT line: %s", why ? why : "");
    CHECK(at.origin.len == 6 && !memcmp(at.origin.p, "Bailey", 6), "origin");
    CHECK(at.diff.len == 12 && !memcmp(at.diff.p, "-0.263873386", 12), "diff");
    CHECK(at.u.client.len == 16 && !memcmp(at.u.client.p, "kiwi.cs.ucla.edu", 16), "client");
    CHECK(at.u.location.len == 21, "location");
    CHECK(at.u.t.sec == 1621464827 && at.u.t.nsec == 959498503, "time");
    CHECK(parse("AT B +1234567890123456789.000000000 c +1.0+1.0 1", &at, &why) == 0,
          "a diff of 19 integer digits");
}

static void test_refused(void) {
    static const struct { const char *line, *why; } bad[] = {
        {"AT Bailey 0.263873386 kiwi +1.0+1.0 1", "bad diff"},        /* no sign */
        {"AT Bailey *0.263873386 kiwi +1.0+1.0 1", "bad diff"},
        {"AT Bailey +0.26387338 kiwi +1.0+1.0 1", "bad diff"},        /* 8 decimals */
        {"AT Bailey +0.2638733861 kiwi +1.0+1.0 1", "bad diff"},      /* 10 decimals */
        {"AT Bailey +0263873386 kiwi +1.0+1.0 1", "bad diff"},        /* no point */
        {"AT Bailey +.263873386 kiwi +1.0+1.0 1", "bad diff"},
        {"AT Bailey +12345678901234567890.000000000 kiwi +1.0+1.0 1", "bad diff"},
        {"AT Bailey +0.263873386x kiwi +1.0+1.0 1", "bad diff"},
        {"AT Bailey +0.263873386 kiwi +91.0+1.0 1", "bad location"},
        {"AT Bailey +0.263873386 kiwi +1.0+1.0x 1", "bad location"},
        {"AT Bailey +0.263873386 kiwi +1.0+1.0 -1", "bad time"},
        {"AT Bailey +0.263873386 kiwi +1.0+1.0", "not an AT line"},
        {"AT Bailey +0.263873386 kiwi +1.0+1.0 1 x", "not an AT line"},
        {"IAMAT Bailey +0.263873386 kiwi +1.0+1.0 1", "not an AT line"},
        {"AT 0123456789012345678901234567890123456789012345678901234567890123 "
         "+0.263873386 kiwi +1.0+1.0 1", "bad origin"},              /* 64 bytes */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        proto_at at;
        const char *why;
        CHECK(parse(bad[i].line, &at, &why) < 0, "accepted: '%s'", bad[i].line);
        CHECK(why && !strcmp(why, bad[i].why), "'%s': reason '%s', want '%s'", bad[i].line,
              why ? why : "(none)", bad[i].why);
    }
    char id[300] = "AT B +0.000000001 ";
    size_t n = strlen(id);
    memset(id + n, 'x', 257);
    strcpy(id + n + 257, " +1.0+1.0 1");
    proto_at at;
    const char *why;
    CHECK(parse(id, &at, &why) < 0 && why && !strcmp(why, "client id too long"),
          "a 257-byte client id");
    CHECK(parse("AT 012345678901234567890123456789012345678901234567890123456789012 "
                "+0.263873386 kiwi +1.0+1.0 1", &at, &why) == 0, "a 63-byte origin");
}

int main(void) {
    test_good_line();
    test_refused();
    return check_report("at_lines");
}
