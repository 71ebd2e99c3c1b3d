/* model_backend: dispatch between model_ctx (CPU) and model_cuda (see model_backend.h). */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/model_backend.h"
#include "model/model_cuda.h"
#include "tensor/tensor_cuda.h"

struct model_backend {
    enum tensor_backend kind;
    struct model_ctx *cpu;
    struct cuda_ctx *ctx;
    struct model_cuda *gpu;
};

void model_backend_destroy(struct model_backend **pe)
{
    if (!pe || !*pe) return;
    struct model_backend *e = *pe;
    model_cuda_destroy(&e->gpu);
    cuda_ctx_destroy(&e->ctx);
    model_ctx_destroy(&e->cpu);
    free(e);
    *pe = NULL;
}

int model_backend_new(const struct model *m, const char *backend, const char *math, size_t n_slots,
                      size_t max_len, struct model_backend **out)
{
    *out = NULL;
    if (!m) return SF_EINVAL;
    enum tensor_backend kind;
    enum cuda_math cm = CUDA_MATH_FP32;
    bool is_auto = backend && !strcmp(backend, "auto");
    int rc = tensor_backend_parse(backend, &kind);
    if (rc) return rc;
    if (math && (rc = cuda_math_parse(math, &cm))) return rc;
    struct model_backend *e = calloc(1, sizeof *e);
    if (!e) return SF_ENOMEM;
    e->kind = TENSOR_CPU;
    if (kind == TENSOR_CUDA) {
        rc = cuda_ctx_new(0, &e->ctx);
        if (rc == 0) rc = model_cuda_new(m, e->ctx, cm, n_slots, max_len, &e->gpu);
        if (rc == 0) {
            e->kind = TENSOR_CUDA;
        } else if (is_auto && rc != SF_EINVAL) {
            log_info("model_backend_fallback", "backend=cpu reason=\"cuda engine rc=%d\"", rc);
            cuda_ctx_destroy(&e->ctx);
            rc = 0;
        } else {
            model_backend_destroy(&e);
            return rc;
        }
    }
    if (e->kind == TENSOR_CPU) {
        e->cpu = model_ctx_new(m, n_slots, max_len);
        if (!e->cpu) {
            model_backend_destroy(&e);
            return SF_EINVAL; /* model_ctx_new logged why */
        }
    }
    log_info("model_backend", "backend=%s math=%s", tensor_backend_name(e->kind),
             e->kind == TENSOR_CUDA ? cuda_math_name(cm) : "fp32");
    *out = e;
    return 0;
}

enum tensor_backend model_backend_kind(const struct model_backend *e)
{
    return e->kind;
}

int model_backend_add_hook(struct model_backend *e, const char *name, model_hook_fn fn, void *user,
                           bool writes)
{
    if (e->gpu) return model_cuda_add_hook(e->gpu, name, fn, user, writes);
    return model_ctx_add_hook(e->cpu, name, fn, user);
}

void model_backend_clear_hooks(struct model_backend *e)
{
    if (e->gpu)
        model_cuda_clear_hooks(e->gpu);
    else
        model_ctx_clear_hooks(e->cpu);
}

int model_backend_forward(struct model_backend *e, const struct model_seq *seqs, size_t n_seqs,
                          enum model_logits want, float *logits)
{
    if (e->gpu) return model_cuda_forward(e->gpu, seqs, n_seqs, want, logits);
    return model_forward(e->cpu, seqs, n_seqs, want, logits);
}

size_t model_backend_len(const struct model_backend *e, size_t slot)
{
    return e->gpu ? model_cuda_len(e->gpu, slot) : model_ctx_len(e->cpu, slot);
}

void model_backend_reset(struct model_backend *e, size_t slot)
{
    if (e->gpu)
        model_cuda_reset(e->gpu, slot);
    else
        model_ctx_reset(e->cpu, slot);
}

void model_backend_reset_all(struct model_backend *e)
{
    if (e->gpu)
        model_cuda_reset_all(e->gpu);
    else
        model_ctx_reset_all(e->cpu);
}
