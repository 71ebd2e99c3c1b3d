// sae_cuda: the Top-K SAE training step on the GPU (see sae_cuda.h for the contract and
// sae_train.h for the math, which this file mirrors line for line).
//
// One step, all on the context's stream:
//   prep        xs = s*x, xc = xs - b_dec; flags a non-finite input
//   GEMM        a = xc W_enc^T                          (cuBLAS; the only dense op)
//   topk        per token, the kk best of a + b_enc; the k_aux best among dead latents
//   decode      per token: err = x_hat - xs, upstream rows U (main, Multi-TopK, AuxK)
//   reductions  column sums and per-token sums -> loss terms and slot scales (device)
//   entries     per (token, selected latent): z and ga = dz/da <W_dec[i], U_slot>
//   sort        entries by latent (stable radix sort, so token order within a latent)
//   latent      one block per latent: dW_dec, dW_enc, db_enc, projection, norm part
//   b_dec       scale * sum U0 - W_enc^T db_enc          (double column sums)
//   optimise    global norm -> clip; Adam per row + renormalisation; dead counters
// Every reduction has a fixed order, so results are deterministic run to run.
// A non-finite input sets a device flag that the state-changing kernels check.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cub/device/device_radix_sort.cuh>

#include "sae/sae_cuda_kernels.cuh"
#include "tensor/cuda_internal.cuh"

extern "C" {
#include "sae/sae_cuda.h"
#include "sae/sae_train_internal.h"
}

#define THREADS      256
#define TOPK_THREADS 512

static int next_pow2(int v)
{
    int p = 1;
    while (p < v) p <<= 1;
    return p;
}

// mode_override: -1 picks the fastest mode that fits; 0/1/2 force one (the lab uses it
// to check every path).
static int topk_launch_mode(cudaStream_t s, const float *a, size_t lda, const float *bias,
                            const uint8_t *mask, size_t B, size_t n, size_t kk, uint32_t *idx,
                            float *val, int mode_override)
{
    if (B == 0 || kk == 0) return 0;
    if (kk > SAE_CUDA_TOPK_MAX || n > 0x7fffffffu || B > 0x7fffffffu) {
        log_error("sae_cuda_topk_range", "B=%zu n=%zu kk=%zu max_kk=%d", B, n, kk,
                  SAE_CUDA_TOPK_MAX);
        return SF_ERANGE;
    }
    const int cap = next_pow2((int)kk);
    const size_t base = (size_t)cap * (sizeof(float) + sizeof(uint32_t));
    const size_t row_bytes = n * sizeof(float);
    const size_t cand_bytes = (size_t)TOPK_CAND * (sizeof(float) + sizeof(uint32_t));
    int dev = 0, optin = 0;
    CUDA_TRY(cudaGetDevice(&dev));
    CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    // keep 12 KiB of the opt-in budget for the kernel's static shared arrays
    const size_t budget = optin > 12 * 1024 ? (size_t)optin - 12 * 1024 : 0;
    int mode = mode_override;
    if (mode < 0) mode = base + row_bytes <= budget ? 1 : base + cand_bytes <= budget ? 2 : 0;
    size_t smem = base + (mode == 1 ? row_bytes : mode == 2 ? cand_bytes : 0);
    if (smem > budget && smem > 48 * 1024) {
        log_error("sae_cuda_topk_smem", "mode=%d bytes=%zu budget=%zu", mode, smem, budget);
        return SF_EUNSUP;
    }
    if (smem > 32 * 1024) // beyond what fits beside the static arrays without opting in
        CUDA_TRY(cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      (int)smem));
    topk_kernel<<<(unsigned)B, TOPK_THREADS, smem, s>>>(a, lda, bias, mask, n, (int)kk, cap, mode,
                                                        idx, val);
    CUDA_LAUNCH_CHECK();
    return 0;
}

static int topk_launch(cudaStream_t s, const float *a, size_t lda, const float *bias,
                       const uint8_t *mask, size_t B, size_t n, size_t kk, uint32_t *idx,
                       float *val)
{
    return topk_launch_mode(s, a, lda, bias, mask, B, n, kk, idx, val, -1);
}

extern "C" int sae_cuda_topk(struct cuda_ctx *ctx, const float *a, size_t lda, const float *bias,
                             const uint8_t *mask, size_t B, size_t n, size_t kk, uint32_t *idx,
                             float *val)
{
    return topk_launch(ctx->stream, a, lda, bias, mask, B, n, kk, idx, val);
}

extern "C" int sae_cuda_topk_mode(struct cuda_ctx *ctx, int mode, const float *a, size_t lda,
                                  const float *bias, const uint8_t *mask, size_t B, size_t n,
                                  size_t kk, uint32_t *idx, float *val)
{
    if (mode < 0 || mode > 2) return SF_EINVAL;
    return topk_launch_mode(ctx->stream, a, lda, bias, mask, B, n, kk, idx, val, mode);
}

// ---- the trainer ---------------------------------------------------------------------------

enum {
    M_WENC,
    M_BENC,
    M_WDEC,
    M_BDEC,
    M_MWE,
    M_VWE,
    M_MBE,
    M_VBE,
    M_MWD,
    M_VWD,
    M_MBD,
    M_VBD,
    M_GWE,
    M_GWD,
    M_GBE,
    M_GBD,
    M_SINCE,
    M_TOUCHED,
    M_FIRED,
    M_DEAD,
    M_NORMP,
    M_SEGS,
    M_SEGE,
    M_STATS,
    M_ENCSUM,
    // per batch (grown on demand)
    M_X,
    M_XS,
    M_XC,
    M_A,
    M_ERR,
    M_U,
    M_TOK,
    M_PART,
    M_COLSUM,
    M_MI,
    M_MV,
    M_AI,
    M_AV,
    M_KEY,
    M_SKEY,
    M_ORD,
    M_SORD,
    M_EZ,
    M_EGA,
    M_SORTTMP,
    M_COUNT
};

struct sae_cuda_trainer {
    struct sae_trainer *t;
    struct cuda_ctx *ctx;
    enum cuda_math math;
    size_t n, d;
    size_t n_dead;    // after the last step (host copy of the device count)
    bool bdec_synced; // the device b_dec reflects t's data initialisation
    size_t last_B;
    struct cuda_buf mem[M_COUNT];
};

#define DF(g, id)   ((float *)(g)->mem[id].ptr)
#define DD(g, id)   ((double *)(g)->mem[id].ptr)
#define DU32(g, id) ((uint32_t *)(g)->mem[id].ptr)
#define DU8(g, id)  ((uint8_t *)(g)->mem[id].ptr)
#define DI(g, id)   ((int *)(g)->mem[id].ptr)
#define DSTATS(g)   ((struct dev_stats *)(g)->mem[M_STATS].ptr)

static size_t kk_for(const struct sae_train_config *c, size_t k)
{
    size_t kk = c->multi_topk ? 4 * k : k;
    return kk < c->n ? kk : c->n;
}

static int upload_state(struct sae_cuda_trainer *g)
{
    struct sae_trainer *t = g->t;
    const size_t nd = g->n * g->d, n = g->n, d = g->d;
    struct {
        int id;
        const void *src;
        size_t bytes;
    } up[] = {
        {M_WENC, t->sae->W_enc, nd * 4}, {M_BENC, t->sae->b_enc, n * 4},
        {M_WDEC, t->sae->W_dec, nd * 4}, {M_BDEC, t->sae->b_dec, d * 4},
        {M_MWE, t->m_W_enc, nd * 4},     {M_VWE, t->v_W_enc, nd * 4},
        {M_MBE, t->m_b_enc, n * 4},      {M_VBE, t->v_b_enc, n * 4},
        {M_MWD, t->m_W_dec, nd * 4},     {M_VWD, t->v_W_dec, nd * 4},
        {M_MBD, t->m_b_dec, d * 4},      {M_VBD, t->v_b_dec, d * 4},
        {M_SINCE, t->since_fire, n * 8},
    };
    for (size_t q = 0; q < sizeof up / sizeof up[0]; q++) {
        int rc = cuda_buf_upload(g->ctx, &g->mem[up[q].id], 0, up[q].src, up[q].bytes);
        if (rc) return rc;
    }
    return cuda_ctx_sync(g->ctx);
}

extern "C" int sae_cuda_trainer_sync(struct sae_cuda_trainer *g)
{
    struct sae_trainer *t = g->t;
    const size_t nd = g->n * g->d, n = g->n, d = g->d;
    struct {
        int id;
        void *dst;
        size_t bytes;
    } down[] = {
        {M_WENC, t->sae->W_enc, nd * 4}, {M_BENC, t->sae->b_enc, n * 4},
        {M_WDEC, t->sae->W_dec, nd * 4}, {M_BDEC, t->sae->b_dec, d * 4},
        {M_MWE, t->m_W_enc, nd * 4},     {M_VWE, t->v_W_enc, nd * 4},
        {M_MBE, t->m_b_enc, n * 4},      {M_VBE, t->v_b_enc, n * 4},
        {M_MWD, t->m_W_dec, nd * 4},     {M_VWD, t->v_W_dec, nd * 4},
        {M_MBD, t->m_b_dec, d * 4},      {M_VBD, t->v_b_dec, d * 4},
        {M_SINCE, t->since_fire, n * 8},
    };
    for (size_t q = 0; q < sizeof down / sizeof down[0]; q++) {
        int rc = cuda_buf_download(g->ctx, down[q].dst, &g->mem[down[q].id], 0, down[q].bytes);
        if (rc) return rc;
    }
    return 0;
}

extern "C" void sae_cuda_trainer_destroy(struct sae_cuda_trainer **pg)
{
    if (!pg || !*pg) return;
    struct sae_cuda_trainer *g = *pg;
    if (g->ctx) cuda_ctx_sync(g->ctx);
    for (int q = 0; q < M_COUNT; q++) cuda_buf_free(&g->mem[q]);
    free(g);
    *pg = NULL;
}

// Bytes of the buffers that live as long as the trainer.
static size_t fixed_bytes(int id, size_t n, size_t d)
{
    switch (id) {
    case M_WENC:
    case M_WDEC:
    case M_MWE:
    case M_VWE:
    case M_MWD:
    case M_VWD:
    case M_GWE:
    case M_GWD:
        return n * d * sizeof(float);
    case M_BENC:
    case M_MBE:
    case M_VBE:
    case M_GBE:
        return n * sizeof(float);
    case M_BDEC:
    case M_MBD:
    case M_VBD:
    case M_GBD:
        return d * sizeof(float);
    case M_SINCE:
        return n * sizeof(int64_t);
    case M_TOUCHED:
    case M_FIRED:
    case M_DEAD:
        return n;
    case M_NORMP:
        return n * sizeof(double);
    case M_SEGS:
    case M_SEGE:
        return n * sizeof(int);
    case M_STATS:
        return sizeof(struct dev_stats);
    case M_ENCSUM:
        return d * sizeof(double);
    default:
        return 1;
    }
}

extern "C" int sae_cuda_trainer_new(struct sae_trainer *t, struct cuda_ctx *ctx,
                                    enum cuda_math math, struct sae_cuda_trainer **out)
{
    *out = NULL;
    const struct sae_train_config *c = &t->cfg;
    if (c->arch != SAE_TOPK) {
        log_error("sae_cuda_unsupported", "arch=%s supported=topk", sae_arch_name(c->arch));
        return SF_EUNSUP;
    }
    if (c->optimizer != SAE_OPT_ADAM) {
        log_error("sae_cuda_unsupported", "optimizer=%s supported=adam",
                  sae_optimizer_name(c->optimizer));
        return SF_EUNSUP;
    }
    size_t kmax = c->k > c->k0 ? c->k : c->k0;
    size_t kk = kk_for(c, kmax), ka = sae_train_config_k_aux(c);
    if (kk > SAE_CUDA_TOPK_MAX || (c->auxk_alpha > 0 && ka > SAE_CUDA_TOPK_MAX) ||
        c->n >= 0x7fffffffu) {
        log_error("sae_cuda_unsupported", "kk=%zu k_aux=%zu n=%zu max_k=%d", kk, ka, c->n,
                  SAE_CUDA_TOPK_MAX);
        return SF_EUNSUP;
    }
    struct sae_cuda_trainer *g = (struct sae_cuda_trainer *)calloc(1, sizeof *g);
    if (!g) return SF_ENOMEM;
    g->t = t;
    g->ctx = ctx;
    g->math = math;
    g->n = c->n;
    g->d = c->d_in;
    const size_t n = g->n, d = g->d;
    int rc = 0;
    for (int q = 0; q <= M_ENCSUM && rc == 0; q++)
        rc = cuda_buf_alloc(&g->mem[q], fixed_bytes(q, n, d));
    if (rc == 0) rc = cuda_memset(ctx, g->mem[M_DEAD].ptr, 0, n);
    if (rc == 0) rc = upload_state(g);
    if (rc) {
        log_error("sae_cuda_new_failed", "n=%zu d_in=%zu rc=%d", n, d, rc);
        sae_cuda_trainer_destroy(&g);
        return rc;
    }
    g->n_dead = sae_trainer_count_dead(t);
    g->bdec_synced = t->initialized;
    *out = g;
    return 0;
}

static int reserve(struct sae_cuda_trainer *g, int id, size_t bytes)
{
    return cuda_buf_reserve(&g->mem[id], bytes ? bytes : 1);
}

// Column sums over rows of up to three (rows, d) matrices, optionally weighted per row,
// into out (nv * d doubles), in a fixed order.
static int colsums(struct sae_cuda_trainer *g, const colsum_args &args, int nv, size_t rows,
                   double *out)
{
    const size_t d = g->d;
    size_t nch = (rows + 63) / 64;
    if (nch > 4096) nch = 4096;
    if (nch == 0) nch = 1;
    const size_t chunk = (rows + nch - 1) / nch;
    int rc = reserve(g, M_PART, (size_t)nv * nch * d * sizeof(double));
    if (rc) return rc;
    cudaStream_t s = g->ctx->stream;
    dim3 grid((unsigned)((d + THREADS - 1) / THREADS), (unsigned)nch, (unsigned)nv);
    colsum_part_kernel<<<grid, THREADS, 0, s>>>(args, rows, d, chunk, nch, DD(g, M_PART));
    CUDA_LAUNCH_CHECK();
    colsum_final_kernel<<<cuda_blocks(d, THREADS), THREADS, 0, s>>>(DD(g, M_PART), nch, d, nv, out);
    CUDA_LAUNCH_CHECK();
    return 0;
}

// Forward and backward for a batch already in M_X: fills the gradient rows of touched
// latents, gb_enc, gb_dec, touched, fired and the stats (loss terms, norm parts).
static int forward_backward(struct sae_cuda_trainer *g, const float *x_dev, size_t B, size_t k,
                            bool project)
{
    struct sae_trainer *t = g->t;
    const struct sae_train_config *c = &t->cfg;
    const size_t n = g->n, d = g->d;
    cudaStream_t s = g->ctx->stream;
    const bool multi = c->multi_topk;
    const size_t kk = kk_for(c, k);
    const bool use_aux = c->auxk_alpha > 0 && g->n_dead > 0;
    size_t ka = 0;
    if (use_aux) {
        ka = sae_train_config_k_aux(c);
        if (ka > g->n_dead) ka = g->n_dead;
    }
    const size_t per = kk + ka, E = B * per;
    if (B > (1u << 24) || E >= 0x7fffffffu) {
        log_error("sae_cuda_batch_too_large", "B=%zu entries=%zu", B, E);
        return SF_ERANGE;
    }
    int rc;
    if ((rc = reserve(g, M_XS, B * d * 4)) || (rc = reserve(g, M_XC, B * d * 4)) ||
        (rc = reserve(g, M_A, B * n * 4)) || (rc = reserve(g, M_ERR, B * d * 4)) ||
        (rc = reserve(g, M_U, N_SLOTS * B * d * 4)) ||
        (rc = reserve(g, M_TOK, B * TS_N * sizeof(double))) ||
        (rc = reserve(g, M_COLSUM, 3 * d * sizeof(double))) ||
        (rc = reserve(g, M_MI, B * kk * 4)) || (rc = reserve(g, M_MV, B * kk * 4)) ||
        (rc = reserve(g, M_AI, B * ka * 4)) || (rc = reserve(g, M_AV, B * ka * 4)) ||
        (rc = reserve(g, M_KEY, E * 4)) || (rc = reserve(g, M_SKEY, E * 4)) ||
        (rc = reserve(g, M_ORD, E * 4)) || (rc = reserve(g, M_SORD, E * 4)) ||
        (rc = reserve(g, M_EZ, E * 4)) || (rc = reserve(g, M_EGA, E * 4)))
        return rc;
    struct dev_stats *st = DSTATS(g);

    // 0. flags and stats start clean
    if ((rc = cuda_memset(g->ctx, st, 0, sizeof(dev_stats))) ||
        (rc = cuda_memset(g->ctx, g->mem[M_TOUCHED].ptr, 0, n)) ||
        (rc = cuda_memset(g->ctx, g->mem[M_FIRED].ptr, 0, n)) ||
        (rc = cuda_memset(g->ctx, g->mem[M_SEGS].ptr, 0, n * 4)) ||
        (rc = cuda_memset(g->ctx, g->mem[M_SEGE].ptr, 0, n * 4)))
        return rc;
    if (use_aux) {
        dead_mask_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s>>>(
            (const int64_t *)g->mem[M_SINCE].ptr, c->dead_tokens, n, DU8(g, M_DEAD));
        CUDA_LAUNCH_CHECK();
    }

    // 1. inputs and the encoder GEMM
    prep_kernel<<<cuda_blocks(B * d, THREADS), THREADS, 0, s>>>(
        x_dev, DF(g, M_BDEC), t->sae->norm_scale, B, d, DF(g, M_XS), DF(g, M_XC), st);
    CUDA_LAUNCH_CHECK();
    if ((rc = cuda_sgemm(g->ctx, g->math, false, true, B, n, d, 1.0f, DF(g, M_XC), d, DF(g, M_WENC),
                         d, 0.0f, DF(g, M_A), n)))
        return rc;

    // 2. selection: main (+ extras), AuxK among dead latents
    if ((rc = topk_launch(s, DF(g, M_A), n, DF(g, M_BENC), NULL, B, n, kk, DU32(g, M_MI),
                          DF(g, M_MV))))
        return rc;
    if (ka > 0 && (rc = topk_launch(s, DF(g, M_A), n, DF(g, M_BENC), DU8(g, M_DEAD), B, n, ka,
                                    DU32(g, M_AI), DF(g, M_AV))))
        return rc;

    // 3. decode, upstream rows, per-token sums
    const size_t dsm = per * (sizeof(uint32_t) + sizeof(float));
    if (dsm > 48 * 1024) {
        log_error("sae_cuda_unsupported", "reason=\"kk + k_aux too large\" per=%zu", per);
        return SF_EUNSUP;
    }
    decode_kernel<<<(unsigned)B, THREADS, dsm, s>>>(
        DF(g, M_XS), DF(g, M_BDEC), DF(g, M_WDEC), d, B, DU32(g, M_MI), DF(g, M_MV), (int)kk,
        (int)k, DU32(g, M_AI), DF(g, M_AV), (int)ka, multi, DF(g, M_ERR), DF(g, M_U), DD(g, M_TOK));
    CUDA_LAUNCH_CHECK();

    // 4. batch reductions: sum xs, sum err, sum U0 (columns), then the loss terms
    colsum_args ca = {{DF(g, M_XS), DF(g, M_ERR), DF(g, M_U)}, {NULL, NULL, NULL}};
    if ((rc = colsums(g, ca, 3, B, DD(g, M_COLSUM)))) return rc;
    finalize_kernel<<<1, 1024, 0, s>>>(DD(g, M_TOK), B, DD(g, M_COLSUM), d, c->auxk_alpha,
                                       use_aux ? 1 : 0, st);
    CUDA_LAUNCH_CHECK();

    // 5. entries, sorted by latent (stable: token order within a latent)
    entries_kernel<<<cuda_blocks(E * 32, THREADS), THREADS, 0, s>>>(
        DU32(g, M_MI), DF(g, M_MV), (int)kk, (int)k, DU32(g, M_AI), DF(g, M_AV), (int)ka, multi, B,
        n, d, DF(g, M_WDEC), DF(g, M_U), DU32(g, M_KEY), DU32(g, M_ORD), DF(g, M_EZ), DF(g, M_EGA));
    CUDA_LAUNCH_CHECK();
    int end_bit = 1;
    while (end_bit < 32 && ((size_t)1 << end_bit) <= n) end_bit++; // keys 0..n fit
    size_t tmp_bytes = 0;
    CUDA_TRY(cub::DeviceRadixSort::SortPairs(NULL, tmp_bytes, DU32(g, M_KEY), DU32(g, M_SKEY),
                                             DU32(g, M_ORD), DU32(g, M_SORD), (int)E, 0, end_bit,
                                             s));
    if ((rc = reserve(g, M_SORTTMP, tmp_bytes))) return rc;
    CUDA_TRY(cub::DeviceRadixSort::SortPairs(g->mem[M_SORTTMP].ptr, tmp_bytes, DU32(g, M_KEY),
                                             DU32(g, M_SKEY), DU32(g, M_ORD), DU32(g, M_SORD),
                                             (int)E, 0, end_bit, s));
    segments_kernel<<<cuda_blocks(E, THREADS), THREADS, 0, s>>>(DU32(g, M_SKEY), E, n,
                                                                DI(g, M_SEGS), DI(g, M_SEGE));
    CUDA_LAUNCH_CHECK();

    // 6. per latent: gradient rows, db_enc, projection, norm parts
    latent_grad_kernel<<<(unsigned)n, THREADS, 0, s>>>(
        DU32(g, M_SORD), DI(g, M_SEGS), DI(g, M_SEGE), DF(g, M_EZ), DF(g, M_EGA), (int)per, (int)kk,
        (int)k, multi, DF(g, M_U), DF(g, M_XC), B, d, DF(g, M_WDEC), st,
        project && c->unit_norm_decoder, (float)c->fire_threshold, DF(g, M_GWE), DF(g, M_GWD),
        DF(g, M_GBE), DU8(g, M_TOUCHED), DU8(g, M_FIRED), DD(g, M_NORMP));
    CUDA_LAUNCH_CHECK();

    // 7. b_dec: decoder path minus the encoder path, sum_i gb_enc[i] W_enc[i]
    colsum_args ce = {{DF(g, M_WENC), NULL, NULL}, {DF(g, M_GBE), NULL, NULL}};
    if ((rc = colsums(g, ce, 1, n, DD(g, M_ENCSUM)))) return rc;
    bdec_grad_kernel<<<cuda_blocks(d, THREADS), THREADS, 0, s>>>(
        DD(g, M_COLSUM) + 2 * d, DD(g, M_ENCSUM), d, st, DF(g, M_GBD));
    CUDA_LAUNCH_CHECK();
    g->last_B = B;
    return 0;
}

// b_dec and the encoder scale are set on the host by the data initialisation
// (sae_trainer_init_data), which may run after this trainer was made: bring the device
// copies up to date once.
static int sync_bdec(struct sae_cuda_trainer *g)
{
    if (g->bdec_synced || !g->t->initialized) return 0;
    int rc = cuda_buf_upload(g->ctx, &g->mem[M_BDEC], 0, g->t->sae->b_dec, g->d * sizeof(float));
    if (rc == 0)
        rc = cuda_buf_upload(g->ctx, &g->mem[M_WENC], 0, g->t->sae->W_enc,
                             g->n * g->d * sizeof(float));
    if (rc == 0) g->bdec_synced = true;
    return rc;
}

static int fetch_stats(struct sae_cuda_trainer *g, struct dev_stats *hs)
{
    return cuda_memcpy_d2h(g->ctx, hs, g->mem[M_STATS].ptr, sizeof *hs);
}

static int step_device(struct sae_cuda_trainer *g, const float *x_dev, size_t B,
                       struct sae_train_metrics *m, double t0)
{
    struct sae_trainer *t = g->t;
    const struct sae_train_config *c = &t->cfg;
    const size_t n = g->n, d = g->d;
    cudaStream_t s = g->ctx->stream;
    const size_t k = sae_train_k_at(c, t->tokens);
    const double lr = sae_train_lr_at(c, t->tokens);
    int rc = sync_bdec(g);
    if (rc) return rc;
    rc = forward_backward(g, x_dev, B, k, true);
    if (rc) return rc;
    struct dev_stats *st = DSTATS(g);
    gnorm_kernel<<<1, 1024, 0, s>>>(DD(g, M_NORMP), n, DF(g, M_GBD), d, c->grad_clip, st);
    CUDA_LAUNCH_CHECK();
    struct sae_adam_coef ac = sae_trainer_adam_coef(t, lr);
    adam_f af = {(float)ac.b1,        (float)(1 - ac.b1),         (float)ac.b2, (float)(1 - ac.b2),
                 (float)ac.step_size, (float)(1.0 / ac.bc2_sqrt), (float)ac.eps};
    adam_rows_kernel<<<(unsigned)n, THREADS, 0, s>>>(
        DF(g, M_WENC), DF(g, M_MWE), DF(g, M_VWE), DF(g, M_GWE), DF(g, M_WDEC), DF(g, M_MWD),
        DF(g, M_VWD), DF(g, M_GWD), DU8(g, M_TOUCHED), d, af, c->unit_norm_decoder ? 1 : 0, st);
    CUDA_LAUNCH_CHECK();
    adam_vec_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s>>>(
        DF(g, M_BENC), DF(g, M_MBE), DF(g, M_VBE), DF(g, M_GBE), n, af, st);
    CUDA_LAUNCH_CHECK();
    adam_vec_kernel<<<cuda_blocks(d, THREADS), THREADS, 0, s>>>(
        DF(g, M_BDEC), DF(g, M_MBD), DF(g, M_VBD), DF(g, M_GBD), d, af, st);
    CUDA_LAUNCH_CHECK();
    dead_update_kernel<<<cuda_blocks(n, THREADS), THREADS, 0, s>>>(
        (int64_t *)g->mem[M_SINCE].ptr, DU8(g, M_FIRED), n, (int64_t)B, c->dead_tokens, st);
    CUDA_LAUNCH_CHECK();

    struct dev_stats hs;
    if ((rc = fetch_stats(g, &hs))) return rc;
    if (hs.bad) {
        log_error("sae_input_invalid", "reason=non-finite B=%zu backend=cuda", B);
        return SF_EINVAL;
    }
    g->n_dead = (size_t)hs.n_dead;
    t->step++;
    t->tokens += (int64_t)B;
    if (m) {
        memset(m, 0, sizeof *m);
        m->step = t->step;
        m->tokens = t->tokens;
        m->k = k;
        m->lr = lr;
        m->loss = hs.loss;
        m->mse = hs.mse;
        m->fvu = hs.fvu;
        m->l0 = hs.l0;
        m->dead_frac = (double)g->n_dead / (double)n;
        m->auxk_loss = hs.auxk;
        m->grad_norm = hs.gnorm;
        m->threshold = t->theta;
        m->step_s = time_now_s() - t0;
        m->tokens_per_s = m->step_s > 0 ? (double)B / m->step_s : 0;
    }
    return 0;
}

extern "C" int sae_cuda_trainer_step_device(struct sae_cuda_trainer *g, const float *x_dev,
                                            size_t B, struct sae_train_metrics *m)
{
    double t0 = time_now_s();
    if (!g || !x_dev || B == 0) return SF_EINVAL;
    if (!g->t->initialized) {
        log_error("sae_cuda_uninitialised", "reason=\"call sae_trainer_init_data first\"");
        return SF_ESTATE;
    }
    return step_device(g, x_dev, B, m, t0);
}

// Uploads a host batch (initialising the trainer from it first if needed).
static int upload_batch(struct sae_cuda_trainer *g, const float *x, size_t B)
{
    struct sae_trainer *t = g->t;
    const size_t d = g->d;
    if (!x || B == 0 || B > (1u << 24)) return SF_EINVAL;
    if (!t->initialized) {
        int rc = sae_trainer_init_data(t, x, B);
        if (rc) return rc;
    }
    int rc = sync_bdec(g);
    if (rc) return rc;
    rc = reserve(g, M_X, B * d * sizeof(float));
    if (rc) return rc;
    return cuda_buf_upload(g->ctx, &g->mem[M_X], 0, x, B * d * sizeof(float));
}

extern "C" int sae_cuda_trainer_step(struct sae_cuda_trainer *g, const float *x, size_t B,
                                     struct sae_train_metrics *m)
{
    double t0 = time_now_s();
    if (!g) return SF_EINVAL;
    int rc = upload_batch(g, x, B);
    if (rc) return rc;
    return step_device(g, DF(g, M_X), B, m, t0);
}

extern "C" int sae_cuda_trainer_grad(struct sae_cuda_trainer *g, const float *x, size_t B,
                                     float *gW_enc, float *gb_enc, float *gW_dec, float *gb_dec,
                                     double *loss)
{
    if (!g) return SF_EINVAL;
    int rc = upload_batch(g, x, B);
    if (rc) return rc;
    const size_t n = g->n, d = g->d;
    // untouched rows are never written by the step: zero them for a dense answer
    if ((rc = cuda_memset(g->ctx, g->mem[M_GWE].ptr, 0, n * d * 4)) ||
        (rc = cuda_memset(g->ctx, g->mem[M_GWD].ptr, 0, n * d * 4)))
        return rc;
    rc = forward_backward(g, DF(g, M_X), B, sae_train_k_at(&g->t->cfg, g->t->tokens), false);
    if (rc) return rc;
    struct dev_stats hs;
    if ((rc = fetch_stats(g, &hs))) return rc;
    if (hs.bad) {
        log_error("sae_input_invalid", "reason=non-finite B=%zu backend=cuda", B);
        return SF_EINVAL;
    }
    if ((rc = cuda_buf_download(g->ctx, gW_enc, &g->mem[M_GWE], 0, n * d * 4)) ||
        (rc = cuda_buf_download(g->ctx, gW_dec, &g->mem[M_GWD], 0, n * d * 4)) ||
        (rc = cuda_buf_download(g->ctx, gb_enc, &g->mem[M_GBE], 0, n * 4)) ||
        (rc = cuda_buf_download(g->ctx, gb_dec, &g->mem[M_GBD], 0, d * 4)))
        return rc;
    if (loss) *loss = hs.loss;
    return 0;
}

extern "C" int sae_cuda_trainer_time_gemm(struct sae_cuda_trainer *g, size_t B, int reps,
                                          double *ms)
{
    if (!g || B == 0 || reps <= 0 || B > g->last_B) return SF_EINVAL;
    struct cuda_timer *tm = NULL;
    int rc = cuda_timer_new(g->ctx, &tm);
    if (rc) return rc;
    rc = cuda_timer_start(tm);
    for (int r = 0; r < reps && rc == 0; r++)
        rc = cuda_sgemm(g->ctx, g->math, false, true, B, g->n, g->d, 1.0f, DF(g, M_XC), g->d,
                        DF(g, M_WENC), g->d, 0.0f, DF(g, M_A), g->n);
    double total = 0;
    if (rc == 0) rc = cuda_timer_stop(tm, &total);
    cuda_timer_destroy(&tm);
    if (rc == 0) *ms = total / reps;
    return rc;
}
