/* test_handshake.c -- the TLS links' PSK identity, key and key id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "handshake.h"

/* HMAC-SHA256("s3cret", "proxyherd-v1 psk Bailey Bona"), by Python's hmac. */
#define PSK_BAILEY_BONA "0f119fa7c841af3ed0cbc0a91e21c2fff92904adb632d04376e0705702ac5c05"
/* The first 8 hex digits of HMAC-SHA256("s3cret", "proxyherd-v1 key id"). */
#define KEY_ID_S3CRET "5431833a"

/* hs_parse_psk_identity of a copy of exactly text's bytes (ASan sees
 * overreads), which the fields point into until the next call. */
static int parse(const char *text, proto_str *a, proto_str *b, proto_str *k) {
    static unsigned char *copy;
    size_t n = strlen(text);
    free(copy);
    copy = malloc(n ? n : 1);
    memcpy(copy, text, n);
    return hs_parse_psk_identity(copy, n, a, b, k);
}

static void test_psk(void) {
    char id[64], hexkey[2 * HS_PSK_LEN + 1];
    unsigned char key[HS_PSK_LEN], other[HS_PSK_LEN];
    CHECK(hs_psk_identity("Bailey", "Bona", NULL, id, sizeof id) == 24, "identity length");
    CHECK_STR(id, "proxyherd-v1 Bailey Bona");
    CHECK(hs_psk_identity("Bailey", "Bona", NULL, id, 10) < 0, "too long for the buffer");
    hs_psk_key("s3cret", 6, "Bailey", "Bona", key);
    for (int i = 0; i < HS_PSK_LEN; i++) snprintf(hexkey + 2 * i, 3, "%02x", key[i]);
    CHECK_STR(hexkey, PSK_BAILEY_BONA);
    hs_psk_key("s3cret", 6, "Bona", "Bailey", other);
    CHECK(memcmp(key, other, HS_PSK_LEN) != 0, "the key is bound to the direction");
    hs_psk_key("s3creT", 6, "Bailey", "Bona", other);
    CHECK(memcmp(key, other, HS_PSK_LEN) != 0, "another secret, another key");

    proto_str a, b, k;
    CHECK(parse("proxyherd-v1 Bailey Bona", &a, &b, &k) == 0 && a.len == 6 &&
          !memcmp(a.p, "Bailey", 6) && b.len == 4 && !memcmp(b.p, "Bona", 4) && k.len == 0,
          "identity parsed");
    static const char *const bad[] = {
        "", "proxyherd-v1", "proxyherd-v1 ", "proxyherd-v1 Bailey", "proxyherd-v1 Bailey ",
        "proxyherd-v1  Bona", "proxyherd-v2 Bailey Bona", "proxyherd-v1 Bailey Bona x",
        "proxyherd-v1 Bai\x01ley Bona", "PROXYHERD-v1 Bailey Bona",
        /* key ids: 8 lowercase hex digits, nothing after */
        "proxyherd-v1 Bailey Bona ", "proxyherd-v1 Bailey Bona 5431833",
        "proxyherd-v1 Bailey Bona 5431833a0", "proxyherd-v1 Bailey Bona 5431833A",
        "proxyherd-v1 Bailey Bona 5431833g", "proxyherd-v1 Bailey Bona 5431833a ",
        "proxyherd-v1 Bailey Bona  5431833a", "proxyherd-v1 Bailey Bona 5431833a x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(parse(bad[i], &a, &b, &k) < 0, "identity refused: '%s'", bad[i]);
}

static void test_key_id(void) {
    char kid[HS_KEY_ID_LEN + 1], other[HS_KEY_ID_LEN + 1], id[64];
    hs_key_id("s3cret", 6, kid);
    CHECK_STR(kid, KEY_ID_S3CRET);
    hs_key_id("s3creT", 6, other);
    CHECK(strcmp(kid, other) != 0, "another secret, another key id");
    CHECK(hs_psk_identity("Bailey", "Bona", kid, id, sizeof id) == 33, "identity length");
    CHECK_STR(id, "proxyherd-v1 Bailey Bona " KEY_ID_S3CRET);
    proto_str a, b, k;
    CHECK(parse(id, &a, &b, &k) == 0 && a.len == 6 && !memcmp(a.p, "Bailey", 6) &&
          b.len == 4 && !memcmp(b.p, "Bona", 4) && k.len == 8 && !memcmp(k.p, kid, 8),
          "identity with a key id parsed");
    CHECK(hs_psk_identity("Bailey", "Bona", kid, id, 33) < 0, "too long for the buffer");
}

int main(void) {
    test_psk();
    test_key_id();
    return check_report("handshake");
}
