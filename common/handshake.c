/* handshake.c -- see handshake.h. */
#include "handshake.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

int hs_psk_identity(const char *dialer, const char *acceptor, const char *key_id, char *out,
                    size_t outlen) {
    int n = snprintf(out, outlen, HS_PSK_PREFIX "%s %s%s%s", dialer, acceptor,
                     key_id ? " " : "", key_id ? key_id : "");
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

static int name_ok(const unsigned char *p, size_t n) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (p[i] <= ' ' || p[i] >= 0x7f) return 0;
    return 1;
}

static int key_id_ok(const unsigned char *p, size_t n) {
    if (n != HS_KEY_ID_LEN) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f'))) return 0;
    return 1;
}

int hs_parse_psk_identity(const unsigned char *id, size_t len, proto_str *dialer,
                          proto_str *acceptor, proto_str *key_id) {
    size_t pre = sizeof HS_PSK_PREFIX - 1;
    if (len <= pre || memcmp(id, HS_PSK_PREFIX, pre) != 0) return -1;
    const unsigned char *a = id + pre, *end = id + len;
    const unsigned char *sp = memchr(a, ' ', (size_t)(end - a));
    if (!sp) return -1;
    const unsigned char *b = sp + 1;
    const unsigned char *sp2 = memchr(b, ' ', (size_t)(end - b));
    const unsigned char *b_end = sp2 ? sp2 : end;
    if (!name_ok(a, (size_t)(sp - a)) || !name_ok(b, (size_t)(b_end - b))) return -1;
    if (sp2 && !key_id_ok(sp2 + 1, (size_t)(end - sp2 - 1))) return -1;
    *dialer = (proto_str){(const char *)a, (size_t)(sp - a)};
    *acceptor = (proto_str){(const char *)b, (size_t)(b_end - b)};
    *key_id = sp2 ? (proto_str){(const char *)sp2 + 1, HS_KEY_ID_LEN} : (proto_str){"", 0};
    return 0;
}

/* out = HMAC-SHA256(secret, msg[0..n)). */
static void hmac_sha256(const char *secret, size_t secret_len, const char *msg, size_t n,
                        unsigned char out[HS_PSK_LEN]) {
    unsigned int maclen = 0;
    HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)msg, n, out, &maclen);
}

void hs_psk_key(const char *secret, size_t secret_len, const char *dialer,
                const char *acceptor, unsigned char out[HS_PSK_LEN]) {
    char msg[512];
    int n = snprintf(msg, sizeof msg, HS_PSK_PREFIX "psk %s %s", dialer, acceptor);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1;
    hmac_sha256(secret, secret_len, msg, (size_t)n, out);
}

void hs_key_id(const char *secret, size_t secret_len, char out[HS_KEY_ID_LEN + 1]) {
    static const char msg[] = HS_PSK_PREFIX "key id";
    unsigned char mac[HS_PSK_LEN];
    hmac_sha256(secret, secret_len, msg, sizeof msg - 1, mac);
    for (int i = 0; i < HS_KEY_ID_LEN / 2; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
    out[HS_KEY_ID_LEN] = '\0';
}
