/* google.h -- WHATSAT from Google Places, both APIs, through http.c.
 *
 * A WHATSAT whose answer is cached is replied to at once.  Otherwise the
 * client waits (its later commands too, so replies stay in order) while one
 * upstream request per distinct question is in flight; identical
 * questions join it.  Answers that are OK or ZERO_RESULTS are cached for
 * places.cache_ttl_s, at most places.cache_max_entries of them (oldest out
 * first).  The API key goes only into the request, never into a log line,
 * an error message or a reply.
 */
#ifndef HERD_GOOGLE_H
#define HERD_GOOGLE_H

#include "server.h"

int google_init(server *s, char *err, size_t errlen);
void google_free(server *s);

/* Answer 'ws' for the stored update 'e'.  Returns 0 when the reply was
 * appended now, 1 when c now waits for the upstream answer. */
int google_whatsat(server *s, client *c, const table_entry *e, const proto_whatsat *ws);

/* c is going away: forget it in every request it waits on. */
void google_detach(server *s, client *c);

/* The legacy JSON for a Places API (New) answer, trimmed to bound; NULL
 * when 'answer' has no places list.  Exposed for the unit tests. */
char *google_map_new_answer(const char *answer, size_t len, int bound, int *results);

#endif
