/* ops_cuda_off: the engine ops' CUDA API in builds without CUDA (no nvcc, CUDA=0, the
 * fuzz build): every call returns SF_EUNSUP, so callers need no #ifdefs. */
#ifndef SAEFLOW_CUDA

#include "core/core.h"
#include "tensor/ops_cuda.h"

int ops_cuda_rmsnorm_forward(struct cuda_ctx *c, float *out, const float *inp, const float *w,
                             size_t rows, size_t d, float eps)
{
    (void)c, (void)out, (void)inp, (void)w, (void)rows, (void)d, (void)eps;
    return SF_EUNSUP;
}
int ops_cuda_layernorm_forward(struct cuda_ctx *c, float *out, const float *inp, const float *w,
                               const float *b, size_t rows, size_t d, float eps)
{
    (void)c, (void)out, (void)inp, (void)w, (void)b, (void)rows, (void)d, (void)eps;
    return SF_EUNSUP;
}
int ops_cuda_gelu_forward(struct cuda_ctx *c, float *out, const float *inp, size_t n)
{
    (void)c, (void)out, (void)inp, (void)n;
    return SF_EUNSUP;
}
int ops_cuda_swiglu_forward(struct cuda_ctx *c, float *out, const float *gate_up, size_t rows,
                            size_t hidden)
{
    (void)c, (void)out, (void)gate_up, (void)rows, (void)hidden;
    return SF_EUNSUP;
}
int ops_cuda_linear_forward(struct cuda_ctx *c, enum cuda_math math, float *out, const float *inp,
                            const float *w, const float *b, size_t rows, size_t in, size_t n_out)
{
    (void)c, (void)math, (void)out, (void)inp, (void)w, (void)b, (void)rows, (void)in, (void)n_out;
    return SF_EUNSUP;
}
int ops_cuda_rope_forward(struct cuda_ctx *c, float *x, size_t ld, const size_t *pos, size_t rows,
                          size_t n_heads, size_t head_dim, size_t rot_dim, float theta,
                          enum rope_layout layout)
{
    (void)c, (void)x, (void)ld, (void)pos, (void)rows, (void)n_heads, (void)head_dim;
    (void)rot_dim, (void)theta, (void)layout;
    return SF_EUNSUP;
}
int ops_cuda_attention_forward(struct cuda_ctx *c, float *out, const float *q, size_t q_ld,
                               const float *k, const float *v, const size_t *kv_off,
                               const size_t *n_ctx, size_t rows, size_t n_heads, size_t n_kv_heads,
                               size_t head_dim)
{
    (void)c, (void)out, (void)q, (void)q_ld, (void)k, (void)v, (void)kv_off, (void)n_ctx;
    (void)rows, (void)n_heads, (void)n_kv_heads, (void)head_dim;
    return SF_EUNSUP;
}
int ops_cuda_softmax_forward(struct cuda_ctx *c, float *out, const float *inp, size_t rows,
                             size_t n)
{
    (void)c, (void)out, (void)inp, (void)rows, (void)n;
    return SF_EUNSUP;
}
int ops_cuda_add_inplace(struct cuda_ctx *c, float *out, const float *inp, size_t n)
{
    (void)c, (void)out, (void)inp, (void)n;
    return SF_EUNSUP;
}
int ops_cuda_embed_forward(struct cuda_ctx *c, float *out, const float *tok_emb,
                           const float *pos_emb, const int32_t *tokens, const size_t *pos,
                           size_t rows, size_t d)
{
    (void)c, (void)out, (void)tok_emb, (void)pos_emb, (void)tokens, (void)pos, (void)rows, (void)d;
    return SF_EUNSUP;
}
int ops_cuda_kv_store(struct cuda_ctx *c, float *kc, float *vc, const float *qkv, size_t qkv_ld,
                      size_t k_col, size_t v_col, size_t kv_dim, const size_t *kv_off,
                      const size_t *pos, size_t rows)
{
    (void)c, (void)kc, (void)vc, (void)qkv, (void)qkv_ld, (void)k_col, (void)v_col, (void)kv_dim;
    (void)kv_off, (void)pos, (void)rows;
    return SF_EUNSUP;
}
int ops_cuda_gather_rows(struct cuda_ctx *c, float *out, const float *inp, const size_t *idx,
                         size_t n, size_t d)
{
    (void)c, (void)out, (void)inp, (void)idx, (void)n, (void)d;
    return SF_EUNSUP;
}

#else
typedef int ops_cuda_off_unused; /* ISO C forbids an empty translation unit */
#endif
