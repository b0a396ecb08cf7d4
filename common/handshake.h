/* handshake.h -- the peer handshake's lines and proofs, free of sockets.
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

#endif
