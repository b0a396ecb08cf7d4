/* buf.h -- a growable byte buffer with a read offset.
 *
 * Used for every socket's input and output: data is appended at the end and
 * consumed from 'off', so a partial write or a partial line costs no memmove
 * until the buffer is compacted.  Allocation failure aborts: a server that
 * cannot allocate a few KiB has no better move.
 */
#ifndef HERD_BUF_H
#define HERD_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct {
    char *p;
    size_t off;   /* first unconsumed byte */
    size_t len;   /* end of data */
    size_t cap;
} buf_t;

static inline size_t buf_pending(const buf_t *b) { return b->len - b->off; }
static inline const char *buf_data(const buf_t *b) { return b->p + b->off; }

/* Room for 'extra' more bytes; a total past PTRDIFF_MAX aborts with a
 * message, as running out of memory does. */
void buf_reserve(buf_t *b, size_t extra);
void buf_append(buf_t *b, const void *data, size_t n);
void buf_append_str(buf_t *b, const char *s);
void buf_append_char(buf_t *b, char c);
void buf_printf(buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void buf_consume(buf_t *b, size_t n);       /* drop n bytes from the front */
void buf_compact(buf_t *b);                 /* move pending data to offset 0 */
void buf_clear(buf_t *b);
void buf_free(buf_t *b);                    /* release memory; b is reusable */
/* Give back memory of a large, now empty buffer (keeps idle clients cheap). */
void buf_shrink_if_empty(buf_t *b, size_t keep);

#endif
