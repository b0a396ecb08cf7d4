/* signals.h -- signals as bytes on a self-pipe, for a poll() loop.
 *
 * Both programs handle their signals the same way: the handler only writes
 * the signal's number as one byte to a pipe, and the loop, which polls the
 * pipe's read end, does the rest.  SIGPIPE is ignored (sends use
 * MSG_NOSIGNAL).
 *
 * The supervisor starts each server with TERM, INT and HUP blocked (from
 * before fork to after exec: the mask survives exec), so a signal forwarded
 * to a server that is still starting stays pending instead of killing it.
 * signals_to_pipe() unblocks the signals it handles only once their
 * handlers are installed, which ends that window.
 */
#ifndef HERD_SIGNALS_H
#define HERD_SIGNALS_H

#include <stddef.h>

/* Route the n signals in sigs[] to a new non-blocking, close-on-exec pipe,
 * then unblock them.  Returns 0 with the pipe's ends in *read_fd and
 * *write_fd, or -1 with a reason in err.  One pipe per process. */
int signals_to_pipe(const int *sigs, int n, int *read_fd, int *write_fd, char *err,
                    size_t errlen);

#endif
