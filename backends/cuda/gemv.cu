// gemv_4bit: out (N,) = A (K,) . dequant(B (N, K))^T for one row of activations, never materializing
// the dequantized weight. Semantics: bnb_api.core.ops.gemv_4bit (weights rounded to float32 exactly as
// dequantize_4bit does, products accumulated in float32, the result cast to A's dtype).
#include <stdio.h>
#include <stdlib.h>

#include "common.cuh"

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / BNB_WARP;

// The float32 absmax of quantization block `blk`, in two steps so that every global load of a tile can
// be issued before any is used: raw() loads (plain: the float; nested: the code byte and its group's
// float), value() combines them (nested: code * scale + offset, unfused, as dequantize_blockwise).
struct Absmax {
    const float* f32;
    const uint8_t* u8;
    const float* nested_absmax;
    const float* nested_code;  // shared memory copy
    float offset;
    int nested_shift;

    struct Raw {
        float scale;
        uint32_t code;
    };
    __device__ __forceinline__ Raw raw(int64_t blk) const {
        if (f32 != nullptr) return Raw{f32[blk], 0u};
        return Raw{nested_absmax[blk >> nested_shift], (uint32_t)u8[blk]};
    }
    __device__ __forceinline__ float value(Raw r) const {
        if (f32 != nullptr) return r.scale;
        return nested_code[r.code] * r.scale + offset;
    }
    __device__ __forceinline__ float operator()(int64_t blk) const { return value(raw(blk)); }
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

// sum_e a[e] * table[code e of q] over one 16-byte chunk (32 codes, high nibble first), in two chains.
__device__ __forceinline__ float chunk_dot(const float a[32], uint4 q, const float* table) {
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
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
    return s0 + s1;
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

// Copy the 4-bit code book (16) and, for nested statistics, the absmax code book (256) into the block's shared
// memory and point `absmax` at them (the caller then waits at a barrier before any lookup).
__device__ __forceinline__ void stage_tables(float* table, float* ncode, const float* code, const float* nested_code,
                                             const float* nested_offset, Absmax& absmax) {
    if (threadIdx.x < 16) table[threadIdx.x] = code[threadIdx.x];
    if (nested_code != nullptr) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) ncode[i] = nested_code[i];
        absmax.offset = *nested_offset;
    }
    absmax.nested_code = ncode;
}

// The weights of one tile: R rows x U 16-byte chunks per lane (chunk c0 + lane + 32 u of each row), with
// their raw block scales. Out-of-range rows and chunks load nothing and hold zero codes and scales.
template <int R, int U>
struct Tile {
    uint4 q[R][U];
    Absmax::Raw s[R][U];

    __device__ __forceinline__ void load(const uint4* B16, const Absmax& absmax, int64_t row0, int64_t c0, int64_t N,
                                         int64_t K, int block_shift, int lane) {
        const int64_t chunks = K / 32;
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int64_t row = row0 + r, c = c0 + lane + BNB_WARP * u;
                const bool ok = row < N && c < chunks;
                q[r][u] = ok ? B16[row * chunks + c] : uint4{0u, 0u, 0u, 0u};
                s[r][u] = ok ? absmax.raw((row * K + c * 32) >> block_shift) : Absmax::Raw{0.0f, 0u};
            }
        }
    }
};

// Fast path (K % 32 == 0, 16-byte aligned A and B): a warp computes R rows, a tile of U chunks per lane
// per row at a time. All of a tile's weight and scale loads are issued before the first is used (no
// branch between them), and the first tile's before the block waits for its code tables. A chunk's dot
// product with the codes is scaled by its block's absmax once (a float rounding difference from the
// reference's per-weight scaling, inside the contract's dot-product tolerance); a row whose result is
// inf or NaN is recomputed per weight (row_dot_per_weight).
template <int R, int U>
__global__ void __launch_bounds__(kThreads) gemv_4bit_tile_kernel(const void* A, int dtype, const uint8_t* B,
                                                                  Absmax absmax, const float* nested_code,
                                                                  const float* nested_offset, const float* code,
                                                                  void* out, int64_t N, int64_t K, int block_shift) {
    __shared__ float table[16];
    __shared__ float ncode[256];
    const int lane = threadIdx.x % BNB_WARP;
    const int64_t chunks = K / 32;
    const uint4* B16 = reinterpret_cast<const uint4*>(B);
    const int64_t stride = (int64_t)gridDim.x * kWarps * R;
    int64_t row0 = ((int64_t)blockIdx.x * kWarps + threadIdx.x / BNB_WARP) * R;
    Tile<R, U> tile;
    tile.load(B16, absmax, row0, 0, N, K, block_shift, lane);  // in flight while the tables are staged
    stage_tables(table, ncode, code, nested_code, nested_offset, absmax);
    __syncthreads();
    float acc[R] = {};
    int64_t c0 = 0;
    while (row0 < N) {
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t c = c0 + lane + BNB_WARP * u;
            if (c >= chunks) break;  // the tile's loads are all issued: this branch costs no parallelism
            float a[32];
            load_a32(A, dtype, c * 32, a);
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r] = fmaf(chunk_dot(a, tile.q[r][u], table), absmax.value(tile.s[r][u]), acc[r]);
        }
        c0 += BNB_WARP * U;
        if (c0 >= chunks) {  // the row group is done (warp-uniform)
#pragma unroll
            for (int r = 0; r < R; ++r) {
                float total = warp_sum(acc[r]);  // the same value in every lane: the branch below is warp-uniform
                acc[r] = 0.0f;
                if (row0 + r >= N) break;
                if (!isfinite(total))
                    total = row_dot_per_weight(A, dtype, B16, absmax, table, row0 + r, K, block_shift, lane);
                if (lane == 0) store_f(out, dtype, row0 + r, total);
            }
            row0 += stride;
            c0 = 0;
        }
        if (row0 < N) tile.load(B16, absmax, row0, c0, N, K, block_shift, lane);
    }
}

// ---- tensor-core path (fp16 / bf16 activations, compute capability >= 8.0) ----

// d += A (16 x 16) . B (16 x 8) in float32 on the tensor cores, f16 or bf16 inputs (PTX fragment layout; see
// emu_mma_m16n8k16 in cpu_emulation.h). Products are exact; the sum is float32.
__device__ __forceinline__ void mma_16816(bool bf16, float d[4], uint32_t a0, uint32_t a2, uint32_t b0, uint32_t b1) {
#if defined(BNB_EMULATION)
    const uint32_t a[4] = {a0, 0u, a2, 0u}, b[2] = {b0, b1};
    const float c[4] = {d[0], d[1], d[2], d[3]};
    emu_mma_m16n8k16(bf16, d, a, b, c);
#elif !defined(BNB_HIP) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const uint32_t zero = 0u;
    if (bf16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(zero), "r"(a2), "r"(zero), "r"(b0), "r"(b1));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                     "{%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a0), "r"(zero), "r"(a2), "r"(zero), "r"(b0), "r"(b1));
#else
    (void)bf16, (void)d, (void)a0, (void)a2, (void)b0, (void)b1;  // never launched there (mma_capable)
#endif
}

// The 16-bit code of v in A's dtype (round to nearest even).
__device__ __forceinline__ uint32_t to_bits16(float v, bool bf16) {
    return bf16 ? (uint32_t)float_to_bf16_bits(v) : (uint32_t)__half_as_ushort(__float2half_rn(v));
}

// Tensor-core fast path (fp16 / bf16 A, K % 64 == 0, blocksize >= 64, 8-byte aligned B): a warp computes 8 * NT
// rows as m16n8k16 products whose A fragment holds the activation row (rows 1..15 zero). Lane (g, t) = (lane / 4,
// lane % 4) reads 8 bytes (16 codes) of row g of each n8 tile per 64-code span: bytes 16t / 2 .. of the span, so
// the 4 lanes of a row read the span's 32 bytes, inside one quantization block. The k order inside a span is
// permuted the same way for A and B (lane t's byte 2s feeds b0 of step s, byte 2s + 1 feeds b1), which leaves
// the dot product unchanged. A byte becomes its two codes in A's dtype through a 256-entry table of pairs; each
// span's 4 products are scaled by the block's absmax in float32. The code book rounded to 16 bits is the only
// added rounding (at most 2^-12 (fp16) or 2^-9 (bf16) of |A| @ |W|.T, inside the contract's tolerance). U
// spans per lane are loaded before any is used.
template <int NT, int U>
__global__ void __launch_bounds__(kThreads) gemv_4bit_mma_kernel(const void* A, int dtype, const uint8_t* B,
                                                                 Absmax absmax, const float* nested_code,
                                                                 const float* nested_offset, const float* code,
                                                                 void* out, int64_t N, int64_t K, int block_shift) {
    __shared__ float table[16];
    __shared__ float ncode[256];
    __shared__ uint32_t pairs[256];
    const bool bf16 = dtype == BNB_BF16;
    const int lane = threadIdx.x % BNB_WARP, g = lane / 4, t = lane % 4;
    const int64_t spans = K / 64, row_words = K / 16;  // 8-byte words per row
    const uint2* B8 = reinterpret_cast<const uint2*>(B);
    const uint4* A16 = reinterpret_cast<const uint4*>(A);
    stage_tables(table, ncode, code, nested_code, nested_offset, absmax);
    for (int i = threadIdx.x; i < 256; i += blockDim.x)
        pairs[i] = to_bits16(code[i >> 4], bf16) | (to_bits16(code[i & 15], bf16) << 16);
    __syncthreads();
    const int64_t stride = (int64_t)gridDim.x * kWarps * 8 * NT;
    for (int64_t row0 = ((int64_t)blockIdx.x * kWarps + threadIdx.x / BNB_WARP) * 8 * NT; row0 < N; row0 += stride) {
        float acc[NT][2] = {};
        for (int64_t s0 = 0; s0 < spans; s0 += U) {
            uint2 q[U][NT];
            Absmax::Raw sc[U][NT][2];
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int64_t span = s0 + u;
                const bool span_ok = span < spans;
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    const int64_t row = row0 + 8 * nt + g;
                    q[u][nt] = span_ok && row < N ? B8[row * row_words + 4 * span + t] : uint2{0u, 0u};
#pragma unroll
                    for (int j = 0; j < 2; ++j) {  // lanes of row g == 0 hold D[0][2t + j]: weight row 2t + j
                        const int64_t out_row = row0 + 8 * nt + 2 * t + j;
                        const bool ok = span_ok && g == 0 && out_row < N;
                        sc[u][nt][j] = ok ? absmax.raw((out_row * K + 64 * span) >> block_shift) : Absmax::Raw{0.0f, 0u};
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const int64_t span = s0 + u;
                if (span >= spans) break;  // the weight loads are all issued
                // the activation row is row 0 of the A fragment (lanes g == 0; the activations stay in L1)
                const uint4 a0 = g == 0 ? A16[8 * span + 2 * t] : uint4{0u, 0u, 0u, 0u};
                const uint4 a1 = g == 0 ? A16[8 * span + 2 * t + 1] : uint4{0u, 0u, 0u, 0u};
                const uint32_t aw[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                    const uint32_t w[2] = {q[u][nt].x, q[u][nt].y};
#pragma unroll
                    for (int step = 0; step < 4; ++step) {
                        const uint32_t word = w[step / 2];
                        const uint32_t b0 = pairs[(word >> (16 * (step % 2))) & 0xffu];
                        const uint32_t b1 = pairs[(word >> (16 * (step % 2) + 8)) & 0xffu];
                        mma_16816(bf16, d, aw[2 * step], aw[2 * step + 1], b0, b1);
                    }
                    acc[nt][0] = fmaf(d[0], absmax.value(sc[u][nt][0]), acc[nt][0]);
                    acc[nt][1] = fmaf(d[1], absmax.value(sc[u][nt][1]), acc[nt][1]);
                }
            }
        }
        // rows row0 + 8 nt + 2t + j sit in lane t (g == 0); each is broadcast so the warp can recompute a
        // non-finite one per weight (row_dot_per_weight), as the other paths do
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const int64_t row = row0 + 8 * nt + i;
                if (row >= N) break;
                float total = warp_sum(lane == i / 2 ? acc[nt][i % 2] : 0.0f);
                if (!isfinite(total))
                    total = row_dot_per_weight(A, dtype, reinterpret_cast<const uint4*>(B), absmax, table, row, K,
                                               block_shift, lane);
                if (lane == 0) store_f(out, dtype, row, total);
            }
        }
    }
}

// General path (any K, any alignment): a warp per row, one code at a time.
__global__ void gemv_4bit_scalar_kernel(const void* A, int dtype, const uint8_t* B, Absmax absmax,
                                        const float* nested_code, const float* nested_offset, const float* code, void* out, int64_t N,
                                        int64_t K, int block_shift) {
    __shared__ float table[16];
    __shared__ float ncode[256];
    stage_tables(table, ncode, code, nested_code, nested_offset, absmax);
    __syncthreads();
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

template <int R, int U>
int launch_tile(const void* A, int a_dtype, const uint8_t* B, const Absmax& absmax, const float* nested_code,
                const float* nested_offset, const float* code, void* out, int64_t N, int64_t K, int block_shift,
                cudaStream_t stream) {
    gemv_4bit_tile_kernel<R, U><<<grid_for(ceil_div(N, R), kWarps), kThreads, 0, stream>>>(
        A, a_dtype, B, absmax, nested_code, nested_offset, code, out, N, K, block_shift);
    BNB_RETURN_LAUNCH_ERROR();
}

template <int NT, int U>
int launch_mma(const void* A, int a_dtype, const uint8_t* B, const Absmax& absmax, const float* nested_code,
               const float* nested_offset, const float* code, void* out, int64_t N, int64_t K, int block_shift,
               cudaStream_t stream) {
    gemv_4bit_mma_kernel<NT, U><<<grid_for(ceil_div(N, 8 * NT), kWarps), kThreads, 0, stream>>>(
        A, a_dtype, B, absmax, nested_code, nested_offset, code, out, N, K, block_shift);
    BNB_RETURN_LAUNCH_ERROR();
}

// Whether the current device has the m16n8k16 f16 / bf16 tensor-core product (compute capability >= 8.0).
bool mma_capable() {
#if defined(BNB_EMULATION)
    return true;
#elif defined(BNB_HIP)
    return false;
#else
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return major >= 8;
#endif
}

// Rows per warp and chunks per lane of the fast path. The shipped shape won the H100 sweeps (ci/gpu_check.sh,
// README): 2 rows x 2 chunks 21.6 us, 2 x 4 23.7, 4 x 2 23.7, 1 x 2 24.5, 1 x 4 25.2, 4 x 4 31.2 (11008x4096,
// cold L2). Slower and dropped: a layout of 4-byte words per lane, whose activation loads fill whole lines
// (27-30 us), and register bounds for more resident warps (2 x 2 at 80 registers 22.0 us, at 64 29.0).
// BNB_API_CUDA_GEMV_SHAPE="R,U" (R in 1, 2, 4; U in 2, 4), read at each call (a getenv is far cheaper than the
// launch), overrides it for sweeps and tests; "mNT,U" (NT in 1, 2; U in 4, 8) selects the tensor-core kernel
// (not yet run on a GPU: not the default until a sweep shows it faster) where it applies.
struct TileShape {
    bool mma;
    int rows, chunks;
};
TileShape tile_shape() {
    TileShape shape{false, 2, 2};
    if (const char* env = getenv("BNB_API_CUDA_GEMV_SHAPE")) {
        const bool mma = env[0] == 'm';
        int r = 0, u = 0;
        if (sscanf(env + (mma ? 1 : 0), "%d,%d", &r, &u) == 2 &&
            (mma ? (r == 1 || r == 2) && (u == 4 || u == 8) : (r == 1 || r == 2 || r == 4) && (u == 2 || u == 4)))
            shape = {mma, r, u};
    }
    return shape;
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
    const Absmax absmax{absmax_f32, absmax_u8, nested_absmax, nullptr, 0.0f, nested ? log2_of(nested_blocksize) : 0};
    const float* ncode = nested ? nested_code : nullptr;
    const float* noffset = nested ? nested_offset : nullptr;
    const int shift = log2_of(blocksize);
    const cudaStream_t s = (cudaStream_t)stream;
    const bool vec = K % 32 == 0 && ((uintptr_t)A % 16) == 0 && ((uintptr_t)B % 16) == 0;
    if (!vec) {
        gemv_4bit_scalar_kernel<<<grid_for(N, kWarps), kThreads, 0, s>>>(A, a_dtype, B, absmax, ncode, noffset, code,
                                                                         out, N, K, shift);
        BNB_RETURN_LAUNCH_ERROR();
    }
    const TileShape shape = tile_shape();
    if (shape.mma && a_dtype != BNB_F32 && K % 64 == 0 && blocksize >= 64 && mma_capable()) {
        switch (shape.rows * 10 + shape.chunks) {
            case 14: return launch_mma<1, 4>(A, a_dtype, B, absmax, ncode, noffset, code, out, N, K, shift, s);
            case 18: return launch_mma<1, 8>(A, a_dtype, B, absmax, ncode, noffset, code, out, N, K, shift, s);
            case 24: return launch_mma<2, 4>(A, a_dtype, B, absmax, ncode, noffset, code, out, N, K, shift, s);
            default: return launch_mma<2, 8>(A, a_dtype, B, absmax, ncode, noffset, code, out, N, K, shift, s);
        }
    }
#define BNB_GEMV_CASE(R, U) \
    case R * 10 + U: return launch_tile<R, U>(A, a_dtype, B, absmax, ncode, noffset, code, out, N, K, shift, s);
    switch (shape.rows * 10 + shape.chunks) {
        BNB_GEMV_CASE(1, 2)
        BNB_GEMV_CASE(1, 4)
        BNB_GEMV_CASE(2, 4)
        BNB_GEMV_CASE(4, 2)
        BNB_GEMV_CASE(4, 4)
        default: return launch_tile<2, 2>(A, a_dtype, B, absmax, ncode, noffset, code, out, N, K, shift, s);
    }
#undef BNB_GEMV_CASE
}
