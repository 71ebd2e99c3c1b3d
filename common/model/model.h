/* model: the transformer engine. Loads Llama-family and GPT-2-family models from
 * llama2.c .bin checkpoints, GGUF files and Hugging Face directories, runs batched
 * forward passes with a KV cache, exposes TransformerLens-named hook points that can
 * read and rewrite activations, and samples / generates text.
 *
 *   struct model *m;
 *   model_load("stories260K.bin", NULL, &m);          // format detected from the file
 *   struct model_ctx *c = model_ctx_new(m, 4, 256);   // 4 sequence slots x 256 tokens
 *   model_ctx_add_hook(c, "blocks.2.hook_resid_post", my_fn, my_state);
 *   struct model_seq s = {.slot = 0, .tokens = ids, .n = n_ids};
 *   model_forward(c, &s, 1, MODEL_LOGITS_LAST, logits); // appends to slot 0's cache
 *   ...
 *   model_ctx_destroy(&c); model_destroy(&m);
 *
 * Weights are held as float32 (F16/BF16/Q8_0 files are converted at load), row-major,
 * linear weights as [out, in]. Math goes through common/tensor (ops.h).
 *
 * Ownership: model_load / model_new_random return a model the caller frees with
 * model_destroy; a model_ctx borrows its model (destroy the ctx first). Pointers
 * returned by getters are borrowed from the model. Not thread-safe per ctx; several
 * ctxs may share one model across threads. */
#ifndef SAEFLOW_MODEL_H
#define SAEFLOW_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/ops.h"

struct tokenizer;

enum model_arch {
    MODEL_ARCH_LLAMA = 0, /* RMSNorm, RoPE, GQA, SwiGLU, no biases */
    MODEL_ARCH_GPT2 = 1,  /* LayerNorm, learned positions, fused QKV + biases, GELU */
};
enum model_format {
    MODEL_FORMAT_LLAMA2C = 0,
    MODEL_FORMAT_GGUF,
    MODEL_FORMAT_HF,
    MODEL_FORMAT_MEMORY
};

struct model_config {
    enum model_arch arch;
    size_t dim;        /* d_model (residual width) */
    size_t hidden_dim; /* FFN width */
    size_t n_layers;
    size_t n_heads;
    size_t n_kv_heads; /* == n_heads without GQA */
    size_t head_dim;   /* usually dim / n_heads */
    size_t vocab_size;
    size_t max_seq_len; /* context length (GPT-2: rows of the position table) */
    float norm_eps;
    /* Llama only: */
    float rope_theta;             /* 10000 by default */
    size_t rope_dim;              /* rotated dims per head (even, <= head_dim) */
    enum rope_layout rope_layout; /* ROPE_INTERLEAVED (llama2.c, GGUF) / ROPE_HALF (HF) */
    bool tied_embeddings;         /* unembedding == token embedding */
    int32_t bos_id, eos_id;       /* -1 when unknown */
};

const char *model_arch_name(enum model_arch arch);  /* "llama" | "gpt2" */
const char *model_format_name(enum model_format f); /* "llama2c" | "gguf" | "hf" | "memory" */

/* ---- loading ---- */

struct model;

struct model_load_opts {
    /* Tokenizer file for llama2.c checkpoints (tokenizer .bin). NULL: tok512.bin or
     * tokenizer.bin beside the model if present, else none. GGUF and HF directories
     * carry their tokenizer (HF: tokenizer.json), this overrides nothing there. */
    const char *tokenizer_path;
    bool no_tokenizer; /* skip loading a tokenizer entirely */
};

/* Loads a model, detecting the format: a directory is a Hugging Face model
 * (config.json + model.safetensors or model.safetensors.index.json shards, model_type
 * "llama"/"mistral"/"gpt2"; minGPT-style GPT-2 safetensors with [out,in] weights are
 * recognised by shape), a file starting with "GGUF" is GGUF (general.architecture
 * llama or gpt2), a .safetensors file is a minGPT/HF GPT-2 or Llama whose config is
 * in the file's __metadata__ (string values, e.g. gpt-nano-sort.safetensors), anything
 * else a llama2.c legacy checkpoint. opts may be NULL.
 * Returns 0 or SF_EIO / SF_EFORMAT / SF_ERANGE / SF_EUNSUP / SF_ENOMEM (logged). */
int model_load(const char *path, const struct model_load_opts *opts, struct model **out);
/* llama2.c checkpoint from memory (7 int32 header + float32 weights); no tokenizer.
 * The buffer is copied. Validates every size against `len`. */
int model_load_llama2c_mem(const void *buf, size_t len, struct model **out);
/* The same for a GGUF file / a single .safetensors file (config in __metadata__) held
 * in memory (fuzzing, tests); the buffer is only read during the call. No tokenizer. */
int model_load_gguf_mem(const void *buf, size_t len, struct model **out);
int model_load_safetensors_mem(const void *buf, size_t len, struct model **out);
/* A model with the given shape and N(0, std^2) weights (norm weights 1, biases 0),
 * seeded; for benchmarks and tests. cfg is validated like a file's. */
int model_new_random(const struct model_config *cfg, uint64_t seed, float std, struct model **out);
void model_destroy(struct model **m);

const struct model_config *model_config(const struct model *m);
/* A short name for metadata (SAE cfg model_name): GGUF general.name, HF config
 * _name_or_path, else the file or directory name without extension. Borrowed. */
const char *model_name(const struct model *m);
enum model_format model_format(const struct model *m);
size_t model_param_count(const struct model *m); /* distinct parameters (tied counted once) */
/* Bytes of weights one decoded token reads (every matrix once, plus one embedding row). */
size_t model_weight_bytes_per_token(const struct model *m);
/* The tokenizer loaded with the model, or NULL. Borrowed. */
const struct tokenizer *model_tokenizer(const struct model *m);
/* Unembedding W_U (vocab, dim) and the final norm's weight / bias (bias NULL for
 * RMSNorm): for logit effects of SAE features. Borrowed. */
const float *model_unembed(const struct model *m);
const float *model_final_norm_weight(const struct model *m);
const float *model_final_norm_bias(const struct model *m);
/* Token embedding table (vocab, dim). Borrowed. */
const float *model_token_embedding(const struct model *m);

/* ---- hook points ---- */

/* Per block, in order of computation:
 *   resid_pre  = residual stream entering block L (== resid_post of L-1)
 *   attn_out   = attention output (after the output projection, before the add)
 *   resid_mid  = resid_pre + attn_out
 *   mlp_out    = MLP output
 *   resid_post = resid_mid + mlp_out  (== Hugging Face hidden_states[L+1], before the
 *                final norm)
 * A hook that modifies attn_out / mlp_out changes what is added to the residual. */
enum model_hook_point {
    MODEL_HOOK_RESID_PRE = 0,
    MODEL_HOOK_ATTN_OUT,
    MODEL_HOOK_RESID_MID,
    MODEL_HOOK_MLP_OUT,
    MODEL_HOOK_RESID_POST,
    MODEL_HOOK_COUNT
};
/* "hook_resid_pre", ... */
const char *model_hook_point_name(enum model_hook_point p);
/* Parses "blocks.<L>.hook_<point>"; SF_EINVAL if malformed or L >= n_layers. */
int model_hook_parse(const char *name, size_t n_layers, size_t *layer,
                     enum model_hook_point *point);
/* Writes "blocks.<L>.hook_<point>" into buf (cap bytes); SF_ERANGE if too small. */
int model_hook_name(size_t layer, enum model_hook_point point, char *buf, size_t cap);

/* What a hook sees: the activation of every token of the forward call, in the order
 * the sequences were given. x may be modified in place; the forward pass continues
 * from the modified values. Arrays are valid only during the callback. */
struct model_act {
    const char *name; /* "blocks.L.hook_..." */
    size_t layer;
    enum model_hook_point point;
    float *x; /* (n_tokens, d) */
    size_t n_tokens;
    size_t d;
    const size_t *seq;     /* (n_tokens) index into the model_forward call's seqs[] */
    const size_t *slot;    /* (n_tokens) KV-cache slot of the token's sequence */
    const size_t *pos;     /* (n_tokens) position of the token in its sequence */
    const int32_t *tokens; /* (n_tokens) token ids */
};
/* Return 0 to go on; a non-zero return aborts the forward pass, which returns it. */
typedef int (*model_hook_fn)(void *user, const struct model_act *act);

/* ---- running ---- */

/* A run context: KV cache for n_slots sequences of up to max_len tokens each, scratch
 * buffers, hooks. max_len 0 = the model's max_seq_len (GPT-2 cannot go beyond it;
 * RoPE models may). Returns NULL (logged) on bad sizes or out of memory. */
struct model_ctx;
struct model_ctx *model_ctx_new(const struct model *m, size_t n_slots, size_t max_len);
void model_ctx_destroy(struct model_ctx **c);
const struct model *model_ctx_model(const struct model_ctx *c);
size_t model_ctx_slots(const struct model_ctx *c);
size_t model_ctx_max_len(const struct model_ctx *c);
/* Tokens held in a slot's cache (the position the next token gets). */
size_t model_ctx_len(const struct model_ctx *c, size_t slot);
/* Empties one slot / all slots (no memory is freed). */
void model_ctx_reset(struct model_ctx *c, size_t slot);
void model_ctx_reset_all(struct model_ctx *c);
/* Drops the tail of a slot so it holds `len` tokens (len <= current length). */
int model_ctx_truncate(struct model_ctx *c, size_t slot, size_t len);

/* Registers a hook by name (see model_hook_parse); several hooks on one point run in
 * registration order. Returns 0, SF_EINVAL (bad name), SF_ENOMEM. A point with no
 * hook costs nothing. */
int model_ctx_add_hook(struct model_ctx *c, const char *name, model_hook_fn fn, void *user);
int model_ctx_add_hook_at(struct model_ctx *c, size_t layer, enum model_hook_point point,
                          model_hook_fn fn, void *user);
void model_ctx_clear_hooks(struct model_ctx *c);

/* One sequence's tokens for a forward call: appended to `slot` after the tokens the
 * slot already holds (so a prompt is a prefill and one token is a decode step). */
struct model_seq {
    size_t slot;
    const int32_t *tokens;
    size_t n; /* >= 1 */
};

enum model_logits {
    MODEL_LOGITS_NONE = 0, /* no logits; with hooks set, layers after the last hooked
                              one are skipped (their cache is not filled): capture only.
                              A later full pass on such a slot fails with SF_ESTATE
                              until the slot is reset. */
    MODEL_LOGITS_LAST,     /* logits (n_seqs, vocab): last token of each sequence */
    MODEL_LOGITS_ALL,      /* logits (total tokens, vocab), in input order */
};

/* Runs the tokens of n_seqs sequences (distinct slots) as one batch: all their tokens
 * are packed as rows so each linear layer is one GEMM. Returns 0; SF_EINVAL (bad
 * token id, repeated slot, n == 0), SF_ERANGE (a slot would exceed max_len),
 * SF_ESTATE (a slot's cache lacks layers after a capture-only pass), a
 * hook's non-zero return, or SF_ENOMEM. On failure the slots keep their old length. */
int model_forward(struct model_ctx *c, const struct model_seq *seqs, size_t n_seqs,
                  enum model_logits want, float *logits);

/* Like model_forward, but returns per-token log-probabilities of the next token
 * instead of logits: logprobs[i] = log p(tokens[i+1] | tokens[..i]) for each token
 * but the last of each sequence, which gets NAN (total tokens entries, input order).
 * Logits are computed in blocks, so memory stays small for large vocabularies. Mean
 * cross-entropy = -mean of the non-NAN entries. Hooks run as in model_forward. */
int model_forward_logprobs(struct model_ctx *c, const struct model_seq *seqs, size_t n_seqs,
                           float *logprobs);

/* log softmax(logits)[target] for one row of vocab logits, in double. */
double model_logprob(const float *logits, size_t vocab, int32_t target);

/* ---- sampling (sampler.c) ---- */

struct sample_params {
    float temperature; /* 0 = greedy (argmax, lowest id on ties) */
    float top_p;       /* nucleus mass in (0, 1]; 1 = off */
    size_t top_k;      /* keep the k most likely; 0 = off */
};

/* A sampler with its own rng and work arrays for a vocabulary size. */
struct sampler;
struct sampler *sampler_new(size_t vocab, const struct sample_params *p, uint64_t seed);
void sampler_destroy(struct sampler **s);
/* Draws a token id from one row of logits (not modified). Temperature scales the
 * logits, then top-k, then top-p keep the smallest set of most likely tokens, and
 * one is drawn from the renormalised distribution with the sampler's rng. */
int32_t sampler_next(struct sampler *s, const float *logits);
/* Index of the largest value (first on ties). */
int32_t sample_argmax(const float *logits, size_t n);

/* ---- generation (generate.c) ---- */

struct model_gen_opts {
    size_t max_new_tokens;
    struct sample_params sample;
    uint64_t seed;    /* sequence i samples with its own rng seeded seed + i */
    bool stop_at_eos; /* stop a sequence after it produces eos_id (or bos_id, which
                         llama2.c models emit between stories); the stop token is kept */
    /* Called for every generated token; a non-zero return stops generation and is
     * returned. May be NULL. */
    int (*on_token)(void *user, size_t seq, int32_t token);
    void *user;
};

/* Batched generation: sequence i (i < n <= model_ctx_slots) uses slot i, which is
 * reset first; its prompt (>= 1 token, include BOS yourself) is prefilled in one
 * batch with the others, then all unfinished sequences decode one token per step as
 * one batch. Hooks stay active throughout (steering). out: (n, max_new_tokens)
 * tokens; out_lens[i] = tokens generated for sequence i. */
int model_generate(struct model_ctx *c, const int32_t *const *prompts, const size_t *prompt_lens,
                   size_t n, const struct model_gen_opts *o, int32_t *out, size_t *out_lens);

#endif
