/* addrcap.h -- open connections per client address, for
 * limits.max_clients_per_address.
 *
 * What counts as one address: an IPv4 address, or a whole IPv6 /64 (one
 * host is commonly given a /64 and may pick any address in it), an
 * IPv4-mapped IPv6 address being its IPv4 one.  A hash of address ->
 * count, sized once for the most addresses there can be (one per client),
 * so taking a slot never allocates.  Only clients are counted: links and
 * connections on probation are not.
 */
#ifndef HERD_ADDRCAP_H
#define HERD_ADDRCAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One address as counted: hi is an IPv6 /64 (its first 8 bytes, lo 0), or
 * 0 with lo = 2^32 + an IPv4 address (so the two never meet). */
typedef struct {
    uint64_t hi, lo;
} addrcap_key;

typedef struct {
    addrcap_key *key;
    uint32_t *count;            /* 0: the slot is free */
    size_t mask;                /* slots - 1; 0 when no cap is set */
    uint64_t k0, k1;            /* SipHash key, random per process */
    unsigned cap;
} addrcap;

/* The key of the address in sa (AF_INET or AF_INET6).  Returns 0, or -1
 * for another family. */
int addrcap_key_of(const struct sockaddr *sa, addrcap_key *k);

/* Room for at most max_clients addresses, each allowed 'cap' connections;
 * cap 0 turns counting off (nothing is allocated). */
void addrcap_init(addrcap *a, unsigned cap, size_t max_clients);

/* Count one more connection from address k.  Returns 0, or -1 (nothing
 * counted) when k already holds 'cap' connections. */
int addrcap_take(addrcap *a, const addrcap_key *k);

/* One connection from k has closed (it was counted by addrcap_take). */
void addrcap_release(addrcap *a, const addrcap_key *k);

void addrcap_free(addrcap *a);

#endif
