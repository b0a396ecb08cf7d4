/* config.h -- the herd's configuration, loaded from YAML into plain structs.
 *
 * config_load() reads the whole file with libyaml's document API, checks
 * every key and value, and refuses a bad file with "FILE:LINE: reason".
 * Relative paths are resolved against the folder holding the config file, so
 * the herd behaves the same from any working directory.
 */
#ifndef HERD_CONFIG_H
#define HERD_CONFIG_H

#include <stddef.h>

#define CONFIG_MAX_SERVERS 64
#define CONFIG_MAX_NAME 64
#define CONFIG_MAX_PATH 4096
#define CONFIG_RESTART_MAX 1000    /* the most supervisor.restart_max may be */

typedef struct {
    char name[CONFIG_MAX_NAME];
    char host[256];
    int port;
    int neighbors[CONFIG_MAX_SERVERS];   /* indexes into config.servers */
    int n_neighbors;
    int line;                            /* where it is defined */
} config_server;

typedef enum { PLACES_LOCAL, PLACES_GOOGLE, PLACES_GOOGLE_LEGACY } places_provider;

typedef struct {
    places_provider provider;
    char base_url[1024];      /* empty: the provider's default */
    char api_key[512];        /* from GOOGLE_PLACES_API_KEY or the file */
    char local_file[CONFIG_MAX_PATH];
    int timeout_ms;
    int cache_ttl_s;
    int cache_max_entries;
    size_t max_response_bytes;
} config_places;

typedef struct {
    size_t max_line_bytes;
    size_t max_output_bytes;
    int max_clients;
    int max_clients_per_address;  /* 0: no cap beyond max_clients */
    int idle_timeout_s;       /* 0: never */
    size_t max_stored_clients; /* clients in the table (server/table.h) */
} config_limits;

typedef struct {
    char dir[CONFIG_MAX_PATH];
    int flush_ms;
    int log_lines;            /* 1: log every input and output line */
    size_t max_file_bytes;    /* NAME.log is rotated before it passes this */
    int keep_files;           /* rotated files kept: NAME.log.1 .. NAME.log.K */
} config_logging;

typedef struct {
    int restart_max;
    int restart_window_s;
    int backoff_initial_ms;
    int backoff_max_ms;
    int stop_timeout_s;
    int hang_timeout_s;       /* no heartbeat this long: SIGKILL; 0: off */
} config_supervisor;

typedef struct {
    char secret_file[CONFIG_MAX_PATH];
    char state_dir[CONFIG_MAX_PATH];
    int snapshot_interval_s;
    int metrics_server_label; /* 1: server="NAME" on every metrics sample */
    int forwarding;           /* FORWARD_TREE or FORWARD_FLOOD */
    int anti_entropy_ms;      /* neighbours compare table digests this often */
} config_herd;

/* herd.forwarding: along each origin's tree of live links, or to every
 * neighbour but the sender (docs/PROTOCOL.md, "Between servers"). */
enum { FORWARD_TREE, FORWARD_FLOOD };

typedef struct {
    int concurrency;
    int duration_s;
    int iamat_pct;            /* WHATSAT gets the rest */
    int clients;
    int warmup_s;
    double radius_km;
    int bound;
} config_benchmark;

typedef struct {
    char path[CONFIG_MAX_PATH];   /* the file as given */
    char dir[CONFIG_MAX_PATH];    /* its folder, for relative paths */
    config_server servers[CONFIG_MAX_SERVERS];
    int n_servers;
    config_places places;
    config_limits limits;
    config_logging logging;
    config_supervisor supervisor;
    config_herd herd;
    config_benchmark benchmark;
} config;

/* Load and check 'path' into *cfg.  Returns 0, or -1 with "FILE:LINE: reason"
 * (or "FILE: reason") in err. */
int config_load(const char *path, config *cfg, char *err, size_t errlen);

/* The same for YAML already in memory; 'path' names it in messages and
 * places relative paths as if the text had been read from there. */
int config_load_text(const char *path, const char *text, size_t len, config *cfg,
                     char *err, size_t errlen);

/* Index of the server called 'name', or -1. */
int config_find_server(const config *cfg, const char *name);

/* Parse "iamat=P,whatsat=Q" (either may be left out; they add up to 100).
 * Returns 0 and sets *iamat_pct, or -1. */
int config_parse_mix(const char *s, int *iamat_pct);

/* Must server 'name' (in both) restart to go from 'old' to 'new', rather
 * than apply the change in place (docs/PROTOCOL.md, "Reloading the
 * config")?  Its address or port, logging.dir, herd.state_dir, or a
 * provider change to or from Google do.  Returns 1 with the reason in why,
 * else 0. */
int config_needs_restart(const config *old, const config *new, const char *name, char *why,
                         size_t whylen);

/* Name of a provider as written in the config. */
const char *config_provider_name(places_provider p);

#endif
