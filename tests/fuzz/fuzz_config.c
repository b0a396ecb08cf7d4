/* fuzz_config.c -- libFuzzer harness for the YAML config loader.
 *
 * Any text: config_load_text either refuses it with a message that starts
 * with the name it was given, or fills a config whose servers, ports and
 * two-way links hold.  (config_load reads a file and hands it to the same
 * code; the harness stays in memory so it runs thousands of times faster.) */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define NAME "fuzz/config.yml"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static config cfg;
    char err[1024];
    if (config_load_text(NAME, (const char *)data, size, &cfg, err, sizeof err) < 0) {
        if (strncmp(err, NAME ":", strlen(NAME) + 1) != 0) abort();   /* names the file */
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
