/* log.h -- one buffered log file per process.
 *
 * Lines look like
 *   2026-11-24T19:55:02.123Z INFO conn-open id=7 from=127.0.0.1:40122
 * (UTC, milliseconds, level, event, details).  Lines collect in memory and
 * reach the file in one write() when the oldest is flush_ms old, when the
 * buffer passes 64 KiB, or on log_flush().  The owner's event loop calls
 * log_tick() and uses log_next_flush_ms() in its poll timeout, so nothing
 * ever waits on the disk more than once per batch.
 *
 * Before log_open() succeeds, and whenever the file cannot be written, lines
 * go to stderr, so no message is ever silently dropped at start-up.
 */
#ifndef HERD_LOG_H
#define HERD_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* Open (creating the folder and file as needed) 'dir'/'name'.log for
 * appending.  Returns 0, or -1 with a reason in err. */
int log_open(const char *dir, const char *name, int flush_ms, char *err,
             size_t errlen);

/* Close and reopen the same path (after rotation).  Returns 0 or -1. */
int log_reopen(void);

/* Append one line: event, then printf-style details. */
void log_msg(log_level lvl, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append one line whose details hold 'data' in double quotes, with
 * control bytes, '"' and '\' escaped as \xNN, so a client cannot forge a
 * log line.  'prefix' is written before the quoted data and 'suffix' (may
 * be NULL) after it. */
void log_data(log_level lvl, const char *event, const char *prefix,
              const char *data, size_t len, const char *suffix);

/* Write what is buffered when it is due; call once per loop round. */
void log_tick(int64_t now_ms);

/* Milliseconds until the buffer must be written, or -1 when it is empty. */
int log_next_flush_ms(int64_t now_ms);

/* Write everything buffered now. */
void log_flush(void);

void log_close(void);

/* Milliseconds since the epoch, from the real-time clock. */
int64_t log_now_ms(void);

#endif
