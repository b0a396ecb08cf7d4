/* http.h -- libcurl's multi interface driven by the server's poll() loop.
 *
 * libcurl tells us through CURLMOPT_SOCKETFUNCTION which sockets to watch
 * and through CURLMOPT_TIMERFUNCTION when to wake it; the loop adds those
 * sockets to its poll set, calls http_poll_done() with what happened, and
 * http_poll_done() drains curl_multi_info_read() and hands each finished
 * transfer to its owner's callback.  No thread, no blocking call.
 */
#ifndef HERD_HTTP_H
#define HERD_HTTP_H

#include <curl/curl.h>
#include <poll.h>
#include <stdint.h>

/* At most this many connections at once; with the resolver's socket pair
 * per connection being set up and libcurl's own wake-up pair, the
 * descriptors libcurl may hold are bounded by HTTP_MAX_FDS. */
#define HTTP_MAX_CONNS 32
#define HTTP_MAX_FDS (3 * HTTP_MAX_CONNS + 4)

typedef void (*http_done_fn)(CURL *easy, CURLcode result, void *arg);

typedef struct {
    curl_socket_t fd;
    short events;
} http_sock;

typedef struct {
    CURLM *multi;
    http_sock *socks;
    size_t n, cap;
    int64_t deadline_ms;        /* monotonic; -1: no timer */
    http_done_fn done;
    void *done_arg;
} http;

int http_init(http *h, http_done_fn done, void *arg);
void http_free(http *h);

/* Start a transfer; the easy handle is owned by the caller until 'done'. */
int http_add(http *h, CURL *easy);

/* Append the sockets to watch to pfd (room for h->n entries). */
size_t http_fill_poll(const http *h, struct pollfd *pfd);

/* Milliseconds to libcurl's timer, or -1. */
int http_timeout(const http *h, int64_t now_ms);

/* After poll(): act on pfd[0..n) (as filled) and on an expired timer. */
void http_poll_done(http *h, const struct pollfd *pfd, size_t n, int64_t now_ms);

#endif
