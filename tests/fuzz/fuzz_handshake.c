/* fuzz_handshake.c -- libFuzzer harness for the TLS links' PSK identity.
 *
 * The acceptor parses the identity a dialer offers before it knows who the
 * dialer is.  Whatever the parser accepts must point inside the input, name
 * two non-empty names and a key id of HS_KEY_ID_LEN bytes or none, and be
 * rebuilt byte for byte from them; the key of an accepted identity is
 * derived as the server would. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "handshake.h"

static const char secret[] = "fuzz-secret";

static int inside(proto_str f, const uint8_t *p, size_t len) {
    return (const uint8_t *)f.p >= p && (const uint8_t *)f.p + f.len <= p + len;
}

static char *copy_str(proto_str f) {
    char *s = malloc(f.len + 1);
    memcpy(s, f.p, f.len);
    s[f.len] = '\0';
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *id = malloc(size ? size : 1);   /* exact size: ASan sees overreads */
    memcpy(id, data, size);
    proto_str a, b, k;
    if (hs_parse_psk_identity(id, size, &a, &b, &k) == 0) {
        if (!inside(a, id, size) || !inside(b, id, size) || !a.len || !b.len) abort();
        if (k.len && (k.len != HS_KEY_ID_LEN || !inside(k, id, size))) abort();
        char *da = copy_str(a), *db = copy_str(b), *dk = copy_str(k), again[600];
        int n = hs_psk_identity(da, db, k.len ? dk : NULL, again, sizeof again);
        if (n >= 0 && ((size_t)n != size || memcmp(again, id, size) != 0)) abort();
        if (n < 0 && size < sizeof again) abort();
        unsigned char key[HS_PSK_LEN];
        hs_psk_key(secret, sizeof secret - 1, da, db, key);
        free(da);
        free(db);
        free(dk);
    }
    free(id);
    return 0;
}
