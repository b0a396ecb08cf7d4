/* test_table.c -- the client table: lookups, the newer rule, growth. */
#include <stdio.h>

#include "check.h"
#include "table.h"

static table_update upd(const char *origin, const char *client, const char *loc,
                        const char *time) {
    table_update u;
    memset(&u, 0, sizeof u);
    u.origin = (proto_str){origin, strlen(origin)};
    u.diff = (proto_str){"+0.000000001", 12};
    u.client = (proto_str){client, strlen(client)};
    u.location = (proto_str){loc, strlen(loc)};
    u.time = (proto_str){time, strlen(time)};
    proto_parse_time(time, strlen(time), &u.t);
    return u;
}

static const char *stored(table *t, const char *client) {
    table_entry *e = table_get(t, client, strlen(client));
    return e ? e->line : "(none)";
}

int main(void) {
    table t;
    table_init(&t);
    table_update u = upd("Bailey", "kiwi", "+1.0+1.0", "100");
    CHECK(table_offer(&t, &u) != NULL, "first update stored");
    CHECK_STR(stored(&t, "kiwi"), "AT Bailey +0.000000001 kiwi +1.0+1.0 100");
    u = upd("Bona", "kiwi", "+2.0+2.0", "99.999999999");
    CHECK(table_offer(&t, &u) == NULL, "older refused");
    u = upd("Bona", "kiwi", "+0.5+0.5", "100.0000000001");
    CHECK(table_offer(&t, &u) == NULL, "equal time, smaller location refused");
    u = upd("Bailey", "kiwi", "+1.0+1.0", "100");
    CHECK(table_offer(&t, &u) == NULL, "identical refused");
    u = upd("Bona", "kiwi", "+1.0+1.0", "100");
    CHECK(table_offer(&t, &u) != NULL, "same time and place, larger origin wins");
    CHECK_STR(stored(&t, "kiwi"), "AT Bona +0.000000001 kiwi +1.0+1.0 100");
    u = upd("Bailey", "kiwi", "+1.1+1.0", "100");
    CHECK(table_offer(&t, &u) != NULL, "larger location wins over origin");
    u = upd("Bailey", "kiwi", "-9.0-9.0", "100.000000001");
    CHECK(table_offer(&t, &u) != NULL, "one nanosecond later wins");
    CHECK_STR(stored(&t, "kiwi"), "AT Bailey +0.000000001 kiwi -9.0-9.0 100.000000001");
    CHECK(t.count == 1, "one client");

    /* grow well past the first size; every id stays findable */
    char id[32];
    for (int i = 0; i < 200000; i++) {
        snprintf(id, sizeof id, "c%d", i);
        u = upd("Bailey", id, "+1.0+1.0", "1");
        table_offer(&t, &u);
    }
    CHECK(t.count == 200001, "count %zu", t.count);
    CHECK(t.count * 4 <= t.cap * 3, "load factor %zu/%zu", t.count, t.cap);
    int missing = 0;
    for (int i = 0; i < 200000; i++) {
        snprintf(id, sizeof id, "c%d", i);
        if (!table_get(&t, id, strlen(id))) missing++;
    }
    CHECK(missing == 0, "%d ids lost in growth", missing);
    CHECK(table_get(&t, "c200000", 7) == NULL, "absent id");
    /* ids with embedded NUL bytes are distinct keys */
    u = upd("Bailey", "x", "+1.0+1.0", "1");
    u.client = (proto_str){"a\0b", 3};
    CHECK(table_offer(&t, &u) != NULL && table_get(&t, "a\0b", 3) && !table_get(&t, "a", 1),
          "NUL inside an id");
    table_free(&t);
    return check_report("table");
}
