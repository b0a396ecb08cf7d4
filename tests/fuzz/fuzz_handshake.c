/* fuzz_handshake.c -- libFuzzer harness for the peer handshake.
 *
 * The input is up to three lines, played as HELLO, WELCOME and PROOF
 * against both sides of the exchange with a fixed secret.  Whatever the
 * parsers accept must point inside its line with well-formed fields; a
 * HELLO they accept must lead to a WELCOME the other side accepts and
 * verifies; a forged proof is accepted only if it is the right one.  The
 * first line is also read as a TLS PSK identity: one the parser accepts
 * must be rebuilt byte for byte from the two names it found. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handshake.h"

static const char secret[] = "fuzz-secret";

static int inside(proto_str f, const char *line, size_t len) {
    return f.p >= line && f.p + f.len <= line + len;
}

static int lowhex(proto_str f, size_t n) {
    if (f.len != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", f.p[i]) || !f.p[i]) return 0;
    return 1;
}

static char *copy_str(proto_str f) {   /* names go into proofs as C strings */
    char *s = malloc(f.len + 1);
    memcpy(s, f.p, f.len);
    s[f.len] = '\0';
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *line[3] = {0};
    size_t len[3] = {0};
    char *owned[3] = {0};
    size_t at = 0;
    for (int i = 0; i < 3 && at <= size; i++) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t n = nl ? (size_t)(nl - (data + at)) : size - at;
        owned[i] = malloc(n ? n : 1);   /* exact size: ASan sees overreads */
        memcpy(owned[i], data + at, n);
        line[i] = owned[i];
        len[i] = n;
        at += n + 1;
    }
    if (!line[0]) return 0;

    proto_str pa, pb;
    if (hs_parse_psk_identity((const unsigned char *)line[0], len[0], &pa, &pb) == 0) {
        if (!inside(pa, line[0], len[0]) || !inside(pb, line[0], len[0]) || !pa.len || !pb.len)
            abort();
        char *a = copy_str(pa), *b = copy_str(pb), id[600];
        int n = hs_psk_identity(a, b, id, sizeof id);
        if (n < 0 || (size_t)n != len[0] || memcmp(id, line[0], len[0]) != 0) abort();
        free(a);
        free(b);
    }

    char nb[HS_NONCE_LEN + 1] = "fedcba9876543210fedcba9876543210";
    hs_line h;
    if (hs_parse_hello(line[0], len[0], &h) == 0) {
        if (!inside(h.name, line[0], len[0]) || !h.name.len || !lowhex(h.nonce, HS_NONCE_LEN))
            abort();
        /* Accepting side answers; the dialer must accept and verify it. */
        char *them = copy_str(h.name), *na = copy_str(h.nonce);
        char p[HS_PROOF_LEN + 1], welcome[512];
        hs_proof(secret, sizeof secret - 1, "welcome", "Me", them, na, nb, p);
        size_t wn = (size_t)snprintf(welcome, sizeof welcome, "PEER WELCOME Me %s %s", nb, p);
        hs_line w;
        if (hs_parse_welcome(welcome, wn, &w) < 0) abort();
        char want[HS_PROOF_LEN + 1];
        hs_proof(secret, sizeof secret - 1, "welcome", "Me", them, na, nb, want);
        if (!hs_proof_ok(want, w.proof)) abort();
        /* A PROOF line from the input passes only if it is the right one. */
        if (line[2] && hs_parse_proof(line[2], len[2], &w) == 0) {
            if (!inside(w.proof, line[2], len[2]) || !lowhex(w.proof, HS_PROOF_LEN)) abort();
            hs_proof(secret, sizeof secret - 1, "proof", them, "Me", na, nb, want);
            if (hs_proof_ok(want, w.proof) != (memcmp(want, w.proof.p, HS_PROOF_LEN) == 0))
                abort();
        }
        free(them);
        free(na);
    }
    if (line[1] && hs_parse_welcome(line[1], len[1], &h) == 0) {
        if (!inside(h.name, line[1], len[1]) || !lowhex(h.nonce, HS_NONCE_LEN) ||
            !lowhex(h.proof, HS_PROOF_LEN))
            abort();
    }
    for (int i = 0; i < 3; i++) free(owned[i]);
    return 0;
}
