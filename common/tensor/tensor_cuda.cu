// tensor_cuda: the CUDA side of the tensor backend. Compiled by nvcc only when the
// Makefile finds it; C code sees plain C functions declared in tensor headers.
#include <cuda_runtime.h>

extern "C" int tensor_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no device" error
        return 0;
    }
    return n;
}
