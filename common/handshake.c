/* handshake.c -- see handshake.h. */
#include "handshake.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

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
