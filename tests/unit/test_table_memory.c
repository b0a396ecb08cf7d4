/* test_table_memory.c -- what a stored client costs: at most 128 bytes of
 * resident memory each with a million clients of typical updates (issue 26;
 * docs/BENCHMARKS.md measures the same on a running server).  Skipped under
 * AddressSanitizer, whose shadow memory and redzones are most of the
 * figure there. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "table.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* Resident bytes of this process. */
static long resident(void) {
    long size = 0, pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &pages) != 2) pages = -1;
    fclose(f);
    return pages < 0 ? -1 : pages * sysconf(_SC_PAGESIZE);
}

/* IAMAT-like updates of a million distinct "client-N" ids, as a server
 * with a six-letter name and a client with a nanosecond clock make them:
 * "AT Bailey +0.263873386 client-123456 +34.068930-118.445127
 * 1621464827.959498503", 74 to 79 bytes. */
static void test_million_clients(void) {
    enum { N = 1000000 };
    table t;
    table_init(&t);
    table_set_max(&t, 2 * N);
    long before = resident();
    char id[32], tm[32];
    int stored = 0;
    for (int i = 0; i < N; i++) {
        table_update u;
        memset(&u, 0, sizeof u);
        snprintf(id, sizeof id, "client-%d", i);
        snprintf(tm, sizeof tm, "%d.959498503", 1621464827 + i);
        u.origin = (proto_str){"Bailey", 6};
        u.diff = (proto_str){"+0.263873386", 12};
        u.client = (proto_str){id, strlen(id)};
        u.location = (proto_str){"+34.068930-118.445127", 21};
        u.time = (proto_str){tm, strlen(tm)};
        proto_parse_time(tm, strlen(tm), &u.t);
        stored += table_offer(&t, &u) != NULL;
    }
    long after = resident();
    CHECK(stored == N && t.count == N, "stored %d, count %zu", stored, t.count);
    CHECK(before > 0 && after > before, "resident %ld -> %ld", before, after);
    double per = (double)(after - before) / N;
    printf("table_memory: %.1f bytes per client (%ld -> %ld KiB for %d clients)\n", per,
           before / 1024, after / 1024, N);
    CHECK(per <= 128, "%.1f bytes per client, want at most 128", per);
    table_free(&t);
}

int main(void) {
    /* ASan's shadow and quarantine would be counted as the table's */
    if (UNDER_ASAN) printf("table_memory: skipped under AddressSanitizer\n");
    else test_million_clients();
    return check_report("table_memory");
}
