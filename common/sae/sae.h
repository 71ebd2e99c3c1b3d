/* sae: sparse autoencoders — the struct every part of saeflow shares.
 *
 * Weights are row-major float32, one row per latent for both encoder and decoder
 * (the layout sparse kernels want: a selected latent's encoder and decoder rows are
 * contiguous). Exports convert to the SAELens/sparsify conventions.
 *
 *   xc    = x * norm_scale - b_dec           (norm_scale is 1 once folded)
 *   a     = W_enc xc + b_enc                 (n)
 *   z     = topk / batchtopk / relu / jumprelu(a)
 *   x_hat = (W_dec^T z + b_dec) / norm_scale
 *
 * sae_new() allocates; sae_destroy(&sae) frees everything and nulls the pointer. */
#ifndef SAEFLOW_SAE_H
#define SAEFLOW_SAE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sae_arch {
    SAE_TOPK = 0,      /* keep the k largest pre-activations per token, then ReLU */
    SAE_BATCHTOPK = 1, /* train: top k*B over the batch; infer: global threshold */
    SAE_STANDARD = 2,  /* ReLU + L1 */
    SAE_JUMPRELU = 3,  /* z_i = a_i if a_i > threshold_i (inference only) */
};
const char *sae_arch_name(enum sae_arch a); /* "topk", "batchtopk", ... */
int sae_arch_parse(const char *s, enum sae_arch *out);

/* Where the SAE's inputs came from; written into every export's metadata. */
struct sae_meta {
    char model_name[128];
    char hook_name[128]; /* TransformerLens style: blocks.3.hook_resid_post */
    int64_t hook_layer;
    int64_t context_size;
    bool prepend_bos;
    bool exclude_special_tokens;
    char dataset_path[256];
};

struct sae {
    enum sae_arch arch;
    size_t d_in;
    size_t n;         /* latents (d_sae) */
    size_t k;         /* TopK / BatchTopK k; 0 for standard / jumprelu */
    float *W_enc;     /* (n, d_in) */
    float *b_enc;     /* (n) */
    float *W_dec;     /* (n, d_in), unit rows while training */
    float *b_dec;     /* (d_in) */
    float *threshold; /* (n) for jumprelu and batchtopk inference; NULL otherwise */
    float norm_scale; /* input scale s; 1 when none or folded into the weights */
    struct sae_meta meta;
};

/* Allocates zeroed weights (threshold too when the arch needs one). NULL on OOM. */
struct sae *sae_new(enum sae_arch arch, size_t d_in, size_t n, size_t k);
void sae_destroy(struct sae **sae);

/* Plain-loop reference forward for one token (the oracle fast paths are checked
 * against; also what imported SAEs are tested with). Follows the comment at the top:
 * topk keeps the k largest pre-activations (ties: lower index) then ReLU; batchtopk
 * and jumprelu give z_i = a_i when a_i > threshold_i and a_i > 0 (SAELens's
 * relu(a) * (a > threshold)); standard is ReLU. x (d_in) -> z (n); z (n) -> x_hat
 * (d_in). Neither allocates except sae_encode_ref for topk (n indices; returns
 * SF_ENOMEM if that fails). */
int sae_encode_ref(const struct sae *sae, const float *x, float *z);
void sae_decode_ref(const struct sae *sae, const float *z, float *x_hat);

/* ---- fast inference (threads over tokens; the encoder is one GEMM per chunk) ----
 * x is (B, d_in) raw activations (the SAE applies norm_scale itself).
 *
 * sae_encode: per token, the active latents as (index, value) pairs, largest value
 * first, at most max_per_token of them (topk: the k largest pre-activations, ReLU'd,
 * zeros dropped; batchtopk/jumprelu: a_i > threshold_i and a_i > 0; standard:
 * a_i > 0). When more than max_per_token latents are active, the largest are kept.
 *   idx, val: (B, max_per_token); count: (B). Returns 0 or SF_ENOMEM / SF_EINVAL.
 * sae_encode_dense: z (B, n), zeros where inactive (same rule, no cap).
 * sae_decode: x_hat (B, d_in) from the sparse codes of sae_encode.
 * sae_forward: x_hat (B, d_in) from x (encode + decode, no cap on active latents).
 * All allocate only their own scratch (a chunk of pre-activations) and free it. */
int sae_encode(const struct sae *sae, const float *x, size_t B, size_t max_per_token, uint32_t *idx,
               float *val, uint32_t *count);
int sae_encode_dense(const struct sae *sae, const float *x, size_t B, float *z);
void sae_decode(const struct sae *sae, const uint32_t *idx, const float *val, const uint32_t *count,
                size_t max_per_token, size_t B, float *x_hat);
int sae_forward(const struct sae *sae, const float *x, size_t B, float *x_hat);

/* Folds norm_scale into the weights (W_enc *= s, W_dec /= s, b_dec /= s, s = 1), so
 * that the SAE reads raw activations; pre-activations, codes and x_hat are unchanged. */
void sae_fold_norm(struct sae *sae);
/* Deep copy (NULL on OOM). Free with sae_destroy(). */
struct sae *sae_clone(const struct sae *sae);
/* A 64-bit fingerprint of what the SAE computes: arch, shapes, k, hook name,
 * norm_scale and every weight's bits. Equal SAEs (as loaded from one directory) give
 * equal fingerprints; any changed weight or shape changes it. Never 0. Not
 * cryptographic: it tells SAEs apart, it does not authenticate them. */
uint64_t sae_fingerprint(const struct sae *sae);
/* Rescales every decoder row to unit L2 norm (rows of norm 0 are left alone). */
void sae_normalize_decoder(struct sae *sae);

#endif
