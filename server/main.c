/* main.c -- command line of herd-server: one member of the herd. */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "net.h"
#include "ports.h"
#include "resolver.h"
#include "server.h"
#include "snapshot.h"

static void usage(FILE *f) {
    fputs("Usage: herd-server NAME [-c FILE]\n"
          "\n"
          "Serve one member of the proxy herd: answer IAMAT and WHATSAT from\n"
          "clients on the address NAME has in the config.\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE  the herd's configuration (default: ./config.yml)\n"
          "      --check        load the config and the places file, report, exit;\n"
          "                     warn (on stderr) when NAME's port is in the ephemeral\n"
          "                     range (net.ipv4.ip_local_port_range)\n"
          "  -h, --help         show this help and exit\n"
          "\n"
          "The server logs to LOGDIR/NAME.log (logging.dir in the config).\n"
          "Signals: TERM or INT stop it; HUP reopens its log file.\n",
          f);
}

int main(int argc, char **argv) {
    const char *cfg_path = "config.yml", *name = NULL;
    int check = 0;
    /* not for users: the server starts its host name helper so (resolver.c) */
    if (argc == 3 && !strcmp(argv[1], RESOLVER_ARG)) return resolver_main(argv[2]);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--config")) {
            if (++i == argc) {
                fprintf(stderr, "herd-server: %s needs a file name\n", a);
                return 2;
            }
            cfg_path = argv[i];
        } else if (!strcmp(a, "--check")) {
            check = 1;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "herd-server: unknown option '%s' (try --help)\n", a);
            return 2;
        } else if (!name) {
            name = a;
        } else {
            fprintf(stderr, "herd-server: one server name only (got '%s' and '%s')\n", name, a);
            return 2;
        }
    }
    if (!name) {
        usage(stderr);
        return 2;
    }

    static config cfg;
    char err[1024];
    if (config_load(cfg_path, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "herd-server: %s\n", err);
        return 1;
    }
    int me = config_find_server(&cfg, name);
    if (me < 0) {
        fprintf(stderr, "herd-server: %s: no server named '%s'; the config has:", cfg_path, name);
        for (int i = 0; i < cfg.n_servers; i++)
            fprintf(stderr, "%s %s", i ? "," : "", cfg.servers[i].name);
        fputc('\n', stderr);
        return 1;
    }
    if (check) {
        places_local pl = {0};
        if (cfg.places.provider == PLACES_LOCAL &&
            places_local_load(&pl, cfg.places.local_file, err, sizeof err) < 0) {
            fprintf(stderr, "herd-server: %s\n", err);
            return 1;
        }
        char where[NET_ADDRSTRLEN + 256];
        net_format(cfg.servers[me].host, cfg.servers[me].port, where, sizeof where);
        printf("%s: %s listens on %s, places: %s (%zu places)\n", cfg_path, name, where,
               config_provider_name(cfg.places.provider), pl.n);
        places_local_free(&pl);
        if (ports_ephemeral_warning(name, cfg.servers[me].port, err, sizeof err))
            fprintf(stderr, "herd-server: warning: %s\n", err);
        return 0;
    }

    static server s;
    if (server_init(&s, &cfg, me, err, sizeof err) < 0) {
        fprintf(stderr, "herd-server: %s: %s\n", name, err);
        log_msg(LOG_ERROR, "start-failed", "%s", err);
        server_free(&s);
        return 1;
    }
    metrics_start(&s);
    int rc = server_run(&s);
    metrics_stop(&s);
    if (snapshot_write(&s) < 0) rc = 1;
    server_free(&s);
    return rc;
}
