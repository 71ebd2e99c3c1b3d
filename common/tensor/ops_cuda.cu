// ops_cuda: CUDA kernels for the engine's ops (see ops_cuda.h; semantics of ops.h).
// Written for clarity: one block per row for the row-wise ops (sums in double, as the
// reference loops do), grid-stride loops for the element-wise ones, and attention as
// one block per (row, head) with an online softmax per warp merged at the end.
#include <math.h>
#include <stdint.h>

#include "tensor/cuda_internal.cuh"
#include "tensor/ops_cuda_kernels.cuh"

extern "C" {
#include "tensor/ops_cuda.h"
}

#define ROW_THREADS 256
#define EW_THREADS  256

static bool fits_grid(size_t blocks)
{
    return blocks > 0 && blocks <= 0x7fffffffu;
}

// ---- norms --------------------------------------------------------------------------------

extern "C" int ops_cuda_rmsnorm_forward(struct cuda_ctx *c, float *out, const float *inp,
                                        const float *w, size_t rows, size_t d, float eps)
{
    if (rows == 0 || d == 0) return 0;
    if (!fits_grid(rows)) return SF_ERANGE;
    rmsnorm_kernel<<<(unsigned)rows, ROW_THREADS, 0, c->stream>>>(out, inp, w, d, eps);
    CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int ops_cuda_layernorm_forward(struct cuda_ctx *c, float *out, const float *inp,
                                          const float *w, const float *b, size_t rows, size_t d,
                                          float eps)
{
    if (rows == 0 || d == 0) return 0;
    if (!fits_grid(rows)) return SF_ERANGE;
    layernorm_kernel<<<(unsigned)rows, ROW_THREADS, 0, c->stream>>>(out, inp, w, b, d, eps);
    CUDA_LAUNCH_CHECK();
    return 0;
}

// ---- activations ----------------------------------------------------------------------------

extern "C" int ops_cuda_gelu_forward(struct cuda_ctx *c, float *out, const float *inp, size_t n)
{
    if (n == 0) return 0;
    gelu_kernel<<<cuda_blocks(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(out, inp, n);
    CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int ops_cuda_swiglu_forward(struct cuda_ctx *c, float *out, const float *gate_up,
                                       size_t rows, size_t hidden)
{
    if (rows == 0 || hidden == 0) return 0;
    swiglu_kernel<<<cuda_blocks(rows * hidden, EW_THREADS), EW_THREADS, 0, c->stream>>>(
        out, gate_up, rows, hidden);
    CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int ops_cuda_add_inplace(struct cuda_ctx *c, float *out, const float *inp, size_t n)
{
    if (n == 0) return 0;
    add_kernel<<<cuda_blocks(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(out, inp, n);
    CUDA_LAUNCH_CHECK();
    return 0;
}

// ---- linear ---------------------------------------------------------------------------------

extern "C" int ops_cuda_linear_forward(struct cuda_ctx *c, enum cuda_math math, float *out,
                                       const float *inp, const float *w, const float *b,
                                       size_t rows, size_t in, size_t n_out)
{
    if (rows == 0 || n_out == 0) return 0;
    float beta = 0.0f;
    if (b) {
        bias_rows_kernel<<<cuda_blocks(rows * n_out, EW_THREADS), EW_THREADS, 0, c->stream>>>(
            out, b, rows, n_out);
        CUDA_LAUNCH_CHECK();
        beta = 1.0f;
    }
    return cuda_sgemm(c, math, false, true, rows, n_out, in, 1.0f, inp, in, w, in, beta, out,
                      n_out);
}

// ---- RoPE -------------------------------------------------------------------------------------

extern "C" int ops_cuda_rope_forward(struct cuda_ctx *c, float *x, size_t ld, const size_t *pos,
                                     size_t rows, size_t n_heads, size_t head_dim, size_t rot_dim,
                                     float theta, enum rope_layout layout)
{
    if (rows == 0 || n_heads == 0 || rot_dim < 2) return 0;
    if (rot_dim > head_dim || rot_dim % 2) {
        log_error("ops_cuda_rope_invalid", "rot_dim=%zu head_dim=%zu", rot_dim, head_dim);
        return SF_EINVAL;
    }
    const size_t total = rows * (rot_dim / 2) * n_heads;
    rope_kernel<<<cuda_blocks(total, EW_THREADS), EW_THREADS, 0, c->stream>>>(
        x, ld, pos, rows, n_heads, head_dim, rot_dim, theta, layout == ROPE_INTERLEAVED);
    CUDA_LAUNCH_CHECK();
    return 0;
}

// ---- attention -----------------------------------------------------------------------------

extern "C" int ops_cuda_attention_forward(struct cuda_ctx *c, float *out, const float *q,
                                          size_t q_ld, const float *k, const float *v,
                                          const size_t *kv_off, const size_t *n_ctx, size_t rows,
                                          size_t n_heads, size_t n_kv_heads, size_t head_dim)
{
    if (rows == 0 || n_heads == 0) return 0;
    if (head_dim == 0 || head_dim > OPS_CUDA_MAX_HEAD_DIM || n_kv_heads == 0 ||
        n_heads % n_kv_heads) {
        log_error("ops_cuda_attention_unsupported", "head_dim=%zu n_heads=%zu n_kv_heads=%zu",
                  head_dim, n_heads, n_kv_heads);
        return SF_EUNSUP;
    }
    if (!fits_grid(rows * n_heads)) return SF_ERANGE;
    attention_kernel<<<(unsigned)(rows * n_heads), ATT_WARPS * 32, 0, c->stream>>>(
        out, q, q_ld, k, v, kv_off, n_ctx, n_heads, n_heads / n_kv_heads, head_dim,
        n_kv_heads * head_dim, 1.0f / sqrtf((float)head_dim));
    CUDA_LAUNCH_CHECK();
    return 0;
}

// ---- softmax -----------------------------------------------------------------------------------

extern "C" int ops_cuda_softmax_forward(struct cuda_ctx *c, float *out, const float *inp,
                                        size_t rows, size_t n)
{
    if (rows == 0 || n == 0) return 0;
    if (!fits_grid(rows)) return SF_ERANGE;
    softmax_kernel<<<(unsigned)rows, ROW_THREADS, 0, c->stream>>>(out, inp, n);
    CUDA_LAUNCH_CHECK();
    return 0;
}

// ---- data movement ---------------------------------------------------------------------------

extern "C" int ops_cuda_embed_forward(struct cuda_ctx *c, float *out, const float *tok_emb,
                                      const float *pos_emb, const int32_t *tokens,
                                      const size_t *pos, size_t rows, size_t d)
{
    if (rows == 0 || d == 0) return 0;
    embed_kernel<<<cuda_blocks(rows * d, EW_THREADS), EW_THREADS, 0, c->stream>>>(
        out, tok_emb, pos_emb, tokens, pos, rows, d);
    CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int ops_cuda_kv_store(struct cuda_ctx *c, float *kc, float *vc, const float *qkv,
                                 size_t qkv_ld, size_t k_col, size_t v_col, size_t kv_dim,
                                 const size_t *kv_off, const size_t *pos, size_t rows)
{
    if (rows == 0 || kv_dim == 0) return 0;
    kv_store_kernel<<<cuda_blocks(rows * kv_dim, EW_THREADS), EW_THREADS, 0, c->stream>>>(
        kc, vc, qkv, qkv_ld, k_col, v_col, kv_dim, kv_off, pos, rows);
    CUDA_LAUNCH_CHECK();
    return 0;
}

extern "C" int ops_cuda_gather_rows(struct cuda_ctx *c, float *out, const float *inp,
                                    const size_t *idx, size_t n, size_t d)
{
    if (n == 0 || d == 0) return 0;
    gather_rows_kernel<<<cuda_blocks(n * d, EW_THREADS), EW_THREADS, 0, c->stream>>>(out, inp, idx,
                                                                                     n, d);
    CUDA_LAUNCH_CHECK();
    return 0;
}
