/* protocol.c -- parsing and comparing the client protocol's fields.
 *
 * The grammar of docs/PROTOCOL.md's lines lives here -- IAMAT, WHATSAT and
 * a link's AT line, each field's limits, the order of two updates, the
 * diff -- so a unit test can check it without a socket.  The rules that
 * need a connection or the server's state stay with them: the line length
 * and CRLF (server.c), a time too far ahead of the receive time and an
 * unknown client (commands.c), a link's control lines (forward.c).
 * Nothing here allocates.
 */
#include "protocol.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int proto_is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

int proto_split(const char *line, size_t len, proto_str *fields, int max) {
    int n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && proto_is_space((unsigned char)line[i])) i++;
        if (i == len) break;
        size_t start = i;
        while (i < len && !proto_is_space((unsigned char)line[i])) i++;
        if (n == max) return max + 1;
        fields[n].p = line + start;
        fields[n].len = i - start;
        n++;
    }
    return n;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Scan digits at s[*i..len); returns how many were read. */
static size_t scan_digits(const char *s, size_t len, size_t *i) {
    size_t start = *i;
    while (*i < len && is_digit(s[*i])) (*i)++;
    return *i - start;
}

/* Value of a run of digits, saturating at 'cap' (so huge runs stay cheap). */
static int64_t digits_value(const char *s, size_t n, int64_t cap) {
    int64_t v = 0;
    for (size_t k = 0; k < n; k++) {
        v = v * 10 + (s[k] - '0');
        if (v > cap) return cap + 1;
    }
    return v;
}

static int all_zero(const char *s, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (s[k] != '0') return 0;
    return 1;
}

/* A decimal "[sign]int.frac" as a double, from its already checked parts.
 * Leading zeros are dropped and at most 30 significant fraction digits are
 * kept (more cannot change a double); a value of zeros then digits, such as
 * 0.000...087 with 25 zeros, keeps its digits through an exponent, so a
 * positive value never rounds to 0 on the way. */
static double decimal_to_double(char sign, const char *ip, size_t ilen,
                                const char *fp, size_t flen) {
    char tmp[96];
    size_t o = 0, skip = 0;
    while (ilen > 1 && *ip == '0') { ip++; ilen--; }
    if (ilen > 20) ilen = 20;    /* callers range-check before this */
    if (ilen == 1 && *ip == '0')
        while (skip < flen && fp[skip] == '0') skip++;
    if (skip == flen) skip = 0;  /* all zeros: plain 0.0 */
    fp += skip;
    flen -= skip;
    if (flen > 30) flen = 30;
    if (sign == '-') tmp[o++] = '-';
    memcpy(tmp + o, ip, ilen); o += ilen;
    if (flen) { tmp[o++] = '.'; memcpy(tmp + o, fp, flen); o += flen; }
    if (skip) o += (size_t)snprintf(tmp + o, sizeof tmp - o, "e-%zu", skip);
    tmp[o] = '\0';
    return strtod(tmp, NULL);
}

/* One coordinate "sign digits . digits" starting at s[*i]: 1 to 3 digits
 * before the point, 1 to 30 after; checks |v| <= limit exactly.  Returns 0
 * and advances *i on success. */
static int parse_coord(const char *s, size_t len, size_t *i, int limit,
                       double *out) {
    if (*i >= len || (s[*i] != '+' && s[*i] != '-')) return -1;
    char sign = s[(*i)++];
    const char *ip = s + *i;
    size_t ilen = scan_digits(s, len, i);
    if (ilen == 0 || ilen > PROTO_MAX_COORD_INT_DIGITS) return -1;
    if (*i >= len || s[*i] != '.') return -1;
    (*i)++;
    const char *fp = s + *i;
    size_t flen = scan_digits(s, len, i);
    if (flen == 0 || flen > PROTO_MAX_FRAC_DIGITS) return -1;
    int64_t iv = digits_value(ip, ilen, limit);
    if (iv > limit || (iv == limit && !all_zero(fp, flen))) return -1;
    if (out) *out = decimal_to_double(sign, ip, ilen, fp, flen);
    return 0;
}

int proto_parse_location(const char *s, size_t len, double *lat, double *lng) {
    size_t i = 0;
    double a, b;
    if (parse_coord(s, len, &i, 90, lat ? &a : NULL) < 0) return -1;
    if (parse_coord(s, len, &i, 180, lng ? &b : NULL) < 0) return -1;
    if (i != len) return -1;
    if (lat) *lat = a;
    if (lng) *lng = b;
    return 0;
}

int proto_parse_time(const char *s, size_t len, proto_time *t) {
    size_t i = 0;
    size_t ilen = scan_digits(s, len, &i);
    if (ilen == 0 || ilen > PROTO_MAX_TIME_INT_DIGITS) return -1;
    int32_t nsec = 0;
    if (i < len) {
        if (s[i] != '.') return -1;
        i++;
        const char *fp = s + i;
        size_t flen = scan_digits(s, len, &i);
        if (flen == 0 || flen > PROTO_MAX_FRAC_DIGITS || i != len) return -1;
        for (size_t k = 0; k < 9; k++)
            nsec = nsec * 10 + (k < flen ? fp[k] - '0' : 0);
    }
    t->sec = digits_value(s, ilen, 999999999999999999LL);   /* <= 18 digits */
    t->nsec = nsec;
    return 0;
}

int proto_parse_radius(const char *s, size_t len, double *km) {
    size_t i = 0;
    size_t ilen = scan_digits(s, len, &i);
    const char *fp = s + len;
    size_t flen = 0;
    if (ilen == 0) return -1;
    if (i < len) {
        if (s[i] != '.') return -1;
        i++;
        fp = s + i;
        flen = scan_digits(s, len, &i);
        if (flen == 0 || i != len) return -1;
    }
    int64_t iv = digits_value(s, ilen, PROTO_MAX_RADIUS_KM);
    if (iv > PROTO_MAX_RADIUS_KM) return -1;
    if (iv == PROTO_MAX_RADIUS_KM && !all_zero(fp, flen)) return -1;
    if (iv == 0 && all_zero(fp, flen)) return -1;
    *km = decimal_to_double('+', s, ilen, fp, flen);
    if (*km == 0) *km = DBL_MIN;   /* valid (> 0) but below what a double holds */
    return 0;
}

int proto_parse_bound(const char *s, size_t len, int *bound) {
    size_t i = 0;
    size_t n = scan_digits(s, len, &i);
    if (n == 0 || i != len) return -1;
    int64_t v = digits_value(s, n, PROTO_MAX_BOUND);
    if (v < 1 || v > PROTO_MAX_BOUND) return -1;
    *bound = (int)v;
    return 0;
}

static int str_is(proto_str f, const char *word) {
    size_t n = strlen(word);
    return f.len == n && memcmp(f.p, word, n) == 0;
}

proto_kind proto_parse(const char *line, size_t len, proto_iamat *ia,
                       proto_whatsat *ws, const char **why) {
    proto_str f[PROTO_MAX_FIELDS];
    const char *dummy;
    if (!why) why = &dummy;
    *why = NULL;
    int n = proto_split(line, len, f, PROTO_MAX_FIELDS);
    if (n == 0) return PROTO_EMPTY;
    int is_iamat = str_is(f[0], "IAMAT");
    if (!is_iamat && !str_is(f[0], "WHATSAT")) return PROTO_OTHER;
    if (n != 4) { *why = "wrong number of fields"; return PROTO_INVALID; }
    if (f[1].len > PROTO_MAX_CLIENT_LEN) { *why = "client id too long"; return PROTO_INVALID; }
    if (is_iamat) {
        ia->client = f[1];
        ia->location = f[2];
        ia->time = f[3];
        if (proto_parse_location(f[2].p, f[2].len, NULL, NULL) < 0) {
            *why = "bad location";
            return PROTO_INVALID;
        }
        if (proto_parse_time(f[3].p, f[3].len, &ia->t) < 0) {
            *why = "bad time";
            return PROTO_INVALID;
        }
        return PROTO_IAMAT;
    }
    ws->client = f[1];
    if (proto_parse_radius(f[2].p, f[2].len, &ws->radius_km) < 0) {
        *why = "bad radius";
        return PROTO_INVALID;
    }
    if (proto_parse_bound(f[3].p, f[3].len, &ws->bound) < 0) {
        *why = "bad bound";
        return PROTO_INVALID;
    }
    return PROTO_WHATSAT;
}

static int valid_diff(proto_str d) {
    size_t i = 1;
    if (d.len < 12 || (d.p[0] != '+' && d.p[0] != '-')) return 0;
    size_t ilen = scan_digits(d.p, d.len, &i);
    if (ilen == 0 || ilen > 19 || i >= d.len || d.p[i] != '.') return 0;
    i++;
    return scan_digits(d.p, d.len, &i) == 9 && i == d.len;
}

int proto_parse_at(const char *line, size_t len, proto_at *at, const char **why) {
    proto_str f[PROTO_MAX_FIELDS];
    int n = proto_split(line, len, f, PROTO_MAX_FIELDS);
    if (n != 6 || !str_is(f[0], "AT")) { *why = "not an AT line"; return -1; }
    if (f[1].len == 0 || f[1].len > PROTO_MAX_ORIGIN_LEN) { *why = "bad origin"; return -1; }
    if (!valid_diff(f[2])) { *why = "bad diff"; return -1; }
    if (f[3].len > PROTO_MAX_CLIENT_LEN) { *why = "client id too long"; return -1; }
    if (proto_parse_location(f[4].p, f[4].len, NULL, NULL) < 0) {
        *why = "bad location";
        return -1;
    }
    if (proto_parse_time(f[5].p, f[5].len, &at->u.t) < 0) { *why = "bad time"; return -1; }
    at->origin = f[1];
    at->diff = f[2];
    at->u.client = f[3];
    at->u.location = f[4];
    at->u.time = f[5];
    return 0;
}

int proto_time_cmp(proto_time a, proto_time b) {
    if (a.sec != b.sec) return a.sec < b.sec ? -1 : 1;
    if (a.nsec != b.nsec) return a.nsec < b.nsec ? -1 : 1;
    return 0;
}

int proto_bytes_cmp(const char *a, size_t alen, const char *b, size_t blen) {
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c) return c;
    return alen < blen ? -1 : alen > blen;
}

int proto_update_cmp(proto_time ta, proto_str loca, proto_str origa,
                     proto_time tb, proto_str locb, proto_str origb) {
    int c = proto_time_cmp(ta, tb);
    if (c) return c;
    c = proto_bytes_cmp(loca.p, loca.len, locb.p, locb.len);
    if (c) return c;
    return proto_bytes_cmp(origa.p, origa.len, origb.p, origb.len);
}

/* v in decimal at o, at least 'width' digits (zeros in front); returns
 * how many.  By hand: it runs for every IAMAT, and snprintf is the slow
 * part. */
static size_t put_digits(char *o, uint64_t v, int width) {
    char tmp[20];
    int n = 0;
    do tmp[n++] = (char)('0' + v % 10); while ((v /= 10) || n < width);
    for (int k = 0; k < n; k++) o[k] = tmp[n - 1 - k];
    return (size_t)n;
}

size_t proto_format_diff(char *out, proto_time now, proto_time t) {
    int64_t s = now.sec - t.sec;
    int64_t ns = (int64_t)now.nsec - t.nsec;
    if (s > 0 && ns < 0) { s--; ns += 1000000000; }
    else if (s < 0 && ns > 0) { s++; ns -= 1000000000; }
    char sign = (s < 0 || ns < 0) ? '-' : '+';
    if (s < 0) s = -s;
    if (ns < 0) ns = -ns;
    char *o = out;
    *o++ = sign;
    o += put_digits(o, (uint64_t)s, 1);       /* at most 19 digits: |s| < 2^63 */
    *o++ = '.';
    o += put_digits(o, (uint64_t)ns, 9);
    *o = '\0';
    return (size_t)(o - out);
}
