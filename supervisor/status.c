/* status.c -- herd-supervisor --status, the table the shell scripts and
 * `make status` read: for each of this machine's servers (local.c) its
 * pid, uptime, restarts, whether it serves, and its links.
 *
 * Nothing a file says is taken on trust: servers.pid and supervisor.state
 * may be stale, so a pid counts only when lock.c finds it a live child of
 * the live supervisor, and a server is up only when it runs (not stopped),
 * holds the listening socket on its port itself (/proc/net/tcp; taken as
 * so when its descriptors may not be read) and accepts a connection.  Its
 * links come from its metrics file, trusted for 5 s; --wait-links (the
 * start) waits up to LINKS_WAIT_MS for those between this machine's
 * servers.  --rates, printed after the table, is rates.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "net.h"
#include "ports.h"
#include "supervisor.h"

typedef struct {
    long pid;
    long long started_ms;
    int restarts;
    char state[16];
} srv_status;

/* The wall clock in milliseconds, for dates only: a file's age, an uptime
 * from the start time supervisor.state holds.  Deadlines use mono_ms. */
static int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True when host:port accepts a connection within 300 ms. */
static int listens(const char *host, int port) {
    char err[128];
    int fd = net_connect(host, port, err, sizeof err);
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int ok = 0;
    if (poll(&p, 1, 300) == 1) {
        int e = 0;
        socklen_t len = sizeof e;
        ok = getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0;
    }
    close(fd);
    return ok;
}

/* True when process pid holds a listening TCP socket on 'port': the port's
 * LISTEN entries in /proc/net/tcp and tcp6 (every one: other programs may
 * listen on the port too, on other addresses or with SO_REUSEPORT),
 * matched against the process's fds (common/ports.c); -1 when either
 * cannot be read.  A mere connect() would be fooled by another program on
 * the port. */
static int pid_listens(long pid, int port) {
    unsigned long *inodes;
    size_t n;
    if (ports_inodes(port, 1, &inodes, &n) < 0) return -1;
    int found = n ? ports_pid_holds(pid, inodes, n) : 0;
    free(inodes);
    return found;
}

/* True when the process is stopped (SIGSTOP, state T in /proc/PID/stat):
 * its port still accepts connections, but nobody is served.  The
 * supervisor replaces it after supervisor.hang_timeout_s. */
static int stopped(long pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && (paren[2] == 'T' || paren[2] == 't');
}

/* The server with this pid is up: it is the supervisor's child, runs (not
 * stopped), listens itself and answers. */
static int serving(long sup, long pid, const config_server *c) {
    if (!herd_is_server(pid, sup) || stopped(pid)) return 0;
    int own = pid_listens(pid, c->port);
    return own != 0 && listens(c->host, c->port);
}

/* servers.pid and supervisor.state into sup and st[]; -1 without a pid file.
 * Trust no pid in them without lock.c's checks: the files may be stale. */
static int read_files(const config *cfg, long *sup, srv_status *st) {
    char path[8192], name[128];
    long pid;
    memset(st, 0, sizeof *st * (size_t)cfg->n_servers);
    *sup = 0;
    snprintf(path, sizeof path, "%s/servers.pid", cfg->dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fscanf(f, "%127s %ld", name, &pid) == 2) {
        if (!strcmp(name, "supervisor")) *sup = pid;
        int i = config_find_server(cfg, name);
        if (i >= 0) st[i].pid = pid;
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/supervisor.state", cfg->herd.state_dir);
    f = fopen(path, "r");
    if (f) {
        long long started;
        int restarts;
        char state[16];
        while (fscanf(f, "%127s %ld %lld %d %15s", name, &pid, &started, &restarts, state) == 5) {
            int i = config_find_server(cfg, name);
            if (i < 0) continue;
            st[i].started_ms = started;
            st[i].restarts = restarts;
            snprintf(st[i].state, sizeof st[i].state, "%s", state);
        }
        fclose(f);
    }
    return 0;
}

int herd_server_serving(const config *cfg, int i, long *pid) {
    srv_status st[CONFIG_MAX_SERVERS];
    long sup;
    *pid = 0;
    if (read_files(cfg, &sup, st) < 0 || !sup || herd_supervisor_pid(cfg) != sup) return 0;
    *pid = st[i].pid;
    return serving(sup, st[i].pid, &cfg->servers[i]);
}

/* What the LINKS column says of a link. */
typedef enum { LS_UNKNOWN, LS_DOWN, LS_CONNECTING, LS_UP, LS_MISMATCH } link_state;

static const char *const link_word[] = {"?", "down", "connecting", "up", "mismatch"};

/* How long the start (--wait-links) waits for the links between this
 * machine's servers, once they all listen. */
#define LINKS_WAIT_MS 3000

/* The state of each neighbour k of server c into ls[k], from the gauges of
 * its metrics file <state_dir>/NAME.prom (rewritten every second):
 * proxyherd_link_up{peer="PEER"}, proxyherd_link_config_mismatch (up, but
 * the ends disagree on a setting that must agree) and
 * proxyherd_link_connecting (down, but being dialled or handshaking).
 * LS_UNKNOWN when the server does not run, its file is missing or older
 * than 5 s, or does not name the peer. */
static void link_states(const config *cfg, const config_server *c, int running,
                        link_state *ls) {
    char path[4200], line[512];
    static const char *const gauge[] = {"proxyherd_link_up{", "proxyherd_link_config_mismatch{",
                                        "proxyherd_link_connecting{"};
    int seen[3][CONFIG_MAX_SERVERS] = {{0}};   /* -1 absent, 0, 1 */
    for (int g = 0; g < 3; g++)
        for (int k = 0; k < c->n_neighbors; k++) seen[g][k] = -1;
    snprintf(path, sizeof path, "%s/%s.prom", cfg->herd.state_dir, c->name);
    struct stat sb;
    FILE *f = running && stat(path, &sb) == 0 && wall_ms() / 1000 - sb.st_mtime <= 5
                  ? fopen(path, "r") : NULL;
    while (f && fgets(line, sizeof line, f)) {
        int g = 0;
        while (g < 3 && strncmp(line, gauge[g], strlen(gauge[g]))) g++;
        const char *peer = strstr(line, "peer=\""), *end = strchr(line, '}');
        double v;
        if (g == 3 || !peer || !end || peer > end || sscanf(end + 1, "%lf", &v) != 1) continue;
        peer += 6;
        size_t len = strcspn(peer, "\"");
        for (int k = 0; k < c->n_neighbors; k++) {
            const char *name = cfg->servers[c->neighbors[k]].name;
            if (strlen(name) == len && !strncmp(name, peer, len)) seen[g][k] = v > 0;
        }
    }
    if (f) fclose(f);
    for (int k = 0; k < c->n_neighbors; k++)
        ls[k] = seen[0][k] < 0 ? LS_UNKNOWN
              : seen[0][k] ? (seen[1][k] > 0 ? LS_MISMATCH : LS_UP)
              : seen[2][k] > 0 ? LS_CONNECTING : LS_DOWN;
}

/* The LINKS column for server c: "PEER:STATE" for each neighbour (see
 * link_states), "-" for a server that does not run or has none. */
static void links_column(const config *cfg, const config_server *c, int running, char *out,
                         size_t n) {
    link_state ls[CONFIG_MAX_SERVERS];
    if (!running || !c->n_neighbors) {
        snprintf(out, n, "-");
        return;
    }
    link_states(cfg, c, running, ls);
    size_t w = 0;
    out[0] = '\0';
    for (int k = 0; k < c->n_neighbors && w < n; k++)
        w += (size_t)snprintf(out + w, n - w, "%s%s:%s", k ? "," : "",
                              cfg->servers[c->neighbors[k]].name, link_word[ls[k]]);
}

/* True when every link between two of this machine's servers reads as up
 * (or mismatch: up all the same) at both ends. */
static int local_links_up(const config *cfg, const int *local, const srv_status *st, long sup) {
    link_state ls[CONFIG_MAX_SERVERS];
    for (int i = 0; i < cfg->n_servers; i++) {
        const config_server *c = &cfg->servers[i];
        if (!local[i]) continue;
        link_states(cfg, c, herd_is_server(st[i].pid, sup), ls);
        for (int k = 0; k < c->n_neighbors; k++)
            if (local[c->neighbors[k]] && ls[k] != LS_UP && ls[k] != LS_MISMATCH) return 0;
    }
    return 1;
}

static void uptime(long long ms, char *out, size_t n) {
    long long s = ms / 1000;
    if (s < 120) snprintf(out, n, "%llds", s);
    else if (s < 7200) snprintf(out, n, "%lldm%02llds", s / 60, s % 60);
    else snprintf(out, n, "%lldh%02lldm", s / 3600, s / 60 % 60);
}

/* The table of --status: one row per server of this machine. */
static void print_table(const config *cfg, const int *local, const srv_status *st, long sup,
                        int up, int here) {
    printf("supervisor pid %ld; %d of %d servers listening", sup, up, here);
    if (here < cfg->n_servers)
        printf(" (%d more on other hosts)", cfg->n_servers - here);
    printf("\n%-12s %-21s %-8s %-9s %-8s %-9s %-24s %s\n", "NAME", "ADDRESS", "PID",
           "UPTIME", "RESTARTS", "LISTENING", "LINKS", "LOG");
    int64_t now = wall_ms();
    for (int i = 0; i < cfg->n_servers; i++) {
        if (!local[i]) continue;
        const config_server *c = &cfg->servers[i];
        char addr[300], up_s[32] = "-", pid_s[24] = "-", links[1024];
        net_format(c->host, c->port, addr, sizeof addr);
        int a = herd_is_server(st[i].pid, sup);
        if (a) snprintf(pid_s, sizeof pid_s, "%ld", st[i].pid);
        if (a && st[i].started_ms) uptime(now - st[i].started_ms, up_s, sizeof up_s);
        int l = serving(sup, st[i].pid, c);
        links_column(cfg, c, a, links, sizeof links);
        printf("%-12s %-21s %-8s %-9s %-8d %-9s %-24s %s/%s.log\n", c->name, addr, pid_s,
               up_s, st[i].restarts,
               l ? "yes" : a && stopped(st[i].pid) ? "stopped"
                         : st[i].state[0] ? st[i].state : "no",
               links, cfg->logging.dir, c->name);
    }
}

int supervisor_status(const config *cfg, int wait_s, int wait_links) {
    srv_status st[CONFIG_MAX_SERVERS];
    long sup = 0;
    int64_t deadline = mono_ms() + (int64_t)wait_s * 1000, links_deadline = 0;
    int up, local[CONFIG_MAX_SERVERS];
    int here = herd_local_servers(cfg, local, 0);
    if (here == 0) return 3;   /* it said why */
    for (;;) {
        long live = herd_supervisor_pid(cfg);
        if (read_files(cfg, &sup, st) < 0 || !live || live != sup) {
            printf("no herd is running (%s/servers.pid: %s)\n", cfg->dir,
                   sup ? "stale" : "missing");
            return 3;
        }
        up = 0;
        for (int i = 0; i < cfg->n_servers; i++)
            up += local[i] && serving(sup, st[i].pid, &cfg->servers[i]);
        if (up == here && wait_links && !links_deadline)
            links_deadline = mono_ms() + LINKS_WAIT_MS;
        if (up == here && (!links_deadline || mono_ms() >= links_deadline ||
                           local_links_up(cfg, local, st, sup)))
            break;
        if (up < here && mono_ms() >= deadline) break;
        usleep(100 * 1000);
    }
    print_table(cfg, local, st, sup, up, here);
    return up == here ? 0 : 1;
}
