/* gpu_lab: what the GPU kernel-lab programs share (llm.c style: each kernel is checked
 * against the CPU oracle on fresh random inputs with a written tolerance, then timed).
 *
 * Tolerances used across the lab: fp32 kernels 1e-5 relative to the largest reference
 * value (GEMMs and reductions over thousands of terms: 1e-4), TF32 / BF16 GEMMs 1e-2.
 * Timings are printed, never asserted. Without a device a program prints why and
 * exits 77 (skip). */
#ifndef SAEFLOW_GPU_LAB_H
#define SAEFLOW_GPU_LAB_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../support/check.h"
#include "core/core.h"
#include "tensor/tensor_cuda.h"

/* Opens device 0, or returns TEST_SKIP after saying why. */
static inline int gpu_lab_open(struct cuda_ctx **ctx)
{
    *ctx = NULL;
#ifndef SAEFLOW_CUDA
    printf("SKIP: built without CUDA (no nvcc, or CUDA=0)\n");
    return TEST_SKIP;
#else
    if (tensor_cuda_device_count() <= 0) {
        printf("SKIP: no CUDA device visible\n");
        return TEST_SKIP;
    }
    if (cuda_ctx_new(0, ctx) != 0) {
        printf("FAIL: a CUDA device is visible but a context could not be created\n");
        return 1;
    }
    char desc[160];
    if (cuda_ctx_describe(*ctx, desc, sizeof desc) == 0) printf("device: %s\n", desc);
    return 0;
#endif
}

static inline void gpu_lab_fill(float *x, size_t n, struct rng *r, float scale, float shift)
{
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(r) * scale + shift;
}

/* Max |a - b| relative to max |b| (plus a floor of 1e-30). */
static inline double gpu_lab_rel_err(const float *a, const float *b, size_t n)
{
    double m = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
        if (fabs(b[i]) > s) s = fabs(b[i]);
    }
    return m / (s > 0 ? s : 1e-30);
}

/* Checks a device result against the oracle: rel_err <= tol. */
#define GPU_LAB_CHECK(what, got, want, n, tol)                                                     \
    do {                                                                                           \
        double e_ = gpu_lab_rel_err((got), (want), (n));                                           \
        CHECK_MSG(e_ <= (tol), "%s: relative error %.3g > %.3g", (what), e_, (double)(tol));       \
        if (e_ <= (tol))                                                                           \
            printf("  ok   %-44s rel err %.2e (tol %.0e)\n", (what), e_, (double)(tol));           \
    } while (0)

/* Device copies of host arrays (NULL on failure, logged). */
static inline float *gpu_lab_upload(struct cuda_ctx *ctx, struct cuda_buf *b, const void *src,
                                    size_t bytes)
{
    if (cuda_buf_alloc(b, bytes) != 0) return NULL;
    if (src && cuda_buf_upload(ctx, b, 0, src, bytes) != 0) return NULL;
    if (!src && cuda_memset(ctx, b->ptr, 0, bytes) != 0) return NULL;
    return (float *)b->ptr;
}

#endif
