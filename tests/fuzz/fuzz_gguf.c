// lib: model
/* Fuzzes the GGUF reader: gguf_open_mem on arbitrary bytes; when a file is accepted,
 * walks every metadata value (nested arrays and strings included) and every tensor,
 * checks that tensor data lies inside the input, and dequantises small tensors.
 * Seed corpus: tests/fuzz/corpus/gguf (tiny files written with gguf_writer). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/gguf.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static volatile size_t sink;

static void walk(const struct gguf_value *v, int depth)
{
    if (depth > GGUF_MAX_ARR_DEPTH + 1) abort();
    if (v->type == GGUF_TYPE_STRING) {
        if (v->v.str.s[v->v.str.len] != 0) abort();
        sink += v->v.str.len;
    } else if (v->type == GGUF_TYPE_ARRAY) {
        const void *d = v->v.arr.data;
        for (size_t i = 0; i < v->v.arr.n; i++) {
            switch (v->v.arr.type) {
            case GGUF_TYPE_STRING: {
                const struct gguf_str *s = &((const struct gguf_str *)d)[i];
                if (s->s[s->len] != 0) abort();
                sink += s->len;
                break;
            }
            case GGUF_TYPE_ARRAY:
                walk(&((const struct gguf_value *)d)[i], depth + 1);
                break;
            case GGUF_TYPE_FLOAT64:
                sink += (size_t)(((const double *)d)[i] != 0);
                break;
            case GGUF_TYPE_UINT64:
            case GGUF_TYPE_INT64:
                sink += (size_t)((const uint64_t *)d)[i];
                break;
            case GGUF_TYPE_UINT32:
            case GGUF_TYPE_INT32:
            case GGUF_TYPE_FLOAT32:
                sink += ((const uint32_t *)d)[i];
                break;
            case GGUF_TYPE_UINT16:
            case GGUF_TYPE_INT16:
                sink += ((const uint16_t *)d)[i];
                break;
            default:
                sink += ((const uint8_t *)d)[i];
                break;
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        quiet = 1;
        log_init("fuzz", LOG_LOGFMT, LOG_OFF);
    }
    struct gguf *g = NULL;
    if (gguf_open_mem(data, size, &g) != 0) {
        if (g) abort();
        return 0;
    }
    for (size_t i = 0; i < gguf_kv_count(g); i++) {
        const char *key = gguf_kv_key(g, i);
        const struct gguf_value *v = gguf_kv_value(g, i);
        if (!key || !v || gguf_find(g, key) != v) abort();
        walk(v, 0);
        uint32_t u;
        int64_t x;
        double d;
        const char *s;
        enum gguf_type et;
        size_t n;
        struct gguf_str gs;
        gguf_get_u32(g, key, &u);
        gguf_get_i64(g, key, &x);
        gguf_get_f64(g, key, &d);
        gguf_get_str(g, key, &s, NULL);
        if (gguf_get_arr(g, key, &et, &n, NULL) == 0 && et == GGUF_TYPE_STRING && n)
            if (gguf_get_arr_str(g, key, n - 1, &gs) != 0) abort();
    }
    for (size_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        if (gguf_find_tensor(g, t->name) != t) abort();
        const unsigned char *p = t->data;
        if (p < data || p > data + size || t->nbytes > (size_t)(data + size - p)) abort();
        uint64_t ne = gguf_tensor_nelem(t);
        if (ne <= (1u << 16)) {
            float *out = malloc((size_t)ne * sizeof(float) + 1);
            int rc = gguf_tensor_to_f32(t, out, (size_t)ne);
            if (rc != 0 && rc != SF_EUNSUP) abort();
            free(out);
        }
    }
    gguf_close(&g);
    return 0;
}
