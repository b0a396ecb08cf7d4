/* test_resolver.c -- a question to a resolver helper that is gone.
 *
 * Alpha dials two neighbours named by a host name: each dial sends one
 * question to the helper process (server/resolver.c).  When the helper dies
 * between the poll and the next dial, that dial's send fails and the
 * helper is stopped; the question sent before for the other link must fail
 * too, as a dial failure tried again after the back-off.  It stayed
 * "resolving" for ever: that link was never dialled again.  The same for
 * a helper that is alive but answers nothing.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "log.h"
#include "server.h"

static char dir[64];

/* A port free on loopback now, for Alpha's listener. */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, len) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static int load(config *cfg) {
    char cwd[1024], text[4096], err[256];
    int port = free_port();
    if (!getcwd(cwd, sizeof cwd) || port < 0) return -1;
    /* the ports are never dialled: each link's dial stops at the lookup */
    int n = snprintf(text, sizeof text,
                     "servers:\n"
                     "  Alpha: {host: 127.0.0.1, port: %d, neighbors: [Beta, Gamma]}\n"
                     "  Beta: {host: localhost, port: 1, neighbors: [Alpha]}\n"
                     "  Gamma: {host: localhost, port: 2, neighbors: [Alpha]}\n"
                     "places: {local_file: %s/data/places.geojson}\n"
                     "logging: {dir: %s}\n"
                     "herd: {state_dir: %s}\n",
                     port, cwd, dir, dir);
    if (config_load_text("unit.yml", text, (size_t)n, cfg, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

/* A helper that answers nothing (stopped, or stuck in a lookup) is killed
 * after a minute: its questions fail, the links are dialled again.  They
 * waited for ever, and nothing was logged. */
static void test_stopped_helper(server *s) {
    s->now_ms += 10000;   /* both links due again */
    peer_tick(s);
    CHECK(s->links[0].resolving && s->links[1].resolving && s->resolver_fd >= 0,
          "both names asked of a new helper");
    pid_t helper = s->resolver_pid;
    kill(helper, SIGSTOP);
    int t = peer_poll_timeout(s);
    CHECK(t > 0 && t <= 60000, "the loop wakes in time to give up (in %d ms)", t);
    s->now_ms += 59000;
    peer_tick(s);
    CHECK(s->links[0].resolving && s->resolver_pid == helper, "a slow lookup is waited for");
    s->now_ms += 1000;
    peer_tick(s);
    CHECK(!s->links[0].resolving && !s->links[1].resolving,
          "a minute without an answer fails the questions (resolving %d %d)",
          s->links[0].resolving, s->links[1].resolving);
    CHECK(s->resolver_fd < 0 && kill(helper, 0) < 0, "the stopped helper is killed and reaped");
    CHECK(s->links[0].failures == 2 && s->links[0].next_dial_ms > s->now_ms,
          "Beta is dialled again after the back-off (failures %d)", s->links[0].failures);
    if (s->resolver_fd >= 0) kill(helper, SIGCONT);
}

int main(int argc, char **argv) {
    /* the helper runs this program again (resolver.c), as herd-server */
    if (argc == 3 && !strcmp(argv[1], RESOLVER_ARG)) return resolver_main(argv[2]);
    alarm(20);
    signal(SIGPIPE, SIG_IGN);
    strcpy(dir, "/tmp/herdresXXXXXX");
    if (!mkdtemp(dir)) return 2;
    setenv("HERD_SECRET", "unit-test-secret-unit-test-secret", 1);
    static config cfg;
    static server s;
    char err[512];
    if (load(&cfg) < 0) return 2;
    if (server_init(&s, &cfg, 0, err, sizeof err) < 0) {
        fprintf(stderr, "server_init: %s\n", err);
        return 2;
    }
    CHECK(s.n_links == 2 && s.links[0].dialer && s.links[1].dialer, "Alpha dials both");
    /* the first dial asks the helper (started now); the second waits */
    s.now_ms = mono_ms();
    s.links[1].next_dial_ms = s.now_ms + 60000;
    peer_tick(&s);
    CHECK(s.links[0].resolving && s.resolver_fd >= 0, "Beta's name is being looked up");
    /* the helper dies; the loop has not polled since */
    kill(s.resolver_pid, SIGKILL);
    struct pollfd p = {.fd = s.resolver_fd, .events = POLLIN};
    while (poll(&p, 1, 5000) == 1 && !(p.revents & POLLHUP)) {
        char b[1024];   /* Beta's answer may have come first */
        if (recv(s.resolver_fd, b, sizeof b, MSG_DONTWAIT) < 0) break;
    }
    CHECK(p.revents & POLLHUP, "the helper is gone");
    s.links[1].next_dial_ms = s.now_ms;
    peer_tick(&s);          /* Gamma's question cannot be sent */
    CHECK(s.resolver_fd < 0, "the helper was stopped");
    CHECK(!s.links[1].resolving && s.links[1].failures == 1, "Gamma's dial failed");
    CHECK(!s.links[0].resolving, "Beta's question failed with it (resolving %d)",
          s.links[0].resolving);
    CHECK(s.links[0].failures == 1 && s.links[0].next_dial_ms > s.now_ms,
          "Beta is dialled again after the back-off (failures %d)", s.links[0].failures);
    CHECK(peer_poll_timeout(&s) >= 0, "the loop wakes for the next dial");
    test_stopped_helper(&s);
    s.stop = 1;
    server_free(&s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) { /* a leftover in /tmp only */ }
    return check_report("resolver");
}
