/* local.c -- which servers of the config run on this machine.
 *
 * One config is copied unchanged to every host of a herd; each host's
 * supervisor, scripts and status handle only the servers whose host is an
 * address of that machine (common/net.h: net_is_local: loopback, the
 * wildcard, or an address of one of its interfaces) and leave the others
 * to their own hosts.  A host that cannot be resolved is taken as not
 * here, and said so on stderr.
 */
#include <stdio.h>
#include <string.h>

#include "net.h"
#include "supervisor.h"

int herd_local_servers(const config *cfg, int *local, int quiet) {
    int n = 0;
    for (int i = 0; i < cfg->n_servers; i++) {
        char err[512];
        int r = net_is_local(cfg->servers[i].host, err, sizeof err);
        if (r < 0 && !quiet)
            fprintf(stderr, "herd-supervisor: %s:%d: servers.%s.host: %s; taken as another "
                    "host's\n", cfg->path, cfg->servers[i].line, cfg->servers[i].name, err);
        local[i] = r == 1;
        n += local[i];
    }
    if (n == 0 && !quiet) {
        fprintf(stderr, "herd-supervisor: %s: none of its %d servers has a host that is an "
                "address of this machine (hosts:", cfg->path, cfg->n_servers);
        for (int i = 0; i < cfg->n_servers; i++)
            fprintf(stderr, "%s %s", i ? "," : "", cfg->servers[i].host);
        fprintf(stderr, "); nothing to run here: start the herd on the hosts it names\n");
    }
    return n;
}

int supervisor_list_local(const config *cfg) {
    int local[CONFIG_MAX_SERVERS];
    if (herd_local_servers(cfg, local, 0) == 0) return 1;
    for (int i = 0; i < cfg->n_servers; i++)
        if (local[i]) printf("%s\n", cfg->servers[i].name);
    return 0;
}
