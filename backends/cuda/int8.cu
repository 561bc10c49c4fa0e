// LLM.int8() primitives: row-wise int8 quantization with outlier columns, the exact int8 matmul
// (a dp4a tiled kernel) and the dequantization of its int32 product.
// Semantics: bnb_api.core.ops (int8_vectorwise_quant, int8_linear_matmul, int8_mm_dequant).
#include "common.cuh"

namespace {

constexpr int kThreads = 256;
constexpr float kInv127Sq = (float)(1.0 / (127.0 * 127.0));  // as torch.tensor(1/127**2, float32)

// max that propagates NaN, as torch's amax (fmaxf drops it)
__device__ __forceinline__ float max_nan(float a, float b) { return (a != a || b != b) ? a + b : fmaxf(a, b); }

__device__ float block_max(float v) {
    __shared__ float partial[kThreads / BNB_WARP];
    __shared__ float result;
#pragma unroll
    for (int m = BNB_WARP / 2; m > 0; m >>= 1) v = max_nan(v, BNB_SHFL_XOR(v, m));
    if (threadIdx.x % BNB_WARP == 0) partial[threadIdx.x / BNB_WARP] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = partial[0];
        for (int w = 1; w < kThreads / BNB_WARP; ++w) m = max_nan(m, partial[w]);
        result = m;
    }
    __syncthreads();
    const float out = result;
    __syncthreads();  // `partial` / `result` are reused by the next row
    return out;
}

// Pass 1, a CUDA block per row: absmax of the entries below threshold; flags outlier columns.
__global__ void row_absmax_kernel(const void* A, int dtype, float* row_absmax, int* col_flags, int64_t rows,
                                  int64_t K, float threshold) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float m = 0.0f;
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
            const float a = fabsf(load_f(A, dtype, r * K + k));
            if (threshold > 0.0f && a >= threshold) col_flags[k] = 1;
            else m = max_nan(m, a);  // a NaN entry makes the row absmax NaN (and its codes 0)
        }
        m = block_max(m);
        if (threadIdx.x == 0) row_absmax[r] = m;
    }
}

// Pass 2: codes = rint(x * (127 / absmax)) clamped to [-127, 127]; 0 in outlier columns.
__global__ void row_quant_kernel(const void* A, int dtype, const float* row_absmax, const int* col_flags,
                                 int8_t* out, int64_t rows, int64_t K, float threshold) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float m = row_absmax[r];
        // as the reference's `127.0 / row_absmax`, which torch evaluates as reciprocal(row_absmax) * 127
        const float scale = m > 0.0f ? (1.0f / m) * 127.0f : 0.0f;
        for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
            int8_t q = 0;
            if (!(threshold > 0.0f && col_flags[k])) {
                const float v = rintf(load_f(A, dtype, r * K + k) * scale);
                q = v == v ? (int8_t)fminf(fmaxf(v, -127.0f), 127.0f) : 0;  // NaN (inf * 0, NaN input): 0
            }
            out[r * K + k] = q;
        }
    }
}

// Exact int8 GEMM out (M, N) = A (M, K) . B (N, K)^T: 64 x 64 tiles, 4 x 4 outputs per thread,
// K in steps of 32 bytes packed as int for dp4a.
constexpr int kTile = 64;
constexpr int kTileK = 32;
constexpr int kWords = kTileK / 4;

__device__ __forceinline__ int load_word(const int8_t* X, int64_t rows, int64_t K, int64_t row, int64_t k,
                                         bool aligned) {
    if (row >= rows || k >= K) return 0;
    const int8_t* p = X + row * K + k;
    if (aligned) return *reinterpret_cast<const int*>(p);
    uint32_t w = 0;
    for (int i = 0; i < 4 && k + i < K; ++i) w |= (uint32_t)(uint8_t)p[i] << (8 * i);
    return (int)w;
}

__global__ void int8_matmul_kernel(const int8_t* A, const int8_t* B, int32_t* out, int64_t M, int64_t N,
                                   int64_t K, bool aligned) {
    __shared__ int As[kTile][kWords + 1];
    __shared__ int Bs[kTile][kWords + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t m0 = (int64_t)blockIdx.y * kTile, n0 = (int64_t)blockIdx.x * kTile;
    int acc[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
        for (int i = threadIdx.x; i < kTile * kWords; i += kThreads) {
            const int row = i / kWords, word = i % kWords;
            As[row][word] = load_word(A, M, K, m0 + row, k0 + 4 * word, aligned);
            Bs[row][word] = load_word(B, N, K, n0 + row, k0 + 4 * word, aligned);
        }
        __syncthreads();
#pragma unroll
        for (int w = 0; w < kWords; ++w) {
            int a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = As[ty + 16 * i][w], b[i] = Bs[tx + 16 * i][w];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = bnb_dp4a(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int64_t r = m0 + ty + 16 * i, c = n0 + tx + 16 * j;
            if (r < M && c < N) out[r * N + c] = acc[i][j];
        }
}

// out = (float(A) * (row * col)) * (1 / 127^2) (+ bias), each step rounded in float32.
__global__ void mm_dequant_kernel(const int32_t* A, const float* row_stats, const float* col_stats,
                                  const void* bias, int bias_dtype, void* out, int out_dtype, int64_t rows,
                                  int64_t N) {
    const int64_t total = rows * N;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / N, c = i - r * N;
        const float scale = row_stats[r] * col_stats[c];
        float v = ((float)A[i] * scale) * kInv127Sq;
        if (bias != nullptr) v = v + load_f(bias, bias_dtype, c);
        store_f(out, out_dtype, i, v);
    }
}

}  // namespace

extern "C" int bnb_cuda_int8_vectorwise_quant(const void* A, int a_dtype, signed char* out, float* row_absmax,
                                              int* col_flags, long long rows, long long K, float threshold,
                                              void* stream) {
    if (rows < 0 || K < 0 || (threshold > 0.0f && col_flags == nullptr)) return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)stream;
    if (threshold > 0.0f && K > 0) BNB_CHECK(cudaMemsetAsync(col_flags, 0, sizeof(int) * K, s));
    if (rows == 0) return 0;
    const unsigned int grid = grid_for(rows, 1);
    row_absmax_kernel<<<grid, kThreads, 0, s>>>(A, a_dtype, row_absmax, col_flags, rows, K, threshold);
    BNB_CHECK(cudaGetLastError());
    row_quant_kernel<<<grid, kThreads, 0, s>>>(A, a_dtype, row_absmax, col_flags, (int8_t*)out, rows, K,
                                               threshold);
    BNB_RETURN_LAUNCH_ERROR();
}

extern "C" int bnb_cuda_int8_linear_matmul(const signed char* A, const signed char* B, int* out, long long M,
                                           long long N, long long K, void* stream) {
    if (M < 0 || N < 0 || K < 0 || ceil_div(M, kTile) > 65535) return (int)cudaErrorInvalidValue;
    if (M == 0 || N == 0) return 0;
    cudaStream_t s = (cudaStream_t)stream;
    if (K == 0) return (int)cudaMemsetAsync(out, 0, sizeof(int) * M * N, s);
    const bool aligned = K % 4 == 0 && ((uintptr_t)A % 4) == 0 && ((uintptr_t)B % 4) == 0;
    const dim3 grid((unsigned int)ceil_div(N, kTile), (unsigned int)ceil_div(M, kTile));
    int8_matmul_kernel<<<grid, kThreads, 0, s>>>((const int8_t*)A, (const int8_t*)B, out, M, N, K, aligned);
    BNB_RETURN_LAUNCH_ERROR();
}

extern "C" int bnb_cuda_int8_mm_dequant(const int* A, const float* row_stats, const float* col_stats,
                                        const void* bias, int bias_dtype, void* out, int out_dtype,
                                        long long rows, long long N, void* stream) {
    if (rows < 0 || N < 0) return (int)cudaErrorInvalidValue;
    if (rows == 0 || N == 0) return 0;
    mm_dequant_kernel<<<grid_for(rows * N, kThreads * 4), kThreads, 0, (cudaStream_t)stream>>>(
        A, row_stats, col_stats, bias, bias_dtype, out, out_dtype, rows, N);
    BNB_RETURN_LAUNCH_ERROR();
}
