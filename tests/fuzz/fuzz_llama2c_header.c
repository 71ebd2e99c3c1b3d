// lib: model
/* Fuzzes the llama2.c checkpoint loader from memory (model_load_llama2c_mem): any
 * bytes must give a model or an error, never a crash or a huge allocation. A model
 * that loads runs a two-token forward (its weights are whatever the bytes were, so
 * NaN/inf must not break anything). Seed corpus: tests/fuzz/corpus/llama2c_header
 * (tiny well-formed checkpoints, tied and untied, and broken headers). */
#include <stdint.h>
#include <stdlib.h>

#include "core/core.h"
#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_init("fuzz", LOG_LOGFMT, LOG_OFF);
        quiet = 1;
    }
    struct model *m = NULL;
    if (model_load_llama2c_mem(data, size, &m) != 0) {
        if (m) abort();
        return 0;
    }
    const struct model_config *c = model_config(m);
    if (c->max_seq_len >= 2 && c->dim * c->n_layers <= (1u << 16)) {
        struct model_ctx *ctx = model_ctx_new(m, 1, 2);
        float *logits = malloc(c->vocab_size * sizeof(float));
        if (ctx && logits) {
            int32_t toks[2] = {0, (int32_t)(c->vocab_size - 1)};
            struct model_seq s = {.slot = 0, .tokens = toks, .n = 2};
            if (model_forward(ctx, &s, 1, MODEL_LOGITS_LAST, logits) != 0) abort();
            if (model_ctx_len(ctx, 0) != 2) abort();
        }
        free(logits);
        model_ctx_destroy(&ctx);
    }
    model_destroy(&m);
    return 0;
}
