/* buf.c -- growable byte buffer; see buf.h. */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xalloc.h"

/* No allocation is larger than PTRDIFF_MAX; a size past it is a bug. */
static void too_large(size_t len, size_t extra) {
    fprintf(stderr, "buffer size overflow: %zu bytes held, %zu more asked for\n", len, extra);
    abort();
}

void buf_reserve(buf_t *b, size_t extra) {
    if (b->cap - b->len >= extra) return;
    if (b->off && b->cap - buf_pending(b) >= extra) {
        buf_compact(b);
        return;
    }
    if (extra > (size_t)PTRDIFF_MAX - b->len) too_large(b->len, extra);
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want) cap = cap > (size_t)PTRDIFF_MAX / 2 ? want : cap * 2;
    b->p = xrealloc(b->p, cap);
    b->cap = cap;
}

void buf_append(buf_t *b, const void *data, size_t n) {
    if (!n) return;
    buf_reserve(b, n);
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

void buf_append_str(buf_t *b, const char *s) { buf_append(b, s, strlen(s)); }

void buf_append_char(buf_t *b, char c) {
    buf_reserve(b, 1);
    b->p[b->len++] = c;
}

void buf_printf(buf_t *b, const char *fmt, ...) {
    va_list ap;
    buf_reserve(b, 128);
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= b->cap - b->len) {
        buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void buf_consume(buf_t *b, size_t n) {
    b->off += n;
    if (b->off >= b->len) b->off = b->len = 0;
}

void buf_compact(buf_t *b) {
    if (!b->off) return;
    memmove(b->p, b->p + b->off, buf_pending(b));
    b->len -= b->off;
    b->off = 0;
}

void buf_clear(buf_t *b) { b->off = b->len = 0; }

void buf_free(buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->off = b->len = b->cap = 0;
}

void buf_shrink_if_empty(buf_t *b, size_t keep) {
    if (buf_pending(b) == 0 && b->cap > keep) buf_free(b);
}
