// lib: http
/* Fuzzes the request-body JSON parser (http_json_parse) with its size cap: any bytes
 * must give a value or an error with a message, never a crash or a read past `len`.
 * The first byte picks the cap so that the over-cap path is fuzzed too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    size_t cap = data[0] < 16 ? (size_t)data[0] * 8 : (size_t)1 << 20;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    cJSON *v = NULL;
    char err[160];
    int rc = http_json_parse(text, len, cap, &v, err, sizeof(err));
    if (rc == 0) {
        if (!v) abort();
        /* serialize and parse again: must give the same text */
        char *out = cJSON_PrintUnformatted(v);
        if (out) {
            cJSON *w = NULL;
            if (http_json_parse(out, strlen(out), (size_t)1 << 30, &w, NULL, 0) == 0) {
                char *out2 = cJSON_PrintUnformatted(w);
                if (out2 && strcmp(out, out2) != 0) abort();
                cJSON_free(out2);
            }
            cJSON_Delete(w);
            cJSON_free(out);
        }
        cJSON_Delete(v);
    } else {
        if (v || err[0] == '\0') abort();
        if (rc == SF_ERANGE && len <= cap) abort();
    }
    return 0;
}
