/* tensor_cuda: the CUDA backend's foundation, as plain C (no CUDA types here).
 *
 *   struct cuda_ctx *ctx;
 *   cuda_ctx_new(0, &ctx);                         // device 0: a stream + a cuBLAS handle
 *   struct cuda_buf a = {0};
 *   cuda_buf_alloc(&a, n * sizeof(float));          // device memory
 *   cuda_buf_upload(ctx, &a, 0, host, n * sizeof(float));
 *   cuda_sgemm(ctx, CUDA_MATH_FP32, false, true, M, N, K, 1, A, K, B, K, 0, C, N);
 *   cuda_buf_download(ctx, host, &a, 0, n * sizeof(float));  // waits for the stream
 *   cuda_buf_free(&a); cuda_ctx_destroy(&ctx);
 *
 * Every CUDA and cuBLAS call is checked: a failure is logged once with file:line and
 * the library's error string, and the function returns an SF_* code (SF_ENOMEM for
 * out-of-memory, SF_EUNSUP when no device or the build has no CUDA, SF_ERR otherwise).
 * Nothing here exits. Work is queued on the context's stream; uploads and downloads
 * are ordered with it. Pointers called "device" below are raw device addresses
 * (cuda_buf.ptr or offsets into it).
 *
 * In builds without CUDA (no nvcc, CUDA=0, fuzz builds) every function exists and
 * returns SF_EUNSUP (tensor_cuda_off.c). */
#ifndef SAEFLOW_TENSOR_CUDA_H
#define SAEFLOW_TENSOR_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

/* Visible devices (0 when none, or when built without CUDA). Never logs. */
int tensor_cuda_device_count(void);

/* A device, a non-blocking stream and a cuBLAS handle bound to that stream.
 * cuda_ctx_new returns 0, SF_EUNSUP (no such device / no CUDA) or SF_ERR; free with
 * cuda_ctx_destroy (NULL safe, nulls the pointer). */
struct cuda_ctx;
int cuda_ctx_new(int device, struct cuda_ctx **out);
void cuda_ctx_destroy(struct cuda_ctx **ctx);
/* The device is per host thread in CUDA: cuda_ctx_new makes ctx's device current in
 * the calling thread; another thread using ctx calls cuda_ctx_bind first (only matters
 * with several devices). */
int cuda_ctx_bind(struct cuda_ctx *ctx);
/* Waits for all queued work; reports an asynchronous kernel failure if one happened. */
int cuda_ctx_sync(struct cuda_ctx *ctx);
/* Checks for a failed kernel launch (cudaGetLastError) without waiting. */
int cuda_ctx_check(struct cuda_ctx *ctx, const char *what);
/* The stream as an opaque pointer (a cudaStream_t) for .cu code in other libraries. */
void *cuda_ctx_stream(struct cuda_ctx *ctx);
int cuda_ctx_device(const struct cuda_ctx *ctx);
/* "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" into buf. */
int cuda_ctx_describe(const struct cuda_ctx *ctx, char *buf, size_t cap);

/* Device memory. A zeroed struct is an empty buffer; cuda_buf_free leaves it zeroed. */
struct cuda_buf {
    void *ptr;    /* device address, NULL when empty */
    size_t bytes; /* size allocated */
};
/* Allocates `bytes` (> 0) of device memory on the current device. SF_ENOMEM on OOM. */
int cuda_buf_alloc(struct cuda_buf *b, size_t bytes);
/* Makes b at least `bytes` large (contents are NOT preserved when it grows). */
int cuda_buf_reserve(struct cuda_buf *b, size_t bytes);
void cuda_buf_free(struct cuda_buf *b);
/* Host -> device at byte offset `off`; queued on the stream, returns once the host
 * memory may be reused. SF_ERANGE when off + n exceeds the buffer. */
int cuda_buf_upload(struct cuda_ctx *ctx, struct cuda_buf *dst, size_t off, const void *src,
                    size_t n);
/* Device -> host; waits for the stream (everything queued before it completes). */
int cuda_buf_download(struct cuda_ctx *ctx, void *dst, const struct cuda_buf *src, size_t off,
                      size_t n);
/* The same on raw device addresses (no bounds check possible: callers check). */
int cuda_memcpy_h2d(struct cuda_ctx *ctx, void *dst_dev, const void *src, size_t n);
int cuda_memcpy_d2h(struct cuda_ctx *ctx, void *dst, const void *src_dev, size_t n);
int cuda_memcpy_d2d(struct cuda_ctx *ctx, void *dst_dev, const void *src_dev, size_t n);
int cuda_memset(struct cuda_ctx *ctx, void *dst_dev, int byte, size_t n);

/* GEMM math modes. FP32: exact float32 products. TF32: inputs rounded to TF32 on the
 * tensor cores (about 1e-3 relative). BF16: inputs rounded to bfloat16 inside cuBLAS
 * (about 1e-2 relative); inputs and outputs stay float32 in memory either way. */
enum cuda_math { CUDA_MATH_FP32 = 0, CUDA_MATH_TF32 = 1, CUDA_MATH_BF16 = 2 };
const char *cuda_math_name(enum cuda_math m); /* "fp32" | "tf32" | "bf16" */
int cuda_math_parse(const char *s, enum cuda_math *out);

/* The --backend / --cuda_math flags of a program, checked once at startup (auto logs
 * its choice). Returns 0 with both filled in; 2 after printing a usage message to
 * stderr (unknown value); 1 after printing why when CUDA was asked for but cannot run
 * here. The return value is the exit code a main() should use when it is not 0. */
int tensor_backend_flags(const char *prog, const char *backend, const char *math,
                         enum tensor_backend *bk, enum cuda_math *cm);

/* C (M x N) = alpha op(A) op(B) + beta C, row-major, on device pointers: the same
 * contract as tensor_sgemm (tensor.h). Dimensions must fit in int. */
int cuda_sgemm(struct cuda_ctx *ctx, enum cuda_math math, bool trans_a, bool trans_b, size_t M,
               size_t N, size_t K, float alpha, const float *A, size_t lda, const float *B,
               size_t ldb, float beta, float *C, size_t ldc);
/* y (M) = alpha op(A) x + beta y, A row-major (M x K, or K x M when trans), device. */
int cuda_sgemv(struct cuda_ctx *ctx, bool trans, size_t M, size_t K, float alpha, const float *A,
               size_t lda, const float *x, float beta, float *y);

/* Event timing on the context's stream: start, queue work, then stop returns the
 * elapsed milliseconds (waits for the stream). */
struct cuda_timer;
int cuda_timer_new(struct cuda_ctx *ctx, struct cuda_timer **out);
void cuda_timer_destroy(struct cuda_timer **t);
int cuda_timer_start(struct cuda_timer *t);
int cuda_timer_stop(struct cuda_timer *t, double *ms);

#endif
