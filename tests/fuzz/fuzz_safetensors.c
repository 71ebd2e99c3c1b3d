// lib: safetensors
/* Fuzzes the safetensors header validation and the data accessors on arbitrary
 * bytes: safetensors_open_mem must return an error or a handle whose every tensor
 * lies inside the buffer. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "safetensors/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_init("fuzz_safetensors", LOG_LOGFMT, LOG_OFF);
        quiet = 1;
    }
    struct safetensors *st = NULL;
    if (safetensors_open_mem(data, size, &st) != 0) {
        if (st) abort();
        return 0;
    }
    for (size_t i = 0; i < safetensors_count(st); i++) {
        const struct st_tensor *t = safetensors_at(st, i);
        const uint8_t *p = t->data;
        if (p < data || p + t->nbytes > data + size) abort();
        if (safetensors_find(st, t->name) == NULL) abort();
        float *out = malloc(t->numel ? t->numel * sizeof(float) : 1);
        if (!out) abort();
        (void)safetensors_tensor_to_f32(t, out, t->numel);
        free(out);
    }
    for (size_t i = 0; i < safetensors_metadata_count(st); i++) {
        const char *k, *v;
        if (safetensors_metadata_at(st, i, &k, &v) != 0 || !k || !v) abort();
        if (safetensors_metadata(st, k) == NULL) abort();
    }
    safetensors_close(&st);
    return 0;
}
