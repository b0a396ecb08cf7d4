/* test_addrcap.c -- connections per address: what one address is (an IPv4
 * address, an IPv6 /64), the cap, and removal that keeps every other
 * address findable (checked against a plain array). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "addrcap.h"
#include "check.h"
#include "siphash.h"

/* The key of a literal address, IPv4 or IPv6. */
static addrcap_key key(const char *text) {
    struct sockaddr_storage ss;
    addrcap_key k = {0, 0};
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) v4->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) v6->sin6_family = AF_INET6;
    CHECK(addrcap_key_of((struct sockaddr *)&ss, &k) == 0, "key of %s", text);
    return k;
}

static int same(const char *x, const char *y) {
    addrcap_key a = key(x), b = key(y);
    return a.hi == b.hi && a.lo == b.lo;
}

/* A distinct IPv4 key per n. */
static addrcap_key v4(uint32_t n) {
    return (addrcap_key){0, (uint64_t)1 << 32 | n};
}

static void test_what_one_address_is(void) {
    CHECK(same("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe"), "one /64 is one address");
    CHECK(!same("2001:db8:1:2::1", "2001:db8:1:3::1"), "the next /64 is another");
    CHECK(!same("2001:db8:1:2::1", "2001:db9:1:2::1"), "and so is one far away");
    CHECK(!same("1.2.3.4", "1.2.3.5"), "IPv4: each address on its own");
    CHECK(same("1.2.3.4", "::ffff:1.2.3.4"), "an IPv4-mapped address is its IPv4 one");
    CHECK(!same("::ffff:1.2.3.4", "::ffff:1.2.3.5"), "... each on its own");
    CHECK(!same("0.0.0.0", "::1") && !same("0.0.0.1", "::"), "IPv4 never meets the /64 ::");
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    addrcap_key k;
    CHECK(addrcap_key_of((struct sockaddr *)&un, &k) < 0, "no key for another family");

    addrcap a;
    addrcap_init(&a, 2, 8);
    addrcap_key x1 = key("2001:db8::1"), x2 = key("2001:db8::2:0:0:1");
    addrcap_key x3 = key("2001:db8::ffff:ffff:ffff:ffff"), y = key("2001:db8:0:1::1");
    CHECK(addrcap_take(&a, &x1) == 0 && addrcap_take(&a, &x2) == 0, "two from one /64");
    CHECK(addrcap_take(&a, &x3) < 0, "a third address of the same /64 is refused");
    CHECK(addrcap_take(&a, &y) == 0 && addrcap_take(&a, &y) == 0, "the next /64 has its own");
    addrcap_release(&a, &x2);
    CHECK(addrcap_take(&a, &x3) == 0, "one closed in the /64 frees a place for another");
    addrcap_free(&a);
}

/* SipHash-2-4's reference vector (key 00..0f, message 00..0e): the hash
 * the cap's slots come from is the real one. */
static void test_siphash_vector(void) {
    unsigned char msg[15];
    for (int i = 0; i < 15; i++) msg[i] = (unsigned char)i;
    CHECK(siphash24(msg, sizeof msg, 0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL) ==
          0xa129ca6149be45e5ULL, "SipHash-2-4 test vector");
}

int main(void) {
    addrcap a;
    addrcap_key seven = v4(7), one = v4(1), two = v4(2);
    addrcap_init(&a, 0, 100);
    for (int i = 0; i < 1000; i++) CHECK(addrcap_take(&a, &seven) == 0, "cap 0 counts nothing");
    addrcap_free(&a);

    addrcap_init(&a, 3, 8);
    CHECK(addrcap_take(&a, &one) == 0 && addrcap_take(&a, &one) == 0 &&
          addrcap_take(&a, &one) == 0, "three from one address");
    CHECK(addrcap_take(&a, &one) < 0, "the fourth is refused");
    CHECK(addrcap_take(&a, &two) == 0, "another address is not affected");
    addrcap_release(&a, &one);
    CHECK(addrcap_take(&a, &one) == 0, "a closed one frees its place");
    CHECK(addrcap_take(&a, &one) < 0, "and only one");
    addrcap_free(&a);

    /* many addresses in a small table: long probe runs, then removals in a
     * scrambled order must leave each remaining count exact */
    enum { N = 512, CAP = 4 };
    static unsigned want[N];
    addrcap_init(&a, CAP, N);
    srand(1);
    for (int round = 0; round < 20000; round++) {
        unsigned k = (unsigned)(rand() % N);
        addrcap_key ip = v4(k * 0x01000193u);       /* odd multiplier: distinct */
        if (rand() % 3) {
            int ok = addrcap_take(&a, &ip) == 0;
            if (ok != (want[k] < CAP)) CHECK(0, "take %u at count %u", k, want[k]);
            if (ok) want[k]++;
        } else if (want[k]) {
            addrcap_release(&a, &ip);
            want[k]--;
        }
    }
    int exact = 1;
    for (unsigned k = 0; k < N; k++) {       /* fill each up to the cap: exact room left */
        addrcap_key ip = v4(k * 0x01000193u);
        for (unsigned c = want[k]; c < CAP; c++) exact &= addrcap_take(&a, &ip) == 0;
        exact &= addrcap_take(&a, &ip) < 0;
    }
    CHECK(exact, "every count survived the removals");
    addrcap_free(&a);

    test_what_one_address_is();
    test_siphash_vector();
    return check_report("addrcap");
}
