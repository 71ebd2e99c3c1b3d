// sae_cuda_kernels: the kernels of the GPU SAE training step (see sae_cuda.cu for the
// pipeline and sae_cuda.h for the contract). Device code only: included by sae_cuda.cu
// and by the kernel lab's CPU emulation (tests/gpu/emu), which runs these same kernels
// on host threads against the CPU oracle.
#ifndef SAEFLOW_SAE_CUDA_KERNELS_CUH
#define SAEFLOW_SAE_CUDA_KERNELS_CUH

#include <math.h>
#include <stdint.h>

#include "tensor/cuda_device.cuh"

enum { SLOT_MAIN = 0, SLOT_EXTRA = 1, SLOT_AUX = 2, N_SLOTS = 3 };
enum { TS_SQ = 0, TS_SQ4, TS_SQA, TS_XS2, TS_L0, TS_N };

// What the device computes about a step; copied to the host once, at the end.
struct dev_stats {
    double tot[TS_N];
    double mse, mse4, fvu, l0, auxk, loss;
    double scale[N_SLOTS];
    double gnorm;
    float clip;
    int bad;                   // the batch had a non-finite value: nothing was changed
    unsigned long long n_dead; // dead latents after this step's counter update
};

// ---- per-row top-k ----------------------------------------------------------------------

// Order-preserving map of a float to an unsigned key (larger float, larger key); -0 and
// +0 share a key since they are equal values.
__device__ __forceinline__ uint32_t order_key(float v)
{
    uint32_t u = __float_as_uint(v);
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ bool ranks_above(float va, uint32_t ia, float vb, uint32_t ib)
{
    return va > vb || (va == vb && ia < ib);
}

// Exclusive prefix counts of two per-thread flags in thread order, and their totals.
// Every thread of the block calls it; blockDim.x is a multiple of 32; sh holds 66 ints.
__device__ void block_scan2(int f1, int f2, int *ex1, int *ex2, int *tot1, int *tot2, int *sh)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const unsigned b1 = __ballot_sync(0xffffffffu, f1), b2 = __ballot_sync(0xffffffffu, f2);
    const unsigned below = (1u << lane) - 1u;
    if (lane == 0) {
        sh[wid] = __popc(b1);
        sh[32 + wid] = __popc(b2);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int a1 = 0, a2 = 0;
        for (int w = 0; w < nw; w++) {
            int c1 = sh[w], c2 = sh[32 + w];
            sh[w] = a1;
            sh[32 + w] = a2;
            a1 += c1;
            a2 += c2;
        }
        sh[64] = a1;
        sh[65] = a2;
    }
    __syncthreads();
    *ex1 = sh[wid] + __popc(b1 & below);
    *ex2 = sh[32 + wid] + __popc(b2 & below);
    *tot1 = sh[64];
    *tot2 = sh[65];
    __syncthreads();
}

// The value entry i competes with: a + bias, or NaN (never selected) when masked out.
__device__ __forceinline__ float topk_value(const float *row, const float *bias,
                                            const uint8_t *mask, size_t i)
{
    if (mask && !mask[i]) return __int_as_float(0x7fc00000); // NaN
    return row[i] + (bias ? bias[i] : 0.0f);
}

// The radix digits of the 32-bit order key, most significant first: 11 + 11 + 10 bits.
#define TOPK_PASSES   3
#define TOPK_MAX_BINS 2048
__device__ __forceinline__ int topk_shift(int pass)
{
    return pass == 0 ? 21 : pass == 1 ? 10 : 0;
}
__device__ __forceinline__ int topk_bins(int pass)
{
    return pass == 2 ? 1024 : 2048;
}

// Warp 0 finds, scanning the histogram from the top, the bin where the count of entries
// in that bin and above first reaches `rem`: writes the bin and the count strictly above
// it. Each lane sums a contiguous chunk of bins; a suffix scan across lanes finds the
// chunk, whose lane then walks it. Requires sum(hist) >= rem >= 1.
__device__ void topk_find_bin(const unsigned *hist, int nb, unsigned rem, int *bin_out,
                              unsigned *above_out)
{
    const int lane = threadIdx.x & 31, per = nb / 32, lo = lane * per;
    unsigned cnt = 0;
    for (int q = lo; q < lo + per; q++) cnt += hist[q];
    unsigned suf = cnt; // entries in this lane's chunk and every chunk above it
    for (int o = 1; o < 32; o <<= 1) {
        unsigned t = __shfl_down_sync(0xffffffffu, suf, o);
        if (lane + o < 32) suf += t;
    }
    if (suf >= rem && suf - cnt < rem) { // exactly one lane: suf falls with the lane
        unsigned cum = suf - cnt;
        for (int q = lo + per - 1; q >= lo; q--) {
            if (cum + hist[q] >= rem) {
                *bin_out = q;
                *above_out = cum;
                break;
            }
            cum += hist[q];
        }
    }
}

// Candidates a long row may compact into shared memory after the first digit.
#define TOPK_CAND 8192

// One block per row: the kk best entries by rank, sorted.
//   1. Radix select on the order key (digits of 11, 11 and 10 bits, a shared histogram
//      per pass, warp-aggregated increments): the key T of the kk-th best eligible
//      value and how many entries equal to T to take.
//   2. Gather in index order: every entry above T, and the lowest-indexed entries equal
//      to T (the tie rule).
//   3. Bitonic sort of the kk in shared memory, best first (cap = pow2 >= kk).
// Where the row's values come from (mode): 0 global memory on every pass; 1 a copy of
// the whole row in shared memory (rows that fit); 2 global memory for the first pass,
// then, when few enough entries share or beat the first digit of T (TOPK_CAND), only
// those entries, compacted to shared memory in index order (long rows).
__global__ void topk_kernel(const float *a, size_t lda, const float *bias, const uint8_t *mask,
                            size_t n, int kk, int cap, int mode, uint32_t *out_idx, float *out_val)
{
    SF_DYNAMIC_SMEM(float4, topk_smem4); // float4: 16-byte alignment for the arrays
    float *cv = (float *)topk_smem4;
    uint32_t *ci = (uint32_t *)(cv + cap);
    float *region = (float *)(ci + cap); // mode 1: n floats; mode 2: TOPK_CAND (v, index)
    __shared__ unsigned hist[TOPK_MAX_BINS];
    __shared__ uint32_t s_prefix, s_mask;
    __shared__ int s_bin, s_remaining, s_all, s_total;
    __shared__ unsigned s_above;
    __shared__ int scan_sh[66];
    const size_t b = blockIdx.x;
    const float *row = a + b * lda;
    const int tid = threadIdx.x, bs = blockDim.x;
    // the current source: src values (shared) with src_idx original indices, or global
    const float *src = NULL;
    const uint32_t *src_idx = NULL;
    size_t m = n;
    if (tid == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_remaining = kk;
        s_all = 0;
        s_total = 0;
    }
    if (mode == 1) {
        for (size_t i = tid; i < n; i += bs) region[i] = topk_value(row, bias, mask, i);
        src = region;
        __syncthreads();
    }
    for (int pass = 0; pass < TOPK_PASSES; pass++) {
        const int shift = topk_shift(pass), nb = topk_bins(pass);
        for (int q = tid; q < nb; q += bs) hist[q] = 0;
        __syncthreads();
        const uint32_t prefix = s_prefix, msk = s_mask;
        // The loop is uniform across the block so that whole warps can aggregate their
        // increments: lanes with the same bin add once (the top digit of typical data
        // falls in a few bins, which would serialise plain shared atomics).
        for (size_t start = 0; start < m; start += (size_t)bs) {
            const size_t i = start + (size_t)tid;
            unsigned bin = TOPK_MAX_BINS; // none
            if (i < m) {
                const float v = src ? src[i] : topk_value(row, bias, mask, i);
                if (!isnan(v)) {
                    const uint32_t key = order_key(v);
                    if ((key & msk) == prefix) bin = (key >> shift) & (unsigned)(nb - 1);
                }
            }
            const unsigned peers = __match_any_sync(0xffffffffu, bin);
            if (bin < TOPK_MAX_BINS && (threadIdx.x & 31) == (unsigned)(__ffs(peers) - 1))
                atomicAdd(&hist[bin], (unsigned)__popc(peers));
        }
        __syncthreads();
        if (tid < 32) {
            if (pass == 0) {
                unsigned part = 0;
                for (int q = tid; q < nb; q += 32) part += hist[q];
                part = warp_sum(part);
                if (tid == 0) {
                    s_total = (int)part;
                    if (part <= (unsigned)kk) s_all = 1;
                }
                __syncwarp();
            }
            if (!s_all) topk_find_bin(hist, nb, (unsigned)s_remaining, &s_bin, &s_above);
        }
        __syncthreads();
        if (s_all) break;
        if (tid == 0) {
            s_prefix = prefix | ((uint32_t)s_bin << shift);
            s_mask = msk | ((uint32_t)(nb - 1) << shift);
            s_remaining -= (int)s_above;
        }
        // long rows: keep only the entries whose first digit is at least T's
        const unsigned n_cand = s_above + hist[s_bin];
        if (pass == 0 && mode == 2 && n_cand <= TOPK_CAND) {
            float *cand_v = region;
            uint32_t *cand_i = (uint32_t *)(region + TOPK_CAND);
            const uint32_t first = (uint32_t)s_bin;
            int base = 0;
            for (size_t start = 0; start < n; start += (size_t)bs) {
                const size_t i = start + (size_t)tid;
                int keep = 0;
                float v = 0.0f;
                if (i < n) {
                    v = topk_value(row, bias, mask, i);
                    keep = !isnan(v) && (order_key(v) >> 21) >= first;
                }
                int e1, e2, t1, t2;
                block_scan2(keep, 0, &e1, &e2, &t1, &t2, scan_sh);
                if (keep && base + e1 < TOPK_CAND) {
                    cand_v[base + e1] = v;
                    cand_i[base + e1] = (uint32_t)i;
                }
                base += t1;
            }
            src = cand_v;
            src_idx = cand_i;
            m = n_cand;
        }
        __syncthreads();
    }
    const bool all = s_all != 0;
    const uint32_t T = s_prefix;
    const int rem = all ? 0 : s_remaining;     // entries equal to T to take
    const int n_sel = all ? s_total : kk;      // entries selected in all
    const int n_gt = all ? s_total : kk - rem; // entries strictly above T (or all eligible)
    int base_gt = 0, base_eq = 0;
    for (size_t start = 0; start < m; start += (size_t)bs) {
        if (base_gt >= n_gt && base_eq >= rem) break; // uniform: block-wide totals
        const size_t i = start + (size_t)tid;
        int gt = 0, eq = 0;
        float v = 0.0f;
        if (i < m) {
            v = src ? src[i] : topk_value(row, bias, mask, i);
            if (!isnan(v)) {
                const uint32_t key = order_key(v);
                gt = all || key > T;
                eq = !all && key == T;
            }
        }
        const uint32_t id = i < m ? (src_idx ? src_idx[i] : (uint32_t)i) : 0;
        int e1, e2, t1, t2;
        block_scan2(gt, eq, &e1, &e2, &t1, &t2, scan_sh);
        if (gt) {
            int p = base_gt + e1;
            if (p < n_gt && p < cap) {
                cv[p] = v;
                ci[p] = id;
            }
        }
        if (eq) {
            int p = base_eq + e2;
            if (p < rem && n_gt + p < cap) {
                cv[n_gt + p] = v;
                ci[n_gt + p] = id;
            }
        }
        base_gt += t1;
        base_eq += t2;
    }
    __syncthreads();
    for (int p = n_sel + tid; p < cap; p += bs) {
        cv[p] = -INFINITY;
        ci[p] = 0xffffffffu;
    }
    __syncthreads();
    for (int size = 2; size <= cap; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int p = tid; p < cap; p += bs) {
                int q = p ^ stride;
                if (q <= p) continue;
                bool first = (p & size) == 0; // this run ends up best-first
                bool sw = first ? ranks_above(cv[q], ci[q], cv[p], ci[p])
                                : ranks_above(cv[p], ci[p], cv[q], ci[q]);
                if (sw) {
                    float tv = cv[p];
                    cv[p] = cv[q];
                    cv[q] = tv;
                    uint32_t ti = ci[p];
                    ci[p] = ci[q];
                    ci[q] = ti;
                }
            }
            __syncthreads();
        }
    }
    for (int p = tid; p < kk; p += bs) {
        out_idx[b * (size_t)kk + p] = ci[p];
        out_val[b * (size_t)kk + p] = ci[p] == 0xffffffffu ? -INFINITY : cv[p];
    }
}

// ---- the step's kernels ------------------------------------------------------------------

__global__ void prep_kernel(const float *x, const float *b_dec, float scale, size_t B, size_t d,
                            float *xs, float *xc, struct dev_stats *st)
{
    int bad = 0;
    const size_t total = B * d;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < total;
         q += (size_t)gridDim.x * blockDim.x) {
        float xv = x[q];
        if (!isfinite(xv)) bad = 1;
        float v = xv * scale;
        xs[q] = v;
        xc[q] = v - b_dec[q % d];
    }
    if (__syncthreads_or(bad) && threadIdx.x == 0) st->bad = 1;
}

__global__ void dead_mask_kernel(const int64_t *since, int64_t dead_tokens, size_t n, uint8_t *dead)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dead[i] = since[i] >= dead_tokens;
}

// One block per token: the main reconstruction error and the upstream rows.
//   mi/mv: (B, kk) sorted by rank, the first k are the main code, the rest Multi-TopK's
//   extras; ai/av: (B, ka) the AuxK selection (ka may be 0).
//   err: (B, d) = x_hat - xs; U: (N_SLOTS, B, d); tok: (B, TS_N).
__global__ void decode_kernel(const float *xs, const float *b_dec, const float *W_dec, size_t d,
                              size_t B, const uint32_t *mi, const float *mv, int kk, int k,
                              const uint32_t *ai, const float *av, int ka, int multi, float *err,
                              float *U, double *tok)
{
    SF_DYNAMIC_SMEM(unsigned char, dec_smem);
    uint32_t *si = (uint32_t *)dec_smem;
    float *sz = (float *)(si + kk + ka);
    __shared__ double red[32];
    const size_t b = blockIdx.x;
    for (int q = threadIdx.x; q < kk + ka; q += blockDim.x) {
        uint32_t i = q < kk ? mi[b * kk + q] : ai[b * ka + (q - kk)];
        float v = q < kk ? mv[b * kk + q] : av[b * ka + (q - kk)];
        si[q] = i;
        sz[q] = (i != 0xffffffffu && v > 0.0f) ? v : 0.0f;
    }
    __syncthreads();
    const int n_main = k < kk ? k : kk;
    const float *xr = xs + b * d;
    float *u0 = U + ((size_t)SLOT_MAIN * B + b) * d;
    float *u1 = U + ((size_t)SLOT_EXTRA * B + b) * d;
    float *ua = U + ((size_t)SLOT_AUX * B + b) * d;
    double sq = 0, sq4 = 0, sqa = 0, xs2 = 0;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        float e = b_dec[j];
        for (int q = 0; q < n_main; q++)
            if (sz[q] != 0.0f) e += sz[q] * W_dec[(size_t)si[q] * d + j];
        e -= xr[j];
        err[b * d + j] = e;
        sq += (double)e * e;
        xs2 += (double)xr[j] * xr[j];
        float uu = e;
        if (multi) {
            float v1 = e;
            for (int q = n_main; q < kk; q++)
                if (sz[q] != 0.0f) v1 += sz[q] * W_dec[(size_t)si[q] * d + j];
            sq4 += (double)v1 * v1;
            v1 *= 0.125f;
            uu += v1;
            u1[j] = v1;
        }
        if (ka > 0) {
            float va = e;
            for (int q = kk; q < kk + ka; q++)
                if (sz[q] != 0.0f) va += sz[q] * W_dec[(size_t)si[q] * d + j];
            sqa += (double)va * va;
            ua[j] = va;
        }
        u0[j] = uu;
    }
    sq = block_sum(sq, red);
    sq4 = block_sum(sq4, red);
    sqa = block_sum(sqa, red);
    xs2 = block_sum(xs2, red);
    if (threadIdx.x == 0) {
        double l0 = 0;
        for (int q = 0; q < n_main; q++) l0 += sz[q] != 0.0f;
        double *t = tok + b * TS_N;
        t[TS_SQ] = sq;
        t[TS_SQ4] = sq4;
        t[TS_SQA] = sqa;
        t[TS_XS2] = xs2;
        t[TS_L0] = l0;
    }
}

// part[(v * nch + ch) * d + j] = sum over rows r of chunk ch of w_v[r] * M_v[r * d + j]
// (w_v NULL: weight 1), for up to three matrices v (blockIdx.z). Chunks of `chunk` rows.
struct colsum_args {
    const float *M[3];
    const float *w[3];
};
__global__ void colsum_part_kernel(colsum_args args, size_t rows, size_t d, size_t chunk,
                                   size_t nch, double *part)
{
    const size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const size_t ch = blockIdx.y, v = blockIdx.z;
    if (j >= d) return;
    const float *M = args.M[v], *w = args.w[v];
    size_t r0 = ch * chunk, r1 = r0 + chunk < rows ? r0 + chunk : rows;
    double acc = 0;
    for (size_t r = r0; r < r1; r++) acc += (double)(w ? w[r] : 1.0f) * M[r * d + j];
    part[(v * nch + ch) * d + j] = acc;
}

__global__ void colsum_final_kernel(const double *part, size_t nch, size_t d, int nv, double *out)
{
    const size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (j >= d) return;
    for (int v = 0; v < nv; v++) {
        double acc = 0;
        for (size_t ch = 0; ch < nch; ch++) acc += part[((size_t)v * nch + ch) * d + j];
        out[(size_t)v * d + j] = acc;
    }
}

// One block: batch totals, loss terms and slot scales (sae_train_fast.c step 5).
__global__ void finalize_kernel(const double *tok, size_t B, const double *colsum, size_t d,
                                double auxk_alpha, int use_aux, struct dev_stats *st)
{
    __shared__ double red[32];
    double tot[TS_N];
    for (int s = 0; s < TS_N; s++) {
        double acc = 0;
        for (size_t b = threadIdx.x; b < B; b += blockDim.x) acc += tok[b * TS_N + s];
        tot[s] = block_sum(acc, red);
    }
    double mx = 0, me = 0;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        double sx = colsum[j] / (double)B, se = colsum[d + j] / (double)B;
        mx += sx * sx;
        me += se * se;
    }
    const double mean_x2 = block_sum(mx, red), mean_e2 = block_sum(me, red);
    if (threadIdx.x != 0) return;
    for (int s = 0; s < TS_N; s++) st->tot[s] = tot[s];
    const double Bd = (double)B * (double)d;
    st->mse = tot[TS_SQ] / Bd;
    st->mse4 = tot[TS_SQ4] / Bd;
    const double var = tot[TS_XS2] - (double)B * mean_x2;
    st->fvu = var > 0 ? tot[TS_SQ] / var : 0;
    st->l0 = tot[TS_L0] / (double)B;
    st->scale[SLOT_MAIN] = 2.0 / Bd;
    st->scale[SLOT_EXTRA] = 2.0 / Bd;
    st->scale[SLOT_AUX] = 0;
    st->auxk = 0;
    if (use_aux) {
        const double D = tot[TS_SQ] - (double)B * mean_e2;
        if (D > 0) {
            st->auxk = tot[TS_SQA] / D;
            st->scale[SLOT_AUX] = auxk_alpha * 2.0 / D;
        }
    }
    st->loss = st->mse + st->mse4 / 8.0 + (use_aux ? auxk_alpha * st->auxk : 0.0);
}

__device__ __forceinline__ int slot_of(int q, int kk, int k, int multi)
{
    return q >= kk ? SLOT_AUX : (multi && q >= k ? SLOT_EXTRA : SLOT_MAIN);
}

// One warp per entry (token b, position q of per = kk + ka): its latent (sort key; n
// when absent), z, and ga = dz/da <W_dec[i], U_slot[b]> (unscaled).
__global__ void entries_kernel(const uint32_t *mi, const float *mv, int kk, int k,
                               const uint32_t *ai, const float *av, int ka, int multi, size_t B,
                               size_t n, size_t d, const float *W_dec, const float *U,
                               uint32_t *key, uint32_t *ord, float *ez, float *ega)
{
    const int per = kk + ka;
    const size_t E = B * (size_t)per;
    const int lane = threadIdx.x & 31;
    const size_t nwarps = ((size_t)gridDim.x * blockDim.x) >> 5;
    // grid-stride over entries, one warp each (the loop is uniform within a warp)
    for (size_t warp = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5; warp < E;
         warp += nwarps) {
        const size_t b = warp / per;
        const int q = (int)(warp % per);
        const uint32_t i = q < kk ? mi[b * kk + q] : ai[b * ka + (q - kk)];
        const float v = q < kk ? mv[b * kk + q] : av[b * ka + (q - kk)];
        const bool present = i != 0xffffffffu && i < n;
        const float z = present && v > 0.0f ? v : 0.0f;
        float dot = 0.0f;
        if (z != 0.0f) {
            const int slot = slot_of(q, kk, k, multi);
            const float *w = W_dec + (size_t)i * d;
            const float *u = U + ((size_t)slot * B + b) * d;
            for (size_t j = lane; j < d; j += 32) dot += w[j] * u[j];
            dot = warp_sum(dot);
        }
        if (lane == 0) {
            key[warp] = present ? i : (uint32_t)n;
            ord[warp] = (uint32_t)warp;
            ez[warp] = z;
            ega[warp] = z != 0.0f ? dot : 0.0f; // dz/da is 1 where z > 0, else 0
        }
    }
}

__global__ void segments_kernel(const uint32_t *skey, size_t E, size_t n, int *seg_start,
                                int *seg_end)
{
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < E;
         p += (size_t)gridDim.x * blockDim.x) {
        uint32_t k = skey[p];
        if (k >= n) continue;
        if (p == 0 || skey[p - 1] != k) seg_start[k] = (int)p;
        if (p == E - 1 || skey[p + 1] != k) seg_end[k] = (int)(p + 1);
    }
}

// One block per latent i: its gradient rows from its entries (token order), the decoder
// gradient's projection off the row, db_enc, whether it fired, and its share of the
// squared gradient norm. Latents with no entry get db_enc = 0 and are not touched.
__global__ void latent_grad_kernel(const uint32_t *sord, const int *seg_start, const int *seg_end,
                                   const float *ez, const float *ega, int per, int kk, int k,
                                   int multi, const float *U, const float *xc, size_t B, size_t d,
                                   const float *W_dec, const struct dev_stats *st, int project,
                                   float fire, float *gW_enc, float *gW_dec, float *gb_enc,
                                   uint8_t *touched, uint8_t *fired, double *norm_part)
{
    __shared__ double red[32];
    const size_t i = blockIdx.x;
    const int s = seg_start[i], e = seg_end[i];
    if (s >= e) {
        if (threadIdx.x == 0) {
            gb_enc[i] = 0.0f;
            norm_part[i] = 0;
        }
        return;
    }
    float sc[N_SLOTS];
    for (int q = 0; q < N_SLOTS; q++) sc[q] = (float)st->scale[q];
    double gbs = 0;
    int fir = 0;
    for (int p = s + threadIdx.x; p < e; p += blockDim.x) {
        const uint32_t en = sord[p];
        const int slot = slot_of((int)(en % per), kk, k, multi);
        gbs += (double)(ega[en] * sc[slot]);
        if (slot == SLOT_MAIN && ez[en] > fire) fir = 1;
    }
    gbs = block_sum(gbs, red);
    fir = __syncthreads_or(fir);
    float *gwd = gW_dec + i * d, *gwe = gW_enc + i * d;
    const float *w = W_dec + i * d;
    double dw = 0, ww = 0;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        float gd = 0.0f, ge = 0.0f;
        for (int p = s; p < e; p++) {
            const uint32_t en = sord[p];
            const size_t b = en / per;
            const int slot = slot_of((int)(en % per), kk, k, multi);
            const float zz = ez[en] * sc[slot], g = ega[en] * sc[slot];
            if (zz != 0.0f) gd += zz * U[((size_t)slot * B + b) * d + j];
            if (g != 0.0f) ge += g * xc[b * d + j];
        }
        gwd[j] = gd;
        gwe[j] = ge;
        dw += (double)gd * w[j];
        ww += (double)w[j] * w[j];
    }
    dw = block_sum(dw, red);
    ww = block_sum(ww, red);
    const float coef = project && ww > 0 ? (float)(dw / ww) : 0.0f;
    double nn = 0;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        float gd = gwd[j];
        if (coef != 0.0f) {
            gd -= coef * w[j];
            gwd[j] = gd;
        }
        nn += (double)gd * gd + (double)gwe[j] * gwe[j];
    }
    nn = block_sum(nn, red);
    if (threadIdx.x == 0) {
        const float gb = (float)gbs;
        gb_enc[i] = gb;
        norm_part[i] = nn + (double)gb * gb;
        touched[i] = 1;
        if (fir) fired[i] = 1;
    }
}

// gb_dec[j] = scale_main * sum_b U0[b][j] - sum_i gb_enc[i] W_enc[i][j] (both sums in
// double, from colsum / enc_sum).
__global__ void bdec_grad_kernel(const double *sum_u0, const double *enc_sum, size_t d,
                                 const struct dev_stats *st, float *gb_dec)
{
    const size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (j < d) gb_dec[j] = (float)(st->scale[SLOT_MAIN] * sum_u0[j] - enc_sum[j]);
}

__global__ void gnorm_kernel(const double *norm_part, size_t n, const float *gb_dec, size_t d,
                             double grad_clip, struct dev_stats *st)
{
    __shared__ double red[32];
    double acc = 0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x) acc += norm_part[i];
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) acc += (double)gb_dec[j] * gb_dec[j];
    acc = block_sum(acc, red);
    if (threadIdx.x == 0) {
        const double gn = sqrt(acc);
        float clip = 1.0f;
        if (grad_clip > 0) {
            double cc = grad_clip / (gn + 1e-6);
            if (cc < 1.0) clip = (float)cc;
        }
        st->gnorm = gn;
        st->clip = clip;
    }
}

struct adam_f {
    float b1, c1, b2, c2, step, inv_bc2, eps;
};

__device__ __forceinline__ void adam_one(float *p, float *m, float *v, float g, const adam_f &a)
{
    const float mj = a.b1 * *m + a.c1 * g;
    const float vj = a.b2 * *v + a.c2 * g * g;
    *m = mj;
    *v = vj;
    *p -= a.step * mj / (sqrtf(vj) * a.inv_bc2 + a.eps);
}

// One block per latent row: Adam on W_enc[i] and W_dec[i] (gradient 0 on untouched
// rows, so their moments decay as in the CPU step), then the decoder row renormalised.
__global__ void adam_rows_kernel(float *W_enc, float *mWe, float *vWe, const float *gWe,
                                 float *W_dec, float *mWd, float *vWd, const float *gWd,
                                 const uint8_t *touched, size_t d, adam_f af, int renorm,
                                 const struct dev_stats *st)
{
    __shared__ double red[32];
    if (st->bad) return;
    const size_t i = blockIdx.x;
    const bool tch = touched[i] != 0;
    const float clip = st->clip;
    double ss = 0;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) {
        const size_t o = i * d + j;
        adam_one(W_enc + o, mWe + o, vWe + o, tch ? gWe[o] * clip : 0.0f, af);
        adam_one(W_dec + o, mWd + o, vWd + o, tch ? gWd[o] * clip : 0.0f, af);
        ss += (double)W_dec[o] * W_dec[o];
    }
    if (!renorm) return;
    ss = block_sum(ss, red);
    const float nn = sqrtf((float)ss);
    if (!(nn > 0)) return;
    const float inv = 1.0f / nn;
    for (size_t j = threadIdx.x; j < d; j += blockDim.x) W_dec[i * d + j] *= inv;
}

__global__ void adam_vec_kernel(float *p, float *m, float *v, const float *g, size_t len, adam_f af,
                                const struct dev_stats *st)
{
    if (st->bad) return;
    const float clip = st->clip;
    for (size_t q = blockIdx.x * (size_t)blockDim.x + threadIdx.x; q < len;
         q += (size_t)gridDim.x * blockDim.x)
        adam_one(p + q, m + q, v + q, g[q] * clip, af);
}

__global__ void dead_update_kernel(int64_t *since, const uint8_t *fired, size_t n, int64_t B,
                                   int64_t dead_tokens, struct dev_stats *st)
{
    const bool bad = st->bad != 0;
    unsigned cnt = 0;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        int64_t s = since[i];
        if (!bad) {
            if (fired[i])
                s = 0;
            else if (s < INT64_MAX - B)
                s += B;
            since[i] = s;
        }
        cnt += s >= dead_tokens;
    }
    cnt = warp_sum(cnt);
    if ((threadIdx.x & 31) == 0 && cnt) atomicAdd(&st->n_dead, (unsigned long long)cnt);
}

#endif
