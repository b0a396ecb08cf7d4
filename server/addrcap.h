/* addrcap.h -- open connections per client address, for
 * limits.max_clients_per_address.
 *
 * A hash of IPv4 address -> count, sized once for the most addresses there
 * can be (one per client), so taking a slot never allocates.  Only clients
 * are counted: links and connections on probation are not.
 */
#ifndef HERD_ADDRCAP_H
#define HERD_ADDRCAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t *ip;
    uint32_t *count;            /* 0: the slot is free */
    size_t mask;                /* slots - 1; 0 when no cap is set */
    uint64_t seed;
    unsigned cap;
} addrcap;

/* Room for at most max_clients addresses, each allowed 'cap' connections;
 * cap 0 turns counting off (nothing is allocated). */
void addrcap_init(addrcap *a, unsigned cap, size_t max_clients);

/* Count one more connection from ip.  Returns 0, or -1 (nothing counted)
 * when ip already holds 'cap' connections. */
int addrcap_take(addrcap *a, uint32_t ip);

/* One connection from ip has closed (it was counted by addrcap_take). */
void addrcap_release(addrcap *a, uint32_t ip);

void addrcap_free(addrcap *a);

#endif
