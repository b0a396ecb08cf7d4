/* test_ports.c -- common/ports.c: the range file's text, and the process
 * holding a port found through /proc (this test's own socket). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "ports.h"

static void test_parse_range(void) {
    static const struct { const char *text; int ok, lo, hi; } cases[] = {
        {"32768\t60999\n", 1, 32768, 60999},
        {"1024 65535", 1, 1024, 65535},
        {"40000 40000\n", 1, 40000, 40000},
        {"60999 32768\n", 0, 0, 0},   /* reversed */
        {"0 100\n", 0, 0, 0},
        {"1024 65536\n", 0, 0, 0},
        {"32768\n", 0, 0, 0},
        {"32768 60999 1\n", 0, 0, 0},
        {"", 0, 0, 0},
        {"a b", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int lo = -1, hi = -1;
        int rc = ports_parse_range(cases[i].text, &lo, &hi);
        CHECK(rc == (cases[i].ok ? 0 : -1), "'%s': rc %d", cases[i].text, rc);
        if (cases[i].ok) CHECK(lo == cases[i].lo && hi == cases[i].hi, "'%s': %d-%d",
                               cases[i].text, lo, hi);
    }
    int lo, hi;
    CHECK(ports_ephemeral_range(&lo, &hi) == 0 && lo <= hi, "this machine's range");
}

/* The warning names the port, the server and this machine's range; a port
 * just outside the range gets none. */
static void test_ephemeral_warning(void) {
    int lo, hi;
    char out[512] = "", want[512];
    if (ports_ephemeral_range(&lo, &hi) < 0) return;
    CHECK(ports_ephemeral_warning("Alpha", lo, out, sizeof out) == 1, "port %d", lo);
    snprintf(want, sizeof want, "port %d of Alpha is in the ephemeral range %d-%d "
             "(net.ipv4.ip_local_port_range): an outgoing connection may hold it when Alpha "
             "restarts", lo, lo, hi);
    CHECK_STR(out, want);
    CHECK(ports_ephemeral_warning("Alpha", hi, out, sizeof out) == 1, "port %d", hi);
    if (lo > 1) CHECK(ports_ephemeral_warning("Alpha", lo - 1, out, sizeof out) == 0, "below");
    if (hi < 65535) CHECK(ports_ephemeral_warning("Alpha", hi + 1, out, sizeof out) == 0, "above");
}

/* A socket listening on 127.0.0.1, port chosen by the kernel; its port. */
static int listen_any(int *port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, len) < 0 || listen(fd, 1) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    *port = ntohs(a.sin_port);
    return fd;
}

static void test_holder_is_this_process(void) {
    int port, fd = listen_any(&port);
    CHECK(fd >= 0, "listen");
    if (fd < 0) return;
    unsigned long *inodes;
    size_t n;
    CHECK(ports_inodes(port, 1, &inodes, &n) == 0 && n == 1, "one LISTEN entry");
    if (n == 1) {
        CHECK(ports_pid_holds((long)getpid(), inodes, n) == 1, "this process holds it");
        CHECK(ports_pid_holds((long)getppid(), inodes, n) == 0, "the parent does not");
    }
    free(inodes);
    char out[128], want[128];
    ports_holder(port, out, sizeof out);
    snprintf(want, sizeof want, "held by pid %ld (test_ports)", (long)getpid());
    CHECK_STR(out, want);
    close(fd);
    ports_holder(port, out, sizeof out);      /* nobody now */
    CHECK_STR(out, "");
}

int main(void) {
    test_parse_range();
    test_ephemeral_warning();
    test_holder_is_this_process();
    return check_report("test_ports");
}
