/* test_net_edges.c -- the error and edge paths of common/net.c: names that
 * do not resolve, a port already taken, a connect refused at once, sockets
 * that are neither IPv4 nor IPv6, which IPv6 forms count as this machine,
 * and what happens when no descriptor is left (RLIMIT_NOFILE lowered in a
 * forked child, so this process keeps its limit).  Every failure must say
 * why, in the words of net.c, and leave no descriptor open. */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "net.h"

#define NOWHERE "nonexistent.invalid"

/* The lowest descriptor free now: what the next open would get. */
static int next_fd(void) {
    int fd = dup(0);
    if (fd >= 0) close(fd);
    return fd;
}

/* "cannot resolve 'host': <resolver's reason>", the reason one of those a
 * name that does not exist can get (no such name, or no resolver here). */
static int is_resolve_error(const char *err, const char *host) {
    char want[512];
    static const int codes[] = {EAI_NONAME, EAI_AGAIN, EAI_FAIL, EAI_NODATA};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        snprintf(want, sizeof want, "cannot resolve '%s': %s", host, gai_strerror(codes[i]));
        if (!strcmp(err, want)) return 1;
    }
    return 0;
}

/* A socket address that is neither IPv4 nor IPv6 is written "?"; so is the
 * name of a descriptor that is no socket. */
static void test_other_families(void) {
    char out[NET_ADDRSTRLEN] = "unchanged";
    struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "/tmp/x"};
    net_format_sa((struct sockaddr *)&un, out, sizeof out);
    CHECK_STR(out, "?");
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair: %s", strerror(errno));
    strcpy(out, "unchanged");
    net_sockname(sv[0], out, sizeof out);
    CHECK_STR(out, "?");
    close(sv[0]);
    close(sv[1]);
    strcpy(out, "unchanged");
    net_sockname(-1, out, sizeof out);          /* getsockname fails */
    CHECK_STR(out, "?");
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(65535)};
    inet_pton(AF_INET6, "2001:db8::7", &s6.sin6_addr);
    net_format_sa((struct sockaddr *)&s6, out, sizeof out);
    CHECK_STR(out, "[2001:db8::7]:65535");
}

/* A name that does not resolve: every entry point says so, in the same
 * words, and opens nothing. */
static void test_unresolvable(void) {
    char err[512] = "";
    struct sockaddr_storage sa;
    socklen_t len;
    int before = next_fd();
    CHECK(net_resolve(NOWHERE, 1, &sa, &len, err, sizeof err) == -1, "resolve");
    CHECK(is_resolve_error(err, NOWHERE), "resolve: %s", err);
    err[0] = 0;
    CHECK(net_listen(NOWHERE, 0, 8, err, sizeof err) == -1, "listen");
    CHECK(is_resolve_error(err, NOWHERE), "listen: %s", err);
    err[0] = 0;
    CHECK(net_connect(NOWHERE, 9, err, sizeof err) == -1, "connect");
    CHECK(is_resolve_error(err, NOWHERE), "connect: %s", err);
    CHECK(net_literal(NOWHERE, 9, &sa, &len) == -1, "a name taken for a literal");
    err[0] = 0;
    CHECK(net_is_local(NOWHERE, err, sizeof err) == -1, "is_local");
    CHECK(is_resolve_error(err, NOWHERE), "is_local: %s", err);
    CHECK(next_fd() == before, "descriptor leaked: next %d, was %d", next_fd(), before);
}

/* A port somebody listens on: refused with the address, the reason and
 * who holds it (this test), IPv4 and IPv6 alike, and the socket made for
 * it is closed. */
static void test_port_taken(const char *host, const char *shown) {
    char err[512] = "", bound[NET_ADDRSTRLEN], want[600];
    int l = net_listen(host, 0, 8, err, sizeof err);
    CHECK(l >= 0, "listen %s: %s", host, err);
    if (l < 0) return;
    net_sockname(l, bound, sizeof bound);
    int port = atoi(strrchr(bound, ':') + 1);
    int before = next_fd();
    CHECK(net_listen(host, port, 8, err, sizeof err) == -1, "second listen on %s", bound);
    snprintf(want, sizeof want, "cannot listen on %s:%d: %s (held by pid %ld (test_net_edges))",
             shown, port, strerror(EADDRINUSE), (long)getpid());
    CHECK_STR(err, want);
    CHECK(next_fd() == before, "descriptor leaked: next %d, was %d", next_fd(), before);
    close(l);
}

/* A connect the kernel refuses at once (TCP to a broadcast address): -1
 * with the address dialled and the reason, the socket closed. */
static void test_connect_refused_at_once(void) {
    char err[512] = "", addr[NET_ADDRSTRLEN] = "", want[600];
    struct sockaddr_storage sa;
    socklen_t len;
    CHECK(net_literal("255.255.255.255", 9, &sa, &len) == 0, "a literal");
    int before = next_fd();
    int fd = net_connect_sa(&sa, len, addr, sizeof addr, err, sizeof err);
    CHECK(fd == -1, "connect to broadcast gave fd %d", fd);
    if (fd >= 0) close(fd);
    CHECK_STR(addr, "255.255.255.255:9");
    snprintf(want, sizeof want, "connect to 255.255.255.255:9: %s", strerror(ENETUNREACH));
    CHECK_STR(err, want);
    CHECK(next_fd() == before, "descriptor leaked: next %d, was %d", next_fd(), before);
}

/* The wildcards are this machine; IPv6 forms that are neither ::1 nor ::
 * (nor an interface's) are not, whichever of the four words differs. */
static void test_local_forms(void) {
    char err[256];
    static const struct { const char *host; int local; } cases[] = {
        {"0.0.0.0", 1},
        {"::", 1},
        {"::1", 1},
        {"0:0:0:0:0:0:0:1", 1},
        {"::2", 0},                     /* last word neither 0 nor 1 */
        {"::1:0", 0},                   /* third word non-zero, last zero */
        {"0:0:1::", 0},                 /* second word */
        {"0:1::1", 0},                  /* first word */
        {"::ffff:127.0.0.1", 0},        /* v4-mapped: not one of the forms net.h lists */
        {"198.51.100.1", 0},            /* TEST-NET-2 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        int r = net_is_local(cases[i].host, err, sizeof err);
        CHECK(r == cases[i].local, "%s: %d, want %d (%s)", cases[i].host, r, cases[i].local, err);
    }
}

/* Every address of every interface is this machine's, IPv4 and IPv6. */
static void test_interface_addresses(void) {
    struct ifaddrs *ifs;
    char text[INET6_ADDRSTRLEN], err[256] = "";
    int seen = 0;
    CHECK(getifaddrs(&ifs) == 0, "getifaddrs: %s", strerror(errno));
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr) continue;
        int f = i->ifa_addr->sa_family;
        const void *a = NULL;
        if (f == AF_INET) a = &((struct sockaddr_in *)i->ifa_addr)->sin_addr;
        if (f == AF_INET6) a = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
        if (!a || !inet_ntop(f, a, text, sizeof text)) continue;
        seen++;
        CHECK(net_is_local(text, err, sizeof err) == 1, "%s (%s): not local: %s", text, i->ifa_name,
              err);
    }
    freeifaddrs(ifs);
    CHECK(seen > 0, "no interface address at all");
}

/* In a child: run 'body', exit with its failure count (exit(), not _exit,
 * so its coverage counts are written). */
static void in_child(const char *what, void (*body)(void)) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        check_failed = 0;
        body();
        exit(check_failed ? 1 : 0);
    }
    int st = 0;
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "%s: child failed (status %d)", what, st);
}

/* A soft limit under the hard one is raised to it, and the answer is the
 * limit now in force. */
static void raise_limit(void) {
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < 128) return;
    rl.rlim_cur = 64;
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s", strerror(errno));
    long got = net_raise_fd_limit();
    struct rlimit now;
    getrlimit(RLIMIT_NOFILE, &now);
    CHECK(now.rlim_cur == rl.rlim_max, "soft limit %llu, hard %llu",
          (unsigned long long)now.rlim_cur, (unsigned long long)rl.rlim_max);
    CHECK(got == (long)now.rlim_cur, "returned %ld, in force %llu", got,
          (unsigned long long)now.rlim_cur);
    /* already at the hard limit: unchanged */
    CHECK(net_raise_fd_limit() == got, "second call");
}

/* No descriptor left (the soft limit at the next one): listen and connect
 * say "socket: ...", the locality check says "getifaddrs: ...".  The soft
 * limit is raised again at the end (the child's coverage counts need a
 * descriptor). */
static void no_descriptor_left(void) {
    char err[512] = "", want[600];
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t hard = rl.rlim_max;
    rl.rlim_cur = (rlim_t)next_fd();
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0, "setrlimit: %s", strerror(errno));
    snprintf(want, sizeof want, "socket: %s", strerror(EMFILE));
    CHECK(net_listen("127.0.0.1", 0, 8, err, sizeof err) == -1, "listen");
    CHECK_STR(err, want);
    err[0] = 0;
    CHECK(net_connect("127.0.0.1", 9, err, sizeof err) == -1, "connect");
    CHECK_STR(err, want);
    err[0] = 0;
    snprintf(want, sizeof want, "getifaddrs: %s", strerror(EMFILE));
    CHECK(net_is_local("198.51.100.1", err, sizeof err) == -1, "is_local");
    CHECK_STR(err, want);
    /* loopback and the wildcard need no interface list */
    CHECK(net_is_local("127.0.0.1", err, sizeof err) == 1, "127.0.0.1");
    CHECK(net_is_local("::", err, sizeof err) == 1, "::");
    CHECK(net_raise_fd_limit() == (long)hard, "limit in force");
}

int main(void) {
    test_other_families();
    test_unresolvable();
    test_port_taken("127.0.0.1", "127.0.0.1");
    test_port_taken("::1", "[::1]");
    test_connect_refused_at_once();
    test_local_forms();
    test_interface_addresses();
    in_child("raise_limit", raise_limit);
    in_child("no_descriptor_left", no_descriptor_left);
    return check_report("net_edges");
}
