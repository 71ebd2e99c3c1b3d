/* model_impl: the model's insides, shared by the loaders (model*.c) and the forward
 * pass (forward.c). Not part of the public API: include model.h instead. */
#ifndef SAEFLOW_MODEL_IMPL_H
#define SAEFLOW_MODEL_IMPL_H

#include "model.h"

/* One block's weights, all float32 row-major, linear weights [out, in].
 * q_dim = n_heads*head_dim, kv_dim = n_kv_heads*head_dim. */
struct model_layer {
    float *norm1_w, *norm1_b; /* (dim); b NULL for RMSNorm */
    float *wqkv, *bqkv;       /* (q_dim + 2*kv_dim, dim): Q rows, then K, then V */
    float *wo, *bo;           /* (dim, q_dim) */
    float *norm2_w, *norm2_b; /* (dim) */
    float *w_up, *b_up;       /* llama: (2*hidden, dim) gate rows then up rows;
                                 gpt2: (hidden, dim) */
    float *w_down, *b_down;   /* (dim, hidden) */
};

struct model {
    struct model_config cfg;
    enum model_format format;
    float *arena; /* every weight lives here */
    size_t arena_len;
    float *tok_emb; /* (vocab, dim) */
    float *pos_emb; /* (max_seq_len, dim), gpt2 only */
    struct model_layer *layers;
    float *normf_w, *normf_b; /* (dim) */
    float *unembed;           /* (vocab, dim); == tok_emb when tied */
    struct tokenizer *tok;
    size_t n_params;
    char name[128]; /* see model_name() */
};

/* Sets m->name from `s` (truncated), or from the last path component of `path`
 * without its extension when s is NULL or empty. */
void model_set_name(struct model *m, const char *s, const char *path);

/* The row layout of one forward call, shared by the CPU (forward.c) and CUDA
 * (model_cuda.c) passes: every token of every sequence is one row. */
struct model_rows {
    size_t *seq, *slot, *pos, *kv_off, *n_ctx; /* (T) each */
    int32_t *tok;                              /* (T) */
};
/* Validates a call against a context of n_slots slots holding len[] tokens of at most
 * max_len each: slots in range and not repeated, sequences non-empty and fitting,
 * token ids < vocab_size (logged). `mark` is (n_slots) zeroed scratch, left zeroed.
 * Returns 0 with the total token count in *T_out, SF_EINVAL or SF_ERANGE. */
int model_rows_check(const struct model_config *cfg, size_t n_slots, size_t max_len,
                     const size_t *len, unsigned char *mark, const struct model_seq *seqs,
                     size_t n_seqs, size_t *T_out);
/* Fills the rows of a checked call: sequence index, slot, position, token, the
 * slot's offset in a (n_slots, max_len, kv_dim) cache and the attended length. */
void model_rows_fill(const struct model_config *cfg, size_t max_len, const size_t *len,
                     const struct model_seq *seqs, size_t n_seqs, const struct model_rows *rows);

/* Checks a config for consistency and sane bounds (logs why not): SF_EFORMAT/ERANGE. */
int model_config_check(const struct model_config *cfg);
/* Allocates the model and its weight arena for cfg (validated first). Weights are
 * zero; norm weights are not set. `available` is how many weights the source holds
 * (SF_EFORMAT, before allocating, if the config needs more; SIZE_MAX: no limit). */
int model_alloc(const struct model_config *cfg, enum model_format format, size_t available,
                struct model **out);
/* Checks every weight of a loaded model for NaN / infinity in one pass over the arena:
 * SF_EFORMAT, with a log line naming the first bad tensor, the element and how many
 * are bad, when any is; 0 otherwise. Every loader calls it before returning a model. */
int model_check_weights(const struct model *m);
/* Default config values for a Llama / GPT-2 model (eps, theta, ids). */
void model_config_defaults(struct model_config *cfg, enum model_arch arch);

/* Loaders (model_gguf.c, model_hf.c). */
int model_load_gguf(const char *path, struct model **out);
int model_load_hf(const char *dir, struct model **out);

#endif
