/* `saeflow model info PATH`: what the engine sees in a model file: architecture,
 * format, shapes, parameter count, tokenizer, and the hook points it offers. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "model/model.h"
#include "model/tokenizer.h"

int cmd_model_info(int argc, char **argv)
{
    const struct config_opt opts[] = {{0}};
    struct config cfg = {.service = "model",
                         .usage =
                             "saeflow model info PATH  (.bin, .gguf, .safetensors or HF directory)",
                         .opts = opts,
                         .n_opts = 0};
    int rc = config_load(&cfg, argc, argv);
    if (rc == SF_EXIT) {
        config_free(&cfg);
        return 0;
    }
    if (rc || cfg.n_positional != 1) {
        if (!rc) fprintf(stderr, "usage: %s\n", cfg.usage);
        config_free(&cfg);
        return 2;
    }
    log_set_level(cfg.log_level);
    const char *path = cfg.positional[0];
    struct model *m = NULL;
    if (model_load(path, NULL, &m) != 0) {
        fprintf(stderr, "saeflow model info: cannot load %s\n", path);
        config_free(&cfg);
        return 1;
    }
    const struct model_config *c = model_config(m);
    printf("path:          %s\n", path);
    printf("name:          %s\n", model_name(m));
    printf("format:        %s\n", model_format_name(model_format(m)));
    printf("architecture:  %s\n", model_arch_name(c->arch));
    printf("parameters:    %zu (%.2f M)\n", model_param_count(m), model_param_count(m) / 1e6);
    printf("layers:        %zu\n", c->n_layers);
    printf("d_model:       %zu\n", c->dim);
    printf("d_mlp:         %zu (%s)\n", c->hidden_dim,
           c->arch == MODEL_ARCH_GPT2 ? "GELU tanh" : "SwiGLU");
    printf("heads:         %zu query, %zu key/value, head_dim %zu\n", c->n_heads, c->n_kv_heads,
           c->head_dim);
    printf("vocab:         %zu\n", c->vocab_size);
    printf("context:       %zu\n", c->max_seq_len);
    printf("norm:          %s, eps %g\n", c->arch == MODEL_ARCH_GPT2 ? "LayerNorm" : "RMSNorm",
           (double)c->norm_eps);
    if (c->arch == MODEL_ARCH_LLAMA)
        printf("rope:          theta %g, %zu dims, %s layout\n", (double)c->rope_theta, c->rope_dim,
               c->rope_layout == ROPE_HALF ? "half-split (HF)" : "interleaved (llama2.c/GGUF)");
    else
        printf("positions:     learned\n");
    printf("embeddings:    %s\n", c->tied_embeddings ? "tied" : "untied");
    printf("bos/eos:       %d / %d\n", (int)c->bos_id, (int)c->eos_id);
    const struct tokenizer *t = model_tokenizer(m);
    if (t) {
        enum tokenizer_kind k = tokenizer_kind(t);
        printf("tokenizer:     %s, %zu tokens, bos %d, eos %d\n",
               k == TOKENIZER_BPE   ? "byte-level BPE"
               : k == TOKENIZER_SPM ? "SentencePiece (scores)"
                                    : "SentencePiece (merges)",
               tokenizer_vocab_size(t), (int)tokenizer_bos(t), (int)tokenizer_eos(t));
        printf("prepend BOS:   %s (%s)\n", tokenizer_add_bos_default(t) ? "yes" : "no",
               tokenizer_add_bos_source(t));
    } else {
        printf("tokenizer:     none\n");
    }
    printf("hook points:   (activation: tokens x %zu)\n", c->dim);
    for (int p = 0; p < MODEL_HOOK_COUNT; p++)
        printf("  blocks.{0..%zu}.%s\n", c->n_layers - 1,
               model_hook_point_name((enum model_hook_point)p));
    model_destroy(&m);
    config_free(&cfg);
    return 0;
}
