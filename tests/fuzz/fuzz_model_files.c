// lib: model
/* Fuzzes the model-level loaders on in-memory files: GGUF (model_load_gguf_mem: the
 * architecture, hyperparameters and every tensor's shape and type against them) and a
 * single safetensors file with its config in __metadata__ (model_load_safetensors_mem:
 * minGPT/HF GPT-2 and Llama configs, Conv1D vs Linear layouts). Any bytes must give a
 * model or an error; never a crash or an allocation the file does not justify. A model
 * that loads runs a two-token forward. Seed corpus: tests/fuzz/corpus/model_files (tiny
 * llama and gpt2 GGUF and safetensors files, written by make_random_models.py's
 * writers, plus damaged copies). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    int rc = size >= 4 && !memcmp(data, "GGUF", 4) ? model_load_gguf_mem(data, size, &m)
                                                   : model_load_safetensors_mem(data, size, &m);
    if (rc != 0) {
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
        }
        free(logits);
        model_ctx_destroy(&ctx);
    }
    model_destroy(&m);
    return 0;
}
