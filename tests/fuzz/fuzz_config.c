/* fuzz_config.c -- libFuzzer harness for the YAML config loader.
 *
 * Any file: config_load either refuses it with "FILE..." in the message, or
 * fills a config whose servers, ports and two-way links hold. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/herd-fuzz-config-%ld.yml", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    static config cfg;
    char err[1024];
    if (config_load(path, &cfg, err, sizeof err) < 0) {
        if (strncmp(err, path, strlen(path)) != 0) abort();   /* names the file */
        return 0;
    }
    if (cfg.n_servers < 1 || cfg.n_servers > CONFIG_MAX_SERVERS) abort();
    for (int i = 0; i < cfg.n_servers; i++) {
        const config_server *s = &cfg.servers[i];
        if (s->port < 1 || s->port > 65535) abort();
        for (int k = 0; k < s->n_neighbors; k++) {
            const config_server *o = &cfg.servers[s->neighbors[k]];
            int back = 0;
            for (int m = 0; m < o->n_neighbors; m++) back |= o->neighbors[m] == i;
            if (!back) abort();
        }
    }
    return 0;
}
