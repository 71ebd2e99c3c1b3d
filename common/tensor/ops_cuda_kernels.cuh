// ops_cuda_kernels: the kernels behind ops_cuda.h (device code only). Included by
// ops_cuda.cu and by the kernel lab's CPU emulation (tests/gpu/emu).
#ifndef SAEFLOW_TENSOR_OPS_CUDA_KERNELS_CUH
#define SAEFLOW_TENSOR_OPS_CUDA_KERNELS_CUH

#include <math.h>
#include <stdint.h>

#include "tensor/cuda_device.cuh"
extern "C" {
#include "tensor/ops_cuda.h" /* OPS_CUDA_MAX_HEAD_DIM */
}

#define GELU_K       0.7978845608028654f // sqrt(2/pi)
#define ATT_WARPS    4
#define ATT_PER_LANE (OPS_CUDA_MAX_HEAD_DIM / 32)

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

__global__ void bias_rows_kernel(float *out, const float *b, size_t rows, size_t n_out)
{
    const size_t total = rows * n_out;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x)
        out[q] = b[q % n_out];
}

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

#endif
