/* supervisor.h -- the pieces of herd-supervisor. */
#ifndef HERD_SUPERVISOR_H
#define HERD_SUPERVISOR_H

#include "config.h"

/* Run this machine's servers of the herd until TERM or INT; returns the
 * exit status (1 at once when none of the servers is here). */
int supervisor_run(const config *cfg, const char *server_path);

/* control.c: the control socket <state_dir>/supervisor.sock (see there).
 * The supervisor listens (a non-blocking descriptor, or -1 with why) and
 * serves each waiting connection: one request line to handle(), whose
 * answer (lines, NUL-terminated in reply) goes back before the close. */
typedef void control_handler(const char *request, char *reply, size_t cap);
int control_listen(const config *cfg, char *err, size_t errlen);
void control_serve(int lfd, control_handler *handle);
void control_unlink(const config *cfg);

/* A client: send one request, read the whole answer into reply.  0, or -1
 * with why (no supervisor listens, most often). */
int control_request(const config *cfg, const char *request, char *reply, size_t cap,
                    char *err, size_t errlen);

/* ctl.c: --reload and --restart, the operator's side (see there).  Each
 * returns the exit status. */
int supervisor_ctl_reload(const config *cfg, int wait_s);
int supervisor_ctl_restart(const config *cfg, char **names, int n, int wait_s);

/* status.c: is server i of cfg served by a live child of the running
 * supervisor, listening on its port?  Its pid into *pid (0: none named). */
int herd_server_serving(const config *cfg, int i, long *pid);

/* status.c: print the table of this machine's servers: each one's pid,
 * uptime, restarts, whether it listens and its links.  With wait_s > 0,
 * first wait up to that long for every local server to listen; with
 * wait_links, once all listen, up to 3 s more for the links between them
 * to be up.  Returns 0 when all listen, 1 when some do not, 3 when no herd
 * runs here (or none of its servers is here). */
int supervisor_status(const config *cfg, int wait_s, int wait_links);

/* rates.c: print each local server's rates (client updates, link
 * messages, requests per second), stored clients and links up, from two
 * readings of its metrics file <state_dir>/NAME.prom about a second
 * apart; a row of "-" says why when a file is missing or was not
 * rewritten.  Takes one to three seconds. */
void supervisor_rates(const config *cfg);

/* init_secret.c: create the herd's secret file (mode 0600) unless
 * HERD_SECRET is set or the file holds a secret; an empty file is
 * replaced, one open to other users refused.  Returns 0 or -1 with a
 * message on stderr. */
int supervisor_init_secret(const config *cfg);

/* init_secret.c: a key ring command on the secret file, what one of
 * "--secret-install" (the secret from stdin, or with random a new one),
 * "--secret-use", "--secret-remove" (arg: a key id) or "--secret-list".
 * Returns the exit status (0, or 1 with a message on stderr). */
int supervisor_secret_ring(const config *cfg, const char *what, const char *arg, int random);

/* local.c: set local[i] (CONFIG_MAX_SERVERS entries) for each server whose
 * host is an address of this machine; returns how many.  Unless quiet, says
 * on stderr which hosts cannot be resolved, and why none is here. */
int herd_local_servers(const config *cfg, int *local, int quiet);

/* --local: print the names of this machine's servers, one a line; returns
 * 0, or 1 (with the reason on stderr) when none is here. */
int supervisor_list_local(const config *cfg);

/* lock.c: servers.lock, the proof that a herd runs (see there). */
void herd_lock_path(const config *cfg, char *out, size_t n);

/* Take the herd's lock for the life of this process and write our pid in
 * it.  Returns its descriptor, or -1 with a reason in err (naming the other
 * supervisor's pid when one holds it). */
int herd_lock_take(const config *cfg, char *err, size_t errlen);

/* Once a second: is the servers.lock on disk still the file *fd locks?  An
 * operator may remove or replace it (cleaning up "stale" files), and the
 * scripts would then take the herd for stopped and lose track of it; so a
 * new one is taken in its place.  Returns 0 (still ours), 1 (taken again:
 * *fd is the new one), or -1 with a reason in err (it could not be). */
int herd_lock_keep(const config *cfg, int *fd, char *err, size_t errlen);

/* The pid of the supervisor that holds cfg's lock, runs herd-supervisor
 * and runs cfg (not another config of the same folder), or 0 when no herd
 * runs (a pid file may say otherwise: it may be stale). */
long herd_supervisor_pid(const config *cfg);

/* True when pid runs herd-server as a child of 'supervisor' (not a zombie). */
int herd_is_server(long pid, long supervisor);

#endif
