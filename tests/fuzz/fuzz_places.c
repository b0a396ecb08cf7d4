/* fuzz_places.c -- libFuzzer harness for the Places API (New) answer mapping
 * and the legacy JSON printer.
 *
 * Any bytes as an upstream answer: the mapping either refuses it or prints
 * JSON that parses again, has no empty line and at most 'bound' results. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "google.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int bound = data[0] % 20 + 1, results = -1;
    char *json = google_map_new_answer((const char *)data + 1, size - 1, bound, &results);
    if (!json) return 0;
    if (strstr(json, "\n\n")) abort();
    cJSON *again = cJSON_Parse(json);
    if (!again) abort();
    cJSON *res = cJSON_GetObjectItemCaseSensitive(again, "results");
    if (!cJSON_IsArray(res) || cJSON_GetArraySize(res) != results || results > bound) abort();
    cJSON_Delete(again);
    free(json);
    return 0;
}
