/* forward.c -- one path for every update, and where it goes next.
 *
 * update_apply() is the only place an update enters the table, whether a
 * client sent it (commands.c) or a link did (peer.c): store it when newer,
 * mark the table for the next snapshot, log it, forward it.
 */
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "server.h"

table_entry *update_apply(server *s, const table_update *u, int from_link) {
    table_entry *e = table_offer(&s->tab, u);
    if (!e) return NULL;
    s->table_dirty = 1;
    if (from_link >= 0 && s->cfg->logging.log_lines) {
        char prefix[96];
        snprintf(prefix, sizeof prefix, "from=%s ",
                 s->cfg->servers[s->links[from_link].server].name);
        log_data(LOG_INFO, "update", prefix, e->line, e->line_len, NULL);
    }
    peer_flood(s, e, from_link);
    return e;
}
