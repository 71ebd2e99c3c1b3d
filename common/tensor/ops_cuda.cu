// ops_cuda: CUDA kernels for the engine's ops (see ops_cuda.h; semantics of ops.h).
// Written for clarity: one block per row for the row-wise ops (sums in double, as the
// reference loops do), grid-stride loops for the element-wise ones, and attention as
// one block per (row, head) with an online softmax per warp merged at the end.
#include <math.h>
#include <stdint.h>

#include "tensor/cuda_internal.cuh"

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

__global__ void rmsnorm_kernel(float *out, const float *inp, const float *w, size_t d, float eps)
{
    __shared__ double red[32];
    const size_t r = blockIdx.x;
    const float *x = inp + r * d;
    double ss = 0;
    for (size_t i = threadIdx.x; i < d; i += blockDim.x) ss += (double)x[i] * x[i];
    ss = block_sum(ss, red);
    const double s = 1.0 / sqrt(ss / (double)d + (double)eps);
    for (size_t i = threadIdx.x; i < d; i += blockDim.x)
        out[r * d + i] = (float)(w[i] * (s * x[i]));
}

__global__ void layernorm_kernel(float *out, const float *inp, const float *w, const float *b,
                                 size_t d, float eps)
{
    __shared__ double red[32];
    const size_t r = blockIdx.x;
    const float *x = inp + r * d;
    double sum = 0;
    for (size_t i = threadIdx.x; i < d; i += blockDim.x) sum += x[i];
    const double mean = block_sum(sum, red) / (double)d;
    double var = 0;
    for (size_t i = threadIdx.x; i < d; i += blockDim.x) var += (x[i] - mean) * (x[i] - mean);
    var = block_sum(var, red) / (double)d;
    const double s = 1.0 / sqrt(var + (double)eps);
    for (size_t i = threadIdx.x; i < d; i += blockDim.x)
        out[r * d + i] = (float)((x[i] - mean) * s * w[i] + (b ? b[i] : 0.0f));
}

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

#define GELU_K 0.7978845608028654f // sqrt(2/pi)

__global__ void gelu_kernel(float *out, const float *inp, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

__global__ void swiglu_kernel(float *out, const float *gate_up, size_t rows, size_t hidden)
{
    const size_t total = rows * hidden;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x) {
        const size_t r = q / hidden, i = q % hidden;
        const float g = gate_up[r * 2 * hidden + i], u = gate_up[r * 2 * hidden + hidden + i];
        out[q] = g / (1.0f + expf(-g)) * u;
    }
}

__global__ void add_kernel(float *out, const float *inp, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        out[i] += inp[i];
}

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

__global__ void bias_rows_kernel(float *out, const float *b, size_t rows, size_t n_out)
{
    const size_t total = rows * n_out;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x)
        out[q] = b[q % n_out];
}

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

// One thread per (row, pair j, head); the same float formulas as the CPU fast path.
__global__ void rope_kernel(float *x, size_t ld, const size_t *pos, size_t rows, size_t n_heads,
                            size_t head_dim, size_t rot_dim, float theta, int interleaved)
{
    const size_t half = rot_dim / 2, total = rows * half * n_heads;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x) {
        const size_t h = q % n_heads, j = (q / n_heads) % half, r = q / (n_heads * half);
        const float freq = 1.0f / powf(theta, (float)(2 * j) / (float)rot_dim);
        const float ang = (float)pos[r] * freq;
        const float cs = cosf(ang), sn = sinf(ang);
        const size_t i0 = interleaved ? 2 * j : j, i1 = interleaved ? 2 * j + 1 : j + half;
        float *xh = x + r * ld + h * head_dim;
        const float a = xh[i0], bb = xh[i1];
        xh[i0] = a * cs - bb * sn;
        xh[i1] = a * sn + bb * cs;
    }
}

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

#define ATT_WARPS    4
#define ATT_PER_LANE (OPS_CUDA_MAX_HEAD_DIM / 32)

// One block per (row, head). Warp w takes keys j = w, w + ATT_WARPS, ... and keeps a
// running max m, normaliser l and weighted sum acc (lane holds dims lane + 32 t); the
// warps' partial results are merged with the usual rescaling at the end.
__global__ void attention_kernel(float *out, const float *q, size_t q_ld, const float *k,
                                 const float *v, const size_t *kv_off, const size_t *n_ctx,
                                 size_t n_heads, size_t group, size_t head_dim, size_t kv_dim,
                                 float scale)
{
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float sacc[ATT_WARPS][OPS_CUDA_MAX_HEAD_DIM];
    const size_t r = blockIdx.x / n_heads, h = blockIdx.x % n_heads;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const float *qh = q + r * q_ld + h * head_dim;
    const float *kb = k + kv_off[r] + (h / group) * head_dim;
    const float *vb = v + kv_off[r] + (h / group) * head_dim;
    float qr[ATT_PER_LANE], acc[ATT_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++) {
        const size_t dim = lane + 32 * t;
        qr[t] = dim < head_dim ? qh[dim] : 0.0f;
        acc[t] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const size_t n = n_ctx[r];
    for (size_t j = w; j < n; j += ATT_WARPS) {
        const float *kj = kb + j * kv_dim, *vj = vb + j * kv_dim;
        float s = 0.0f;
#pragma unroll
        for (int t = 0; t < ATT_PER_LANE; t++) {
            const size_t dim = lane + 32 * t;
            if (dim < head_dim) s += qr[t] * kj[dim];
        }
        s = warp_sum(s) * scale;
        const float mn = fmaxf(m, s);
        const float corr = expf(m - mn); // 0 on the first key (m = -inf)
        const float p = expf(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int t = 0; t < ATT_PER_LANE; t++) {
            const size_t dim = lane + 32 * t;
            acc[t] = acc[t] * corr + (dim < head_dim ? p * vj[dim] : 0.0f);
        }
        m = mn;
    }
    if (lane == 0) {
        sm[w] = m;
        sl[w] = l;
    }
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++) {
        const size_t dim = lane + 32 * t;
        if (dim < head_dim) sacc[w][dim] = acc[t];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int q2 = 0; q2 < ATT_WARPS; q2++) M = fmaxf(M, sm[q2]);
    float L = 0.0f, f[ATT_WARPS];
    for (int q2 = 0; q2 < ATT_WARPS; q2++) {
        f[q2] = sl[q2] > 0.0f ? expf(sm[q2] - M) : 0.0f;
        L += sl[q2] * f[q2];
    }
    float *oh = out + r * (n_heads * head_dim) + h * head_dim;
    for (size_t dim = threadIdx.x; dim < head_dim; dim += blockDim.x) {
        float o = 0.0f;
        for (int q2 = 0; q2 < ATT_WARPS; q2++)
            if (f[q2] != 0.0f) o += sacc[q2][dim] * f[q2];
        oh[dim] = L > 0.0f ? o / L : 0.0f;
    }
}

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

__global__ void softmax_kernel(float *out, const float *inp, size_t n)
{
    __shared__ float redf[32];
    __shared__ double red[32];
    const size_t r = blockIdx.x;
    const float *x = inp + r * n;
    float mx = -INFINITY;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) mx = fmaxf(mx, x[i]);
    mx = block_max(mx, redf);
    double sum = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) sum += exp((double)x[i] - mx);
    sum = block_sum(sum, red);
    const double inv = 1.0 / sum;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x)
        out[r * n + i] = (float)(exp((double)x[i] - mx) * inv);
}

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

__global__ void embed_kernel(float *out, const float *tok_emb, const float *pos_emb,
                             const int32_t *tokens, const size_t *pos, size_t rows, size_t d)
{
    const size_t total = rows * d;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x) {
        const size_t r = q / d, j = q % d;
        float v = tok_emb[(size_t)tokens[r] * d + j];
        if (pos_emb) v += pos_emb[pos[r] * d + j];
        out[q] = v;
    }
}

__global__ void kv_store_kernel(float *kc, float *vc, const float *qkv, size_t qkv_ld, size_t k_col,
                                size_t v_col, size_t kv_dim, const size_t *kv_off,
                                const size_t *pos, size_t rows)
{
    const size_t total = rows * kv_dim;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x) {
        const size_t r = q / kv_dim, j = q % kv_dim;
        const size_t at = kv_off[r] + pos[r] * kv_dim + j;
        kc[at] = qkv[r * qkv_ld + k_col + j];
        vc[at] = qkv[r * qkv_ld + v_col + j];
    }
}

__global__ void gather_rows_kernel(float *out, const float *inp, const size_t *idx, size_t n,
                                   size_t d)
{
    const size_t total = n * d;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x)
        out[q] = inp[idx[q / d] * d + q % d];
}

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
