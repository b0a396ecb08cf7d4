/* test_handshake.c -- the peer handshake's lines and proofs, and the TLS
 * links' PSK identity and key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "handshake.h"

#define NA "0123456789abcdef0123456789abcdef"
#define NB "fedcba9876543210fedcba9876543210"
/* HMAC-SHA256("s3cret", "herd-v1 welcome Bona Bailey NA NB") by an
 * independent implementation (Python's hmac module). */
#define P_WELCOME "ea3eea4c1ae8cc54e6ef3ab616a38a3bcaef4e3e29161474537113a1e70cba17"
#define P_PROOF "da2babd27ec93a6365eed04a14f0625d81785aad9afbd38431303a38f901d8d5"

static int parse(int (*fn)(const char *, size_t, hs_line *), const char *line) {
    hs_line h;
    size_t n = strlen(line);
    char *copy = malloc(n ? n : 1);   /* exact size: an overread shows under ASan */
    memcpy(copy, line, n);
    int rc = fn(copy, n, &h);
    free(copy);
    return rc;
}

static void test_proofs(void) {
    char out[HS_PROOF_LEN + 1];
    hs_proof("s3cret", 6, "welcome", "Bona", "Bailey", NA, NB, out);
    CHECK_STR(out, P_WELCOME);
    hs_proof("s3cret", 6, "proof", "Bailey", "Bona", NA, NB, out);
    CHECK_STR(out, P_PROOF);
    CHECK(hs_proof_ok(out, (proto_str){P_PROOF, 64}), "equal proof accepted");
    CHECK(!hs_proof_ok(out, (proto_str){P_WELCOME, 64}), "other label refused");
    CHECK(!hs_proof_ok(out, (proto_str){P_PROOF, 63}), "short proof refused");
    hs_proof("s3creT", 6, "proof", "Bailey", "Bona", NA, NB, out);
    CHECK(strcmp(out, P_PROOF) != 0, "another secret, another proof");
    char a[HS_NONCE_LEN + 1], b[HS_NONCE_LEN + 1];
    hs_nonce(a);
    hs_nonce(b);
    CHECK(strlen(a) == HS_NONCE_LEN && strspn(a, "0123456789abcdef") == HS_NONCE_LEN, "%s", a);
    CHECK(strcmp(a, b) != 0, "nonces differ");
}

static void test_lines(void) {
    hs_line h;
    const char *hello = "PEER HELLO Bailey " NA;
    CHECK(hs_parse_hello(hello, strlen(hello), &h) == 0 && h.name.len == 6 &&
          !memcmp(h.name.p, "Bailey", 6) && h.nonce.p == hello + 18, "hello");
    const char *welcome = "PEER WELCOME Bona " NB " " P_WELCOME;
    CHECK(hs_parse_welcome(welcome, strlen(welcome), &h) == 0 && h.proof.len == 64 &&
          !memcmp(h.nonce.p, NB, 32), "welcome");
    const char *pr = "PEER PROOF " P_PROOF;
    CHECK(hs_parse_proof(pr, strlen(pr), &h) == 0 && h.proof.p == pr + 11, "proof");

    static const char *const bad_hello[] = {
        "", "PEER", "PEER HELLO", "PEER HELLO Bailey", "PEER HELLO Bailey 0123",
        "PEER HELLO Bailey " NA " extra", "PEER HELLO Bailey 0123456789ABCDEF0123456789abcdef",
        "PEER HELLO Bailey " NA "0", "peer HELLO Bailey " NA, "PEER WELCOME Bailey " NA,
        "PEER HELLO Bailey 0123456789abcdef0123456789abcdeg",
    };
    for (size_t i = 0; i < sizeof bad_hello / sizeof *bad_hello; i++)
        CHECK(parse(hs_parse_hello, bad_hello[i]) < 0, "hello refused: '%s'", bad_hello[i]);
    static const char *const bad_welcome[] = {
        "PEER WELCOME Bona " NB, "PEER WELCOME Bona " NB " " P_WELCOME " x",
        "PEER WELCOME Bona " NB " " P_WELCOME "0", "PEER WELCOME Bona " P_WELCOME " " NB,
        "PEER HELLO Bona " NB " " P_WELCOME, "PEER WELCOME Bona " NB " xyz",
    };
    for (size_t i = 0; i < sizeof bad_welcome / sizeof *bad_welcome; i++)
        CHECK(parse(hs_parse_welcome, bad_welcome[i]) < 0, "welcome refused: '%s'",
              bad_welcome[i]);
    static const char *const bad_proof[] = {
        "PEER PROOF", "PEER PROOF " NA, "PEER PROOF " P_PROOF " " P_PROOF,
        "PEER PROOFS " P_PROOF, "PEER PROOF " P_PROOF "a",
    };
    for (size_t i = 0; i < sizeof bad_proof / sizeof *bad_proof; i++)
        CHECK(parse(hs_parse_proof, bad_proof[i]) < 0, "proof refused: '%s'", bad_proof[i]);
    const char *spaced = "PEER\tPROOF  " P_PROOF " ";
    CHECK(parse(hs_parse_proof, spaced) == 0, "fields split on any run of spaces");
}

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
    test_proofs();
    test_lines();
    test_psk();
    return check_report("handshake");
}
