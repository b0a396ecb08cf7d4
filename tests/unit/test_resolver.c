/* test_resolver.c -- a question to a resolver helper that is gone.
 *
 * Alpha dials two neighbours named by a host name: each dial sends one
 * question to the helper process (server/resolver.c).  When the helper dies
 * between the poll and the next dial, that dial's send fails and the
 * helper is stopped; the question sent before for the other link must fail
 * too, as a dial failure tried again after the back-off.  It stayed
 * "resolving" for ever: that link was never dialled again.  The same for
 * a helper that is alive but answers nothing.  And a helper killed that
 * cannot be reaped at once (held by a tracer here, as one stuck in the
 * kernel is) does not hold the loop: it waited in waitpid until it went.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "log.h"
#include "peer.h"
#include "resolver.h"
#include "server.h"

#define RESOLVER_TEST_STUCK_MS 60000   /* resolver.c's RESOLVER_STUCK_MS */

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

/* Turn the resolver's timer, when it is due as the loop would, until
 * helper is reaped, for up to 5 s; true when it was.  The clock goes on
 * from where the test put it, at the real pace (like the loop's, it never
 * goes back); the links' dials wait, as the checks after expect. */
static int reaped(server *s, pid_t helper) {
    int64_t start = mono_ms(), from = s->now_ms;
    while (kill(helper, 0) == 0 && mono_ms() < start + 5000) {
        usleep(10 * 1000);
        s->now_ms = from + (mono_ms() - start);
        int64_t due = resolver_next_due(s);
        if (due >= 0 && due <= s->now_ms) resolver_tick(s);
    }
    return kill(helper, 0) < 0;
}

/* A helper that answers nothing (stopped, or stuck in a lookup) is killed
 * after a minute: its questions fail, the links are dialled again.  They
 * waited for ever, and nothing was logged. */
static void test_stopped_helper(server *s) {
    s->now_ms += 10000;   /* both links due again */
    server_timers_run(s);
    CHECK(s->links[0].resolving && s->links[1].resolving && s->resolver_fd >= 0,
          "both names asked of a new helper");
    pid_t helper = s->resolver_pid;
    kill(helper, SIGSTOP);
    int64_t t = resolver_next_due(s) - s->now_ms;
    CHECK(t > 0 && t <= 60000, "the loop wakes in time to give up (in %lld ms)", (long long)t);
    s->now_ms += 59000;
    server_timers_run(s);
    CHECK(s->links[0].resolving && s->resolver_pid == helper, "a slow lookup is waited for");
    s->now_ms += 1000;
    server_timers_run(s);
    CHECK(!s->links[0].resolving && !s->links[1].resolving,
          "a minute without an answer fails the questions (resolving %d %d)",
          s->links[0].resolving, s->links[1].resolving);
    int64_t gave_up = s->now_ms;
    CHECK(s->resolver_fd < 0 && reaped(s, helper), "the stopped helper is killed and reaped");
    CHECK(s->links[0].failures == 2 && s->links[0].next_dial_ms > gave_up,
          "Beta is dialled again after the back-off (failures %d)", s->links[0].failures);
    if (s->resolver_fd >= 0) kill(helper, SIGCONT);
}

/* Another process traces the helper (PTRACE_SEIZE) and never waits for
 * it: once killed, the helper's end is the tracer's to collect first, so
 * the server cannot reap it (as with one stuck in the kernel).  Giving up
 * on it must not wait for that; it is reaped from the loop once the
 * tracer goes.  Returns the tracer's pid after it attached, or -1. */
static pid_t trace(pid_t helper) {
    int p[2];
    if (pipe(p) < 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);   /* gone with the test, whatever happens */
        char ok = ptrace(PTRACE_SEIZE, helper, 0, 0) == 0;
        if (write(p[1], &ok, 1) < 0) _exit(1);
        for (;;) pause();
    }
    close(p[1]);
    char ok = 0;
    if (pid < 0 || read(p[0], &ok, 1) != 1 || !ok) {
        if (pid > 0) kill(pid, SIGKILL), waitpid(pid, NULL, 0);
        pid = -1;
    }
    close(p[0]);
    return pid;
}

static void test_helper_not_reaped_at_once(server *s) {
    s->now_ms = mono_ms();
    s->links[0].next_dial_ms = s->now_ms;   /* Beta due again */
    server_timers_run(s);
    CHECK(s->links[0].resolving && s->resolver_fd >= 0, "a new helper is asked");
    pid_t helper = s->resolver_pid;
    pid_t tracer = trace(helper);
    CHECK(tracer > 0, "a tracer holds the helper");
    if (tracer < 0) return;
    kill(helper, SIGSTOP);
    s->now_ms += RESOLVER_TEST_STUCK_MS;
    int64_t t0 = mono_ms();
    server_timers_run(s);         /* gives up on it: kills it */
    int64_t took = mono_ms() - t0;
    CHECK(took < 500, "giving up on a helper not reaped at once took %lld ms",
          (long long)took);
    CHECK(!s->links[0].resolving && s->resolver_fd < 0, "its questions failed");
    int64_t t = resolver_next_due(s) - s->now_ms;
    CHECK(t >= 0 && t <= 1000, "the loop wakes to reap it (in %lld ms)", (long long)t);
    kill(tracer, SIGKILL);
    waitpid(tracer, NULL, 0);
    CHECK(reaped(s, helper), "reaped from the loop once it could be");
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
    server_timers_run(&s);
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
    server_timers_run(&s);          /* Gamma's question cannot be sent */
    CHECK(s.resolver_fd < 0, "the helper was stopped");
    CHECK(!s.links[1].resolving && s.links[1].failures == 1, "Gamma's dial failed");
    CHECK(!s.links[0].resolving, "Beta's question failed with it (resolving %d)",
          s.links[0].resolving);
    CHECK(s.links[0].failures == 1 && s.links[0].next_dial_ms > s.now_ms,
          "Beta is dialled again after the back-off (failures %d)", s.links[0].failures);
    CHECK(peer_next_due(&s) >= 0, "the loop wakes for the next dial");
    test_stopped_helper(&s);
    test_helper_not_reaped_at_once(&s);
    s.stop = 1;
    server_free(&s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) { /* a leftover in /tmp only */ }
    return check_report("resolver");
}
