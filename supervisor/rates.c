/* rates.c -- herd-supervisor --status --rates: each local server's rates
 * (client updates, link messages and requests per second) and its stored
 * clients and links up, from its metrics file <state_dir>/NAME.prom
 * (docs/PROTOCOL.md, "Metrics").  The servers rewrite the file every
 * second, so it is read twice, about a second apart, and the differences
 * are divided by the time between the two readings, taken from the
 * files' own modification times.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "supervisor.h"

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
    int64_t deadline = mono_ms() + 3000;
    for (;;) {
        usleep(100 * 1000);
        int pending = 0;
        for (int i = 0; i < cfg->n_servers; i++) {
            if (!local[i]) continue;
            read_prom(cfg, cfg->servers[i].name, &b[i]);
            if (a[i].ok && b[i].ok && ts_seconds(b[i].mtime) - ts_seconds(a[i].mtime) < 0.9)
                pending++;
        }
        if (!pending || mono_ms() >= deadline) break;
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
