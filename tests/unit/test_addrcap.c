/* test_addrcap.c -- connections per address: the cap, and removal that
 * keeps every other address findable (checked against a plain array). */
#include <stdlib.h>

#include "addrcap.h"
#include "check.h"

int main(void) {
    addrcap a;
    addrcap_init(&a, 0, 100);
    for (int i = 0; i < 1000; i++) CHECK(addrcap_take(&a, 7) == 0, "cap 0 counts nothing");
    addrcap_free(&a);

    addrcap_init(&a, 3, 8);
    CHECK(addrcap_take(&a, 1) == 0 && addrcap_take(&a, 1) == 0 && addrcap_take(&a, 1) == 0,
          "three from one address");
    CHECK(addrcap_take(&a, 1) < 0, "the fourth is refused");
    CHECK(addrcap_take(&a, 2) == 0, "another address is not affected");
    addrcap_release(&a, 1);
    CHECK(addrcap_take(&a, 1) == 0, "a closed one frees its place");
    CHECK(addrcap_take(&a, 1) < 0, "and only one");
    addrcap_free(&a);

    /* many addresses in a small table: long probe runs, then removals in a
     * scrambled order must leave each remaining count exact */
    enum { N = 512, CAP = 4 };
    static unsigned want[N];
    addrcap_init(&a, CAP, N);
    srand(1);
    for (int round = 0; round < 20000; round++) {
        unsigned k = (unsigned)(rand() % N);
        uint32_t ip = k * 0x01000193u;       /* odd multiplier: distinct */
        if (rand() % 3) {
            int ok = addrcap_take(&a, ip) == 0;
            if (ok != (want[k] < CAP)) CHECK(0, "take %u at count %u", k, want[k]);
            if (ok) want[k]++;
        } else if (want[k]) {
            addrcap_release(&a, ip);
            want[k]--;
        }
    }
    int exact = 1;
    for (unsigned k = 0; k < N; k++) {       /* fill each up to the cap: exact room left */
        uint32_t ip = k * 0x01000193u;
        for (unsigned c = want[k]; c < CAP; c++) exact &= addrcap_take(&a, ip) == 0;
        exact &= addrcap_take(&a, ip) < 0;
    }
    CHECK(exact, "every count survived the removals");
    addrcap_free(&a);
    return check_report("addrcap");
}
