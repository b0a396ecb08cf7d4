/* handshake.h -- the TLS links' pre-shared keys, free of sockets.
 *
 * Every link between servers is TLS 1.3 with an external PSK
 * (docs/PROTOCOL.md, "Between servers"): the dialer A of the link to B
 * offers the identity "proxyherd-v1 A B" with the key
 * HMAC-SHA256(secret, "proxyherd-v1 psk A B"), so the key of one link is
 * worth nothing on another.  A dialer whose key ring holds more than one
 * secret names the one it keys with: "proxyherd-v1 A B KEYID", KEYID the
 * secret's key id (hs_key_id), so the acceptor can pick it from its own
 * ring.  server/tls.c drives the handshake; the identity and the key live
 * here so tests and a fuzzer reach them. */
#ifndef HERD_HANDSHAKE_H
#define HERD_HANDSHAKE_H

#include <stddef.h>

#include "protocol.h"

#define HS_PSK_LEN 32                 /* SHA-256 */
#define HS_PSK_PREFIX "proxyherd-v1 "
#define HS_KEY_ID_LEN 8               /* hex digits */

/* The PSK identity of the link A dials to B into out: "proxyherd-v1 A B",
 * or with key_id (not NULL) "proxyherd-v1 A B KEYID".  Returns its length,
 * or -1 when it does not fit. */
int hs_psk_identity(const char *dialer, const char *acceptor, const char *key_id, char *out,
                    size_t outlen);

/* Split an identity (not NUL-terminated) into its names and key id.
 * Returns 0, or -1 when it is neither "proxyherd-v1 A B" nor
 * "proxyherd-v1 A B KEYID" (two non-empty names, KEYID HS_KEY_ID_LEN
 * lowercase hex digits).  key_id->len is 0 when there is none. */
int hs_parse_psk_identity(const unsigned char *id, size_t len, proto_str *dialer,
                          proto_str *acceptor, proto_str *key_id);

/* out = HMAC-SHA256(secret, "proxyherd-v1 psk A B"): the link's TLS key. */
void hs_psk_key(const char *secret, size_t secret_len, const char *dialer,
                const char *acceptor, unsigned char out[HS_PSK_LEN]);

/* out = the first HS_KEY_ID_LEN hex digits of HMAC-SHA256(secret,
 * "proxyherd-v1 key id"), NUL-terminated: names a secret, tells nothing of it. */
void hs_key_id(const char *secret, size_t secret_len, char out[HS_KEY_ID_LEN + 1]);

#endif
