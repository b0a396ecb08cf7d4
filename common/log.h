/* log.h -- one buffered, size-bounded log file per process.
 *
 * Lines look like
 *   2026-11-24T19:55:02.123Z INFO conn-open id=7 from=127.0.0.1:40122
 * (UTC, milliseconds, level, event, details).  Lines collect in memory and
 * reach the file in one write() when the oldest is flush_ms old, when the
 * buffer passes 64 KiB, or on log_flush().  The owner's event loop calls
 * log_tick() and uses log_next_flush_ms() in its poll timeout, so nothing
 * ever waits on the disk more than once per batch.
 *
 * Bounds: a file that would pass max_file_bytes is renamed NAME.log.1 (older
 * ones shift up to NAME.log.K, the oldest is removed) and a new NAME.log is
 * opened, at a line boundary, so no file holds more than max_file_bytes
 * unless one line is longer.  Rotation needs no descriptor beyond the new
 * file's.  When a write fails (a full disk) or the file cannot be opened,
 * lines are counted and dropped, never kept or waited for; once a write
 * succeeds again a "log-dropped lines=N" line says how many were lost.  A
 * failed open or rotation is tried again a second later; meanwhile lines go
 * to the old file, up to twice max_file_bytes.  Files are created 0640 (and
 * an existing, looser one is tightened): they hold every client's location.
 *
 * Before log_open() succeeds, lines go to stderr, so no message is ever
 * silently dropped at start-up.
 */
#ifndef HERD_LOG_H
#define HERD_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

/* The defaults of logging.max_file_bytes and logging.keep_files: at most
 * (1 + 4) x 64 MiB = 320 MiB of logs per process. */
#define LOG_DEFAULT_MAX_FILE_BYTES ((size_t)64 << 20)
#define LOG_DEFAULT_KEEP_FILES 4

/* Rotate past 'max_file_bytes' (at least 1), keeping 'keep_files' old
 * files (0: the full log is removed).  Call before or after log_open(). */
void log_set_rotation(size_t max_file_bytes, int keep_files);

/* How long a line may wait in the buffer (a reload: log_open set it). */
void log_set_flush_ms(int flush_ms);

/* Open (creating the folder and file as needed) 'dir'/'name'.log for
 * appending.  Returns 0, or -1 with a reason in err. */
int log_open(const char *dir, const char *name, int flush_ms, char *err,
             size_t errlen);

/* Reopen the same path (after an outside tool renamed the file; SIGHUP).
 * Returns 0, or -1 when the open failed: the old file is kept and the open
 * is tried again a second later. */
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

/* Write everything buffered now (or drop and count it; see above). */
void log_flush(void);

/* Flush and close; later lines go to stderr. */
void log_close(void);

/* Milliseconds since the epoch, from the real-time clock. */
int64_t log_now_ms(void);

#endif
