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

// Warp and block sums (every thread of the block must call block_sum; blockDim.x is a
// multiple of 32 and at most 1024; `sh` holds 32 values of T).
template <typename T> __device__ inline T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T> __device__ inline T block_sum(T v, T *sh)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads(); // sh may still be read by a previous call
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    T r = 0;
    if (wid == 0) {
        r = lane < nw ? sh[lane] : T(0);
        r = warp_sum(r);
        if (lane == 0) sh[0] = r;
    }
    __syncthreads();
    return sh[0];
}

template <typename T> __device__ inline T warp_max(T v)
{
    for (int o = 16; o > 0; o >>= 1) {
        T w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

template <typename T> __device__ inline T block_max(T v, T *sh)
{
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    const int nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        T r = lane < nw ? sh[lane] : sh[0];
        r = warp_max(r);
        if (lane == 0) sh[0] = r;
    }
    __syncthreads();
    return sh[0];
}

#endif
