/* main.c -- command line of herd-supervisor. */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "supervisor.h"

static void usage(FILE *f) {
    fputs("Usage: herd-supervisor [-c FILE] [--status [--wait SECONDS] [--wait-links] [--rates]]\n"
          "                      [--local] [--init-secret] [--reload] [--restart [NAME...]]\n"
          "       herd-supervisor [-c FILE] --secret-install [--random] | --secret-use KEYID\n"
          "                      | --secret-remove KEYID | --secret-list\n"
          "\n"
          "Run this machine's part of the herd: one herd-server per server in the\n"
          "config whose host is an address of this machine (loopback, or an address\n"
          "of one of its interfaces), restarted when it crashes or hangs (no\n"
          "heartbeat for supervisor.hang_timeout_s).  The other servers are left to\n"
          "their own hosts, each running the same config; with none here it refuses.\n"
          "servers.pid (beside the config) lists every pid, and servers.lock,\n"
          "held while it runs, keeps a second supervisor out.\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE  the herd's configuration (default: ./config.yml)\n"
          "      --status       print each local server's pid, uptime, restarts, whether\n"
          "                     it listens, and its links (up, connecting, down,\n"
          "                     mismatch, or ? without metrics); exit 0 when all\n"
          "                     listen, 1 when not, 3 when no herd runs here\n"
          "      --wait SECONDS with --status: first wait that long for all to listen\n"
          "      --wait-links   with --status: once all listen, wait up to 3 s more for\n"
          "                     the links between them to be up (start_servers.sh)\n"
          "      --rates        with --status: then each server's updates, link messages\n"
          "                     and requests per second, from its metrics file\n"
          "                     STATE_DIR/NAME.prom read twice a second apart\n"
          "      --local        print the names of the servers that run on this machine;\n"
          "                     exit 1 with the reason when none does\n"
          "      --init-secret  unless HERD_SECRET is set: create the herd secret file\n"
          "                     (mode 0600) if it is missing or empty; refuse one that\n"
          "                     other users may read\n"
          "      --reload       apply the config file again to the herd running here:\n"
          "                     new servers start, removed ones stop, changed ones apply\n"
          "                     it in place (or restart when their address changed),\n"
          "                     given-up ones start again; waits (--wait, default 30 s)\n"
          "                     for them, then prints the --status table.  An invalid\n"
          "                     config is refused and nothing changes\n"
          "      --restart [NAME...]  restart the named servers (all of this machine's\n"
          "                     by default) one at a time with the binary installed now,\n"
          "                     each listening with its links up and caught up before\n"
          "                     the next goes (--wait per server, default 30 s); with no\n"
          "                     NAME, or NAME 'supervisor', first the supervisor itself\n"
          "                     runs its new binary in place, keeping its pid and servers\n"
          "  -h, --help         show this help and exit\n"
          "\n"
          "The key ring, herd.secret_file: one secret a line, the first dials, any is\n"
          "accepted.  Each command rewrites the file atomically (mode 0600); a server\n"
          "takes the change when it is reloaded (docs/PROTOCOL.md, \"The herd secret\"):\n"
          "      --secret-install [--random]\n"
          "                     append the secret read from stdin (one line), or with\n"
          "                     --random a new random one, and print its key id\n"
          "      --secret-use KEYID\n"
          "                     make that key first: this host dials with it\n"
          "      --secret-remove KEYID\n"
          "                     remove that key (never the first)\n"
          "      --secret-list  the key ids in order, the first marked (never a secret)\n"
          "\n"
          "Signals: TERM or INT stop every server, then the supervisor; HUP makes\n"
          "every process reopen its log.  --reload and --restart reach the running\n"
          "supervisor through its socket STATE_DIR/supervisor.sock.\n"
          "Logs: LOGDIR/supervisor.log.\n"
          "HERD_BIN_DIR names the folder of herd-server (default: beside this program).\n",
          f);
}

int main(int argc, char **argv) {
    const char *cfg_path = "config.yml";
    int status = 0, wait_s = -1, wait_links = 0, init_secret = 0, rates = 0, list_local = 0;
    int reload = 0, restart = 0, nnames = 0;
    char *names[CONFIG_MAX_SERVERS];
    int random = 0;
    const char *ring_cmd = NULL, *ring_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-c") || !strcmp(a, "--config")) && i + 1 < argc) {
            cfg_path = argv[++i];
        } else if (!strcmp(a, "--status")) {
            status = 1;
        } else if (!strcmp(a, "--rates")) {
            status = rates = 1;
        } else if (!strcmp(a, "--wait") && i + 1 < argc) {
            wait_s = atoi(argv[++i]);
        } else if (!strcmp(a, "--wait-links")) {
            status = wait_links = 1;
        } else if (!strcmp(a, "--init-secret")) {
            init_secret = 1;
        } else if (!strcmp(a, "--secret-install") || !strcmp(a, "--secret-list")) {
            ring_cmd = a;
        } else if ((!strcmp(a, "--secret-use") || !strcmp(a, "--secret-remove")) && i + 1 < argc) {
            ring_cmd = a;
            ring_arg = argv[++i];
        } else if (!strcmp(a, "--random")) {
            random = 1;
        } else if (!strcmp(a, "--local")) {
            list_local = 1;
        } else if (!strcmp(a, "--reload")) {
            reload = 1;
        } else if (!strcmp(a, "--restart")) {
            restart = 1;
            while (i + 1 < argc && argv[i + 1][0] != '-' && nnames < CONFIG_MAX_SERVERS)
                names[nnames++] = argv[++i];
        } else {
            fprintf(stderr, "herd-supervisor: unknown or incomplete option '%s' (try --help)\n", a);
            return 2;
        }
    }
    static config cfg;
    char err[1024];
    if (config_load(cfg_path, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "herd-supervisor: %s%s\n", reload ? "reload refused, nothing changed: " : "",
                err);
        return 1;
    }
    if (random && (!ring_cmd || strcmp(ring_cmd, "--secret-install"))) {
        fprintf(stderr, "herd-supervisor: --random goes with --secret-install\n");
        return 2;
    }
    if (init_secret) return supervisor_init_secret(&cfg) < 0 ? 1 : 0;
    if (reload) return supervisor_ctl_reload(&cfg, wait_s < 0 ? 30 : wait_s);
    if (restart) return supervisor_ctl_restart(&cfg, names, nnames, wait_s < 0 ? 30 : wait_s);
    if (ring_cmd) return supervisor_secret_ring(&cfg, ring_cmd, ring_arg, random);
    if (list_local) return supervisor_list_local(&cfg);
    if (status) {
        int rc = supervisor_status(&cfg, wait_s < 0 ? 0 : wait_s, wait_links);
        if (rates && rc != 3) supervisor_rates(&cfg);
        return rc;
    }

    char server[PATH_MAX + 32];
    const char *bindir = getenv("HERD_BIN_DIR");
    if (bindir && *bindir) {
        snprintf(server, sizeof server, "%s/herd-server", bindir);
    } else {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n < 0) {
            perror("herd-supervisor: /proc/self/exe");
            return 1;
        }
        self[n] = '\0';
        snprintf(server, sizeof server, "%s/herd-server", dirname(self));
    }
    if (access(server, X_OK) < 0) {
        fprintf(stderr, "herd-supervisor: %s is missing or not executable (run make)\n", server);
        return 1;
    }
    return supervisor_run(&cfg, server);
}
