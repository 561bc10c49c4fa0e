// CPU emulation of the small CUDA subset the kernels use, so that the unmodified kernel sources run on
// the CPU as a test oracle of their logic (indexing, packing, rounding, reductions, optimizer math).
// Force-included by emulate.py, which also rewrites `kernel<<<grid, block, smem, stream>>>(args)` into
// `emu_launch(kernel, grid, block, smem, stream, args)`. Each CUDA block runs as blockDim.x OS threads
// (blocks one after another, so __shared__ variables can be function statics); __syncthreads and warp
// shuffles are barriers. Arithmetic is IEEE float32 without contraction, as nvcc -fmad=false.
// Not a performance model and not shipped as a backend.
#pragma once
#define BNB_EMULATION 1

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>
#include <algorithm>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using std::isfinite;
using std::max;
using std::min;

typedef int cudaError_t;
typedef void* cudaStream_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorNoDevice = 100 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) {
    return e == 0 ? "no error" : e == 1 ? "invalid argument" : e == 100 ? "no CUDA-capable device is detected"
                                                                         : "unknown error";
}
inline cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
// two "SMs" holding one block each: grid-stride loops of resident-size grids run more than once
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) { *v = 2; return cudaSuccess; }
template <typename K>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, K, int, size_t) { *n = 1; return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { std::memset(p, v, n); return 0; }

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
struct float4 { float x, y, z, w; };
struct __half { uint16_t bits; };

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct EmuWarp {
    std::barrier<> bar{32};
    double buf[32]; /* float and double lanes (a float round-trips exactly) */
    uint32_t mma_a[32][4], mma_b[32][2];
};
inline thread_local EmuWarp* emu_warp = nullptr;
inline thread_local std::barrier<>* emu_block = nullptr;

inline void __syncthreads() { emu_block->arrive_and_wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int m) {
    const int lane = threadIdx.x % 32;
    emu_warp->buf[lane] = (double)v;
    emu_warp->bar.arrive_and_wait();
    const T r = (T)emu_warp->buf[lane ^ m];
    emu_warp->bar.arrive_and_wait();
    return r;
}

inline float __uint_as_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 of one warp, with the PTX fragment layout
// (g = lane / 4, t = lane % 4; the low half of a register is the lower index):
//   a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]
//   b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]; c/d0..3 = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]
// Products are exact in float32; the sum runs over k in order.
inline float emu_half_bits(uint32_t h, bool bf16) {
    if (bf16) return __uint_as_float(h << 16);
    _Float16 v;
    const uint16_t b = (uint16_t)h;
    std::memcpy(&v, &b, 2);
    return (float)v;
}
inline void emu_mma_m16n8k16(bool bf16, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]);
inline uint32_t __float_as_uint(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline void emu_mma_m16n8k16(bool bf16, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    const int lane = threadIdx.x % 32;
    for (int i = 0; i < 4; ++i) emu_warp->mma_a[lane][i] = a[i];
    for (int i = 0; i < 2; ++i) emu_warp->mma_b[lane][i] = b[i];
    emu_warp->bar.arrive_and_wait();
    auto A = [&](int row, int k) {  // the lane and register holding A[row][k]
        const int reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        const uint32_t w = emu_warp->mma_a[4 * (row % 8) + (k % 8) / 2][reg];
        return emu_half_bits(k % 2 ? w >> 16 : w & 0xffffu, bf16);
    };
    auto B = [&](int k, int col) {
        const uint32_t w = emu_warp->mma_b[4 * col + (k % 8) / 2][k >= 8 ? 1 : 0];
        return emu_half_bits(k % 2 ? w >> 16 : w & 0xffffu, bf16);
    };
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
        const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i % 2);
        float sum = c[i];
        for (int k = 0; k < 16; ++k) sum += A(row, k) * B(k, col);
        d[i] = sum;
    }
    emu_warp->bar.arrive_and_wait();
}

inline float __half2float(__half h) { _Float16 v; std::memcpy(&v, &h.bits, 2); return (float)v; }
inline __half __float2half_rn(float f) { _Float16 v = (_Float16)f; __half h; std::memcpy(&h.bits, &v, 2); return h; }
inline __half __ushort_as_half(uint16_t b) { return __half{b}; }
inline uint16_t __half_as_ushort(__half h) { return h.bits; }
inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i) c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
}
template <typename T>
inline T atomicAdd(T* p, T v) {
    static std::mutex m;
    std::lock_guard<std::mutex> lock(m);
    const T old = *p;
    *p = old + v;
    return old;
}

template <typename... KernelArgs, typename... Args>
void emu_launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t, cudaStream_t, Args... args) {
    gridDim = grid;
    blockDim = block;
    for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
            std::barrier<> bar(block.x);
            std::vector<EmuWarp> warps(block.x / 32);
            std::vector<std::thread> threads;
            for (unsigned t = 0; t < block.x; ++t)
                threads.emplace_back([&, t] {
                    threadIdx = dim3(t);
                    blockIdx = dim3(bx, by);
                    emu_block = &bar;
                    emu_warp = &warps[t / 32];
                    kernel(args...);
                });
            for (auto& th : threads) th.join();
        }
}
