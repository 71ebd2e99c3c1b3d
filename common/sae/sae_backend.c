/* sae_backend: dispatch between the CPU step and the CUDA step (see sae_backend.h). */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "sae/sae_backend.h"
#include "sae/sae_cuda.h"
#include "tensor/tensor_cuda.h"

struct sae_backend {
    struct sae_trainer *t;
    enum tensor_backend kind;
    struct cuda_ctx *ctx;
    struct sae_cuda_trainer *g;
};

void sae_backend_destroy(struct sae_backend **pb)
{
    if (!pb || !*pb) return;
    struct sae_backend *b = *pb;
    if (b->g && sae_cuda_trainer_sync(b->g) != 0)
        log_error("sae_backend_sync_failed", "reason=\"trainer keeps its last synced state\"");
    sae_cuda_trainer_destroy(&b->g);
    cuda_ctx_destroy(&b->ctx);
    free(b);
    *pb = NULL;
}

int sae_backend_new(struct sae_trainer *t, const char *backend, const char *math,
                    struct sae_backend **out)
{
    *out = NULL;
    if (!t) return SF_EINVAL;
    enum tensor_backend kind;
    enum cuda_math cm = CUDA_MATH_FP32;
    bool is_auto = backend && !strcmp(backend, "auto");
    int rc = tensor_backend_parse(backend, &kind);
    if (rc) return rc;
    if (math && (rc = cuda_math_parse(math, &cm))) return rc;
    struct sae_backend *b = calloc(1, sizeof *b);
    if (!b) return SF_ENOMEM;
    b->t = t;
    b->kind = TENSOR_CPU;
    if (kind == TENSOR_CUDA) {
        rc = cuda_ctx_new(0, &b->ctx);
        if (rc == 0) rc = sae_cuda_trainer_new(t, b->ctx, cm, &b->g);
        if (rc == 0) {
            b->kind = TENSOR_CUDA;
        } else if (is_auto) {
            log_info("sae_backend_fallback", "backend=cpu reason=\"cuda step unavailable rc=%d\"",
                     rc);
            cuda_ctx_destroy(&b->ctx);
            rc = 0;
        } else {
            sae_backend_destroy(&b);
            return rc;
        }
    }
    log_info("sae_backend", "backend=%s math=%s", tensor_backend_name(b->kind),
             b->kind == TENSOR_CUDA ? cuda_math_name(cm) : "fp32");
    *out = b;
    return 0;
}

int sae_backend_step(struct sae_backend *b, const float *x, size_t B, struct sae_train_metrics *m)
{
    if (!b) return SF_EINVAL;
    if (b->g) return sae_cuda_trainer_step(b->g, x, B, m);
    return sae_trainer_step(b->t, x, B, m);
}

int sae_backend_sync(struct sae_backend *b)
{
    if (!b) return SF_EINVAL;
    return b->g ? sae_cuda_trainer_sync(b->g) : 0;
}

enum tensor_backend sae_backend_kind(const struct sae_backend *b)
{
    return b->kind;
}
