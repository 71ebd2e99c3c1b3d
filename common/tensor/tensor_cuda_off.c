/* tensor_cuda_off: the CUDA backend's C API in builds without CUDA (no nvcc, CUDA=0,
 * the fuzz build). Every call says so with SF_EUNSUP, so callers need no #ifdefs. */
#ifndef SAEFLOW_CUDA

#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "tensor/tensor_cuda.h"

int tensor_cuda_device_count(void)
{
    return 0;
}

int cuda_ctx_new(int device, struct cuda_ctx **out)
{
    *out = NULL;
    log_error("cuda_unavailable", "device=%d reason=\"built without CUDA\"", device);
    return SF_EUNSUP;
}
void cuda_ctx_destroy(struct cuda_ctx **ctx)
{
    if (ctx) *ctx = NULL;
}
int cuda_ctx_bind(struct cuda_ctx *ctx)
{
    (void)ctx;
    return SF_EUNSUP;
}
int cuda_ctx_sync(struct cuda_ctx *ctx)
{
    (void)ctx;
    return SF_EUNSUP;
}
int cuda_ctx_check(struct cuda_ctx *ctx, const char *what)
{
    (void)ctx;
    (void)what;
    return SF_EUNSUP;
}
void *cuda_ctx_stream(struct cuda_ctx *ctx)
{
    (void)ctx;
    return NULL;
}
int cuda_ctx_device(const struct cuda_ctx *ctx)
{
    (void)ctx;
    return -1;
}
int cuda_ctx_describe(const struct cuda_ctx *ctx, char *buf, size_t cap)
{
    (void)ctx;
    if (cap) snprintf(buf, cap, "none (built without CUDA)");
    return SF_EUNSUP;
}
int cuda_buf_alloc(struct cuda_buf *b, size_t bytes)
{
    (void)bytes;
    b->ptr = NULL;
    b->bytes = 0;
    return SF_EUNSUP;
}
int cuda_buf_reserve(struct cuda_buf *b, size_t bytes)
{
    return cuda_buf_alloc(b, bytes);
}
void cuda_buf_free(struct cuda_buf *b)
{
    if (b) memset(b, 0, sizeof *b);
}
int cuda_buf_upload(struct cuda_ctx *ctx, struct cuda_buf *dst, size_t off, const void *src,
                    size_t n)
{
    (void)ctx, (void)dst, (void)off, (void)src, (void)n;
    return SF_EUNSUP;
}
int cuda_buf_download(struct cuda_ctx *ctx, void *dst, const struct cuda_buf *src, size_t off,
                      size_t n)
{
    (void)ctx, (void)dst, (void)src, (void)off, (void)n;
    return SF_EUNSUP;
}
int cuda_memcpy_h2d(struct cuda_ctx *ctx, void *dst_dev, const void *src, size_t n)
{
    (void)ctx, (void)dst_dev, (void)src, (void)n;
    return SF_EUNSUP;
}
int cuda_memcpy_d2h(struct cuda_ctx *ctx, void *dst, const void *src_dev, size_t n)
{
    (void)ctx, (void)dst, (void)src_dev, (void)n;
    return SF_EUNSUP;
}
int cuda_memcpy_d2d(struct cuda_ctx *ctx, void *dst_dev, const void *src_dev, size_t n)
{
    (void)ctx, (void)dst_dev, (void)src_dev, (void)n;
    return SF_EUNSUP;
}
int cuda_memset(struct cuda_ctx *ctx, void *dst_dev, int byte, size_t n)
{
    (void)ctx, (void)dst_dev, (void)byte, (void)n;
    return SF_EUNSUP;
}

static const char *const math_names[] = {"fp32", "tf32", "bf16"};

const char *cuda_math_name(enum cuda_math m)
{
    return (unsigned)m < 3 ? math_names[m] : "unknown";
}
int cuda_math_parse(const char *s, enum cuda_math *out)
{
    for (int i = 0; s && i < 3; i++) {
        if (!strcmp(s, math_names[i])) {
            *out = (enum cuda_math)i;
            return 0;
        }
    }
    log_error("cuda_math_unknown", "math=%s expected=fp32|tf32|bf16", s ? s : "(null)");
    return SF_EINVAL;
}
int cuda_sgemm(struct cuda_ctx *ctx, enum cuda_math math, bool trans_a, bool trans_b, size_t M,
               size_t N, size_t K, float alpha, const float *A, size_t lda, const float *B,
               size_t ldb, float beta, float *C, size_t ldc)
{
    (void)ctx, (void)math, (void)trans_a, (void)trans_b, (void)M, (void)N, (void)K;
    (void)alpha, (void)A, (void)lda, (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
    return SF_EUNSUP;
}
int cuda_sgemv(struct cuda_ctx *ctx, bool trans, size_t M, size_t K, float alpha, const float *A,
               size_t lda, const float *x, float beta, float *y)
{
    (void)ctx, (void)trans, (void)M, (void)K, (void)alpha, (void)A, (void)lda, (void)x;
    (void)beta, (void)y;
    return SF_EUNSUP;
}
int cuda_timer_new(struct cuda_ctx *ctx, struct cuda_timer **out)
{
    (void)ctx;
    *out = NULL;
    return SF_EUNSUP;
}
void cuda_timer_destroy(struct cuda_timer **t)
{
    if (t) *t = NULL;
}
int cuda_timer_start(struct cuda_timer *t)
{
    (void)t;
    return SF_EUNSUP;
}
int cuda_timer_stop(struct cuda_timer *t, double *ms)
{
    (void)t;
    *ms = 0;
    return SF_EUNSUP;
}

#else
/* ISO C forbids an empty translation unit. */
typedef int tensor_cuda_off_unused;
#endif
