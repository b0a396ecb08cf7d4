/* tls.h -- TLS 1.3 for the links between servers (OpenSSL's libssl).
 *
 * No certificates: every link is keyed by an external pre-shared key derived
 * from a secret of the herd's key ring (server.secrets: the first dials, any
 * is accepted) and the two names (common/handshake.h), so one secret keeps
 * serving the whole herd and there is no PKI to run.  Only
 * TLS_AES_128_GCM_SHA256 with an (EC)DHE exchange is offered, so a recorded
 * link stays secret even if the herd secret leaks later.
 *
 * Everything is non-blocking: a call that cannot go on returns EAGAIN (or 0
 * from tls_handshake) with c->tls_want_write telling the loop whether to
 * wait for POLLOUT or POLLIN.  OpenSSL reads ahead, so records may wait
 * inside it (tls_pending) with nothing left on the socket; the loop reads
 * those without waiting for poll() (client.tls_more).  When it holds
 * nothing, the socket gave all it had: the loop reads no more this round.
 */
#ifndef HERD_TLS_H
#define HERD_TLS_H

#include <sys/types.h>

#include "server.h"

/* The TLS context, when there are links and a secret; else nothing (and no
 * TLS).  Returns 0, or -1 with a message in err. */
int tls_init(server *s, char *err, size_t errlen);
void tls_free(server *s);

/* Give c an SSL object: dialer side (we offer the PSK of c->link) or
 * accepting side (the identity tells which link it is).  Returns 0, or -1
 * when OpenSSL failed (logged). */
int tls_start(server *s, client *c, int dialer);

/* One step of c's handshake: 1 done, 0 not yet (wait as c->tls_want_write
 * says), -1 refused, with the reason (static text) in *why. */
int tls_handshake(server *s, client *c, const char **why);

/* Like read() and send(): bytes, 0 at the end of the stream, or -1 with
 * errno (EAGAIN when it must wait; EPROTO on a broken record). */
ssize_t tls_recv(client *c, void *p, size_t n);
ssize_t tls_send(client *c, const void *p, size_t n);

/* 1 when bytes wait in OpenSSL's buffer (read ahead from the socket). */
int tls_pending(const client *c);

/* Free c's SSL object (the descriptor stays c's). */
void tls_drop(client *c);

#endif
