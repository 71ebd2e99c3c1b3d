// cuda_emu: runs the backend's CUDA kernels on host threads, so that their logic can be
// checked against the CPU oracle on a machine without a GPU.
//
// Every CUDA thread of a block is a std::thread; blocks of a grid run one after another
// (so function-static "__shared__" arrays are the block's shared memory). __syncthreads
// and the warp intrinsics (__shfl_*_sync, __ballot_sync, __match_any_sync, __syncwarp)
// are barriers over the threads that have not returned, with an exchange buffer, so a
// kernel whose threads disagree about reaching a barrier deadlocks here as it would
// hang or misbehave on a device. Dynamic shared memory is filled with 0xFF bytes (NaN
// floats) before each launch so that reads of unwritten entries show.
//
// Not emulated: memory-model subtleties beyond barriers, timing, and anything the host
// side does (cuBLAS, cub, transfers): the drivers stand those in with CPU code.
//
// Usage: include this before the kernel headers, compile as C++17 with -pthread, and
// launch with emu_launch(grid, block, smem_bytes, [&] { kernel(args...); }).
#ifndef SAEFLOW_CUDA_EMU_H
#define SAEFLOW_CUDA_EMU_H

#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <math.h>
#include <mutex>
#include <thread>
#include <vector>

#define SAEFLOW_CUDA_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__      static

struct emu_uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct alignas(16) float4 {
    float x, y, z, w;
};

inline thread_local emu_uint3 threadIdx;
inline thread_local emu_uint3 blockIdx;
inline dim3 blockDim, gridDim;

// A barrier whose party shrinks when a thread returns from the kernel.
struct emu_barrier {
    std::mutex m;
    std::condition_variable cv;
    int active = 0, arrived = 0;
    long gen = 0;
    void reset(int n)
    {
        std::lock_guard<std::mutex> l(m);
        active = n;
        arrived = 0;
    }
    void wait()
    {
        std::unique_lock<std::mutex> l(m);
        long g = gen;
        if (++arrived >= active) {
            arrived = 0;
            gen++;
            cv.notify_all();
        } else {
            cv.wait(l, [&] { return gen != g; });
        }
    }
    void leave()
    {
        std::lock_guard<std::mutex> l(m);
        active--;
        if (arrived > 0 && arrived >= active) {
            arrived = 0;
            gen++;
            cv.notify_all();
        }
    }
};

struct emu_state_t {
    emu_barrier block;
    emu_barrier warps[32];
    uint64_t xchg[1024];
    std::vector<unsigned char> dyn;
};
inline emu_state_t emu_state;

inline void *emu_dynamic_smem()
{
    return emu_state.dyn.data();
}

inline void __syncthreads()
{
    emu_state.block.wait();
}
inline void __syncwarp(unsigned = 0xffffffffu)
{
    emu_state.warps[threadIdx.x / 32].wait();
}

template <typename T> inline void emu_put(T v)
{
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    emu_state.xchg[threadIdx.x] = u;
}
template <typename T> inline T emu_get(unsigned t)
{
    T v;
    uint64_t u = emu_state.xchg[t];
    memcpy(&v, &u, sizeof v);
    return v;
}

inline int __syncthreads_or(int p)
{
    emu_put<int>(p != 0);
    __syncthreads();
    int r = 0;
    for (unsigned t = 0; t < blockDim.x; t++) r |= emu_get<int>(t);
    __syncthreads();
    return r;
}

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int lane_mask)
{
    const unsigned base = threadIdx.x & ~31u, lane = threadIdx.x & 31u;
    emu_put(v);
    __syncwarp();
    T r = emu_get<T>(base + ((lane ^ (unsigned)lane_mask) & 31u));
    __syncwarp();
    return r;
}

template <typename T> inline T __shfl_down_sync(unsigned, T v, unsigned delta)
{
    const unsigned base = threadIdx.x & ~31u, lane = threadIdx.x & 31u;
    emu_put(v);
    __syncwarp();
    T r = lane + delta < 32 ? emu_get<T>(base + lane + delta) : v;
    __syncwarp();
    return r;
}

inline unsigned __ballot_sync(unsigned, int p)
{
    const unsigned base = threadIdx.x & ~31u;
    emu_put<int>(p != 0);
    __syncwarp();
    unsigned r = 0;
    for (unsigned l = 0; l < 32; l++)
        if (emu_get<int>(base + l)) r |= 1u << l;
    __syncwarp();
    return r;
}

inline unsigned __match_any_sync(unsigned, unsigned v)
{
    const unsigned base = threadIdx.x & ~31u;
    emu_put(v);
    __syncwarp();
    unsigned r = 0;
    for (unsigned l = 0; l < 32; l++)
        if (emu_get<unsigned>(base + l) == v) r |= 1u << l;
    __syncwarp();
    return r;
}

inline unsigned atomicAdd(unsigned *a, unsigned v)
{
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);
}
inline unsigned long long atomicAdd(unsigned long long *a, unsigned long long v)
{
    return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST);
}

inline int __popc(unsigned v)
{
    return __builtin_popcount(v);
}
inline int __ffs(unsigned v)
{
    return __builtin_ffs((int)v);
}
inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i)
{
    float f;
    memcpy(&f, &i, 4);
    return f;
}

// Runs `body` (a call of one kernel) as grid x block threads. block.x must be a multiple
// of 32 (at most 1024); block.y = block.z = 1.
template <typename F> void emu_launch(dim3 grid, dim3 block, size_t smem, F body)
{
    if (block.x == 0 || block.x % 32 || block.x > 1024 || block.y != 1 || block.z != 1) abort();
    gridDim = grid;
    blockDim = block;
    emu_state.dyn.assign(smem + 16, 0xFF);
    const int nt = (int)block.x, nw = nt / 32;
    emu_barrier end;
    end.reset(nt);
    auto reset_block = [&] {
        emu_state.block.reset(nt);
        for (int w = 0; w < nw; w++) emu_state.warps[w].reset(32);
    };
    reset_block();
    std::vector<std::thread> th;
    th.reserve(nt);
    for (int t = 0; t < nt; t++) {
        th.emplace_back([&, t] {
            threadIdx = {(unsigned)t, 0, 0};
            for (unsigned bz = 0; bz < grid.z; bz++)
                for (unsigned by = 0; by < grid.y; by++)
                    for (unsigned bx = 0; bx < grid.x; bx++) {
                        blockIdx = {bx, by, bz};
                        body();
                        emu_state.xchg[t] = 0;
                        emu_state.warps[t / 32].leave();
                        emu_state.block.leave();
                        end.wait(); // every thread is done with this block
                        if (t == 0) reset_block();
                        end.wait(); // the next block starts clean
                    }
        });
    }
    for (auto &x : th) x.join();
}

#endif
