// gemv_4bit: out (N,) = A (K,) . dequant(B (N, K))^T for one row of activations, never materializing
// the dequantized weight. Semantics: bnb_api.core.ops.gemv_4bit (weights rounded to float32 exactly as
// dequantize_4bit does, products accumulated in float32, the result cast to A's dtype).
#include "common.cuh"

namespace {

// Launch shape; the -D overrides exist for tuning sweeps on new GPUs (the defaults are the shipped ones).
#ifndef BNB_GEMV_THREADS
#define BNB_GEMV_THREADS 128
#endif
#ifndef BNB_GEMV_ROWS_PER_WARP
#define BNB_GEMV_ROWS_PER_WARP 2  // H100 sweep, 11008x4096: 2 rows 25 us, 1 row 26, 4 rows 32, 8 rows 34
#endif
constexpr int kThreads = BNB_GEMV_THREADS;
constexpr int kWarps = kThreads / BNB_WARP;
#ifndef BNB_GEMV_UNROLL
#define BNB_GEMV_UNROLL 2
#endif
constexpr int kRowsPerWarp = BNB_GEMV_ROWS_PER_WARP;  // each 16-byte chunk of A feeds this many weight rows
constexpr int kUnroll = BNB_GEMV_UNROLL;              // 16-byte chunks per lane in flight

// The float32 absmax of quantization block `blk`: plain, or nested (code * scale + offset, unfused).
struct Absmax {
    const float* f32;
    const uint8_t* u8;
    const float* nested_absmax;
    const float* nested_code;  // shared memory copy
    float offset;
    int nested_shift;

    __device__ __forceinline__ float operator()(int64_t blk) const {
        if (f32 != nullptr) return f32[blk];
        return nested_code[u8[blk]] * nested_absmax[blk >> nested_shift] + offset;
    }
};

__device__ __forceinline__ void load_a32(const void* A, int dtype, int64_t k0, float a[32]) {
    if (dtype == BNB_F32) {
        const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(A) + k0);
#pragma unroll
        for (int v = 0; v < 8; ++v) {
            const float4 f = p[v];
            a[4 * v] = f.x, a[4 * v + 1] = f.y, a[4 * v + 2] = f.z, a[4 * v + 3] = f.w;
        }
        return;
    }
    const uint4* p = reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(A) + k0);
#pragma unroll
    for (int v = 0; v < 4; ++v) {
        const uint4 w = p[v];
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int h = 0; h < 4; ++h) {
            const uint16_t lo = (uint16_t)(words[h] & 0xffffu), hi = (uint16_t)(words[h] >> 16);
            if (dtype == BNB_F16) {
                a[8 * v + 2 * h] = __half2float(__ushort_as_half(lo));
                a[8 * v + 2 * h + 1] = __half2float(__ushort_as_half(hi));
            } else {
                a[8 * v + 2 * h] = bf16_bits_to_float(lo);
                a[8 * v + 2 * h + 1] = bf16_bits_to_float(hi);
            }
        }
    }
}

// One row's dot product with each weight scaled before its product, as the reference does: the fast
// path's fallback when its result is not finite, so which inf (or NaN) comes out does not depend on
// where the chunk sums overflowed. (Like every fused kernel, products are not rounded before they are
// added: where the reference's rounded products overflow to inf - inf = NaN, this may give inf.)
__device__ float row_dot_per_weight(const void* A, int dtype, const uint4* B16, const Absmax& absmax, const float* table,
                                    int64_t row, int64_t K, int block_shift, int lane) {
    const int64_t chunks = K / 32;
    float s = 0.0f;
    for (int64_t c = lane; c < chunks; c += BNB_WARP) {
        float a[32];
        load_a32(A, dtype, c * 32, a);
        const uint4 q = B16[row * chunks + c];
        const float scale = absmax((row * K + c * 32) >> block_shift);
        const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int e = 0; e < 32; e += 2) {
            const uint32_t byte = (words[e / 8] >> (4 * (e % 8))) & 0xffu;
            s = fmaf(a[e], table[byte >> 4] * scale, s);
            s = fmaf(a[e + 1], table[byte & 0xfu] * scale, s);
        }
    }
    return warp_sum(s);
}

// Fast path (K % 32 == 0, 16-byte aligned A and B): a warp computes kRowsPerWarp rows; each lane
// takes 16-byte chunks (32 codes, inside one quantization block) of every row. A chunk's dot product
// with the codes is scaled by its block's absmax once (a float rounding difference from the reference's
// per-weight scaling, inside the contract's dot-product tolerance), which saves a multiply per weight;
// a row whose result is inf or NaN is recomputed per weight (row_dot_per_weight).
__global__ void gemv_4bit_vec_kernel(const void* A, int dtype, const uint8_t* B, Absmax absmax_in,
                                     const float* nested_code, const float* nested_offset, const float* code, void* out, int64_t N,
                                     int64_t K, int block_shift) {
    __shared__ float table[16];
    __shared__ float ncode[256];
    if (threadIdx.x < 16) table[threadIdx.x] = code[threadIdx.x];
    if (nested_code != nullptr)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) ncode[i] = nested_code[i];
    __syncthreads();
    Absmax absmax = absmax_in;
    absmax.nested_code = ncode;
    if (nested_offset != nullptr) absmax.offset = *nested_offset;
    const int lane = threadIdx.x % BNB_WARP;
    const int64_t chunks = K / 32;
    const uint4* B16 = reinterpret_cast<const uint4*>(B);
    for (int64_t row0 = ((int64_t)blockIdx.x * kWarps + threadIdx.x / BNB_WARP) * kRowsPerWarp; row0 < N;
         row0 += (int64_t)gridDim.x * kWarps * kRowsPerWarp) {
        float acc[kRowsPerWarp] = {};
#pragma unroll kUnroll
        for (int64_t c = lane; c < chunks; c += BNB_WARP) {
            float a[32];
            load_a32(A, dtype, c * 32, a);
#pragma unroll
            for (int r = 0; r < kRowsPerWarp; ++r) {
                const int64_t row = row0 + r;
                if (row >= N) break;
                const uint4 q = B16[row * chunks + c];
                const float scale = absmax((row * K + c * 32) >> block_shift);
                const uint32_t words[4] = {q.x, q.y, q.z, q.w};
                // the chunk's 32 codes share one scale: sum a * code in two chains, scale once
                float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
                for (int w = 0; w < 4; ++w) {
#pragma unroll
                    for (int b = 0; b < 4; ++b) {
                        const uint32_t byte = (words[w] >> (8 * b)) & 0xffu;
                        const int e = 8 * w + 2 * b;
                        s0 = fmaf(a[e], table[byte >> 4], s0);
                        s1 = fmaf(a[e + 1], table[byte & 0xfu], s1);
                    }
                }
                acc[r] = fmaf(s0 + s1, scale, acc[r]);
            }
        }
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
            float total = warp_sum(acc[r]);  // the same value in every lane: the branch below is warp-uniform
            if (row0 + r >= N) break;
            if (!isfinite(total))
                total = row_dot_per_weight(A, dtype, B16, absmax, table, row0 + r, K, block_shift, lane);
            if (lane == 0) store_f(out, dtype, row0 + r, total);
        }
    }
}

// General path (any K, any alignment): a warp per row, one code at a time.
__global__ void gemv_4bit_scalar_kernel(const void* A, int dtype, const uint8_t* B, Absmax absmax_in,
                                        const float* nested_code, const float* nested_offset, const float* code, void* out, int64_t N,
                                        int64_t K, int block_shift) {
    __shared__ float table[16];
    __shared__ float ncode[256];
    if (threadIdx.x < 16) table[threadIdx.x] = code[threadIdx.x];
    if (nested_code != nullptr)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) ncode[i] = nested_code[i];
    __syncthreads();
    Absmax absmax = absmax_in;
    absmax.nested_code = ncode;
    if (nested_offset != nullptr) absmax.offset = *nested_offset;
    const int lane = threadIdx.x % BNB_WARP;
    for (int64_t row = (int64_t)blockIdx.x * kWarps + threadIdx.x / BNB_WARP; row < N;
         row += (int64_t)gridDim.x * kWarps) {
        float acc = 0.0f;
        for (int64_t k = lane; k < K; k += BNB_WARP) {
            const int64_t e = row * K + k;
            const uint8_t byte = B[e >> 1];
            const uint8_t nib = (e & 1) ? (byte & 0xfu) : (byte >> 4);
            acc = fmaf(load_f(A, dtype, k), table[nib] * absmax(e >> block_shift), acc);
        }
        acc = warp_sum(acc);
        if (lane == 0) store_f(out, dtype, row, acc);
    }
}

int log2_of(int v) {
    int s = 0;
    while ((1 << s) < v) ++s;
    return s;
}

}  // namespace

extern "C" int bnb_cuda_gemv_4bit(const void* A, int a_dtype, const unsigned char* B, const float* absmax_f32,
                                  const unsigned char* absmax_u8, const float* nested_absmax,
                                  const float* nested_code, const float* nested_offset, int nested_blocksize,
                                  const float* code, void* out, long long N, long long K, int blocksize,
                                  void* stream) {
    const bool nested = absmax_f32 == nullptr;
    if (N < 0 || K < 0 || blocksize < 32 || (blocksize & (blocksize - 1)) != 0) return (int)cudaErrorInvalidValue;
    if (nested && (absmax_u8 == nullptr || nested_absmax == nullptr || nested_code == nullptr ||
                   nested_offset == nullptr || nested_blocksize < 1 || (nested_blocksize & (nested_blocksize - 1))))
        return (int)cudaErrorInvalidValue;
    if (N == 0) return 0;
    // the nested offset stays on the device: each CUDA block reads it (no host synchronization)
    Absmax absmax{absmax_f32, absmax_u8, nested_absmax, nullptr, 0.0f, nested ? log2_of(nested_blocksize) : 0};
    const bool vec = K % 32 == 0 && ((uintptr_t)A % 16) == 0 && ((uintptr_t)B % 16) == 0;
    if (vec) {
        const unsigned int grid = grid_for(ceil_div(N, kRowsPerWarp), kWarps);
        gemv_4bit_vec_kernel<<<grid, kThreads, 0, (cudaStream_t)stream>>>(
            A, a_dtype, B, absmax, nested ? nested_code : nullptr, nested ? nested_offset : nullptr, code, out, N, K,
            log2_of(blocksize));
    } else {
        gemv_4bit_scalar_kernel<<<grid_for(N, kWarps), kThreads, 0, (cudaStream_t)stream>>>(
            A, a_dtype, B, absmax, nested ? nested_code : nullptr, nested ? nested_offset : nullptr, code, out, N, K,
            log2_of(blocksize));
    }
    BNB_RETURN_LAUNCH_ERROR();
}
