/* reload.c -- SIGUSR1: the config file read again and applied in place.
 *
 * The supervisor sends SIGUSR1 to a server whose change a reload can apply
 * without a restart (docs/PROTOCOL.md, "Reloading the config"): its
 * neighbours, and the limits, logging, places and herd settings.  The
 * server keeps its pid, its listening socket, its clients' connections and
 * its table.  Links to servers no longer its neighbours close, links to
 * new ones are dialled (or awaited), the kept ones stay up.
 *
 * All or nothing: the new config, the places file and the key ring are
 * read and checked into temporaries before anything changes; a failure
 * logs "reload-failed" with the reason and the server goes on as it was
 * (what can still fail after, setting up TLS or fitting max_clients under
 * the descriptor limit, is logged and leaves the old setting).  A
 * change only a restart can apply (config_needs_restart: the address or
 * port, logging.dir, herd.state_dir, a provider to or from Google) is
 * refused the same way; the supervisor restarts such a server instead.
 *
 * What a reload did shows in the metrics at once:
 * proxyherd_config_last_reload_successful and
 * proxyherd_config_last_reload_timestamp_seconds (metrics.c), and in the
 * log as "reloaded" with what changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "log.h"
#include "placescache.h"
#include "secret.h"
#include "server.h"
#include "xalloc.h"

/* The parts of a reload that can fail, prepared before anything changes. */
typedef struct {
    config *cfg;
    int me;
    secret_ring ring;           /* the key ring, read again */
    places_local places;
    struct stat places_st;      /* its file's, taken before the read */
    int new_places;             /* places holds a new file to swap in */
} staged;

static void beat(void *s) {
    server_beat(s);
}

/* The same file, unchanged: device, inode, size, modification and change
 * time (a file rewritten in place with its size and mtime kept, cp -p or
 * touch -r, has a new ctime). */
static int same_file(const struct stat *a, const struct stat *b) {
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* The local places file, read again when its path or identity changed;
 * the identity is taken before the read, so a change during it shows to
 * the next reload. */
static int stage_places(server *s, staged *st, char *err, size_t errlen) {
    const config_places *o = &s->cfg->places, *n = &st->cfg->places;
    if (n->provider != PLACES_LOCAL) return 0;
    if (stat(n->local_file, &st->places_st) < 0)
        memset(&st->places_st, 0, sizeof st->places_st);
    else if (o->provider == PLACES_LOCAL && !strcmp(o->local_file, n->local_file) &&
             same_file(&st->places_st, &s->places_st))
        return 0;
    /* on the loop: a large file takes seconds, and so may the wait for the
     * cache's lock (a herd reloaded at once: one server builds it) */
    places_set_progress(beat, s);
    int rc = places_cache_load(&st->places, n->local_file, st->cfg->herd.state_dir,
                               PLACES_CACHE_RELOAD_WAIT_MS, err, errlen);
    places_set_progress(NULL, NULL);
    if (rc < 0) return -1;
    st->new_places = 1;
    return 0;
}

/* Read and check everything; nothing in s changes.  0, or -1 with why. */
static int stage(server *s, staged *st, char *err, size_t errlen) {
    char why[256];
    st->cfg = xmalloc(sizeof *st->cfg);
    if (config_load(s->cfg->path, st->cfg, err, errlen) < 0) return -1;
    st->me = config_find_server(st->cfg, s->me->name);
    if (st->me < 0) {
        snprintf(err, errlen, "%s: no server named '%s' any more (the supervisor stops it)",
                 s->cfg->path, s->me->name);
        return -1;
    }
    if (config_needs_restart(s->cfg, st->cfg, s->me->name, why, sizeof why)) {
        snprintf(err, errlen, "%s: a restart applies it, a reload cannot", why);
        return -1;
    }
    if (peer_secrets_read(s, st->cfg->herd.secret_file, &st->ring, err, errlen) < 0)
        return -1;
    return stage_places(s, st, err, errlen);
}

static void unstage(staged *st) {
    explicit_bzero(&st->ring, sizeof st->ring);
    if (st->new_places) places_local_free(&st->places);
    free(st->cfg);
}

/* Neighbours' names, comma-separated, of server 'me' in cfg. */
static void neighbour_list(const config *cfg, int me, char *out, size_t n) {
    size_t k = 0;
    out[0] = '\0';
    const config_server *cs = &cfg->servers[me];
    for (int i = 0; i < cs->n_neighbors && k < n; i++)
        k += (size_t)snprintf(out + k, n - k, "%s%s", i ? "," : "",
                              cfg->servers[cs->neighbors[i]].name);
    if (!cs->n_neighbors) snprintf(out, n, "-");
}

/* Swap the staged config in: links first (numbered by the old config),
 * then everything that reads it. */
static void apply(server *s, staged *st) {
    const config *old = s->cfg;
    int old_owned = s->cfg_owned;
    peer_drop_removed(s, st->cfg, st->me);
    s->cfg = st->cfg;
    s->cfg_owned = 1;
    s->me = &st->cfg->servers[st->me];
    st->cfg = NULL;
    peer_reconfigure(s, old);
    forward_reconfigure(s, old);
    char err[4400];
    if (peer_secrets_use(s, &st->ring, err, sizeof err) < 0)   /* links up stay up */
        log_msg(LOG_ERROR, "reload", "links stay off: %s", err);
    if (st->new_places) {
        places_local_free(&s->places);
        s->places = st->places;
        st->new_places = 0;
        s->places_st = st->places_st;
    }
    table_set_max(&s->tab, s->cfg->limits.max_stored_clients);
    log_set_rotation(s->cfg->logging.max_file_bytes, s->cfg->logging.keep_files);
    log_set_flush_ms(s->cfg->logging.flush_ms);
    if (server_refit_limits(s, err, sizeof err) < 0)
        log_msg(LOG_ERROR, "reload", "max_clients kept at %d: %s", s->max_clients, err);
    if (old_owned) free((config *)old);
}

void server_reload(server *s) {
    char err[4400], nb[CONFIG_MAX_SERVERS * (CONFIG_MAX_NAME + 1)];
    staged st;
    memset(&st, 0, sizeof st);
    s->metrics.reload_time_s = wall_s();
    if (stage(s, &st, err, sizeof err) < 0) {
        log_msg(LOG_ERROR, "reload-failed", "%s; nothing changed", err);
        s->metrics.reload_ok = 0;
        unstage(&st);
        log_flush();                    /* the reason on disk before the metrics say */
        metrics_tick(s);
        return;
    }
    int reread = st.new_places;
    apply(s, &st);
    unstage(&st);
    s->metrics.reload_ok = 1;
    s->metrics.reloads++;
    neighbour_list(s->cfg, (int)(s->me - s->cfg->servers), nb, sizeof nb);
    log_msg(LOG_INFO, "reloaded", "config=%s neighbours=%s max_clients=%d "
            "max_stored_clients=%zu places=%zu%s", s->cfg->path, nb, s->max_clients,
            s->cfg->limits.max_stored_clients, s->places.n,
            reread ? " (places file read again)" : "");
    log_flush();
    metrics_tick(s);
}
