/* status.c -- herd-supervisor --status and --init-secret: the read-only and
 * one-time helpers the shell scripts and `make status` use.  The status
 * covers this machine's servers (local.c) and their links, read from each
 * server's metrics file.  --rates reads each server's metrics file twice,
 * about a second apart (the servers rewrite it every second), and shows the
 * differences per second, timed by the files' own modification times.
 * --init-secret
 * creates the secret file when it is missing, replaces it when it is empty,
 * and refuses one that other users may read (common/secret.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "folder.h"
#include "net.h"
#include "secret.h"
#include "supervisor.h"

typedef struct {
    long pid;
    long long started_ms;
    int restarts;
    char state[16];
} srv_status;

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

/* The inodes of the LISTEN entries for 'port' in /proc/net/tcp and tcp6,
 * every one (other programs may listen on the port too, on other
 * addresses or with SO_REUSEPORT), in a malloc'ed array (*out, *n);
 * -1 when neither table can be read or memory runs out. */
static int listen_inodes(int port, unsigned long **out, size_t *n) {
    static const char *tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    unsigned long *inodes = NULL;
    size_t cap = 0;
    int read_any = 0;
    *n = 0;
    for (size_t t = 0; t < 2; t++) {
        FILE *f = fopen(tables[t], "r");
        if (!f) continue;   /* no tcp6 without IPv6 */
        read_any = 1;
        char line[512];
        while (fgets(line, sizeof line, f)) {
            unsigned lport, st;
            unsigned long inode;
            if (sscanf(line, " %*d: %*x:%x %*x:%*x %x %*x:%*x %*x:%*x %*x %*d %*d %lu",
                       &lport, &st, &inode) != 3 || (int)lport != port || st != 0x0A)
                continue;
            if (*n == cap) {
                unsigned long *more = realloc(inodes, (cap = cap ? cap * 2 : 16) * sizeof *more);
                if (!more) {
                    fclose(f);
                    free(inodes);
                    return -1;
                }
                inodes = more;
            }
            inodes[(*n)++] = inode;
        }
        fclose(f);
    }
    *out = inodes;
    if (!read_any) free(inodes);
    return read_any ? 0 : -1;
}

/* True when process pid holds a listening TCP socket on 'port': the port's
 * LISTEN entries in /proc/net/tcp, matched against the process's fds.  A
 * mere connect() would be fooled by another program on the port. */
static int pid_listens(long pid, int port) {
    unsigned long *inodes;
    size_t n;
    if (listen_inodes(port, &inodes, &n) < 0) return -1;
    int found = 0;
    for (int fd = 0; fd < 65536 && n && !found; fd++) {
        char path[64], target[64];
        snprintf(path, sizeof path, "/proc/%ld/fd/%d", pid, fd);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len < 0) {
            if (errno == ENOENT && fd > 256) break;
            if (errno == EACCES) {
                found = -1;
                break;
            }
            continue;
        }
        target[len] = '\0';
        unsigned long inode;
        if (sscanf(target, "socket:[%lu]", &inode) == 1)
            for (size_t i = 0; i < n; i++)
                if (inodes[i] == inode) found = 1;
    }
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

/* The LINKS column for server c: "PEER:up" or "PEER:down" for each
 * neighbour, from the proxyherd_link_up{peer="PEER"} gauges of its metrics
 * file <state_dir>/NAME.prom (rewritten every second); "PEER:mismatch" for
 * a link up whose ends disagree on a setting that must agree
 * (proxyherd_link_config_mismatch); "PEER:?" when the file is missing,
 * older than 5 s, or does not name the peer; "-" for a server that does
 * not run. */
static void links_column(const config *cfg, const config_server *c, int running, char *out,
                         size_t n) {
    char path[4200], line[512];
    int up[CONFIG_MAX_SERVERS], mismatch[CONFIG_MAX_SERVERS] = {0};
    for (int k = 0; k < c->n_neighbors; k++) up[k] = -1;
    snprintf(path, sizeof path, "%s/%s.prom", cfg->herd.state_dir, c->name);
    struct stat sb;
    FILE *f = running && stat(path, &sb) == 0 && wall_ms() / 1000 - sb.st_mtime <= 5
                  ? fopen(path, "r") : NULL;
    while (f && fgets(line, sizeof line, f)) {
        static const char metric[] = "proxyherd_link_up{";
        static const char other[] = "proxyherd_link_config_mismatch{";
        int is_up = !strncmp(line, metric, sizeof metric - 1);
        if (!is_up && strncmp(line, other, sizeof other - 1)) continue;
        const char *peer = strstr(line, "peer=\""), *end = strchr(line, '}');
        if (!peer || !end || peer > end) continue;
        peer += 6;
        size_t len = strcspn(peer, "\"");
        double v;
        if (sscanf(end + 1, "%lf", &v) != 1) continue;
        for (int k = 0; k < c->n_neighbors; k++) {
            const char *name = cfg->servers[c->neighbors[k]].name;
            if (strlen(name) != len || strncmp(name, peer, len)) continue;
            if (is_up) up[k] = v > 0;
            else mismatch[k] = v > 0;
        }
    }
    if (f) fclose(f);
    size_t w = 0;
    out[0] = '\0';
    if (!running || !c->n_neighbors) {
        snprintf(out, n, "-");
        return;
    }
    for (int k = 0; k < c->n_neighbors && w < n; k++)
        w += (size_t)snprintf(out + w, n - w, "%s%s:%s", k ? "," : "",
                              cfg->servers[c->neighbors[k]].name,
                              up[k] < 0 ? "?" : !up[k] ? "down" : mismatch[k] ? "mismatch" : "up");
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

int supervisor_status(const config *cfg, int wait_s) {
    srv_status st[CONFIG_MAX_SERVERS];
    long sup = 0;
    int64_t deadline = wall_ms() + (int64_t)wait_s * 1000;
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
        if (up == here || wall_ms() >= deadline) break;
        usleep(100 * 1000);
    }
    print_table(cfg, local, st, sup, up, here);
    return up == here ? 0 : 1;
}

/* ------------------------------------------------------------- rates */

/* The figures --rates shows, summed over each family's labels. */
typedef struct {
    int ok;                     /* the file was read */
    struct timespec mtime;
    double updates, sent, requests, clients, links_up, links;
} prom_reading;

/* Read <state_dir>/NAME.prom into r; r->ok stays 0 when it cannot be read.
 * Each sample line is "name{labels} value" (metrics.c writes it). */
static void read_prom(const config *cfg, const char *name, prom_reading *r) {
    char path[4200], line[1024];
    memset(r, 0, sizeof *r);
    snprintf(path, sizeof path, "%s/%s.prom", cfg->herd.state_dir, name);
    FILE *f = fopen(path, "r");
    if (!f) return;
    struct stat sb;
    if (fstat(fileno(f), &sb) == 0) r->mtime = sb.st_mtim;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *sp = strrchr(line, ' ');
        if (!sp) continue;
        double v = strtod(sp + 1, NULL);
        size_t n = strcspn(line, "{ ");
        static const struct { const char *name; size_t off; } want[] = {
            {"proxyherd_client_updates_total", offsetof(prom_reading, updates)},
            {"proxyherd_link_updates_sent_total", offsetof(prom_reading, sent)},
            {"proxyherd_requests_total", offsetof(prom_reading, requests)},
            {"proxyherd_clients", offsetof(prom_reading, clients)},
            {"proxyherd_link_up", offsetof(prom_reading, links_up)},
        };
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
            if (strlen(want[i].name) == n && !strncmp(line, want[i].name, n))
                *(double *)((char *)r + want[i].off) += v;
        if (n == strlen("proxyherd_link_up") && !strncmp(line, "proxyherd_link_up", n))
            r->links++;
    }
    r->ok = !ferror(f);
    fclose(f);
}

static double ts_seconds(struct timespec t) {
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

void supervisor_rates(const config *cfg) {
    static prom_reading a[CONFIG_MAX_SERVERS], b[CONFIG_MAX_SERVERS];
    int local[CONFIG_MAX_SERVERS];
    herd_local_servers(cfg, local, 1);    /* this machine's servers only */
    for (int i = 0; i < cfg->n_servers; i++)
        if (local[i]) read_prom(cfg, cfg->servers[i].name, &a[i]);
    /* wait until every file was rewritten a second later, for at most 3 s */
    int64_t deadline = wall_ms() + 3000;
    for (;;) {
        usleep(100 * 1000);
        int pending = 0;
        for (int i = 0; i < cfg->n_servers; i++) {
            if (!local[i]) continue;
            read_prom(cfg, cfg->servers[i].name, &b[i]);
            if (a[i].ok && b[i].ok && ts_seconds(b[i].mtime) - ts_seconds(a[i].mtime) < 0.9)
                pending++;
        }
        if (!pending || wall_ms() >= deadline) break;
    }
    printf("\nrates from %s/NAME.prom, over about a second:\n", cfg->herd.state_dir);
    printf("%-12s %9s %10s %12s %11s %9s\n", "NAME", "CLIENTS", "UPDATES/S", "LINK-SENT/S",
           "REQUESTS/S", "LINKS-UP");
    for (int i = 0; i < cfg->n_servers; i++) {
        if (!local[i]) continue;
        const prom_reading *x = &a[i], *y = &b[i];
        double dt = ts_seconds(y->mtime) - ts_seconds(x->mtime);
        if (!x->ok || !y->ok || dt <= 0) {
            printf("%-12s %9s %10s %12s %11s %9s  (%s)\n", cfg->servers[i].name, "-", "-", "-",
                   "-", "-", y->ok ? "metrics file not rewritten" : "no metrics file");
            continue;
        }
        char links[32];
        snprintf(links, sizeof links, "%.0f/%.0f", y->links_up, y->links);
        printf("%-12s %9.0f %10.1f %12.1f %11.1f %9s\n", cfg->servers[i].name, y->clients,
               (y->updates - x->updates) / dt, (y->sent - x->sent) / dt,
               (y->requests - x->requests) / dt, links);
    }
}

/* Write 64 random hex digits to path, mode 0600: a new file, or (replace)
 * through a temporary file renamed over the old one.  Returns 0, 1 when
 * another start made the file first, or -1 with a message on stderr. */
static int write_secret(const char *path, int replace) {
    unsigned char r[32];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        fprintf(stderr, "herd-supervisor: no randomness for the secret: %s\n", strerror(errno));
        return -1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    const char *target = replace ? tmp : path;
    int fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (errno == EEXIST && !replace) {
            /* another start made it, or path is a link to no file */
            char secret[256], err[4400];
            if (secret_load(path, secret, sizeof secret, err, sizeof err) > 0) return 1;
            fprintf(stderr, "herd-supervisor: %s exists but holds no secret (a symbolic "
                    "link to a missing file?): create the file it names\n", path);
            return -1;
        }
        fprintf(stderr, "herd-supervisor: cannot create %s: %s\n", target, strerror(errno));
        return -1;
    }
    char hex[66];
    for (size_t i = 0; i < sizeof r; i++) snprintf(hex + 2 * i, 3, "%02x", r[i]);
    hex[64] = '\n';
    int ok = write(fd, hex, 65) == 65 && fsync(fd) == 0;
    close(fd);
    if (ok && replace) ok = rename(tmp, path) == 0;
    if (!ok) {
        fprintf(stderr, "herd-supervisor: cannot write %s: %s\n", path, strerror(errno));
        unlink(target);
        return -1;
    }
    return 0;
}

int supervisor_init_secret(const config *cfg) {
    const char *env = getenv("HERD_SECRET");
    if (env && *env) return 0;
    const char *path = cfg->herd.secret_file;
    char secret[256], err[4400];
    int n = secret_load(path, secret, sizeof secret, err, sizeof err);
    if (n > 0) return 0;
    if (n == -1) {
        fprintf(stderr, "herd-supervisor: %s\n", err);
        return -1;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {   /* made 0700, or refused when others may write in it */
        *slash = '\0';
        mkdir(dir, 0700);
        if (folder_check(dir, "the folder of herd.secret_file", 0, err, sizeof err) < 0) {
            fprintf(stderr, "herd-supervisor: %s\n", err);
            return -1;
        }
    }
    int made = write_secret(path, n == SECRET_EMPTY);
    if (made < 0) return -1;
    if (made == 1) return 0;
    printf("%s the herd secret %s (mode 0600)%s\n", n == SECRET_EMPTY ? "replaced" : "created",
           path, n == SECRET_EMPTY ? ", which was empty; copy it to every host of the herd" : "");
    return 0;
}
