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
const char *sae_arch_name(enum sae_arch a);         /* "topk", "batchtopk", ... */
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
    size_t n;      /* latents (d_sae) */
    size_t k;      /* TopK / BatchTopK k; 0 for standard / jumprelu */
    float *W_enc;  /* (n, d_in) */
    float *b_enc;  /* (n) */
    float *W_dec;  /* (n, d_in), unit rows while training */
    float *b_dec;  /* (d_in) */
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

#endif
