/* sae_cuda_off: the GPU trainer's API in builds without CUDA (no nvcc, CUDA=0, the
 * fuzz build): every call returns SF_EUNSUP, so callers need no #ifdefs. */
#ifndef SAEFLOW_CUDA

#include "core/core.h"
#include "sae/sae_cuda.h"

int sae_cuda_trainer_new(struct sae_trainer *t, struct cuda_ctx *ctx, enum cuda_math math,
                         struct sae_cuda_trainer **out)
{
    (void)t, (void)ctx, (void)math;
    *out = NULL;
    log_error("sae_cuda_unavailable", "reason=\"built without CUDA\"");
    return SF_EUNSUP;
}
void sae_cuda_trainer_destroy(struct sae_cuda_trainer **g)
{
    if (g) *g = NULL;
}
int sae_cuda_trainer_step(struct sae_cuda_trainer *g, const float *x, size_t B,
                          struct sae_train_metrics *m)
{
    (void)g, (void)x, (void)B, (void)m;
    return SF_EUNSUP;
}
int sae_cuda_trainer_step_device(struct sae_cuda_trainer *g, const float *x_dev, size_t B,
                                 struct sae_train_metrics *m)
{
    (void)g, (void)x_dev, (void)B, (void)m;
    return SF_EUNSUP;
}
int sae_cuda_trainer_grad(struct sae_cuda_trainer *g, const float *x, size_t B, float *gW_enc,
                          float *gb_enc, float *gW_dec, float *gb_dec, double *loss)
{
    (void)g, (void)x, (void)B, (void)gW_enc, (void)gb_enc, (void)gW_dec, (void)gb_dec, (void)loss;
    return SF_EUNSUP;
}
int sae_cuda_trainer_sync(struct sae_cuda_trainer *g)
{
    (void)g;
    return SF_EUNSUP;
}
int sae_cuda_trainer_time_gemm(struct sae_cuda_trainer *g, size_t B, int reps, double *ms)
{
    (void)g, (void)B, (void)reps;
    *ms = 0;
    return SF_EUNSUP;
}
int sae_cuda_topk(struct cuda_ctx *ctx, const float *a, size_t lda, const float *bias,
                  const uint8_t *mask, size_t B, size_t n, size_t kk, uint32_t *idx, float *val)
{
    (void)ctx, (void)a, (void)lda, (void)bias, (void)mask, (void)B, (void)n, (void)kk, (void)idx,
        (void)val;
    return SF_EUNSUP;
}
int sae_cuda_topk_mode(struct cuda_ctx *ctx, int mode, const float *a, size_t lda,
                       const float *bias, const uint8_t *mask, size_t B, size_t n, size_t kk,
                       uint32_t *idx, float *val)
{
    (void)mode;
    return sae_cuda_topk(ctx, a, lda, bias, mask, B, n, kk, idx, val);
}

#else
typedef int sae_cuda_off_unused; /* ISO C forbids an empty translation unit */
#endif
