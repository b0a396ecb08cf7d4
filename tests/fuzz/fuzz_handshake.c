/* fuzz_handshake.c -- libFuzzer harness for the peer handshake.
 *
 * The input is up to three lines, played as HELLO, WELCOME and PROOF
 * against both sides of the exchange with a fixed secret.  Whatever the
 * parsers accept must point inside its line with well-formed fields; a
 * HELLO they accept must lead to a WELCOME the other side accepts and
 * verifies from the fields it parsed, against an HMAC computed here as
 * docs/PROTOCOL.md describes it; a proof made with another secret, label,
 * order of names or nonce must not verify; a forged proof is accepted only
 * if it is the right one. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

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

/* HMAC-SHA256(key, "herd-v1 KIND A B NA NB") in lower-case hex, computed
 * here, not by handshake.c: the documented proof.  -1 for a message longer
 * than the 1,023 bytes hs_proof() takes (names that long are refused
 * elsewhere; the harness skips them). */
static int documented_proof(const char *key, const char *kind, const char *a, const char *b,
                             const char *na, const char *nb, char out[HS_PROOF_LEN + 1]) {
    char msg[2048];
    int n = snprintf(msg, sizeof msg, "herd-v1 %s %s %s %s %s", kind, a, b, na, nb);
    if (n < 0 || n >= 1024) return -1;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, (size_t)n, mac, &len);
    if (len * 2 != HS_PROOF_LEN) abort();
    for (unsigned i = 0; i < len; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
    return 0;
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
        if (wn >= sizeof welcome || hs_parse_welcome(welcome, wn, &w) < 0) abort();
        /* the dialer's view: what it parsed, and its own name and nonce */
        char *wname = copy_str(w.name), *wnonce = copy_str(w.nonce);
        if (strcmp(wname, "Me") || strcmp(wnonce, nb)) abort();
        char want[HS_PROOF_LEN + 1];
        hs_proof(secret, sizeof secret - 1, "welcome", wname, them, na, wnonce, want);
        if (!hs_proof_ok(want, w.proof)) abort();
        char doc[HS_PROOF_LEN + 1];
        if (documented_proof(secret, "welcome", wname, them, na, wnonce, doc) == 0) {
            if (!hs_proof_ok(doc, w.proof)) abort();
            /* every input counts: change one and the proof must not verify */
            char other[HS_PROOF_LEN + 1];
            char na2[HS_NONCE_LEN + 1], nb2[HS_NONCE_LEN + 1];
            snprintf(na2, sizeof na2, "%s", na);
            snprintf(nb2, sizeof nb2, "%s", nb);
            na2[0] = na2[0] == '0' ? '1' : '0';
            nb2[HS_NONCE_LEN - 1] = nb2[HS_NONCE_LEN - 1] == '0' ? '1' : '0';
            if (documented_proof("other-secret", "welcome", wname, them, na, wnonce, other) ||
                hs_proof_ok(other, w.proof))
                abort();
            if (documented_proof(secret, "proof", wname, them, na, wnonce, other) ||
                hs_proof_ok(other, w.proof))
                abort();
            if (strcmp(them, "Me") &&
                (documented_proof(secret, "welcome", them, wname, na, wnonce, other) ||
                 hs_proof_ok(other, w.proof)))
                abort();
            if (documented_proof(secret, "welcome", wname, them, na2, wnonce, other) ||
                hs_proof_ok(other, w.proof))
                abort();
            if (documented_proof(secret, "welcome", wname, them, na, nb2, other) ||
                hs_proof_ok(other, w.proof))
                abort();
        }
        free(wname);
        free(wnonce);
        /* A PROOF line from the input passes only if it is the right one. */
        if (line[2] && hs_parse_proof(line[2], len[2], &w) == 0) {
            if (!inside(w.proof, line[2], len[2]) || !lowhex(w.proof, HS_PROOF_LEN)) abort();
            if (documented_proof(secret, "proof", them, "Me", na, nb, want) == 0 &&
                hs_proof_ok(want, w.proof) != (memcmp(want, w.proof.p, HS_PROOF_LEN) == 0))
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
