// cuda_device: device-side helpers the backend's kernels share (warp and block
// reductions, dynamic shared memory). Only device code here, and no runtime headers,
// so that kernel headers compile both under nvcc and under the CPU emulation of the
// kernel lab (tests/gpu/emu, which defines SAEFLOW_CUDA_EMU and the CUDA built-ins).
#ifndef SAEFLOW_TENSOR_CUDA_DEVICE_CUH
#define SAEFLOW_TENSOR_CUDA_DEVICE_CUH

// The kernel's dynamically sized shared memory as `type *name`.
#ifdef SAEFLOW_CUDA_EMU
#define SF_DYNAMIC_SMEM(type, name) type *name = (type *)emu_dynamic_smem()
#else
#define SF_DYNAMIC_SMEM(type, name) extern __shared__ type name[]
#endif

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
