/* supervisor.h -- the pieces of herd-supervisor. */
#ifndef HERD_SUPERVISOR_H
#define HERD_SUPERVISOR_H

#include "config.h"

/* Run the herd until TERM or INT; returns the exit status. */
int supervisor_run(const config *cfg, const char *server_path);

/* Print each server's pid, uptime, restarts and whether it listens.  With
 * wait_s > 0, first wait up to that long for every server to listen.
 * Returns 0 when all listen, 1 when some do not, 3 when no herd runs. */
int supervisor_status(const config *cfg, int wait_s, int quiet);

/* Create the herd's secret file (mode 0600) unless HERD_SECRET is set or the
 * file exists.  Returns 0 or -1 with a message on stderr. */
int supervisor_init_secret(const config *cfg);

#endif
