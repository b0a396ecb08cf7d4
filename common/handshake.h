/* handshake.h -- the peer handshake's lines, proofs and TLS keys, free of
 * sockets.
 *
 * A TLS link (docs/PROTOCOL.md, "Between servers") needs no lines: the
 * dialer A offers the external PSK named "proxyherd-v1 A B", whose key is
 * HMAC-SHA256(secret, "proxyherd-v1 psk A B"), so the key of one link is
 * worth nothing on another.  A plain link (loopback, or herd.tls: never)
 * authenticates with three lines:
 *
 *   dialer A -> B:  PEER HELLO A nA
 *   B -> A:         PEER WELCOME B nB P("welcome B A nA nB")
 *   A -> B:         PEER PROOF P("proof A B nA nB")
 *
 * nA, nB are 32 lowercase hex digits; P is HMAC-SHA256 over the shared
 * secret, 64 lowercase hex digits.  server/peer.c drives the exchange; the
 * parsing and the arithmetic live here so tests and a fuzzer reach them. */
#ifndef HERD_HANDSHAKE_H
#define HERD_HANDSHAKE_H

#include <stddef.h>

#include "protocol.h"

#define HS_NONCE_LEN 32
#define HS_PROOF_LEN 64
#define HS_PSK_LEN 32                 /* SHA-256 */
#define HS_PSK_PREFIX "proxyherd-v1 "

typedef struct {
    proto_str name, nonce, proof;   /* proof: WELCOME only */
} hs_line;

/* Each returns 0 and fills *out with fields pointing into 'line', or -1 when
 * the line is not exactly that message with well-formed fields. */
int hs_parse_hello(const char *line, size_t len, hs_line *out);
int hs_parse_welcome(const char *line, size_t len, hs_line *out);
int hs_parse_proof(const char *line, size_t len, hs_line *out);

/* A fresh random nonce, NUL-terminated. */
void hs_nonce(char out[HS_NONCE_LEN + 1]);

/* out = hex HMAC-SHA256(secret, "herd-v1 kind a b na nb"), NUL-terminated. */
void hs_proof(const char *secret, size_t secret_len, const char *kind, const char *a,
              const char *b, const char *na, const char *nb, char out[HS_PROOF_LEN + 1]);

/* 1 when 'got' is exactly 'want', compared in constant time. */
int hs_proof_ok(const char *want, proto_str got);

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
