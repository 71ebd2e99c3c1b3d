/* sae_backend: one handle over the CPU and CUDA training steps, so that a service picks
 * the backend at run time without #ifdefs:
 *
 *   struct sae_backend *b;
 *   sae_backend_new(t, "auto", "tf32", &b);     // "cpu" | "cuda" | "auto"; math for cuda
 *   while (...) sae_backend_step(b, x, B, &m);  // x: (B, d_in) host floats
 *   sae_backend_sync(b); sae_trainer_save(t, path);   // t current before save/export
 *   sae_backend_destroy(&b);                    // syncs t, frees the device side
 *
 * With "cpu" the step is sae_trainer_step itself and sync does nothing. With "cuda" the
 * step is sae_cuda_trainer_step (sae_cuda.h; Top-K only). The backend borrows t. */
#ifndef SAEFLOW_SAE_BACKEND_H
#define SAEFLOW_SAE_BACKEND_H

#include <stddef.h>

#include "sae/sae_train.h"
#include "tensor/tensor.h"

struct sae_backend;

/* backend: "cpu" | "cuda" | "auto" (NULL = cpu); math: "fp32" | "tf32" | "bf16" (NULL =
 * fp32; ignored on the CPU). Returns 0, SF_EINVAL (unknown name), SF_EUNSUP (cuda asked
 * for but not available, or the trainer's arch is not supported there; logged), or
 * another SF_* from the device. "auto" falls back to the CPU for what CUDA cannot do. */
int sae_backend_new(struct sae_trainer *t, const char *backend, const char *math,
                    struct sae_backend **out);
void sae_backend_destroy(struct sae_backend **b);
int sae_backend_step(struct sae_backend *b, const float *x, size_t B, struct sae_train_metrics *m);
/* Makes the trainer's host state current (weights, moments, dead counters). */
int sae_backend_sync(struct sae_backend *b);
enum tensor_backend sae_backend_kind(const struct sae_backend *b);

#endif
