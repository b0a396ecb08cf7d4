/* addrcap.c -- open connections per client address; see addrcap.h.
 *
 * Open addressing with linear probing over a power-of-two array at most
 * half full (twice as many slots as clients), so a probe is short; a free
 * slot is one whose count is 0.  Removal shifts the following entries of
 * the run back (no tombstones), so the table never degrades.  The hash is
 * keyed with a random seed: addresses are not the client's to choose, but
 * a run of neighbouring ones should not make one long chain either.
 */
#include "addrcap.h"

#include <stdlib.h>
#include <sys/random.h>

#include "xalloc.h"

static size_t slot_of(const addrcap *a, uint32_t ip) {
    uint64_t h = ((uint64_t)ip ^ a->seed) * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 32) & a->mask;
}

void addrcap_init(addrcap *a, unsigned cap, size_t max_clients) {
    a->ip = NULL;
    a->count = NULL;
    a->mask = 0;
    a->cap = cap;
    if (!cap) return;
    size_t n = 16;
    while (n < 2 * max_clients) n *= 2;
    a->ip = xcalloc(n, sizeof *a->ip);
    a->count = xcalloc(n, sizeof *a->count);
    a->mask = n - 1;
    if (getrandom(&a->seed, sizeof a->seed, 0) != (ssize_t)sizeof a->seed)
        a->seed = (uint64_t)(uintptr_t)a;
}

/* The slot holding ip, or the free slot where it would go. */
static size_t find(const addrcap *a, uint32_t ip) {
    size_t i = slot_of(a, ip);
    while (a->count[i] && a->ip[i] != ip) i = (i + 1) & a->mask;
    return i;
}

int addrcap_take(addrcap *a, uint32_t ip) {
    if (!a->cap) return 0;
    size_t i = find(a, ip);
    if (a->count[i] >= a->cap) return -1;
    a->ip[i] = ip;
    a->count[i]++;
    return 0;
}

void addrcap_release(addrcap *a, uint32_t ip) {
    if (!a->cap) return;
    size_t i = find(a, ip);
    if (!a->count[i] || --a->count[i]) return;
    /* i is free now: move back each later entry of the run that may */
    for (size_t j = (i + 1) & a->mask; a->count[j]; j = (j + 1) & a->mask) {
        size_t home = slot_of(a, a->ip[j]);
        /* j's entry may fill i unless its home lies in (i, j] */
        if (((j - home) & a->mask) >= ((j - i) & a->mask)) {
            a->ip[i] = a->ip[j];
            a->count[i] = a->count[j];
            a->count[j] = 0;
            i = j;
        }
    }
}

void addrcap_free(addrcap *a) {
    free(a->ip);
    free(a->count);
    a->ip = NULL;
    a->count = NULL;
}
