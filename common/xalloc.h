/* xalloc.h -- allocation that aborts on failure.
 *
 * A server that cannot get a few KiB has no better move than to stop; the
 * supervisor restarts it.  Keeping the check in one place keeps callers short.
 */
#ifndef HERD_XALLOC_H
#define HERD_XALLOC_H

#include <stdio.h>
#include <stdlib.h>

static inline void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fputs("out of memory\n", stderr);
        abort();
    }
    return q;
}

static inline void *xmalloc(size_t n) { return xrealloc(NULL, n); }

static inline void *xcalloc(size_t count, size_t size) {
    void *q = calloc(count ? count : 1, size ? size : 1);
    if (!q) {
        fputs("out of memory\n", stderr);
        abort();
    }
    return q;
}

#endif
