/* ops_cuda: the transformer engine's ops (ops.h) on a CUDA device, as plain C.
 *
 * Same names, argument order and semantics as ops.h with an `ops_cuda_` prefix and a
 * context first; every array is a device pointer, and index arrays (pos, kv_off, n_ctx,
 * token ids) live on the device too. Work is queued on the context's stream and each
 * call returns 0 or the SF_* code of a failed launch (logged). The CPU functions in
 * ops.h (their `_ref` loops) are the oracle: tests/gpu/test_gpu_ops.c checks each op.
 *
 * Without CUDA every function returns SF_EUNSUP (ops_cuda_off.c). */
#ifndef SAEFLOW_TENSOR_OPS_CUDA_H
#define SAEFLOW_TENSOR_OPS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/ops.h"
#include "tensor/tensor_cuda.h"

/* Largest head_dim the attention kernel takes (SF_EUNSUP above it). */
#define OPS_CUDA_MAX_HEAD_DIM 256

int ops_cuda_rmsnorm_forward(struct cuda_ctx *c, float *out, const float *inp, const float *w,
                             size_t rows, size_t d, float eps);
int ops_cuda_layernorm_forward(struct cuda_ctx *c, float *out, const float *inp, const float *w,
                               const float *b, size_t rows, size_t d, float eps);
int ops_cuda_gelu_forward(struct cuda_ctx *c, float *out, const float *inp, size_t n);
int ops_cuda_swiglu_forward(struct cuda_ctx *c, float *out, const float *gate_up, size_t rows,
                            size_t hidden);
/* out = inp @ w^T + b with cuBLAS in the given math mode. */
int ops_cuda_linear_forward(struct cuda_ctx *c, enum cuda_math math, float *out, const float *inp,
                            const float *w, const float *b, size_t rows, size_t in, size_t n_out);
int ops_cuda_rope_forward(struct cuda_ctx *c, float *x, size_t ld, const size_t *pos, size_t rows,
                          size_t n_heads, size_t head_dim, size_t rot_dim, float theta,
                          enum rope_layout layout);
/* head_dim <= OPS_CUDA_MAX_HEAD_DIM; n_ctx[r] >= 1 (a row with 0 keys gets zeros). */
int ops_cuda_attention_forward(struct cuda_ctx *c, float *out, const float *q, size_t q_ld,
                               const float *k, const float *v, const size_t *kv_off,
                               const size_t *n_ctx, size_t rows, size_t n_heads, size_t n_kv_heads,
                               size_t head_dim);
int ops_cuda_softmax_forward(struct cuda_ctx *c, float *out, const float *inp, size_t rows,
                             size_t n);
int ops_cuda_add_inplace(struct cuda_ctx *c, float *out, const float *inp, size_t n);

/* ---- the engine's data movement ----
 * out[r] = tok_emb[tokens[r]] (+ pos_emb[pos[r]] when pos_emb is non-NULL), rows of d.
 * Token ids are trusted (the caller validated them on the host). */
int ops_cuda_embed_forward(struct cuda_ctx *c, float *out, const float *tok_emb,
                           const float *pos_emb, const int32_t *tokens, const size_t *pos,
                           size_t rows, size_t d);
/* Appends each row's K and V to the caches: for row r, kv_dim floats from
 * qkv + r*qkv_ld + k_col (and v_col) go to kc / vc + kv_off[r] + pos[r]*kv_dim. */
int ops_cuda_kv_store(struct cuda_ctx *c, float *kc, float *vc, const float *qkv, size_t qkv_ld,
                      size_t k_col, size_t v_col, size_t kv_dim, const size_t *kv_off,
                      const size_t *pos, size_t rows);
/* out[i] = inp[idx[i]] for i < n, rows of d floats. */
int ops_cuda_gather_rows(struct cuda_ctx *c, float *out, const float *inp, const size_t *idx,
                         size_t n, size_t d);

#endif
