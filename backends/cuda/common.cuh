// Device helpers shared by the bnb_api CUDA kernels (also compiled by hipcc through
// backends/rocm/hip_compat.h, which is force-included and defines BNB_HIP).
//
// Exactness: the library is compiled without fused multiply-add contraction (nvcc -fmad=false,
// hipcc -ffp-contract=off) and without fast math, so every + - * / and sqrtf rounds once as in the
// PyTorch reference; fmaf() is used on purpose only where the contract allows float rounding
// differences (dot products).
#pragma once

#if !defined(BNB_HIP) && !defined(BNB_EMULATION)
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif
#include <stdint.h>

extern "C" {
#include "bnb_api_cuda.h"
}

#define BNB_WARP 32  // logical warp: 32 lanes (on wave64 hardware, half a wavefront)

#ifdef BNB_HIP
#define BNB_SHFL_XOR(v, m) __shfl_xor((v), (m), BNB_WARP)
#else
#define BNB_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#endif

// Return the launch error of the kernel just enqueued (or of an earlier asynchronous failure).
#define BNB_RETURN_LAUNCH_ERROR() return (int)cudaGetLastError()
#define BNB_CHECK(expr)                        \
    do {                                       \
        cudaError_t bnb_err_ = (expr);         \
        if (bnb_err_ != cudaSuccess) return (int)bnb_err_; \
    } while (0)

static const float BNB_FLT_MAX = 3.402823466e+38f;

// ---- float <-> storage dtype (bf16 by bit manipulation: exact and identical on CUDA and HIP) ----

__device__ __forceinline__ float bf16_bits_to_float(uint16_t b) { return __uint_as_float(((uint32_t)b) << 16); }

__device__ __forceinline__ uint16_t float_to_bf16_bits(float f) {  // round to nearest even, NaN kept
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ float load_f(const void* p, int dtype, int64_t i) {
    if (dtype == BNB_F32) return ((const float*)p)[i];
    if (dtype == BNB_F16) return __half2float(((const __half*)p)[i]);
    return bf16_bits_to_float(((const uint16_t*)p)[i]);
}

__device__ __forceinline__ void store_f(void* p, int dtype, int64_t i, float v) {
    if (dtype == BNB_F32) ((float*)p)[i] = v;
    else if (dtype == BNB_F16) ((__half*)p)[i] = __float2half_rn(v);
    else ((uint16_t*)p)[i] = float_to_bf16_bits(v);
}

// ---- reductions over a logical warp ----

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int m = BNB_WARP / 2; m > 0; m >>= 1) v = fmaxf(v, BNB_SHFL_XOR(v, m));
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int m = BNB_WARP / 2; m > 0; m >>= 1) v += BNB_SHFL_XOR(v, m);
    return v;
}

// ---- blockwise scaling and nearest code (the op contract) ----

// 1 / absmax in float32, capped at FLT_MAX, 0 for an all-zero block.
__device__ __forceinline__ float inv_absmax(float absmax) {
    if (!(absmax > 0.0f)) return 0.0f;
    return fminf(1.0f / absmax, BNB_FLT_MAX);
}

// x * inv clamped to [-1, 1] (NaN stays NaN: its code is unspecified but in range).
__device__ __forceinline__ float scale_clamp(float x, float inv) {
    float s = x * inv;
    return s < -1.0f ? -1.0f : (s > 1.0f ? 1.0f : s);
}

// Number of the n_mid ascending midpoints strictly below v (n_mid + 1 a power of two):
// the index of the nearest code, ties to the lower one. Branch-free binary search; NaN gives 0.
template <int N_CODES>
__device__ __forceinline__ int nearest_index(const float* mid, float v) {
    int idx = 0;
#pragma unroll
    for (int step = N_CODES / 2; step > 0; step >>= 1) {
        if (mid[idx + step - 1] < v) idx += step;
    }
    return idx;
}

// Midpoints (code[i] + code[i+1]) * 0.5 of a code book of n entries into shared memory.
__device__ __forceinline__ void load_midpoints(float* mid, const float* code, int n) {
    for (int i = threadIdx.x; i < n - 1; i += blockDim.x) mid[i] = (code[i] + code[i + 1]) * 0.5f;
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for grid-stride loops: enough blocks to fill the device, never above the launch limit.
static inline unsigned int grid_for(int64_t work_items, int per_block) {
    int64_t g = ceil_div(work_items, per_block);
    if (g < 1) g = 1;
    if (g > 65535LL * 512) g = 65535LL * 512;
    return (unsigned int)g;
}

// Dot product of four int8 pairs accumulated into c (exact int32).
__device__ __forceinline__ int bnb_dp4a(int a, int b, int c) {
#if defined(BNB_HIP)
#pragma unroll
    for (int i = 0; i < 4; ++i) c += (int)(signed char)(a >> (8 * i)) * (int)(signed char)(b >> (8 * i));
    return c;
#else
    return __dp4a(a, b, c);
#endif
}
