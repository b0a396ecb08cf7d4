/* http.c -- libcurl multi in our poll() loop; see http.h. */
#include "http.h"

#include <string.h>
#include <time.h>

#include "clock.h"
#include "xalloc.h"

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
    (void)easy;
    (void)socketp;
    http *h = userp;
    size_t i;
    for (i = 0; i < h->n; i++)
        if (h->socks[i].fd == fd) break;
    if (what == CURL_POLL_REMOVE) {
        if (i < h->n) h->socks[i] = h->socks[--h->n];
        return 0;
    }
    if (i == h->n) {
        if (h->n == h->cap) {
            h->cap = h->cap ? h->cap * 2 : 16;
            h->socks = xrealloc(h->socks, h->cap * sizeof *h->socks);
        }
        h->socks[h->n++].fd = fd;
    }
    short ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) ev |= POLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) ev |= POLLOUT;
    h->socks[i].events = ev;
    return 0;
}

/* Only remember when to wake; libcurl is never called from here. */
static int on_timer(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    http *h = userp;
    h->deadline_ms = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    return 0;
}

int http_init(http *h, http_done_fn done, void *arg) {
    memset(h, 0, sizeof *h);
    h->deadline_ms = -1;
    h->done = done;
    h->done_arg = arg;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -1;
    h->multi = curl_multi_init();
    if (!h->multi) return -1;
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)HTTP_MAX_CONNS);
    curl_multi_setopt(h->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)HTTP_MAX_CONNS);
    return 0;
}

int http_add(http *h, CURL *easy) {
    return curl_multi_add_handle(h->multi, easy) == CURLM_OK ? 0 : -1;
}

size_t http_fill_poll(const http *h, struct pollfd *pfd) {
    for (size_t i = 0; i < h->n; i++)
        pfd[i] = (struct pollfd){.fd = h->socks[i].fd, .events = h->socks[i].events};
    return h->n;
}

int http_timeout(const http *h, int64_t now_ms) {
    if (h->deadline_ms < 0) return -1;
    return h->deadline_ms <= now_ms ? 0 : (int)(h->deadline_ms - now_ms);
}

static void drain(http *h) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *easy = m->easy_handle;
        CURLcode rc = m->data.result;
        curl_multi_remove_handle(h->multi, easy);
        h->done(easy, rc, h->done_arg);
    }
}

void http_poll_done(http *h, const struct pollfd *pfd, size_t n, int64_t now_ms) {
    int running;
    for (size_t i = 0; i < n; i++) {
        if (!pfd[i].revents) continue;
        int ev = 0;
        if (pfd[i].revents & (POLLIN | POLLHUP)) ev |= CURL_CSELECT_IN;
        if (pfd[i].revents & POLLOUT) ev |= CURL_CSELECT_OUT;
        if (pfd[i].revents & (POLLERR | POLLNVAL)) ev |= CURL_CSELECT_ERR;
        curl_multi_socket_action(h->multi, pfd[i].fd, ev, &running);
    }
    if (h->deadline_ms >= 0 && now_ms >= h->deadline_ms) {
        h->deadline_ms = -1;
        curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    drain(h);
}

void http_free(http *h) {
    if (h->multi) curl_multi_cleanup(h->multi);
    free(h->socks);
    curl_global_cleanup();
    memset(h, 0, sizeof *h);
}
