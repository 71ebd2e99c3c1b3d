/* sae_cuda: the SAE training step on a CUDA device, beside the CPU trainer it mirrors.
 *
 *   struct sae_trainer *t = sae_trainer_new(&cfg);          // the CPU trainer (the oracle)
 *   struct sae_cuda_trainer *g;
 *   sae_cuda_trainer_new(t, ctx, CUDA_MATH_FP32, &g);       // copies t's state to the GPU
 *   while (...) sae_cuda_trainer_step(g, x, B, &metrics);   // x: (B, d_in) host floats
 *   sae_cuda_trainer_sync(g);                               // GPU state -> t (save, export)
 *   sae_trainer_save(t, path);
 *   sae_cuda_trainer_destroy(&g);                           // t is left as last synced
 *
 * The step has the CPU step's semantics exactly (sae_train.h: same selection rule,
 * same loss terms and metric definitions, same Adam, projection, clipping,
 * renormalisation and dead-latent counting); only summation order and the GEMM's
 * rounding (TF32 / BF16 when asked) differ. Everything happens on the device: the
 * encoder GEMM (cuBLAS), per-row top-k (radix select), sparse decode, the gradients
 * of only the selected latents (entries sorted by latent with a stable radix sort,
 * then one block per latent: deterministic, no atomics on floats), AuxK, Adam and
 * the decoder renormalisation. The only transfers are the batch going up and a few
 * dozen bytes of metrics coming back at the end of the step.
 *
 * Supported: arch topk with Adam, with AuxK, Multi-TopK, k scheduling, warm-up/decay and grad
 * clipping. batchtopk and standard (L1, ghost grads) return SF_EUNSUP from _new.
 * Limits: kk = k (4k with Multi-TopK) and k_aux at most SAE_CUDA_TOPK_MAX; B*(kk +
 * k_aux) < 2^31.
 *
 * The CUDA trainer borrows t (and ctx): both must outlive it, and t must not be
 * stepped by the CPU while a CUDA trainer is attached (sync first, then make a new
 * one). Without CUDA (or without a device) every function returns SF_EUNSUP. */
#ifndef SAEFLOW_SAE_CUDA_H
#define SAEFLOW_SAE_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sae/sae_train.h"
#include "tensor/tensor_cuda.h"

#define SAE_CUDA_TOPK_MAX 4096

struct sae_cuda_trainer;

/* Uploads t's weights, Adam moments and dead counters. Returns 0, SF_EUNSUP (arch or
 * limits, logged), SF_ENOMEM (device memory) or SF_ERR. */
int sae_cuda_trainer_new(struct sae_trainer *t, struct cuda_ctx *ctx, enum cuda_math math,
                         struct sae_cuda_trainer **out);
void sae_cuda_trainer_destroy(struct sae_cuda_trainer **g);

/* One step on x (B, d_in) raw activations in host memory; the first step of an
 * uninitialised trainer estimates the input scale and b_dec on the host (as the CPU
 * step does). m may be NULL. SF_EINVAL on B == 0 or a non-finite input (detected on
 * the device; the state is then left unchanged). */
int sae_cuda_trainer_step(struct sae_cuda_trainer *g, const float *x, size_t B,
                          struct sae_train_metrics *m);
/* The same with x already on the device (x_dev: B * d_in floats). The trainer must be
 * initialised (SF_ESTATE otherwise: call sae_trainer_init_data on t first). */
int sae_cuda_trainer_step_device(struct sae_cuda_trainer *g, const float *x_dev, size_t B,
                                 struct sae_train_metrics *m);

/* Raw gradients at the current point (before projection and clipping), like
 * sae_trainer_grad: host outputs gW_enc, gW_dec (n, d_in), gb_enc (n), gb_dec (d_in).
 * Does not change the state. */
int sae_cuda_trainer_grad(struct sae_cuda_trainer *g, const float *x, size_t B, float *gW_enc,
                          float *gb_enc, float *gW_dec, float *gb_dec, double *loss);

/* Copies the device state (weights, moments, dead counters) back into t. */
int sae_cuda_trainer_sync(struct sae_cuda_trainer *g);

/* Milliseconds of the last step's encoder GEMM alone, measured by re-running it (for
 * the benchmark's step/GEMM ratio). */
int sae_cuda_trainer_time_gemm(struct sae_cuda_trainer *g, size_t B, int reps, double *ms);

/* ---- kernels, exposed for the kernel lab (device pointers, queued on ctx) ----------
 * Per-row top-k: for each row b < B, the kk highest-ranked entries of
 * v_i = a[b*lda + i] + (bias ? bias[i] : 0), over i < n with (mask ? mask[i] : 1),
 * NaN never selected; rank as sae_kernels.h (larger value first, ties by lower index).
 * idx, val: (B, kk), each row sorted by rank; when fewer than kk entries are eligible
 * the rest of the row is idx = UINT32_MAX, val = -INFINITY. kk <= SAE_CUDA_TOPK_MAX. */
int sae_cuda_topk(struct cuda_ctx *ctx, const float *a, size_t lda, const float *bias,
                  const uint8_t *mask, size_t B, size_t n, size_t kk, uint32_t *idx, float *val);
/* The same with the kernel's data path forced (tests): 0 reads the row from global
 * memory on every pass, 1 caches the whole row in shared memory (SF_EUNSUP when it does
 * not fit), 2 compacts the candidates after the first digit when they fit. */
int sae_cuda_topk_mode(struct cuda_ctx *ctx, int mode, const float *a, size_t lda,
                       const float *bias, const uint8_t *mask, size_t B, size_t n, size_t kk,
                       uint32_t *idx, float *val);

#endif
