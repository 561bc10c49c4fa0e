// Blockwise 8-bit and 4-bit (NF4 / FP4) quantization and dequantization.
// Semantics: bnb_api.core.ops (quantize_blockwise, dequantize_blockwise, quantize_4bit, dequantize_4bit).
#include "common.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / BNB_WARP;

// One logical warp per quantization block: absmax by warp reduction, then nearest code of each value.
__global__ void quantize_blockwise_kernel(const void* A, int dtype, const float* code, uint8_t* out,
                                          float* absmax, int64_t n, int blocksize) {
    __shared__ float mid[255];
    load_midpoints(mid, code, 256);
    __syncthreads();
    const int lane = threadIdx.x % BNB_WARP;
    const int64_t n_blocks = ceil_div(n, blocksize);
    for (int64_t b = (int64_t)blockIdx.x * kWarps + threadIdx.x / BNB_WARP; b < n_blocks;
         b += (int64_t)gridDim.x * kWarps) {
        const int64_t start = b * blocksize;
        const int len = (int)min((int64_t)blocksize, n - start);
        float m = 0.0f;
        for (int i = lane; i < len; i += BNB_WARP) m = fmaxf(m, fabsf(load_f(A, dtype, start + i)));
        m = warp_max(m);
        if (lane == 0) absmax[b] = m;
        const float inv = inv_absmax(m);
        for (int i = lane; i < len; i += BNB_WARP) {
            const float s = scale_clamp(load_f(A, dtype, start + i), inv);
            out[start + i] = (uint8_t)nearest_index<256>(mid, s);
        }
    }
}

__global__ void dequantize_blockwise_kernel(const uint8_t* A, const float* absmax, const float* code, void* out,
                                            int dtype, int64_t n, int block_shift) {
    __shared__ float table[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) table[i] = code[i];
    __syncthreads();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        store_f(out, dtype, i, table[A[i]] * absmax[i >> block_shift]);
}

// One logical warp per block; each lane encodes byte j = elements (2j, 2j+1) of the block.
// An odd n pads the last byte's low nibble with the code of 0 (a scaled value of 0).
__global__ void quantize_4bit_kernel(const void* A, int dtype, const float* sorted_values,
                                     const uint8_t* sorted_codes, uint8_t* out, float* absmax, int64_t n,
                                     int blocksize) {
    __shared__ float mid[15];
    __shared__ uint8_t codes[16];
    load_midpoints(mid, sorted_values, 16);
    if (threadIdx.x < 16) codes[threadIdx.x] = sorted_codes[threadIdx.x];
    __syncthreads();
    const int lane = threadIdx.x % BNB_WARP;
    const int64_t n_blocks = ceil_div(n, blocksize);
    for (int64_t b = (int64_t)blockIdx.x * kWarps + threadIdx.x / BNB_WARP; b < n_blocks;
         b += (int64_t)gridDim.x * kWarps) {
        const int64_t start = b * blocksize;  // even: blocksize is a power of two >= 32
        const int len = (int)min((int64_t)blocksize, n - start);
        float m = 0.0f;
        for (int i = lane; i < len; i += BNB_WARP) m = fmaxf(m, fabsf(load_f(A, dtype, start + i)));
        m = warp_max(m);
        if (lane == 0) absmax[b] = m;
        const float inv = inv_absmax(m);
        for (int j = lane; j < (len + 1) / 2; j += BNB_WARP) {
            const int64_t e = start + 2 * j;
            const float s0 = scale_clamp(load_f(A, dtype, e), inv);
            const float s1 = e + 1 < n ? scale_clamp(load_f(A, dtype, e + 1), inv) : 0.0f;
            const uint8_t hi = codes[nearest_index<16>(mid, s0)];
            const uint8_t lo = codes[nearest_index<16>(mid, s1)];
            out[e >> 1] = (uint8_t)((hi << 4) | lo);
        }
    }
}

// One thread per packed byte: element 2j from the high nibble, 2j + 1 from the low nibble.
__global__ void dequantize_4bit_kernel(const uint8_t* A, const float* absmax, const float* code, void* out,
                                       int dtype, int64_t n, int block_shift) {
    __shared__ float table[16];
    if (threadIdx.x < 16) table[threadIdx.x] = code[threadIdx.x];
    __syncthreads();
    const int64_t n_bytes = (n + 1) / 2;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n_bytes;
         j += (int64_t)gridDim.x * blockDim.x) {
        const uint8_t byte = A[j];
        const int64_t e = 2 * j;
        const float scale = absmax[e >> block_shift];  // e and e + 1 share a block (blocksize even)
        store_f(out, dtype, e, table[byte >> 4] * scale);
        if (e + 1 < n) store_f(out, dtype, e + 1, table[byte & 0xF] * scale);
    }
}

int log2_of(int blocksize) {
    int s = 0;
    while ((1 << s) < blocksize) ++s;
    return s;
}

bool bad_blocksize(int blocksize, int minimum) {
    return blocksize < minimum || (blocksize & (blocksize - 1)) != 0;
}

}  // namespace

extern "C" int bnb_cuda_quantize_blockwise(const void* A, int a_dtype, const float* code, unsigned char* out,
                                           float* absmax, long long n, int blocksize, void* stream) {
    if (bad_blocksize(blocksize, 64) || n < 0) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    const unsigned int grid = grid_for(ceil_div(n, blocksize), kWarps);
    quantize_blockwise_kernel<<<grid, kThreads, 0, (cudaStream_t)stream>>>(A, a_dtype, code, out, absmax, n,
                                                                           blocksize);
    BNB_RETURN_LAUNCH_ERROR();
}

extern "C" int bnb_cuda_dequantize_blockwise(const unsigned char* A, const float* absmax, const float* code,
                                             void* out, int out_dtype, long long n, int blocksize, void* stream) {
    if (bad_blocksize(blocksize, 64) || n < 0) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    dequantize_blockwise_kernel<<<grid_for(n, kThreads * 4), kThreads, 0, (cudaStream_t)stream>>>(
        A, absmax, code, out, out_dtype, n, log2_of(blocksize));
    BNB_RETURN_LAUNCH_ERROR();
}

extern "C" int bnb_cuda_quantize_4bit(const void* A, int a_dtype, const float* sorted_values,
                                      const unsigned char* sorted_codes, unsigned char* out, float* absmax,
                                      long long n, int blocksize, void* stream) {
    if (bad_blocksize(blocksize, 32) || n < 0) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    const unsigned int grid = grid_for(ceil_div(n, blocksize), kWarps);
    quantize_4bit_kernel<<<grid, kThreads, 0, (cudaStream_t)stream>>>(A, a_dtype, sorted_values, sorted_codes,
                                                                      out, absmax, n, blocksize);
    BNB_RETURN_LAUNCH_ERROR();
}

extern "C" int bnb_cuda_dequantize_4bit(const unsigned char* A, const float* absmax, const float* code, void* out,
                                        int out_dtype, long long n, int blocksize, void* stream) {
    if (bad_blocksize(blocksize, 32) || n < 0) return (int)cudaErrorInvalidValue;
    if (n == 0) return 0;
    dequantize_4bit_kernel<<<grid_for((n + 1) / 2, kThreads * 4), kThreads, 0, (cudaStream_t)stream>>>(
        A, absmax, code, out, out_dtype, n, log2_of(blocksize));
    BNB_RETURN_LAUNCH_ERROR();
}
