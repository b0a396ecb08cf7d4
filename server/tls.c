/* tls.c -- see tls.h.
 *
 * The dialer A of the link A-B offers one external PSK, keyed by the first
 * secret of its ring: identity "proxyherd-v1 A B" when its ring holds one
 * secret, "proxyherd-v1 A B KEYID" when it holds more.  The acceptor B
 * looks the identity up (its own name second, a configured neighbour that
 * dials it first), takes the secret of its ring the key id names (its
 * first without one) and derives the same key.  A peer with another
 * secret fails the PSK binder check, a peer offering any other identity
 * or a key id B does not hold finds no key and, having no certificate to
 * fall back on, no handshake either: all are refused by OpenSSL before a
 * byte of data flows, and logged by peer.c.  The callbacks read the ring
 * at each handshake, so a reload (peer_secrets_use) takes effect at the
 * next one and leaves the links that are up alone.
 */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "handshake.h"
#include "log.h"
#include "peer.h"

static const char *name_of(const server *s, int li) {
    return s->cfg->servers[s->links[li].server].name;
}

/* A session carrying the link's key, for TLS_AES_128_GCM_SHA256. */
static SSL_SESSION *psk_session(SSL *ssl, const secret_key *k, const char *dialer,
                                const char *acceptor) {
    static const unsigned char aes128gcm_sha256[] = {0x13, 0x01};
    unsigned char key[HS_PSK_LEN];
    const SSL_CIPHER *cipher = SSL_CIPHER_find(ssl, aes128gcm_sha256);
    SSL_SESSION *sess = SSL_SESSION_new();
    hs_psk_key(k->key, k->len, dialer, acceptor, key);
    int ok = cipher && sess && SSL_SESSION_set1_master_key(sess, key, sizeof key) &&
             SSL_SESSION_set_cipher(sess, cipher) &&
             SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION);
    OPENSSL_cleanse(key, sizeof key);
    if (!ok) {
        SSL_SESSION_free(sess);
        return NULL;
    }
    return sess;
}

/* Dialer: the PSK of our link with our first secret, named by its key id
 * when the ring holds more than one (OpenSSL copies the identity). */
static int use_psk(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
                   SSL_SESSION **sess) {
    static char ident[2 * CONFIG_MAX_NAME + sizeof HS_PSK_PREFIX + 1 + HS_KEY_ID_LEN];
    const client *c = SSL_get_app_data(ssl);
    const server *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const secret_ring *ring = &s->secrets;
    *sess = NULL;
    if (md && EVP_MD_get_type(md) != NID_sha256) return 1;   /* not ours: no PSK */
    if (c->link < 0 || !ring->n) return 0;
    const char *them = name_of(s, c->link);
    const secret_key *k = &ring->keys[0];
    int n = hs_psk_identity(s->me->name, them, ring->n > 1 ? k->id : NULL, ident,
                            sizeof ident);
    if (n < 0) return 0;
    *sess = psk_session(ssl, k, s->me->name, them);
    if (!*sess) return 0;
    *id = (const unsigned char *)ident;
    *idlen = (size_t)n;
    return 1;
}

/* The secret of our ring an identity's key id names (its first without
 * one), or NULL. */
static const secret_key *ring_key(const server *s, proto_str key_id) {
    char want[HS_KEY_ID_LEN + 1];
    if (!key_id.len) return s->secrets.n ? &s->secrets.keys[0] : NULL;
    memcpy(want, key_id.p, HS_KEY_ID_LEN);
    want[HS_KEY_ID_LEN] = '\0';
    return secret_find(&s->secrets, want);
}

/* Acceptor: the key for an identity, and so which link this is.  An
 * identity we do not know gets no key (*sess NULL); the handshake then
 * fails for want of a certificate. */
static int find_psk(SSL *ssl, const unsigned char *id, size_t len, SSL_SESSION **sess) {
    client *c = SSL_get_app_data(ssl);
    const server *s = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    proto_str dialer, acceptor, key_id;
    *sess = NULL;
    if (hs_parse_psk_identity(id, len, &dialer, &acceptor, &key_id) < 0 ||
        acceptor.len != strlen(s->me->name) ||
        memcmp(acceptor.p, s->me->name, acceptor.len) != 0) {
        c->tls_why = "unknown PSK identity";
        return 1;
    }
    int li = peer_find_link(s, dialer.p, dialer.len);
    if (li < 0 || s->links[li].dialer) {
        c->tls_why = "PSK identity of a server that does not dial us";
        return 1;
    }
    const secret_key *k = ring_key(s, key_id);
    if (!k) {
        c->tls_why = "PSK identity names a key id not in our ring";
        return 1;
    }
    *sess = psk_session(ssl, k, name_of(s, li), s->me->name);
    if (!*sess) return 0;
    c->link = li;
    return 1;
}

int tls_init(server *s, char *err, size_t errlen) {
    if (!s->secrets.n || !s->n_links) return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") ||
        !SSL_CTX_set_num_tickets(ctx, 0)) {
        snprintf(err, errlen, "TLS setup: %s", ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return -1;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* no SSL_MODE_RELEASE_BUFFERS: a link's record buffers (about 34 KiB)
     * stay, instead of a free and a malloc around every record */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_read_ahead(ctx, 1);   /* one read() for many records, not two per record */
    SSL_CTX_set_psk_use_session_callback(ctx, use_psk);
    SSL_CTX_set_psk_find_session_callback(ctx, find_psk);
    SSL_CTX_set_app_data(ctx, s);
    s->tls_ctx = ctx;
    return 0;
}

void tls_free(server *s) {
    SSL_CTX_free(s->tls_ctx);
    s->tls_ctx = NULL;
}

int tls_start(server *s, client *c, int dialer) {
    ERR_clear_error();
    SSL *ssl = SSL_new(s->tls_ctx);
    if (!ssl || !SSL_set_fd(ssl, c->fd)) {
        log_msg(LOG_ERROR, "tls", "id=%llu addr=%s: %s", (unsigned long long)c->id, c->addr,
                ERR_reason_error_string(ERR_get_error()));
        SSL_free(ssl);
        return -1;
    }
    SSL_set_app_data(ssl, c);
    if (dialer) SSL_set_connect_state(ssl);
    else SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->tls_hs = 1;
    c->tls_want_write = 0;
    c->tls_why = NULL;
    return 0;
}

/* The reason OpenSSL gives for the failure of the last call, for the log. */
static const char *failure(client *c, int r) {
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_SYSCALL)
        return errno == ECONNRESET ? "reset during the TLS handshake"
                                   : "closed during the TLS handshake";
    unsigned long code = ERR_peek_last_error();
    int reason = ERR_GET_REASON(code);
    if (reason == SSL_R_BINDER_DOES_NOT_VERIFY)
        return "TLS: the PSK does not match (wrong secret?)";
    if (SSL_is_server(c->ssl) == 0 && (reason == SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER ||
                                       reason == SSL_R_TLSV1_ALERT_DECRYPT_ERROR ||
                                       reason == SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE))
        return "TLS: the neighbour refused our PSK (wrong secret?)";
    if (c->tls_why) return c->tls_why;
    const char *text = ERR_reason_error_string(code);
    if (!text) return "TLS handshake failed";
    /* static strings only (the reason outlives this call): OpenSSL's are */
    return text;
}

int tls_handshake(server *s, client *c, const char **why) {
    (void)s;
    ERR_clear_error();
    c->tls_want_write = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_hs = 0;
        return 1;
    }
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ: return 0;
    case SSL_ERROR_WANT_WRITE: c->tls_want_write = 1; return 0;
    default: *why = failure(c, r); return -1;
    }
}

/* The error queue must be empty before an I/O call, for SSL_get_error();
 * ERR_clear_error() frees every slot (16 free() calls) even when it is, so
 * it runs only when something is there: once per record, it showed. */
static void clear_errors(void) {
    if (ERR_peek_error()) ERR_clear_error();
}

/* Map a failed SSL_read/SSL_write to errno; 0 for the end of the stream. */
static ssize_t io_error(client *c, int r) {
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE:
        c->tls_want_write = 1;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || errno == EAGAIN) return 0;
        return -1;
    default:
        errno = EPROTO;
        return -1;
    }
}

ssize_t tls_recv(client *c, void *p, size_t n) {
    clear_errors();
    c->tls_want_write = 0;
    errno = 0;
    int r = SSL_read(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    return r > 0 ? r : io_error(c, r);
}

ssize_t tls_send(client *c, const void *p, size_t n) {
    clear_errors();
    c->tls_want_write = 0;
    errno = 0;
    int r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    return r > 0 ? r : io_error(c, r);
}

int tls_pending(const client *c) {
    return c->ssl && !c->tls_hs && SSL_has_pending(c->ssl);
}

void tls_drop(client *c) {
    SSL_free(c->ssl);
    c->ssl = NULL;
}
