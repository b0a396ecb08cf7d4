/* handshake.h -- the TLS links' pre-shared keys, free of sockets.
 *
 * Every link between servers is TLS 1.3 with an external PSK
 * (docs/PROTOCOL.md, "Between servers"): the dialer A of the link to B
 * offers the identity "proxyherd-v1 A B" with the key
 * HMAC-SHA256(secret, "proxyherd-v1 psk A B"), so the key of one link is
 * worth nothing on another.  server/tls.c drives the handshake; the
 * identity and the key live here so tests and a fuzzer reach them. */
#ifndef HERD_HANDSHAKE_H
#define HERD_HANDSHAKE_H

#include <stddef.h>

#include "protocol.h"

#define HS_PSK_LEN 32                 /* SHA-256 */
#define HS_PSK_PREFIX "proxyherd-v1 "

/* The PSK identity of the link A dials to B, "proxyherd-v1 A B", into out.
 * Returns its length, or -1 when it does not fit. */
int hs_psk_identity(const char *dialer, const char *acceptor, char *out, size_t outlen);

/* Split an identity (not NUL-terminated) into its two names.  Returns 0, or
 * -1 when it is not exactly "proxyherd-v1 A B" with two non-empty names. */
int hs_parse_psk_identity(const unsigned char *id, size_t len, proto_str *dialer,
                          proto_str *acceptor);

/* out = HMAC-SHA256(secret, "proxyherd-v1 psk A B"): the link's TLS key. */
void hs_psk_key(const char *secret, size_t secret_len, const char *dialer,
                const char *acceptor, unsigned char out[HS_PSK_LEN]);

#endif
