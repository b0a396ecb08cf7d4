/* siphash.h -- SipHash-2-4, the keyed hash of every table whose keys come
 * from outside (client ids, client addresses).
 *
 * Under a random key, nobody who does not know it can pick keys that land
 * in one chain; under a fixed key (the herd's digests), every server
 * computes the same hashes.
 */
#ifndef HERD_SIPHASH_H
#define HERD_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of len bytes under the key (k0, k1).  Little-endian hosts
 * only (Debian amd64 and arm64), like the reference's test vectors. */
uint64_t siphash24(const void *data, size_t len, uint64_t k0, uint64_t k1);

/* A random key for this process (getrandom; early at boot without
 * entropy, the clock and an address, so it still varies). */
void siphash_random_key(uint64_t key[2]);

#endif
