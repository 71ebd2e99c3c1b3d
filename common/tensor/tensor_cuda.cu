// tensor_cuda: device discovery, the context (stream + cuBLAS handle), device buffers,
// the cuBLAS GEMM/GEMV in three math modes, and event timers (see tensor_cuda.h).
// Compiled by nvcc only when the Makefile finds it (tensor_cuda_off.c otherwise).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/cuda_internal.cuh"

static int sf_code(cudaError_t e)
{
    switch (e) {
    case cudaErrorMemoryAllocation:
        return SF_ENOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
        return SF_EUNSUP;
    default:
        return SF_ERR;
    }
}

int cuda_fail(cudaError_t e, const char *file, int line, const char *what)
{
    log_error("cuda_error", "at=%s:%d call=\"%s\" error=%s msg=\"%s\"", file, line, what,
              cudaGetErrorName(e), cudaGetErrorString(e));
    return sf_code(e);
}

int cublas_fail(cublasStatus_t s, const char *file, int line, const char *what)
{
    log_error("cublas_error", "at=%s:%d call=\"%s\" status=%s msg=\"%s\"", file, line, what,
              cublasGetStatusName(s), cublasGetStatusString(s));
    return s == CUBLAS_STATUS_ALLOC_FAILED                                        ? SF_ENOMEM
           : s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH ? SF_EUNSUP
                                                                                  : SF_ERR;
}

extern "C" int tensor_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the "no device" error so later calls start clean
        return 0;
    }
    return n;
}

// ---- context ----------------------------------------------------------------------

extern "C" int cuda_ctx_new(int device, struct cuda_ctx **out)
{
    *out = NULL;
    int n = tensor_cuda_device_count();
    if (device < 0 || device >= n) {
        log_error("cuda_no_device", "device=%d visible=%d", device, n);
        return SF_EUNSUP;
    }
    struct cuda_ctx *c = (struct cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return SF_ENOMEM;
    c->device = device;
    int rc = 0;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
        rc = cuda_fail(e, __FILE__, __LINE__, "cudaSetDevice");
        free(c);
        return rc;
    }
    e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        rc = cuda_fail(e, __FILE__, __LINE__, "cudaStreamCreateWithFlags");
        free(c);
        return rc;
    }
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->blas, c->stream);
    if (s != CUBLAS_STATUS_SUCCESS) {
        rc = cublas_fail(s, __FILE__, __LINE__, "cublasCreate/cublasSetStream");
        if (c->blas) cublasDestroy(c->blas);
        cudaStreamDestroy(c->stream);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

extern "C" void cuda_ctx_destroy(struct cuda_ctx **pc)
{
    if (!pc || !*pc) return;
    struct cuda_ctx *c = *pc;
    // nothing to return to: failures are logged and the rest is still released
    cudaError_t e = cudaSetDevice(c->device);
    if (e != cudaSuccess) cuda_fail(e, __FILE__, __LINE__, "cudaSetDevice");
    e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) cuda_fail(e, __FILE__, __LINE__, "cudaStreamSynchronize");
    if (c->blas) {
        cublasStatus_t s = cublasDestroy(c->blas);
        if (s != CUBLAS_STATUS_SUCCESS) cublas_fail(s, __FILE__, __LINE__, "cublasDestroy");
    }
    if (c->stream) {
        e = cudaStreamDestroy(c->stream);
        if (e != cudaSuccess) cuda_fail(e, __FILE__, __LINE__, "cudaStreamDestroy");
    }
    cudaGetLastError();
    free(c);
    *pc = NULL;
}

extern "C" int cuda_ctx_sync(struct cuda_ctx *c)
{
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    CUDA_TRY(cudaGetLastError());
    return 0;
}

extern "C" int cuda_ctx_bind(struct cuda_ctx *c)
{
    CUDA_TRY(cudaSetDevice(c->device));
    return 0;
}

extern "C" int cuda_ctx_check(struct cuda_ctx *c, const char *what)
{
    (void)c;
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_fail(e, __FILE__, __LINE__, what ? what : "launch");
    return 0;
}

extern "C" void *cuda_ctx_stream(struct cuda_ctx *c)
{
    return (void *)c->stream;
}

extern "C" int cuda_ctx_device(const struct cuda_ctx *c)
{
    return c->device;
}

extern "C" int cuda_ctx_describe(const struct cuda_ctx *c, char *buf, size_t cap)
{
    cudaDeviceProp p;
    CUDA_TRY(cudaGetDeviceProperties(&p, c->device));
    int n = snprintf(buf, cap, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
                     (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return n < 0 || (size_t)n >= cap ? SF_ERANGE : 0;
}

// ---- buffers ----------------------------------------------------------------------

extern "C" int cuda_buf_alloc(struct cuda_buf *b, size_t bytes)
{
    b->ptr = NULL;
    b->bytes = 0;
    if (bytes == 0) return SF_EINVAL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        log_error("cuda_oom", "bytes=%zu error=\"%s\"", bytes, cudaGetErrorString(e));
        cudaGetLastError();
        return sf_code(e);
    }
    b->ptr = p;
    b->bytes = bytes;
    return 0;
}

extern "C" int cuda_buf_reserve(struct cuda_buf *b, size_t bytes)
{
    if (b->ptr && b->bytes >= bytes) return 0;
    cuda_buf_free(b);
    return cuda_buf_alloc(b, bytes ? bytes : 1);
}

extern "C" void cuda_buf_free(struct cuda_buf *b)
{
    if (!b) return;
    if (b->ptr) {
        cudaError_t e = cudaFree(b->ptr);
        if (e != cudaSuccess) cuda_fail(e, __FILE__, __LINE__, "cudaFree");
    }
    b->ptr = NULL;
    b->bytes = 0;
}

static bool in_range(const struct cuda_buf *b, size_t off, size_t n)
{
    return b->ptr && off <= b->bytes && n <= b->bytes - off;
}

extern "C" int cuda_buf_upload(struct cuda_ctx *c, struct cuda_buf *dst, size_t off,
                               const void *src, size_t n)
{
    if (n == 0) return 0;
    if (!in_range(dst, off, n)) {
        log_error("cuda_buf_range", "op=upload off=%zu n=%zu bytes=%zu", off, n, dst->bytes);
        return SF_ERANGE;
    }
    return cuda_memcpy_h2d(c, (char *)dst->ptr + off, src, n);
}

extern "C" int cuda_buf_download(struct cuda_ctx *c, void *dst, const struct cuda_buf *src,
                                 size_t off, size_t n)
{
    if (n == 0) return 0;
    if (!in_range(src, off, n)) {
        log_error("cuda_buf_range", "op=download off=%zu n=%zu bytes=%zu", off, n, src->bytes);
        return SF_ERANGE;
    }
    return cuda_memcpy_d2h(c, dst, (const char *)src->ptr + off, n);
}

// Host memory is pageable: cudaMemcpyAsync from it is staged and returns once the
// source may be reused, and the copy is ordered on the stream.
extern "C" int cuda_memcpy_h2d(struct cuda_ctx *c, void *dst_dev, const void *src, size_t n)
{
    if (n == 0) return 0;
    CUDA_TRY(cudaMemcpyAsync(dst_dev, src, n, cudaMemcpyHostToDevice, c->stream));
    return 0;
}

extern "C" int cuda_memcpy_d2h(struct cuda_ctx *c, void *dst, const void *src_dev, size_t n)
{
    if (n == 0) return 0;
    CUDA_TRY(cudaMemcpyAsync(dst, src_dev, n, cudaMemcpyDeviceToHost, c->stream));
    CUDA_TRY(cudaStreamSynchronize(c->stream));
    return 0;
}

extern "C" int cuda_memcpy_d2d(struct cuda_ctx *c, void *dst_dev, const void *src_dev, size_t n)
{
    if (n == 0) return 0;
    CUDA_TRY(cudaMemcpyAsync(dst_dev, src_dev, n, cudaMemcpyDeviceToDevice, c->stream));
    return 0;
}

extern "C" int cuda_memset(struct cuda_ctx *c, void *dst_dev, int byte, size_t n)
{
    if (n == 0) return 0;
    CUDA_TRY(cudaMemsetAsync(dst_dev, byte, n, c->stream));
    return 0;
}

// ---- GEMM ---------------------------------------------------------------------------

static const char *const math_names[] = {"fp32", "tf32", "bf16"};

extern "C" const char *cuda_math_name(enum cuda_math m)
{
    return (unsigned)m < 3 ? math_names[m] : "unknown";
}

extern "C" int cuda_math_parse(const char *s, enum cuda_math *out)
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

static bool fits_int(size_t v)
{
    return v <= 0x7fffffff;
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B first,
// with the row strides as leading dimensions.
extern "C" int cuda_sgemm(struct cuda_ctx *c, enum cuda_math math, bool trans_a, bool trans_b,
                          size_t M, size_t N, size_t K, float alpha, const float *A, size_t lda,
                          const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    if (M == 0 || N == 0) return 0;
    if (!fits_int(M) || !fits_int(N) || !fits_int(K) || !fits_int(lda) || !fits_int(ldb) ||
        !fits_int(ldc)) {
        log_error("cuda_sgemm_range", "M=%zu N=%zu K=%zu", M, N, K);
        return SF_ERANGE;
    }
    cublasOperation_t opA = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opB = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (K == 0) {
        // cuBLAS with k = 0 scales C by beta; keep that contract explicitly
        CUBLAS_TRY(cublasSgemm(c->blas, opB, opA, (int)N, (int)M, 0, &alpha, B, (int)ldb, A,
                               (int)lda, &beta, C, (int)ldc));
        return 0;
    }
    cublasComputeType_t ct = math == CUDA_MATH_TF32   ? CUBLAS_COMPUTE_32F_FAST_TF32
                             : math == CUDA_MATH_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                                      : CUBLAS_COMPUTE_32F;
    CUBLAS_TRY(cublasGemmEx(c->blas, opB, opA, (int)N, (int)M, (int)K, &alpha, B, CUDA_R_32F,
                            (int)ldb, A, CUDA_R_32F, (int)lda, &beta, C, CUDA_R_32F, (int)ldc, ct,
                            CUBLAS_GEMM_DEFAULT));
    return 0;
}

// Row-major A (M x K) is column-major A^T (K x M, ld = lda): y = A x is op T on it.
extern "C" int cuda_sgemv(struct cuda_ctx *c, bool trans, size_t M, size_t K, float alpha,
                          const float *A, size_t lda, const float *x, float beta, float *y)
{
    if (M == 0) return 0;
    if (!fits_int(M) || !fits_int(K) || !fits_int(lda)) {
        log_error("cuda_sgemv_range", "M=%zu K=%zu", M, K);
        return SF_ERANGE;
    }
    if (!trans) {
        CUBLAS_TRY(cublasSgemv(c->blas, CUBLAS_OP_T, (int)K, (int)M, &alpha, A, (int)lda, x, 1,
                               &beta, y, 1));
    } else { // A is K x M row-major, y = A^T x: column-major M x K, op N
        CUBLAS_TRY(cublasSgemv(c->blas, CUBLAS_OP_N, (int)M, (int)K, &alpha, A, (int)lda, x, 1,
                               &beta, y, 1));
    }
    return 0;
}

// ---- timers -------------------------------------------------------------------------

struct cuda_timer {
    struct cuda_ctx *ctx;
    cudaEvent_t a, b;
};

extern "C" int cuda_timer_new(struct cuda_ctx *c, struct cuda_timer **out)
{
    *out = NULL;
    struct cuda_timer *t = (struct cuda_timer *)calloc(1, sizeof *t);
    if (!t) return SF_ENOMEM;
    t->ctx = c;
    cudaError_t e = cudaEventCreate(&t->a);
    if (e == cudaSuccess) {
        e = cudaEventCreate(&t->b);
        if (e != cudaSuccess) cudaEventDestroy(t->a);
    }
    if (e != cudaSuccess) {
        free(t);
        return cuda_fail(e, __FILE__, __LINE__, "cudaEventCreate");
    }
    *out = t;
    return 0;
}

extern "C" void cuda_timer_destroy(struct cuda_timer **pt)
{
    if (!pt || !*pt) return;
    cudaError_t e = cudaEventDestroy((*pt)->a);
    if (e != cudaSuccess) cuda_fail(e, __FILE__, __LINE__, "cudaEventDestroy");
    e = cudaEventDestroy((*pt)->b);
    if (e != cudaSuccess) cuda_fail(e, __FILE__, __LINE__, "cudaEventDestroy");
    free(*pt);
    *pt = NULL;
}

extern "C" int cuda_timer_start(struct cuda_timer *t)
{
    CUDA_TRY(cudaEventRecord(t->a, t->ctx->stream));
    return 0;
}

extern "C" int cuda_timer_stop(struct cuda_timer *t, double *ms)
{
    float f = 0;
    CUDA_TRY(cudaEventRecord(t->b, t->ctx->stream));
    CUDA_TRY(cudaEventSynchronize(t->b));
    CUDA_TRY(cudaEventElapsedTime(&f, t->a, t->b));
    *ms = f;
    return 0;
}
