/* addrcap.c -- open connections per client address; see addrcap.h.
 *
 * Open addressing with linear probing over a power-of-two array at most
 * half full (twice as many slots as clients), so a probe is short; a free
 * slot is one whose count is 0.  Removal shifts the following entries of
 * the run back (no tombstones), so the table never degrades.  Slots come
 * from SipHash under a random key: whoever picks addresses (anyone with a
 * /48 picks among 65,536 /64s) cannot aim them at one chain.  Keys are
 * compared whole, so two addresses never share a count by a collision.
 */
#include "addrcap.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "siphash.h"
#include "xalloc.h"

int addrcap_key_of(const struct sockaddr *sa, addrcap_key *k) {
    const unsigned char *b;
    if (sa->sa_family == AF_INET) {
        b = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        b = a6->s6_addr;
        if (!IN6_IS_ADDR_V4MAPPED(a6)) {
            k->hi = 0;
            for (int i = 0; i < 8; i++) k->hi = k->hi << 8 | b[i];   /* the /64 */
            k->lo = 0;
            return 0;
        }
        b += 12;                           /* ::ffff:a.b.c.d is a.b.c.d */
    } else {
        return -1;
    }
    k->hi = 0;
    k->lo = (uint64_t)1 << 32 | (uint64_t)b[0] << 24 | (uint64_t)b[1] << 16 |
            (uint64_t)b[2] << 8 | b[3];
    return 0;
}

static size_t slot_of(const addrcap *a, const addrcap_key *k) {
    uint64_t w[2] = {k->hi, k->lo};
    return (size_t)siphash24(w, sizeof w, a->k0, a->k1) & a->mask;
}

static int same(const addrcap_key *x, const addrcap_key *y) {
    return x->hi == y->hi && x->lo == y->lo;
}

void addrcap_init(addrcap *a, unsigned cap, size_t max_clients) {
    memset(a, 0, sizeof *a);
    a->cap = cap;
    if (!cap) return;
    size_t n = 16;
    while (n < 2 * max_clients) n *= 2;
    a->key = xcalloc(n, sizeof *a->key);
    a->count = xcalloc(n, sizeof *a->count);
    a->mask = n - 1;
    uint64_t key[2];
    siphash_random_key(key);
    a->k0 = key[0];
    a->k1 = key[1];
}

/* The slot holding k, or the free slot where it would go. */
static size_t find(const addrcap *a, const addrcap_key *k) {
    size_t i = slot_of(a, k);
    while (a->count[i] && !same(&a->key[i], k)) i = (i + 1) & a->mask;
    return i;
}

int addrcap_take(addrcap *a, const addrcap_key *k) {
    if (!a->cap) return 0;
    size_t i = find(a, k);
    if (a->count[i] >= a->cap) return -1;
    a->key[i] = *k;
    a->count[i]++;
    return 0;
}

void addrcap_release(addrcap *a, const addrcap_key *k) {
    if (!a->cap) return;
    size_t i = find(a, k);
    if (!a->count[i] || --a->count[i]) return;
    /* i is free now: move back each later entry of the run that may */
    for (size_t j = (i + 1) & a->mask; a->count[j]; j = (j + 1) & a->mask) {
        size_t home = slot_of(a, &a->key[j]);
        /* j's entry may fill i unless its home lies in (i, j] */
        if (((j - home) & a->mask) >= ((j - i) & a->mask)) {
            a->key[i] = a->key[j];
            a->count[i] = a->count[j];
            a->count[j] = 0;
            i = j;
        }
    }
}

void addrcap_free(addrcap *a) {
    free(a->key);
    free(a->count);
    a->key = NULL;
    a->count = NULL;
}
