/* server.c -- the poll() loop, the listener and client connections.
 *
 * One loop round: poll until the first timer is due (see "timers"); handle
 * signals, warm the cold clients that spoke, read and answer each ready
 * connection; run the timers that are due (the once-a-second sweep closes
 * idle or finished clients); flush the links, write the replies, free the
 * connections marked dead, and accept new ones.  A connection is never
 * freed while the poll set is being walked; client_kill() only marks it.
 * Its life is one state (conn_state, server.h), moved here alone.
 *
 * Idle clients: a client silent for a second, with nothing pending, leaves
 * the poll set for the cold set, an epoll set whose one descriptor sits in
 * the poll set.  When it speaks again it moves back.  So each poll() round
 * costs in proportion to the clients that are busy, and 10,000 idle
 * connections cost nothing per request.
 *
 * Input: bytes land in c->in; each LF ends a line, which goes to the
 * handler of the connection's role: command_handle() for a client,
 * peer_line() for a link or a handshake.  A line longer than limits.max_line_bytes (not counting
 * its LF or CRLF) gets one "? " line, after which the input is read and
 * thrown away for a moment and the connection closed once the reply is
 * out.  At EOF, a plain client's last unterminated line is served; on a
 * link or a handshake only complete lines count, and a torn one is dropped.
 * Every reply due is written before a connection closed by EOF goes.
 * Output: replies are appended to c->out and written at the end of the
 * round, after the links: an IAMAT's update is in the kernel's hands on the
 * way to the neighbours before its AT reply is, so a server killed right
 * after acknowledging an update has still passed it on.  POLLOUT is asked
 * for only while something is left.  A
 * client whose unsent output passes limits.max_output_bytes is cut off.
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "commands.h"
#include "folder.h"
#include "forward.h"
#include "google.h"
#include "log.h"
#include "net.h"
#include "peer.h"
#include "placescache.h"
#include "resolver.h"
#include "signals.h"
#include "snapshot.h"
#include "tls.h"
#include "xalloc.h"

#define READ_CHUNK (64 * 1024)
#define READS_PER_TURN 4        /* fairness: then let the others talk */
#define ACCEPTS_PER_TURN 256
#define DRAIN_MS 1000           /* reading after "line too long" */
#define SWEEP_MS 1000
#define OUT_KEEP (64 * 1024)    /* an empty output buffer larger is freed */
#define COLD_MS 1000            /* idle this long: into the cold set */
#define WARM_PER_TURN 256
#define PROBATION_MS 2000       /* a connection past a full table: TLS link by then */
#define BEAT_MS 1000            /* heartbeat to the supervisor */
/* Descriptors kept free for everything but clients and links: stdio, the
 * listener, the self-pipe, the cold set, the spare, the log and its reopen,
 * the heartbeat, the resolver's socket, a snapshot (temp file and folder, in the child or at stop)
 * and what a parent left open; libcurl's come on top (HTTP_MAX_FDS). */
#define FD_RESERVE 32
#define FDS_PER_LINK 3          /* the link, a dial or handshake, a probation */

/* ------------------------------------------------------------ poll set */

static size_t pollset_add(server *s, int fd, short events, client *c) {
    if (s->npfd == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->pfd = xrealloc(s->pfd, s->cap * sizeof *s->pfd);
        s->conn = xrealloc(s->conn, s->cap * sizeof *s->conn);
    }
    size_t i = s->npfd++;
    s->pfd[i] = (struct pollfd){.fd = fd, .events = events, .revents = 0};
    s->conn[i] = c;
    return i;
}

/* ------------------------------------------------------------- clients */

/* c leaves the probation places (server.probation keeps arrival order). */
static void probation_remove(server *s, client *c) {
    size_t i = 0;
    while (i < s->nprobation && s->probation[i] != c) i++;
    if (i == s->nprobation) return;
    memmove(&s->probation[i], &s->probation[i + 1],
            (s->nprobation - i - 1) * sizeof *s->probation);
    s->nprobation--;
}

/* A client leaves (or becomes part of a link): give back its place in
 * max_clients or on probation, and its address's. */
static void client_uncount(server *s, client *c) {
    if (!c->counted) return;
    c->counted = 0;
    if (c->probation) probation_remove(s, c);
    else s->nclients--;
    c->probation = 0;
    if (c->addr_counted) addrcap_release(&s->per_addr, &c->addr_key);
    c->addr_counted = 0;
}

void client_kill(server *s, client *c, const char *reason) {
    if (c->state == CONN_DEAD) return;
    c->state = CONN_DEAD;
    c->close_reason = reason;
    s->ndead++;
    if (c->role != ROLE_CLIENT) peer_lost(s, c);   /* the link is down now */
    client_uncount(s, c);                  /* its places are free from now on */
}

static void client_free(server *s, client *c) {
    if (c->waiting) google_detach(s, c);   /* its request may still finish */
    if (!c->quiet)
        log_msg(LOG_INFO, "conn-close", "id=%llu from=%s reason=%s",
            (unsigned long long)c->id, c->addr, c->close_reason);
    client_uncount(s, c);
    if (c->ssl) tls_drop(c);
    close(c->fd);
    buf_free(&c->in);
    buf_free(&c->out);
    free(c);
}

/* Take the client at poll slot i out of the poll set (swap with the last). */
static void pollset_remove(server *s, size_t i) {
    size_t last = --s->npfd;
    if (i != last) {
        s->pfd[i] = s->pfd[last];
        s->conn[i] = s->conn[last];
        s->conn[i]->slot = i;
    }
}

/* Remove the dead clients from the poll set (swap with the last). */
static void reap_clients(server *s) {
    if (!s->ndead) return;
    s->ndead = 0;
    for (size_t i = s->npfd; i-- > SERVER_FIRST_CLIENT;) {
        client *c = s->conn[i];
        if (c->state != CONN_DEAD) continue;
        client_free(s, c);
        pollset_remove(s, i);
    }
}

/* ------------------------------------------------------------ cold set */

static void cold_remove(server *s, client *c) {
    epoll_ctl(s->cold_fd, EPOLL_CTL_DEL, c->fd, NULL);
    size_t last = --s->ncold;
    if (c->cold_slot != last) {
        s->cold[c->cold_slot] = s->cold[last];
        s->cold[c->cold_slot]->cold_slot = c->cold_slot;
    }
    c->cold = 0;
}

/* Park the idle client at poll slot i; returns 0, or -1 if it stays. */
static int make_cold(server *s, size_t i) {
    client *c = s->conn[i];
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(s->cold_fd, EPOLL_CTL_ADD, c->fd, &ev) < 0) return -1;
    if (s->ncold == s->coldcap) {
        s->coldcap = s->coldcap ? s->coldcap * 2 : 256;
        s->cold = xrealloc(s->cold, s->coldcap * sizeof *s->cold);
    }
    c->cold_slot = s->ncold;
    s->cold[s->ncold++] = c;
    c->cold = 1;
    pollset_remove(s, i);
    return 0;
}

static void client_read(server *s, client *c);

/* Clients of the cold set that spoke: back into the poll set, and read. */
static void warm_clients(server *s) {
    struct epoll_event evs[WARM_PER_TURN];
    int n = epoll_wait(s->cold_fd, evs, WARM_PER_TURN, 0);
    for (int k = 0; k < n; k++) {
        client *c = evs[k].data.ptr;
        cold_remove(s, c);
        c->slot = pollset_add(s, c->fd, POLLIN, c);
        client_read(s, c);
    }
}

/* The transport: plain TCP, or TLS on a link (server/tls.c). */
static ssize_t conn_recv(client *c, void *p, size_t n) {
    return c->ssl ? tls_recv(c, p, n) : read(c->fd, p, n);
}

static ssize_t conn_send(client *c, const void *p, size_t n) {
    return c->ssl ? tls_send(c, p, n) : send(c->fd, p, n, MSG_NOSIGNAL);
}

/* Lines are read from c (the states that read: open, or reading to throw
 * away); and its input is thrown away unread. */
static int conn_reads(const client *c) {
    return c->state == CONN_OPEN || c->state == CONN_DRAINING || c->state == CONN_SHUT;
}

static int conn_discards(const client *c) {
    return c->state == CONN_DRAINING || c->state == CONN_SHUT;
}

/* Write what is pending; then, all out, the step its state waits for: a
 * closing connection goes (a probation one with its line), a draining one
 * shuts our side down. */
void client_write(server *s, client *c) {
    while (buf_pending(&c->out)) {
        ssize_t n = conn_send(c, buf_data(&c->out), buf_pending(&c->out));
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            c->last_ms = s->now_ms;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        client_kill(s, c, "write error");
        return;
    }
    buf_shrink_if_empty(&c->out, OUT_KEEP);
    if (c->state == CONN_CLOSING && c->probation) {
        client_refuse_busy(s, c);          /* it half-closed without a line */
    } else if (c->state == CONN_CLOSING && !c->waiting) {
        client_kill(s, c, c->close_reason);
    } else if (c->state == CONN_DRAINING) {
        shutdown(c->fd, SHUT_WR);   /* the reply is out: tell the client */
        c->state = CONN_SHUT;
    }
}

/* Write c's replies at the end of this round (see the top of the file). */
static void queue_write(server *s, client *c) {
    if (c->queued || c->state == CONN_DEAD) return;
    if (s->nwq == s->wqcap) {
        s->wqcap = s->wqcap ? s->wqcap * 2 : 64;
        s->wq = xrealloc(s->wq, s->wqcap * sizeof *s->wq);
    }
    s->wq[s->nwq++] = c;
    c->queued = 1;
}

static void write_queued(server *s) {
    for (size_t i = 0; i < s->nwq; i++) {
        client *c = s->wq[i];
        c->queued = 0;
        if (c->state != CONN_DEAD) client_write(s, c);
    }
    s->nwq = 0;
}

/* The output passed the cap: try to write, and cut the client off if it
 * still does not fit.  Returns -1 when the client was killed. */
static int check_output_cap(server *s, client *c) {
    if (c->role == ROLE_PEER) return 0;   /* bounded by peer.c instead */
    if (buf_pending(&c->out) <= s->cfg->limits.max_output_bytes) return 0;
    peer_flush(s);                         /* floods before acks, as always */
    client_write(s, c);
    if (c->state == CONN_DEAD) return -1;
    if (buf_pending(&c->out) <= s->cfg->limits.max_output_bytes) return 0;
    log_msg(LOG_WARN, "output-cap", "id=%llu unsent=%zu cap=%zu",
            (unsigned long long)c->id, buf_pending(&c->out),
            s->cfg->limits.max_output_bytes);
    client_kill(s, c, "output cap");
    return -1;
}

/* Read no more commands from c; once what is queued is written, shut down
 * our side, discard input for a moment, then close (reason logged).  One
 * that half-closed already stays closing: it goes once the reply is out. */
static void client_close_after_reply(server *s, client *c, const char *reason) {
    if (c->state == CONN_OPEN) c->state = CONN_DRAINING;
    c->drain_until_ms = s->now_ms + DRAIN_MS;
    c->close_reason = reason;   /* client_kill() sets it again, to the same */
    buf_free(&c->in);
    c->scanned = 0;
}

static void line_too_long(server *s, client *c) {
    buf_printf(&c->out, "? line too long (more than %zu bytes)\n",
               s->cfg->limits.max_line_bytes);
    log_msg(LOG_WARN, "line-too-long", "id=%llu max=%zu", (unsigned long long)c->id,
            s->cfg->limits.max_line_bytes);
    client_close_after_reply(s, c, "line too long");
}

/* The link or handshake closed in the middle of a line: only complete
 * lines count there (a neighbour killed mid-write leaves a torn AT line). */
static void drop_torn_line(server *s, client *c, size_t len) {
    const char *peer = c->link >= 0 ? s->cfg->servers[s->links[c->link].server].name : "?";
    log_msg(LOG_WARN, "peer-torn-line", "peer=%s addr=%s id=%llu bytes=%zu: closed in the "
            "middle of a line, dropped", peer, c->addr, (unsigned long long)c->id, len);
    buf_clear(&c->in);
    c->scanned = 0;
}

typedef void (*line_fn)(server *, client *, const char *, size_t);

/* The handler of c's lines, by its role: client commands (commands.c), or a
 * link's handshake and traffic (peer.c), which are never answered "? ". */
static line_fn line_handler(const client *c) {
    return c->role == ROLE_CLIENT ? command_handle : peer_line;
}

/* Serve every complete line in c->in; at_eof (the other side half-closed),
 * a plain client's last unterminated one.  The limit is on the line
 * without its LF or CRLF.  Only an open or closing connection serves. */
static void process_input(server *s, client *c, int at_eof) {
    /* a peer's AT line is a client's line plus an origin and a diff; its
     * LINK and SUMS lines may be longer than a small max_line_bytes */
    size_t max = s->cfg->limits.max_line_bytes;
    if (c->role != ROLE_CLIENT) max = (max < FORWARD_CTL_MAX ? FORWARD_CTL_MAX : max) + 256;
    while ((c->state == CONN_OPEN || c->state == CONN_CLOSING) && !c->waiting) {
        char *start = c->in.p + c->in.off;
        size_t avail = buf_pending(&c->in);
        char *nl = avail > c->scanned ? memchr(start + c->scanned, '\n', avail - c->scanned) : NULL;
        size_t len;
        if (nl) {
            len = (size_t)(nl - start);
        } else {
            c->scanned = avail;
            /* max bytes and a CR still waiting for its LF are not too long */
            if (avail > max && !(avail == max + 1 && start[max] == '\r')) {
                line_too_long(s, c);
                break;
            }
            if (!at_eof || avail == 0) break;
            if (c->role != ROLE_CLIENT) { drop_torn_line(s, c, avail); break; }
            len = avail;                      /* half-closed: serve the rest */
        }
        size_t l = (nl && len && start[len - 1] == '\r') ? len - 1 : len;
        if (l > max) { line_too_long(s, c); break; }
        line_handler(c)(s, c, start, l);
        buf_consume(&c->in, nl ? len + 1 : len);
        c->scanned = 0;
        if (check_output_cap(s, c) < 0) return;
    }
    if (buf_pending(&c->in) == 0) {
        buf_shrink_if_empty(&c->in, OUT_KEEP);
        c->partial_since_ms = 0;
    } else if (!c->partial_since_ms) {
        c->partial_since_ms = s->now_ms;   /* a line must end within the idle timeout */
    }
}

void client_resume(server *s, client *c) {
    if (c->state == CONN_DEAD) return;
    process_input(s, c, c->state == CONN_CLOSING);
    /* at the round's end, after the links: an IAMAT it served is handed
     * to them before its reply goes (see the top of the file) */
    if (c->state != CONN_DEAD) queue_write(s, c);
}

/* The other side half-closed (a read of 0): nothing more is read.  What is
 * left of an open connection's input is served, a plain client's last
 * unterminated line too, and it closes once every reply due is out
 * (client_write), as "client closed" unless a drain named it already. */
static void client_at_eof(server *s, client *c) {
    if (c->state == CONN_OPEN) {
        process_input(s, c, 1);
        if (c->state == CONN_OPEN) c->close_reason = "client closed";
    }
    if (c->state != CONN_DEAD) c->state = CONN_CLOSING;
}

/* A new connection's first byte: 0x16 (a TLS handshake record, which no
 * client line starts with) makes it a neighbour's TLS link in the making.
 * Returns 1 when it did. */
static int sniff_tls(server *s, client *c) {
    unsigned char b;
    if (c->sniffed || c->role != ROLE_CLIENT || !s->tls_ctx) return 0;
    if (recv(c->fd, &b, 1, MSG_PEEK) != 1) return 0;   /* EOF, error: read() says */
    c->sniffed = 1;
    return b == 0x16 && peer_tls_accept(s, c) == 0;
}

/* A read that gave n of the 'asked' bytes emptied what there was to read,
 * so the next would only say EAGAIN: a plain socket gave less than asked;
 * OpenSSL, which reads ahead, holds no byte more (it took what the socket
 * had, or more waits there and poll() says so next round). */
static int read_drained(const client *c, size_t n, size_t asked) {
    return c->ssl ? !tls_pending(c) : n < asked;
}

static void client_read(server *s, client *c) {
    if (sniff_tls(s, c)) return;
    /* a TLS read returns one record (16 KiB at most): more turns, same bytes */
    int turns = c->ssl ? READS_PER_TURN * (READ_CHUNK / 16384) : READS_PER_TURN, turn;
    c->tls_more = 0;
    for (turn = 0; turn < turns && conn_reads(c); turn++) {
        if (conn_discards(c)) buf_clear(&c->in);   /* read only to throw away */
        buf_reserve(&c->in, READ_CHUNK);
        size_t asked = c->in.cap - c->in.len;
        ssize_t n = conn_recv(c, c->in.p + c->in.len, asked);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->last_ms = s->now_ms;
            clock_gettime(CLOCK_REALTIME, &c->rx_time);   /* IAMAT diffs count from here */
            if (c->state == CONN_OPEN) process_input(s, c, 0);
            if (read_drained(c, (size_t)n, asked)) break;
        } else if (n == 0) {
            client_at_eof(s, c);
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            break;
        } else {
            client_kill(s, c, errno == ECONNRESET ? "reset by client"
                              : errno == EPROTO ? "bad TLS record" : "read error");
            return;
        }
    }
    if (conn_discards(c)) buf_clear(&c->in);
    /* stopped for fairness, not for want of bytes: OpenSSL may hold more
     * than the socket shows (had it said EAGAIN, it holds none we can use) */
    if (turn == turns && tls_pending(c)) c->tls_more = 1;
    /* on probation, a first byte that starts no TLS record: no neighbour */
    if (c->probation && c->sniffed && c->role == ROLE_CLIENT && c->state != CONN_DEAD)
        client_refuse_busy(s, c);
    if (c->state != CONN_DEAD) queue_write(s, c);
}

/* ------------------------------------------------------- admission
 *
 * Who counts against what: max_clients counts plain clients only; links
 * and dials never do.  A connection is accepted as a client and only its
 * first byte can say it may be a neighbour (0x16: TLS); it counts as the
 * client it came in as until its TLS ClientHello names a link and proves
 * the link's key (the PSK binder): it then holds that link's own place
 * (peer.c, peer_link.accepting), which nothing else can take, and gives
 * its client's place back.
 *
 * So when the client table is full -- or its address holds
 * max_clients_per_address connections -- a connection is still taken "on
 * probation", up to one per configured link, until its first bytes tell:
 * a neighbour's ClientHello moves it to its link's place; anything else
 * (a byte that starts no TLS record, a line, EOF) gets at once the
 * "? too many connections" line it would have had at accept, and a failed
 * handshake is closed.  Silence gets the line after PROBATION_MS.  When
 * the probation places are full, the oldest is looked at once more and,
 * still unknown, refused for the newcomer: a client opening connection
 * after connection cannot keep them, since a neighbour's ClientHello comes
 * right behind its connect (and is looked for at the accept already).
 * Every refused connection gets its line (a TLS handshake begun: a close).
 */

static const char BUSY[] = "? too many connections, try again later\n";
static const char BUSY_ADDR[] = "? too many connections from your address, try again later\n";

void client_set_role(server *s, client *c, client_role role) {
    if (role != ROLE_CLIENT) client_uncount(s, c);
    c->role = role;
}

client *client_add(server *s, int fd, const char *addr) {
    client *c = xcalloc(1, sizeof *c);
    c->fd = fd;
    c->link = -1;
    c->id = ++s->next_id;
    c->last_ms = s->now_ms;
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->slot = pollset_add(s, fd, POLLIN, c);
    s->nclients++;
    c->counted = 1;
    return c;
}

/* A refused connection's line is out: our side is shut and what it has
 * sent so far is read (up to 16 KiB), so the close that follows is a FIN,
 * not a reset that could throw the line away before the client reads it. */
static void shut_and_drain(int fd) {
    char sink[4096];
    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 4 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) {}
}

/* Send a refused connection its "? " line and close it. */
static void refuse_fd(int fd, const char *line, size_t len) {
    if (send(fd, line, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) { /* best effort */ }
    shut_and_drain(fd);
    close(fd);
}

void client_refuse_busy(server *s, client *c) {
    log_msg(LOG_WARN, "conn-refused", "id=%llu from=%s reason=%s reached and no neighbour's "
            "TLS handshake", (unsigned long long)c->id, c->addr,
            c->busy_line == BUSY ? "max_clients" : "max_clients_per_address");
    s->metrics.conns_refused++;
    client_kill(s, c, "too many connections");   /* first: the write below ends here */
    if (c->ssl) return;                /* a TLS handshake: no plain line into it */
    buf_append(&c->out, c->busy_line, strlen(c->busy_line));
    client_write(s, c);
    if (!buf_pending(&c->out)) shut_and_drain(c->fd);   /* closed after this round */
}

/* Out of descriptors after all (EMFILE): the spare one is given up for a
 * moment to accept the next connection and refuse it with its line, so the
 * backlog drains and the listener does not spin. */
static void shed_connection(server *s) {
    if (s->spare_fd >= 0) close(s->spare_fd);
    char addr[NET_ADDRSTRLEN] = "?";
    int fd = net_accept(s->lfd, addr, sizeof addr, NULL);
    if (fd >= 0) {
        refuse_fd(fd, BUSY, sizeof BUSY - 1);
        s->metrics.conns_refused++;
    }
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    log_msg(LOG_WARN, "conn-refused", "from=%s reason=out of file descriptors", addr);
}

/* May a connection from 'peer' be a client?  NULL if so (with a
 * per-address cap, its address is then counted, under *key), else the "? "
 * line it gets. */
static const char *admit_client(server *s, const struct sockaddr_storage *peer,
                                addrcap_key *key) {
    if (s->nclients >= (size_t)s->max_clients) return BUSY;
    if (!s->per_addr.cap) return NULL;
    if (addrcap_key_of((const struct sockaddr *)peer, key) < 0 ||
        addrcap_take(&s->per_addr, key) < 0)
        return BUSY_ADDR;
    return NULL;
}

/* A probation connection's first bytes may have come: go on with it. */
static void probation_look(server *s, client *c) {
    if (c->tls_hs) peer_tls_step(s, c);
    else client_read(s, c);
}

/* Probation is for neighbours: only with links, one place per link.  When
 * all are taken, the oldest is looked at again and, still unknown, refused
 * to make room.  Returns 0 when there is room, -1 without links. */
static int probation_make_room(server *s) {
    if (!s->tls_ctx || !s->n_links) return -1;   /* a reload may have left no link */
    if (s->nprobation < (size_t)s->n_links) return 0;
    client *oldest = s->probation[0];
    probation_look(s, oldest);
    if (oldest->probation) client_refuse_busy(s, oldest);
    return 0;
}

static void accept_clients(server *s) {
    for (int k = 0; k < ACCEPTS_PER_TURN; k++) {
        char addr[NET_ADDRSTRLEN];
        addrcap_key key;
        struct sockaddr_storage peer;
        int fd = net_accept(s->lfd, addr, sizeof addr, &peer);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) shed_connection(s);
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED)
                log_msg(LOG_WARN, "accept", "%s", strerror(errno));
            return;
        }
        const char *busy = admit_client(s, &peer, &key);
        if (busy && probation_make_room(s) < 0) {
            refuse_fd(fd, busy, strlen(busy));
            s->metrics.conns_refused++;
            if (busy == BUSY)
                log_msg(LOG_WARN, "conn-refused", "from=%s reason=max_clients %d reached",
                        addr, s->max_clients);
            else
                log_msg(LOG_WARN, "conn-refused", "from=%s reason=max_clients_per_address %d "
                        "reached", addr, s->cfg->limits.max_clients_per_address);
            continue;
        }
        net_nodelay(fd);
        client *c = client_add(s, fd, addr);
        s->metrics.conns_accepted++;
        if (busy) {                        /* a neighbour's TLS handshake, or out */
            s->nclients--;
            s->probation[s->nprobation++] = c;
            c->probation = 1;
            c->busy_line = busy;
            c->handshake_until_ms = s->now_ms + PROBATION_MS;
        } else {
            c->addr_counted = s->per_addr.cap != 0;
            c->addr_key = key;
        }
        log_msg(LOG_INFO, "conn-open", "id=%llu from=%s%s", (unsigned long long)c->id, addr,
                busy ? " probation=1" : "");
        if (busy) probation_look(s, c);    /* its ClientHello may be here already */
    }
}

static int can_go_cold(const server *s, const client *c) {
    return c->role == ROLE_CLIENT && c->state == CONN_OPEN && !c->probation && !c->waiting &&
           !buf_pending(&c->out) && !buf_pending(&c->in) && s->now_ms - c->last_ms >= COLD_MS;
}

/* The sweep timer, once a second: idle clients, finished drains and stuck
 * handshakes are closed, and quiet clients move to the cold set.  Links
 * are never idle-closed.  Runs between poll rounds, so freeing here is
 * safe. */
static void sweep_clients(server *s) {
    int64_t idle_ms = (int64_t)s->cfg->limits.idle_timeout_s * 1000;
    s->next_sweep_ms = s->now_ms + SWEEP_MS;
    for (size_t i = s->ncold; i-- > 0;) {
        client *c = s->cold[i];
        if (idle_ms && s->now_ms - c->last_ms >= idle_ms) {
            cold_remove(s, c);
            c->state = CONN_DEAD;
            c->close_reason = "idle timeout";
            client_free(s, c);
        }
    }
    for (size_t i = s->npfd; i-- > SERVER_FIRST_CLIENT;) {
        client *c = s->conn[i];
        if (can_go_cold(s, c) && !(idle_ms && s->now_ms - c->last_ms >= idle_ms)) {
            make_cold(s, i);
            continue;
        }
        if (c->drain_until_ms && s->now_ms >= c->drain_until_ms)
            client_kill(s, c, c->close_reason);
        else if (c->probation && s->now_ms >= c->handshake_until_ms)
            client_refuse_busy(s, c);
        else if ((c->role == ROLE_DIALING || c->role == ROLE_ACCEPTED) &&
                 s->now_ms >= c->handshake_until_ms)
            client_kill(s, c, "handshake timeout");
        else if (c->role == ROLE_CLIENT && idle_ms && s->now_ms - c->last_ms >= idle_ms)
            client_kill(s, c, "idle timeout");
        else if (c->role == ROLE_CLIENT && idle_ms && c->partial_since_ms && !c->waiting &&
                 s->now_ms - c->partial_since_ms >= idle_ms)
            client_kill(s, c, "line not finished within the idle timeout");
    }
}

static void handle_signals(server *s) {
    unsigned char sigs[64];
    ssize_t n;
    while ((n = read(s->sig_r, sigs, sizeof sigs)) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (sigs[i] == SIGHUP) {
                log_reopen();
            } else if (sigs[i] == SIGUSR1) {
                server_reload(s);
            } else {
                log_msg(LOG_INFO, "stopping", "signal=%s", sigs[i] == SIGINT ? "INT" : "TERM");
                s->stop = 1;
            }
        }
    }
}

/* ---------------------------------------------------------------- setup */

/* TERM, INT, HUP and USR1 (reload) to the self-pipe (common/signals.c);
 * the supervisor starts us with them blocked, and this unblocks them. */
static int setup_signals(server *s, char *err, size_t errlen) {
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
    return signals_to_pipe(sigs, 4, &s->sig_r, &s->sig_w, err, errlen);
}

/* Raise the descriptor limit to the hard limit and fit max_clients under
 * it: the links and FD_RESERVE (plus libcurl's) come first, so a full
 * client table never starves a link, a snapshot or a log reopen.  Returns
 * 0, or -1 when not even one client fits. */
static int fit_fd_limit(server *s, long *limit, char *err, size_t errlen) {
    *limit = net_raise_fd_limit();
    s->max_clients = s->cfg->limits.max_clients;
    if (*limit < 0) return 0;   /* unknown: trust the config */
    long links = (long)FDS_PER_LINK * s->n_links;
    long reserve = FD_RESERVE + (s->google ? HTTP_MAX_FDS : 0);
    long room = *limit - links - reserve;
    if (room < 1) {
        snprintf(err, errlen, "the limit on open files is %ld: too low for %ld descriptors "
                 "of links and a reserve of %ld (raise it with ulimit -n)", *limit, links,
                 reserve);
        return -1;
    }
    if (room < s->max_clients) {
        s->max_clients = (int)room;
        log_msg(LOG_WARN, "max-clients-lowered", "max_clients=%d configured=%d fd_limit=%ld "
                "links=%ld reserve=%ld: raise the limit on open files (ulimit -n) to serve more",
                s->max_clients, s->cfg->limits.max_clients, *limit, links, reserve);
    }
    return 0;
}

/* Per-address counts under a new cap: the connections counted so far stay
 * counted (even past a lower cap: nobody is closed), none is added. */
static client *any_client(const server *s, size_t i) {   /* polled, then cold */
    return i < s->npfd ? s->conn[i] : s->cold[i - s->npfd];
}

static void refit_per_address(server *s) {
    addrcap next;
    unsigned cap = (unsigned)s->cfg->limits.max_clients_per_address;
    size_t counted = 0;                        /* the table must hold them all, */
    for (size_t i = SERVER_FIRST_CLIENT; i < s->npfd + s->ncold; i++)
        counted += any_client(s, i)->addr_counted;
    size_t room = counted > (size_t)s->max_clients ? counted : (size_t)s->max_clients;
    addrcap_init(&next, cap, room);            /* even past a lower max_clients */
    next.cap = cap ? UINT_MAX : 0;             /* take them all back */
    for (size_t i = SERVER_FIRST_CLIENT; i < s->npfd + s->ncold; i++) {
        client *c = any_client(s, i);
        if (!c->addr_counted) continue;
        if (cap) addrcap_take(&next, &c->addr_key);
        else c->addr_counted = 0;
    }
    next.cap = cap;
    addrcap_free(&s->per_addr);
    s->per_addr = next;
}

int server_refit_limits(server *s, char *err, size_t errlen) {
    long fds;
    if (fit_fd_limit(s, &fds, err, errlen) < 0) return -1;
    refit_per_address(s);
    return 0;
}

/* The supervisor's heartbeat pipe, named by HERD_HEARTBEAT_FD; without it
 * (a server started by hand) the server beats nowhere. */
static void heartbeat_open(server *s) {
    const char *v = getenv("HERD_HEARTBEAT_FD");
    if (!v) return;
    char *end;
    errno = 0;
    long fd = strtol(v, &end, 10);
    int flags = -1;
    if (!errno && end != v && !*end && fd > 2 && fd < INT_MAX)
        flags = fcntl((int)fd, F_GETFL);
    if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY) {
        log_msg(LOG_WARN, "heartbeat", "HERD_HEARTBEAT_FD=%s is not a descriptor open for "
                "writing: no heartbeat", v);
    } else {
        s->hb_fd = (int)fd;
        fcntl(s->hb_fd, F_SETFL, flags | O_NONBLOCK);
        fcntl(s->hb_fd, F_SETFD, FD_CLOEXEC);
    }
    unsetenv("HERD_HEARTBEAT_FD");
}

/* One byte to the supervisor at most once a second, from the loop's
 * timers: while the loop turns, the beats come.  Never blocks; a full pipe
 * holds beats enough, and with no supervisor left the byte goes nowhere
 * (EPIPE). */
static void beat_at(server *s, int64_t now) {
    if (s->hb_fd < 0 || now < s->next_beat_ms) return;
    s->next_beat_ms = now + BEAT_MS;
    if (write(s->hb_fd, ".", 1) < 0) { /* EAGAIN or EPIPE: nothing to do */ }
}

static void heartbeat(server *s) {
    beat_at(s, s->now_ms);
}

void server_beat(server *s) {
    beat_at(s, mono_ms());
}

int server_init(server *s, const config *cfg, int me, char *err, size_t errlen) {
    memset(s, 0, sizeof *s);
    s->now_ms = mono_ms();      /* the loop's clock: timers set from here on count on it */
    s->cfg = cfg;
    s->me = &cfg->servers[me];
    s->lfd = s->sig_r = s->sig_w = s->spare_fd = s->cold_fd = s->hb_fd = s->resolver_fd = -1;
    table_init(&s->tab);
    /* before anything is stored: the bound applies to the snapshot loaded too */
    table_set_max(&s->tab, cfg->limits.max_stored_clients);
    log_set_rotation(cfg->logging.max_file_bytes, cfg->logging.keep_files);
    /* nothing is written in a folder another user may write in (folder.h) */
    if (folder_check(cfg->herd.state_dir, "herd.state_dir", 0700, err, errlen) < 0 ||
        folder_check(cfg->logging.dir, "logging.dir", 0750, err, errlen) < 0 ||
        log_open(cfg->logging.dir, s->me->name, cfg->logging.flush_ms, err, errlen) < 0)
        return -1;
    /* before the port: waiting for another server's cache build is allowed
     * (the supervisor watches the heartbeat from the first beat on) */
    if (cfg->places.provider == PLACES_LOCAL) {
        /* before the read: a change during it shows to the next reload */
        if (stat(cfg->places.local_file, &s->places_st) < 0)
            memset(&s->places_st, 0, sizeof s->places_st);
        if (places_cache_load(&s->places, cfg->places.local_file, cfg->herd.state_dir,
                              PLACES_CACHE_WAIT_MS, err, errlen) < 0)
            return -1;
    }
    if (cfg->places.provider != PLACES_LOCAL && google_init(s, err, errlen) < 0) return -1;
    if (setup_signals(s, err, errlen) < 0) return -1;
    heartbeat_open(s);
    if (peer_init(s, err, errlen) < 0) return -1;
    if (tls_init(s, err, errlen) < 0) return -1;
    long fds;
    if (fit_fd_limit(s, &fds, err, errlen) < 0) return -1;
    addrcap_init(&s->per_addr, (unsigned)cfg->limits.max_clients_per_address,
                 (size_t)s->max_clients);
    /* the port first: a second start of a running server (by hand) fails
     * here, before it touches the state folder (its snapshot load removes
     * NAME.snap.tmp.* files, the running server's own); connections wait
     * in the backlog until the table is loaded and the loop runs */
    s->lfd = net_listen(s->me->host, s->me->port, 4096, err, errlen);
    if (s->lfd < 0) return -1;
    snapshot_load(s);
    s->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s->cold_fd = epoll_create1(EPOLL_CLOEXEC);
    if (s->cold_fd < 0) {
        snprintf(err, errlen, "epoll_create1: %s", strerror(errno));
        return -1;
    }
    pollset_add(s, s->lfd, POLLIN, NULL);
    pollset_add(s, s->sig_r, POLLIN, NULL);
    pollset_add(s, s->cold_fd, POLLIN, NULL);
    pollset_add(s, -1, POLLIN, NULL);             /* SERVER_RESOLVER_SLOT */
    char bound[NET_ADDRSTRLEN];
    net_sockname(s->lfd, bound, sizeof bound);
    log_msg(LOG_INFO, "listening", "server=%s addr=%s host=%s provider=%s places=%zu "
            "max_clients=%d fd_limit=%ld pid=%ld",
            s->me->name, bound, s->me->host,
            config_provider_name(cfg->places.provider), s->places.n,
            s->max_clients, fds, (long)getpid());
    return 0;
}

/* ---------------------------------------------------------------- timers
 *
 * Every timed job of the loop in one table, as Redis's ae keeps its time
 * events: each entry says when it is next due, on the loop's clock
 * (s->now_ms; -1: nothing to do), and its run() does what is due then.
 * server_run polls until the first is due, then runs, in table order,
 * each that is due -- asked again just before, since an earlier one may
 * have changed it (a sweep that closes a link makes forward's LINK state
 * due).  Then the links are flushed, replies written, the dead reaped.
 */

static int64_t sweep_due(const server *s) { return s->next_sweep_ms; }

static int64_t table_due(const server *s) { return table_next_tick(&s->tab); }
static void table_run(server *s) { table_tick(&s->tab, s->now_ms); }

static int64_t heartbeat_due(const server *s) {
    return s->hb_fd >= 0 ? s->next_beat_ms : -1;
}

/* The log counts on the wall clock (common/log.c); converted here. */
static int64_t log_due(const server *s) {
    int t = log_next_flush_ms(log_now_ms());
    return t < 0 ? -1 : s->now_ms + t;
}
static void log_run(server *s) { (void)s; log_tick(log_now_ms()); }

static int64_t http_due(const server *s) {
    int t = s->google ? http_timeout(&s->http, s->now_ms) : -1;
    return t < 0 ? -1 : s->now_ms + t;
}

typedef struct {
    const char *name;
    int64_t (*next_due)(const server *s);
    void (*run)(server *s);         /* NULL: acted on elsewhere (see http) */
} loop_timer;

static const loop_timer timers[] = {
    {"sweep", sweep_due, sweep_clients},        /* idle, drains, handshakes, cold */
    {"table", table_due, table_run},            /* the table-full summary */
    {"snapshot", snapshot_next_due, snapshot_tick},
    {"metrics", metrics_next_due, metrics_tick},
    {"resolver", resolver_next_due, resolver_tick},
    {"peer", peer_next_due, peer_tick},         /* dials, catch-up streams */
    {"forward", forward_next_due, forward_tick},  /* LINK states, SUMs, stats */
    {"heartbeat", heartbeat_due, heartbeat},
    {"log", log_due, log_run},
    /* libcurl's timer: http_poll_done() acts on it with its sockets, right
     * after poll(), as libcurl wants (server/http.c) */
    {"http", http_due, NULL},
};

int server_timer_wait(const server *s) {
    int64_t first = -1;
    for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
        int64_t due = timers[i].next_due(s);
        if (due >= 0 && (first < 0 || due < first)) first = due;
    }
    if (first < 0) return -1;
    int64_t t = first - s->now_ms;
    return t < 0 ? 0 : t > INT_MAX ? INT_MAX : (int)t;
}

void server_timers_run(server *s) {
    for (size_t i = 0; i < sizeof timers / sizeof *timers; i++) {
        if (!timers[i].run) continue;
        int64_t due = timers[i].next_due(s);
        if (due >= 0 && due <= s->now_ms) timers[i].run(s);
    }
}

int server_run(server *s) {
    s->now_ms = mono_ms();
    s->next_sweep_ms = s->now_ms + SWEEP_MS;
    while (!s->stop) {
        int tls_ready = 0;   /* links with decrypted bytes waiting in OpenSSL */
        for (size_t i = SERVER_FIRST_CLIENT; i < s->npfd; i++) {
            client *c = s->conn[i];
            short ev = 0;
            if (c->connecting) ev = POLLOUT;
            else if (c->tls_hs) ev = c->tls_want_write ? POLLOUT : POLLIN;
            /* a dead one too: what it has to read ends the wait, so it is
             * reaped this round */
            else if (c->state != CONN_CLOSING && !c->waiting) ev |= POLLIN;
            if (buf_pending(&c->out) || c->tls_want_write) ev |= POLLOUT;
            if (c->tls_more && c->state != CONN_CLOSING) tls_ready = 1;
            s->pfd[i].events = ev;
        }
        /* libcurl's sockets ride at the end of the poll set */
        size_t nh = 0;
        if (s->google) {
            while (s->cap < s->npfd + s->http.n) {
                s->cap *= 2;
                s->pfd = xrealloc(s->pfd, s->cap * sizeof *s->pfd);
                s->conn = xrealloc(s->conn, s->cap * sizeof *s->conn);
            }
            nh = http_fill_poll(&s->http, s->pfd + s->npfd);
        }
        int n = poll(s->pfd, s->npfd + nh, tls_ready ? 0 : server_timer_wait(s));
        if (n < 0 && errno != EINTR) {
            log_msg(LOG_ERROR, "poll", "%s", strerror(errno));
            break;
        }
        s->now_ms = mono_ms();
        if (s->google) http_poll_done(&s->http, s->pfd + s->npfd, n > 0 ? nh : 0, s->now_ms);
        if (n > 0 || (n == 0 && tls_ready)) {
            if (s->pfd[1].revents) handle_signals(s);
            if (s->pfd[2].revents) warm_clients(s);
            if (s->pfd[SERVER_RESOLVER_SLOT].revents) resolver_read(s);
            for (size_t i = SERVER_FIRST_CLIENT; i < s->npfd; i++) {
                short re = s->pfd[i].revents;
                client *c = s->conn[i];
                if (c->ssl && c->state != CONN_CLOSING && (c->tls_more || (c->tls_want_write && re)))
                    re |= POLLIN;      /* read without waiting, or retry the read */
                if (!re || c->state == CONN_DEAD) continue;
                if (c->connecting) {
                    peer_connected(s, c);
                    continue;
                }
                if (c->tls_hs) {
                    peer_tls_step(s, c);
                    continue;
                }
                if (re & (POLLIN | POLLHUP | POLLERR)) client_read(s, c);
                if (c->state != CONN_DEAD && (re & POLLOUT)) client_write(s, c);
            }
        }
        server_timers_run(s);
        peer_flush(s);
        write_queued(s);
        reap_clients(s);
        /* after the reap, so closed connections free their slots first */
        if (n > 0 && (s->pfd[0].revents & POLLIN)) accept_clients(s);
    }
    return 0;
}

void server_free(server *s) {
    while (s->ncold) {
        client *c = s->cold[0];
        cold_remove(s, c);
        c->state = CONN_DEAD;
        c->close_reason = "server stopping";
        client_free(s, c);
    }
    for (size_t i = SERVER_FIRST_CLIENT; i < s->npfd; i++)
        client_kill(s, s->conn[i], "server stopping");
    reap_clients(s);
    free(s->cold);
    free(s->wq);
    if (s->cold_fd >= 0) close(s->cold_fd);
    if (s->me) forward_log_stats(s);
    log_msg(LOG_INFO, "stopped", "server=%s", s->me ? s->me->name : "?");
    log_close();
    if (s->lfd >= 0) close(s->lfd);
    if (s->sig_r >= 0) close(s->sig_r);
    if (s->sig_w >= 0) close(s->sig_w);
    if (s->spare_fd >= 0) close(s->spare_fd);
    if (s->hb_fd >= 0) close(s->hb_fd);
    resolver_free(s);
    addrcap_free(&s->per_addr);
    free(s->pfd);
    free(s->conn);
    google_free(s);
    tls_free(s);
    table_free(&s->tab);
    places_local_free(&s->places);
}
