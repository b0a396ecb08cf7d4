/* protocol.h -- the client protocol's line grammar, shared by every program.
 *
 * A line is split into fields separated by runs of white space (space, tab,
 * CR, FF, VT).  The parsers below never allocate and never copy: fields point
 * into the caller's line, so the server can echo them byte for byte.
 *
 *   IAMAT <client> <location> <time>
 *   WHATSAT <client> <radius_km> <bound>
 *
 * Times are kept as exact integers (seconds, nanoseconds); fraction digits
 * past the ninth are kept in the text but ignored in comparisons.
 *
 * Every field a server stores has a length limit (docs/PROTOCOL.md, IAMAT),
 * so one update costs a bounded number of bytes: a coordinate has 1 to 3
 * digits before its point and 1 to 30 after it, a time 1 to 18 before and at
 * most 30 after, a client id 1 to 256 bytes.  Longer is a bad field.
 */
#ifndef HERD_PROTOCOL_H
#define HERD_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_MAX_FIELDS 8          /* more fields than this is always invalid */
#define PROTO_MAX_CLIENT_LEN 256    /* bytes in a client id */
#define PROTO_MAX_TIME_INT_DIGITS 18
#define PROTO_MAX_COORD_INT_DIGITS 3  /* "+090.5" passes, "+0090.5" does not */
#define PROTO_MAX_FRAC_DIGITS 30      /* after the point, coordinates and times */
#define PROTO_MAX_RADIUS_KM 50
#define PROTO_MAX_BOUND 20

typedef struct {
    const char *p;
    size_t len;
} proto_str;

/* An exact POSIX time: sec >= 0, 0 <= nsec < 1e9. */
typedef struct {
    int64_t sec;
    int32_t nsec;
} proto_time;

/* The location is validated, not converted: only a WHATSAT needs degrees,
 * and it takes them from the stored text (proto_parse_location). */
typedef struct {
    proto_str client, location, time;
    proto_time t;                    /* exact, for comparisons */
} proto_iamat;

typedef struct {
    proto_str client;
    double radius_km;
    int bound;
} proto_whatsat;

typedef enum {
    PROTO_EMPTY,      /* no field at all: no reply */
    PROTO_IAMAT,
    PROTO_WHATSAT,
    PROTO_OTHER,      /* first field is something else: caller decides */
    PROTO_INVALID,    /* IAMAT/WHATSAT with bad fields */
} proto_kind;

/* Split 'line' (no LF; a trailing CR is white space) into at most 'max'
 * fields.  Returns the number of fields found, or max+1 when there are more. */
int proto_split(const char *line, size_t len, proto_str *fields, int max);

/* True when the byte is field-separating white space. */
int proto_is_space(unsigned char c);

/* Classify and parse one line.  On PROTO_IAMAT fills *ia, on PROTO_WHATSAT
 * fills *ws; 'why' (may be NULL) gets a static reason on PROTO_INVALID. */
proto_kind proto_parse(const char *line, size_t len, proto_iamat *ia,
                       proto_whatsat *ws, const char **why);

/* Field validators; each returns 0 when valid, -1 otherwise.  The location's
 * lat and lng may be NULL to only validate (no strtod). */
int proto_parse_location(const char *s, size_t len, double *lat, double *lng);
int proto_parse_time(const char *s, size_t len, proto_time *t);
int proto_parse_radius(const char *s, size_t len, double *km);
int proto_parse_bound(const char *s, size_t len, int *bound);

/* A client's time may be at most this far ahead of the receiving server's
 * clock (one day); a later one is refused (server/commands.c). */
#define PROTO_MAX_AHEAD_S 86400

/* Compare two times exactly: <0, 0, >0. */
int proto_time_cmp(proto_time a, proto_time b);

/* Compare two byte strings as unsigned bytes, a shorter prefix being smaller. */
int proto_bytes_cmp(const char *a, size_t alen, const char *b, size_t blen);

/* The herd's order on updates, but for its last step: time, then location
 * bytes, then origin server name.  Returns >0 when (ta, loca, origa) is
 * newer than the other.  Two updates equal here are ordered by their whole
 * AT lines' bytes (server/table.c), so no two different lines are equal. */
int proto_update_cmp(proto_time ta, proto_str loca, proto_str origa,
                     proto_time tb, proto_str locb, proto_str origb);

/* An update as it travels between servers and sits in a snapshot:
 *   AT <origin> <diff> <client> <location> <time>
 * exactly the line the receiving server first produced. */
typedef struct {
    proto_str origin, diff;
    proto_iamat u;                   /* client, location, time, parsed */
} proto_at;

#define PROTO_MAX_ORIGIN_LEN 63
/* The longest AT line these limits allow ("AT " origin, a 30-byte diff,
 * client, location, time: 475 bytes), rounded up. */
#define PROTO_AT_MAX 512

/* Parse an AT line.  Returns 0, or -1 with a static reason in *why. */
int proto_parse_at(const char *line, size_t len, proto_at *at, const char **why);

/* Write now - t as a sign and 9 decimals ("+0.263873386"), and a NUL, into
 * out, which must hold at least PROTO_DIFF_MAX bytes.  Returns the length
 * written (without the NUL). */
#define PROTO_DIFF_MAX 32
size_t proto_format_diff(char *out, proto_time now, proto_time t);

#endif
