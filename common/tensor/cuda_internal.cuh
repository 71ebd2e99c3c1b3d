// cuda_internal: what the backend's .cu files share (never included by C code): the
// context's insides, checked-call macros and small device helpers.
//
// CUDA_TRY(call) / CUBLAS_TRY(call) evaluate a runtime / cuBLAS call and, on failure,
// log file:line, the call and the library's error string once, then `return` an SF_*
// code from the enclosing function (which must return int). CUDA_LAUNCH_CHECK() does
// the same for the kernel launched just before it.
#ifndef SAEFLOW_TENSOR_CUDA_INTERNAL_CUH
#define SAEFLOW_TENSOR_CUDA_INTERNAL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "core/core.h"
#include "tensor/tensor_cuda.h"
}
#include "tensor/cuda_device.cuh"

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
};

// SF_* code for a CUDA runtime error (and logs it, once, with where it happened).
int cuda_fail(cudaError_t e, const char *file, int line, const char *what);
int cublas_fail(cublasStatus_t s, const char *file, int line, const char *what);

#define CUDA_TRY(call)                                                                             \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return cuda_fail(e_, __FILE__, __LINE__, #call);                    \
    } while (0)

#define CUBLAS_TRY(call)                                                                           \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) return cublas_fail(s_, __FILE__, __LINE__, #call);        \
    } while (0)

#define CUDA_LAUNCH_CHECK() CUDA_TRY(cudaGetLastError())

// Blocks needed to cover n items with `per` items each, capped for grid-stride loops.
static inline unsigned cuda_blocks(size_t n, unsigned per)
{
    size_t b = (n + per - 1) / per;
    if (b == 0) b = 1;
    if (b > 65535u * 8u) b = 65535u * 8u;
    return (unsigned)b;
}

#endif
