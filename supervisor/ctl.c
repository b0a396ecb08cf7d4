/* ctl.c -- herd-supervisor --reload and --restart: the operator's side of
 * the control socket (control.c), which start_servers.sh runs.
 *
 * --reload: the config was read and checked before anything is sent (an
 * invalid one is refused here with its file and line, and the supervisor
 * checks it again); the supervisor answers with what it set going, a line
 * per server (start, stop, restart, reload), and this waits for it: each
 * server reloaded in place to report the reload in its metrics
 * (proxyherd_config_last_reload_*), each removed one to exit, then every
 * server of this machine to listen (status.c prints the table, as a
 * start does).
 *
 * --restart: the supervisor first when it is named ("supervisor") or no
 * name is given: it execs its binary as installed now and keeps its pid
 * and its servers (supervisor.c, "re-exec").  Then one server at a time, each restarted by the supervisor (its
 * binary as installed now) and waited for -- listening, the links it had
 * up before up again, and caught up on each (proxyherd_link_caught_up:
 * the neighbour's digests matched, or its repair stream ended) -- before
 * the next goes.  A server that does not get there in time stops the
 * rolling restart: the rest keep running as they are.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "supervisor.h"

/* The value of the sample of 'family' in server name's metrics file whose
 * labels contain 'label' (NULL: any), or NAN when there is none. */
static double prom_value(const config *cfg, const char *name, const char *family,
                         const char *label) {
    char path[CONFIG_MAX_PATH + 128], line[1024];
    snprintf(path, sizeof path, "%s/%s.prom", cfg->herd.state_dir, name);
    FILE *f = fopen(path, "r");
    double v = NAN;
    size_t flen = strlen(family);
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, family, flen) || (line[flen] != '{' && line[flen] != ' ')) continue;
        char *sp = strrchr(line, ' ');
        if (label && (line[flen] != '{' || !strstr(line, label))) continue;
        if (sp) v = strtod(sp + 1, NULL);
        break;
    }
    if (f) fclose(f);
    return v;
}

/* The last line of server name's log that holds 'event', into out ("" if
 * none): only the file's last 64 KiB are read. */
static void last_log_line(const config *cfg, const char *name, const char *event, char *out,
                          size_t n) {
    char path[CONFIG_MAX_PATH + 128], line[2048];
    snprintf(path, sizeof path, "%s/%s.log", cfg->logging.dir, name);
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fseek(f, -65536, SEEK_END) < 0) rewind(f);
    while (fgets(line, sizeof line, f))
        if (strstr(line, event)) snprintf(out, n, "%s", line);
    fclose(f);
}

/* The pid servers.pid gives NAME, or 0. */
static long pid_named(const config *cfg, const char *name) {
    char path[CONFIG_MAX_PATH + 32], who[128];
    long pid, found = 0;
    snprintf(path, sizeof path, "%s/servers.pid", cfg->dir);
    FILE *f = fopen(path, "r");
    while (f && fscanf(f, "%127s %ld", who, &pid) == 2)
        if (!strcmp(who, name)) found = pid;
    if (f) fclose(f);
    return found;
}

static void unreachable(const config *cfg, const char *why) {
    fprintf(stderr, "herd-supervisor: cannot reach the supervisor of %s (%s): is the herd "
            "running? (start it with start_servers.sh)\n", cfg->path, why);
}

/* Send request.  0 with the answer ("ok" and its lines) in reply; 3 when
 * no supervisor answers, or 1 when it refused, each said on stderr (the
 * refusal after 'refused: '). */
static int ask(const config *cfg, const char *request, char *reply, size_t cap,
               const char *refused) {
    char err[4400];
    if (control_request(cfg, request, reply, cap, err, sizeof err) < 0) {
        unreachable(cfg, err);
        return 3;
    }
    if (!strncmp(reply, "ok\n", 3)) return 0;
    fprintf(stderr, "herd-supervisor: %s: %s", refused,
            strncmp(reply, "error ", 6) ? reply : reply + 6);
    return 1;
}

/* Wait for server name (reloaded in place after 'asked') to report it.
 * 0 when it applied the reload, 1 (said why) when not. */
static int wait_reloaded(const config *cfg, const char *name, double asked, int64_t deadline) {
    double at = NAN, ok = NAN;
    while (mono_ms() < deadline) {
        at = prom_value(cfg, name, "proxyherd_config_last_reload_timestamp_seconds", NULL);
        ok = prom_value(cfg, name, "proxyherd_config_last_reload_successful", NULL);
        if (at >= asked - 0.001) break;
        usleep(50 * 1000);
    }
    if (!(at >= asked - 0.001)) {
        printf("%s did not report the reload in time (see %s/%s.log)\n", name, cfg->logging.dir,
               name);
        return 1;
    }
    if (ok == 1) return 0;
    char why[2048];
    last_log_line(cfg, name, " reload-failed ", why, sizeof why);
    printf("%s refused the reload and runs as before: %s", name, why[0] ? why : "(no reason logged)\n");
    return 1;
}

int supervisor_ctl_reload(const config *cfg, int wait_s) {
    char reply[8192];
    double asked = wall_s();
    int64_t deadline = mono_ms() + (int64_t)wait_s * 1000;
    int rc = ask(cfg, "reload", reply, sizeof reply, "reload refused, nothing changed");
    if (rc) return rc;
    for (char *p = reply + 3, *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        *nl = '\0';
        char name[CONFIG_MAX_NAME];
        printf("reload: %s\n", p);
        fflush(stdout);
        if (sscanf(p, "reload %63s", name) == 1) {
            rc |= wait_reloaded(cfg, name, asked, deadline);
        } else if (sscanf(p, "stop %63s", name) == 1) {
            while (pid_named(cfg, name) && mono_ms() < deadline) usleep(50 * 1000);
            if (pid_named(cfg, name)) {
                printf("%s (removed from the config) has not stopped yet\n", name);
                rc = 1;
            }
        }
    }
    int64_t left = deadline - mono_ms();
    int st = supervisor_status(cfg, left > 0 ? (int)((left + 999) / 1000) : 0, 1);
    return st ? st : rc;
}

/* ---------------------------------------------------------------- restart */

/* Are the links of server i that were up (up[k]) up again and caught up?
 * The first that is not into *k. */
static int links_back(const config *cfg, int i, const int *up, int *k) {
    const config_server *c = &cfg->servers[i];
    char label[CONFIG_MAX_NAME + 16];
    for (*k = 0; *k < c->n_neighbors; (*k)++) {
        if (!up[*k]) continue;
        snprintf(label, sizeof label, "peer=\"%s\"", cfg->servers[c->neighbors[*k]].name);
        if (prom_value(cfg, c->name, "proxyherd_link_up", label) != 1 ||
            prom_value(cfg, c->name, "proxyherd_link_caught_up", label) != 1)
            return 0;
    }
    return 1;
}

/* Restart server i and wait for it.  0, or 1 or 3 (said why). */
static int restart_one(const config *cfg, int i, int wait_s) {
    const config_server *c = &cfg->servers[i];
    char reply[1024], label[CONFIG_MAX_NAME + 16];
    int up[CONFIG_MAX_SERVERS], k;
    long old, pid = 0;
    herd_server_serving(cfg, i, &old);
    for (k = 0; k < c->n_neighbors; k++) {   /* the links it has now */
        snprintf(label, sizeof label, "peer=\"%s\"", cfg->servers[c->neighbors[k]].name);
        up[k] = prom_value(cfg, c->name, "proxyherd_link_up", label) == 1;
    }
    printf("restarting %s (pid %ld)\n", c->name, old);
    fflush(stdout);
    int64_t t0 = mono_ms(), deadline = t0 + (int64_t)wait_s * 1000;
    double asked = wall_s();
    snprintf(label, sizeof label, "restart %s", c->name);
    int rc = ask(cfg, label, reply, sizeof reply, "not restarted");
    if (rc) return rc;
    while (mono_ms() < deadline && !(herd_server_serving(cfg, i, &pid) && pid != old))
        usleep(50 * 1000);
    if (!pid || pid == old || !herd_server_serving(cfg, i, &pid)) {
        printf("%s is not listening again after %d s: the rolling restart stops here "
               "(see %s/%s.log)\n", c->name, wait_s, cfg->logging.dir, c->name);
        return 1;
    }
    int64_t listening = mono_ms();
    while (mono_ms() < deadline &&
           !(prom_value(cfg, c->name, "proxyherd_start_time_seconds", NULL) >= asked - 1 &&
             links_back(cfg, i, up, &k)))
        usleep(100 * 1000);
    if (!links_back(cfg, i, up, &k)) {
        printf("%s (pid %ld) listens, but its link to %s is not up and caught up after %d s: "
               "the rolling restart stops here\n", c->name, pid,
               cfg->servers[c->neighbors[k]].name, wait_s);
        return 1;
    }
    printf("  %s: pid %ld, listening in %.1f s, links up and caught up in %.1f s\n", c->name,
           pid, (listening - t0) / 1000.0, (mono_ms() - t0) / 1000.0);
    return 0;
}

/* The supervisor's pid and re-exec count ("ping"), or -1 with why. */
static int ping(const config *cfg, long *pid, int *execs, char *err, size_t errlen) {
    char reply[256];
    if (control_request(cfg, "ping", reply, sizeof reply, err, errlen) < 0) return -1;
    if (sscanf(reply, "ok pid %ld execs %d", pid, execs) == 2) return 0;
    snprintf(err, errlen, "an answer of another version: %.100s", reply);
    return -1;
}

/* The supervisor runs its binary as installed now, keeping its pid and
 * its servers (supervisor.c, "re-exec").  0, 1 (said why) or 3. */
static int restart_supervisor(const config *cfg, int wait_s) {
    char reply[1024], err[4400];
    long pid, now_pid;
    int execs, now_execs = -1;
    if (ping(cfg, &pid, &execs, err, sizeof err) < 0) {
        unreachable(cfg, err);
        return 3;
    }
    printf("restarting the supervisor (pid %ld) in place: its servers keep running\n", pid);
    fflush(stdout);
    int64_t t0 = mono_ms(), deadline = t0 + (int64_t)wait_s * 1000;
    int rc = ask(cfg, "reexec", reply, sizeof reply, "the supervisor was not restarted");
    if (rc) return rc;
    while (mono_ms() < deadline &&
           (ping(cfg, &now_pid, &now_execs, err, sizeof err) < 0 || now_execs <= execs))
        usleep(50 * 1000);
    if (now_execs <= execs) {
        printf("the supervisor did not come back in %d s (see %s/supervisor.log)\n", wait_s,
               cfg->logging.dir);
        return 1;
    }
    printf("  supervisor: pid %ld, the new binary runs, in %.1f s\n", now_pid,
           (mono_ms() - t0) / 1000.0);
    return 0;
}

int supervisor_ctl_restart(const config *cfg, char **names, int n, int wait_s) {
    int local[CONFIG_MAX_SERVERS], order[CONFIG_MAX_SERVERS], m = 0, itself = !n;
    if (herd_local_servers(cfg, local, 0) == 0) return 3;
    for (int j = 0; j < n; j++) {
        if (!strcmp(names[j], "supervisor")) {
            itself = 1;
            continue;
        }
        int i = config_find_server(cfg, names[j]);
        if (i < 0 || !local[i]) {
            fprintf(stderr, "herd-supervisor: %s: no server named '%s' runs on this machine\n",
                    cfg->path, names[j]);
            return 2;
        }
        order[m++] = i;
    }
    for (int i = 0; !n && i < cfg->n_servers; i++)
        if (local[i]) order[m++] = i;
    if (itself) {
        int rc = restart_supervisor(cfg, wait_s);
        if (rc) return rc;
    }
    for (int j = 0; j < m; j++) {
        int rc = restart_one(cfg, order[j], wait_s);
        if (rc) return rc;
    }
    if (m) printf("restarted %d server%s, one at a time\n", m, m == 1 ? "" : "s");
    return 0;
}
