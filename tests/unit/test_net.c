/* test_net.c -- addresses: literals parsed without a lookup, the IPv4-first
 * rule for names, "[v6]:port" text, which hosts are this machine's, and a
 * real listen/connect/accept over IPv4 and IPv6 loopback. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "net.h"

static void test_format(void) {
    char out[NET_ADDRSTRLEN];
    net_format("::1", 10099, out, sizeof out);
    CHECK_STR(out, "[::1]:10099");
    net_format("10.0.0.1", 80, out, sizeof out);
    CHECK_STR(out, "10.0.0.1:80");
    net_format("host.example", 80, out, sizeof out);
    CHECK_STR(out, "host.example:80");
}

static void test_resolve(void) {
    struct sockaddr_storage sa;
    socklen_t len;
    char err[256], out[NET_ADDRSTRLEN];
    CHECK(net_resolve("::1", 7, &sa, &len, err, sizeof err) == 0 && sa.ss_family == AF_INET6,
          "::1: %s", err);
    net_format_sa((struct sockaddr *)&sa, out, sizeof out);
    CHECK_STR(out, "[::1]:7");
    CHECK(net_resolve("127.0.0.1", 8, &sa, &len, err, sizeof err) == 0 &&
          sa.ss_family == AF_INET && len == sizeof(struct sockaddr_in), "127.0.0.1: %s", err);
    /* localhost: the first IPv4 answer, whatever order getaddrinfo gives */
    CHECK(net_resolve("localhost", 9, &sa, &len, err, sizeof err) == 0, "localhost: %s", err);
    net_format_sa((struct sockaddr *)&sa, out, sizeof out);
    CHECK_STR(out, "127.0.0.1:9");
    CHECK(net_resolve("no-such-host.invalid", 9, &sa, &len, err, sizeof err) < 0 &&
          strstr(err, "cannot resolve 'no-such-host.invalid'"), "%s", err);
}

static void test_local(void) {
    char err[256];
    CHECK(net_is_local("127.0.0.1", err, sizeof err) == 1, "127.0.0.1");
    CHECK(net_is_local("127.0.0.2", err, sizeof err) == 1, "127.0.0.2");
    CHECK(net_is_local("::1", err, sizeof err) == 1, "::1");
    CHECK(net_is_local("localhost", err, sizeof err) == 1, "localhost");
    CHECK(net_is_local("192.0.2.1", err, sizeof err) == 0, "192.0.2.1 (TEST-NET-1)");
    CHECK(net_is_local("2001:db8::1", err, sizeof err) == 0, "2001:db8::1 (documentation)");
    CHECK(net_is_local("no-such-host.invalid", err, sizeof err) == -1, "unresolvable");
}

/* listen on host, connect, accept: the accepted address's text and key. */
static void round_trip(const char *host, const char *want_prefix) {
    char err[256], addr[NET_ADDRSTRLEN], bound[NET_ADDRSTRLEN];
    int l = net_listen(host, 0, 8, err, sizeof err);
    CHECK(l >= 0, "listen %s: %s", host, err);
    if (l < 0) return;
    net_sockname(l, bound, sizeof bound);
    int port = atoi(strrchr(bound, ':') + 1);
    CHECK(strncmp(bound, want_prefix, strlen(want_prefix)) == 0 && port > 0, "bound %s", bound);
    int c = net_connect(host, port, err, sizeof err);
    CHECK(c >= 0, "connect %s: %s", host, err);
    struct pollfd p = {.fd = l, .events = POLLIN};
    poll(&p, 1, 2000);
    struct sockaddr_storage peer;
    memset(&peer, 0, sizeof peer);
    int a = net_accept(l, addr, sizeof addr, &peer);
    CHECK(a >= 0 && strncmp(addr, want_prefix, strlen(want_prefix)) == 0, "accepted %s", addr);
    CHECK(peer.ss_family == (strchr(want_prefix, '[') ? AF_INET6 : AF_INET), "peer family %d",
          peer.ss_family);
    if (a >= 0) close(a);
    if (c >= 0) close(c);
    close(l);
}

int main(void) {
    test_format();
    test_resolve();
    test_local();
    round_trip("127.0.0.1", "127.0.0.1:");
    round_trip("::1", "[::1]:");
    round_trip("localhost", "127.0.0.1:");
    return check_report("net");
}
