// lib: steer
/* Fuzzes the steering spec parser (specs arrive from the command line and, through
 * the steer service, from HTTP bodies): arbitrary bytes go through
 * steer_spec_parse_n and steer_spec_parse_list; an accepted spec must be in range,
 * format to text that parses back to the same spec. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "steer/steer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_spec(const struct steer_spec *s)
{
    if (!isfinite(s->value) || fabsf(s->value) > (float)STEER_MAX_STRENGTH) abort();
    if (s->mode != STEER_ADD && s->mode != STEER_CLAMP && s->mode != STEER_ABLATE) abort();
    if (s->mode == STEER_ABLATE && (s->value != 0.0f || s->relative)) abort();
    char txt[64];
    struct steer_spec back;
    if (steer_spec_format(s, txt, sizeof txt) != 0) abort();
    if (steer_spec_parse(txt, &back) != 0) abort();
    if (back.feature != s->feature || back.mode != s->mode || back.relative != s->relative ||
        back.value != s->value)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct steer_spec s;
    if (steer_spec_parse_n((const char *)data, size, &s) == 0) check_spec(&s);
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    struct steer_spec list[8];
    size_t n = 0;
    if (steer_spec_parse_list(text, list, 8, &n) == 0)
        for (size_t i = 0; i < n; i++) check_spec(&list[i]);
    free(text);
    return 0;
}
