/* handshake.c -- see handshake.h. */
#include "handshake.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void hex(const unsigned char *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int is_hex(proto_str f, size_t want) {
    if (f.len != want) return 0;
    for (size_t i = 0; i < want; i++)
        if (!((f.p[i] >= '0' && f.p[i] <= '9') || (f.p[i] >= 'a' && f.p[i] <= 'f'))) return 0;
    return 1;
}

static int field_is(proto_str f, const char *w) {
    return f.len == strlen(w) && memcmp(f.p, w, f.len) == 0;
}

/* "PEER KIND" followed by exactly n_rest fields. */
static int split(const char *line, size_t len, const char *kind, proto_str *f, int n_rest) {
    int n = proto_split(line, len, f, n_rest + 2);
    return n == n_rest + 2 && field_is(f[0], "PEER") && field_is(f[1], kind) ? 0 : -1;
}

int hs_parse_hello(const char *line, size_t len, hs_line *out) {
    proto_str f[5];
    if (split(line, len, "HELLO", f, 2) < 0 || !is_hex(f[3], HS_NONCE_LEN)) return -1;
    *out = (hs_line){.name = f[2], .nonce = f[3]};
    return 0;
}

int hs_parse_welcome(const char *line, size_t len, hs_line *out) {
    proto_str f[6];
    if (split(line, len, "WELCOME", f, 3) < 0 || !is_hex(f[3], HS_NONCE_LEN) ||
        !is_hex(f[4], HS_PROOF_LEN))
        return -1;
    *out = (hs_line){.name = f[2], .nonce = f[3], .proof = f[4]};
    return 0;
}

int hs_parse_proof(const char *line, size_t len, hs_line *out) {
    proto_str f[4];
    if (split(line, len, "PROOF", f, 1) < 0 || !is_hex(f[2], HS_PROOF_LEN)) return -1;
    *out = (hs_line){.proof = f[2]};
    return 0;
}

void hs_nonce(char out[HS_NONCE_LEN + 1]) {
    unsigned char r[HS_NONCE_LEN / 2];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timespec ts;     /* never expected; still unique per call */
        clock_gettime(CLOCK_REALTIME, &ts);
        memset(r, 0, sizeof r);
        memcpy(r, &ts, sizeof r < sizeof ts ? sizeof r : sizeof ts);
    }
    hex(r, sizeof r, out);
}

void hs_proof(const char *secret, size_t secret_len, const char *kind, const char *a,
              const char *b, const char *na, const char *nb, char out[HS_PROOF_LEN + 1]) {
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "herd-v1 %s %s %s %s %s", kind, a, b, na, nb);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, (size_t)n, mac,
         &maclen);
    hex(mac, HS_PROOF_LEN / 2, out);
}

int hs_proof_ok(const char *want, proto_str got) {
    return got.len == HS_PROOF_LEN && CRYPTO_memcmp(want, got.p, HS_PROOF_LEN) == 0;
}

int hs_psk_identity(const char *dialer, const char *acceptor, char *out, size_t outlen) {
    int n = snprintf(out, outlen, HS_PSK_PREFIX "%s %s", dialer, acceptor);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

static int name_ok(const unsigned char *p, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] <= ' ' || p[i] >= 0x7f) return 0;
    return 1;
}

int hs_parse_psk_identity(const unsigned char *id, size_t len, proto_str *dialer,
                          proto_str *acceptor) {
    size_t pre = sizeof HS_PSK_PREFIX - 1;
    if (len <= pre || memcmp(id, HS_PSK_PREFIX, pre) != 0) return -1;
    const unsigned char *a = id + pre, *end = id + len;
    const unsigned char *sp = memchr(a, ' ', (size_t)(end - a));
    if (!sp || !name_ok(a, (size_t)(sp - a)) || !name_ok(sp + 1, (size_t)(end - sp - 1)))
        return -1;
    *dialer = (proto_str){(const char *)a, (size_t)(sp - a)};
    *acceptor = (proto_str){(const char *)sp + 1, (size_t)(end - sp - 1)};
    return 0;
}

void hs_psk_key(const char *secret, size_t secret_len, const char *dialer,
                const char *acceptor, unsigned char out[HS_PSK_LEN]) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, HS_PSK_PREFIX "psk %s %s", dialer, acceptor);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1;
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, (size_t)n, out,
         &maclen);
}
