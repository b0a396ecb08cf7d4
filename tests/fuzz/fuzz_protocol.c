/* fuzz_protocol.c -- libFuzzer harness for the client and peer line parsers.
 *
 * Any bytes: proto_parse and proto_parse_at must return without reading
 * outside the line, and what they accept must hold their promises (fields
 * inside the line, times in range, an IAMAT's location re-validates). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *line = malloc(size ? size : 1);   /* exact size: ASan sees overreads */
    if (!line) return 0;
    memcpy(line, data, size);
    proto_iamat ia;
    proto_whatsat ws;
    const char *why = NULL;
    proto_kind k = proto_parse(line, size, &ia, &ws, &why);
    if (k == PROTO_IAMAT) {
        if (ia.client.p < line || ia.time.p + ia.time.len > line + size) abort();
        if (ia.t.nsec < 0 || ia.t.nsec > 999999999 || ia.t.sec < 0) abort();
        double lat, lng;
        if (proto_parse_location(ia.location.p, ia.location.len, &lat, &lng) < 0) abort();
        if (lat < -90 || lat > 90 || lng < -180 || lng > 180) abort();
        char diff[PROTO_DIFF_MAX];
        proto_time now = {1700000000, 5};
        if (proto_format_diff(diff, now, ia.t) >= PROTO_DIFF_MAX) abort();
    } else if (k == PROTO_WHATSAT) {
        if (ws.bound < 1 || ws.bound > 20 || !(ws.radius_km > 0) || ws.radius_km > 50) abort();
    } else if (k == PROTO_INVALID && !why) {
        abort();
    }
    proto_at at;
    if (proto_parse_at(line, size, &at, &why) == 0) {
        if (at.origin.len == 0 || at.diff.p < line || at.u.time.p + at.u.time.len > line + size)
            abort();
    }
    free(line);
    return 0;
}
