/* test_handshake.c -- the TLS links' PSK identity and key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "handshake.h"

/* HMAC-SHA256("s3cret", "proxyherd-v1 psk Bailey Bona"), by Python's hmac. */
#define PSK_BAILEY_BONA "0f119fa7c841af3ed0cbc0a91e21c2fff92904adb632d04376e0705702ac5c05"

static void test_psk(void) {
    char id[64], hexkey[2 * HS_PSK_LEN + 1];
    unsigned char key[HS_PSK_LEN], other[HS_PSK_LEN];
    CHECK(hs_psk_identity("Bailey", "Bona", id, sizeof id) == 24, "identity length");
    CHECK_STR(id, "proxyherd-v1 Bailey Bona");
    CHECK(hs_psk_identity("Bailey", "Bona", id, 10) < 0, "too long for the buffer");
    hs_psk_key("s3cret", 6, "Bailey", "Bona", key);
    for (int i = 0; i < HS_PSK_LEN; i++) snprintf(hexkey + 2 * i, 3, "%02x", key[i]);
    CHECK_STR(hexkey, PSK_BAILEY_BONA);
    hs_psk_key("s3cret", 6, "Bona", "Bailey", other);
    CHECK(memcmp(key, other, HS_PSK_LEN) != 0, "the key is bound to the direction");
    hs_psk_key("s3creT", 6, "Bailey", "Bona", other);
    CHECK(memcmp(key, other, HS_PSK_LEN) != 0, "another secret, another key");

    proto_str a, b;
    const char *good = "proxyherd-v1 Bailey Bona";
    CHECK(hs_parse_psk_identity((const unsigned char *)good, strlen(good), &a, &b) == 0 &&
          a.len == 6 && !memcmp(a.p, "Bailey", 6) && b.len == 4 && !memcmp(b.p, "Bona", 4),
          "identity parsed");
    static const char *const bad[] = {
        "", "proxyherd-v1", "proxyherd-v1 ", "proxyherd-v1 Bailey", "proxyherd-v1 Bailey ",
        "proxyherd-v1  Bona", "proxyherd-v2 Bailey Bona", "proxyherd-v1 Bailey Bona x",
        "proxyherd-v1 Bai\x01ley Bona", "PROXYHERD-v1 Bailey Bona",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        size_t n = strlen(bad[i]);
        unsigned char *copy = malloc(n ? n : 1);   /* exact size, for ASan */
        memcpy(copy, bad[i], n);
        CHECK(hs_parse_psk_identity(copy, n, &a, &b) < 0, "identity refused: '%s'", bad[i]);
        free(copy);
    }
}

int main(void) {
    test_psk();
    return check_report("handshake");
}
