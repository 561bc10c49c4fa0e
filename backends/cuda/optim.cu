// Fused optimizer steps (32-bit and blockwise 8-bit states) over many tensors in one launch, with no
// device synchronization. The update formulas are those of bnb_api.core.reference.optim, evaluated in
// float32 in the same order (one rounding per operation).
//
// Update clipping (max_unorm > 0, LAMB / LARS) needs ||u|| and ||p|| of each whole tensor before any
// parameter moves: the caller first launches a norm pass (params.norm_pass = 1: the same arithmetic,
// nothing written, squares summed into `norms`), then the update pass, which reads `norms` on device.
#include <stdlib.h>

#include "common.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / BNB_WARP;

struct TensorRow {
    void* p;
    const void* g;
    void* s1;
    void* s2;
    float* absmax1;
    float* absmax2;
    int64_t n;
    int p_dtype, g_dtype;
    int64_t start;
};

// The table row of the tensor holding work item `item` (largest t with START[t] <= item).
__device__ TensorRow find_tensor(const long long* table, int n_tensors, int64_t item, int* index) {
    int lo = 0, hi = n_tensors - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (table[(int64_t)mid * BNB_TABLE_WIDTH + BNB_T_START] <= item) lo = mid;
        else hi = mid - 1;
    }
    const long long* r = table + (int64_t)lo * BNB_TABLE_WIDTH;
    *index = lo;
    TensorRow row;
    row.p = (void*)r[BNB_T_P];
    row.g = (const void*)r[BNB_T_G];
    row.s1 = (void*)r[BNB_T_S1];
    row.s2 = (void*)r[BNB_T_S2];
    row.absmax1 = (float*)r[BNB_T_ABSMAX1];
    row.absmax2 = (float*)r[BNB_T_ABSMAX2];
    row.n = r[BNB_T_N];
    row.p_dtype = (int)(r[BNB_T_DTYPES] & 0xff);
    row.g_dtype = (int)((r[BNB_T_DTYPES] >> 8) & 0xff);
    row.start = r[BNB_T_START];
    return row;
}

__device__ __forceinline__ int n_states(int opt) {
    if (opt == BNB_OPT_ADEMAMIX) return 3;
    if (opt == BNB_OPT_ADAM || opt == BNB_OPT_ADAMW || opt == BNB_OPT_LAMB) return 2;
    return 1;
}

__device__ __forceinline__ bool coupled_decay(int opt) {
    return opt == BNB_OPT_ADAM || opt == BNB_OPT_MOMENTUM || opt == BNB_OPT_LARS || opt == BNB_OPT_RMSPROP ||
           opt == BNB_OPT_ADAGRAD;
}

// The update direction u of one element; updates the float32 states s[] in place.
// g is already multiplied by gnorm_scale.
__device__ __forceinline__ float update_direction(const bnb_optim_params& h, float g, float p, float s[3]) {
    if (coupled_decay(h.optimizer) && h.weight_decay > 0.0f) g = g + h.weight_decay * p;
    switch (h.optimizer) {
        case BNB_OPT_ADAM:
        case BNB_OPT_ADAMW:
        case BNB_OPT_LAMB:
            s[0] = s[0] * h.beta1 + h.one_minus_beta1 * g;
            s[1] = s[1] * h.beta2 + (h.one_minus_beta2 * g) * g;
            return (s[0] / h.c1) / (sqrtf(s[1] / h.c2) + h.eps);
        case BNB_OPT_ADEMAMIX:
            s[0] = s[0] * h.beta1 + h.one_minus_beta1 * g;
            s[1] = s[1] * h.beta3 + h.one_minus_beta3 * g;
            s[2] = s[2] * h.beta2 + (h.one_minus_beta2 * g) * g;
            return (s[0] / h.c1 + h.alpha * s[1]) / (sqrtf(s[2] / h.c2) + h.eps);
        case BNB_OPT_MOMENTUM:
        case BNB_OPT_LARS:
            s[0] = h.step == 1 ? g : s[0] * h.beta1 + g;
            return s[0];
        case BNB_OPT_LION: {
            const float d = h.beta1 * s[0] + h.one_minus_beta1 * g;
            s[0] = s[0] * h.beta2 + h.one_minus_beta2 * g;
            return d > 0.0f ? 1.0f : (d < 0.0f ? -1.0f : d);
        }
        case BNB_OPT_RMSPROP:
            s[0] = s[0] * h.beta1 + (h.one_minus_beta1 * g) * g;
            return g / (sqrtf(s[0]) + h.eps);
        default:  // BNB_OPT_ADAGRAD
            s[0] = s[0] + g * g;
            return g / (sqrtf(s[0]) + h.eps);
    }
}

// lr times the clipping factor of tensor t: min(1, max_unorm * ||p|| / ||u||) when clipping applies.
__device__ __forceinline__ float step_size(const bnb_optim_params& h, const double* norms, int t) {
    if (!(h.max_unorm > 0.0f)) return h.lr;
    const float unorm = (float)sqrt(norms[2 * t]);
    const float limit = h.max_unorm * (float)sqrt(norms[2 * t + 1]);
    const float scale = (limit > 0.0f && unorm > limit) ? limit / fmaxf(unorm, 1e-38f) : 1.0f;
    return h.lr * scale;
}

__device__ __forceinline__ float new_param(const bnb_optim_params& h, float p, float u, float lr) {
    if (!coupled_decay(h.optimizer) && h.weight_decay > 0.0f) p = p * h.decay_factor;
    return p - lr * u;
}

__device__ __forceinline__ void add_norms(double* norms, int t, double su, double sp) {
    su = warp_sum(su);
    sp = warp_sum(sp);
    if (threadIdx.x % BNB_WARP == 0) {
        atomicAdd(norms + 2 * t, su);
        atomicAdd(norms + 2 * t + 1, sp);
    }
}

// Four consecutive elements of a float tensor of `dtype` from element i (a multiple of 4, the pointer
// aligned for it: quad_aligned), as float32; and the store back in that dtype.
__device__ __forceinline__ bool quad_aligned(const void* p, int dtype) {
    return (uintptr_t)p % (dtype == BNB_F32 ? 16 : 8) == 0;
}

__device__ __forceinline__ float4 load_quad(const void* p, int dtype, int64_t i) {
    if (dtype == BNB_F32) return *reinterpret_cast<const float4*>(static_cast<const float*>(p) + i);
    const uint2 w = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(p) + i);
    const uint16_t b[4] = {(uint16_t)(w.x & 0xffffu), (uint16_t)(w.x >> 16), (uint16_t)(w.y & 0xffffu),
                           (uint16_t)(w.y >> 16)};
    float f[4];
#pragma unroll
    for (int e = 0; e < 4; ++e)
        f[e] = dtype == BNB_F16 ? __half2float(__ushort_as_half(b[e])) : bf16_bits_to_float(b[e]);
    return float4{f[0], f[1], f[2], f[3]};
}

__device__ __forceinline__ void store_quad(void* p, int dtype, int64_t i, float4 v) {
    if (dtype == BNB_F32) {
        *reinterpret_cast<float4*>(static_cast<float*>(p) + i) = v;
        return;
    }
    const float f[4] = {v.x, v.y, v.z, v.w};
    uint32_t b[4];
#pragma unroll
    for (int e = 0; e < 4; ++e)
        b[e] = dtype == BNB_F16 ? (uint32_t)__half_as_ushort(__float2half_rn(f[e])) : (uint32_t)float_to_bf16_bits(f[e]);
    *reinterpret_cast<uint2*>(static_cast<uint16_t*>(p) + i) = uint2{b[0] | (b[1] << 16), b[2] | (b[3] << 16)};
}

// 32-bit states: a CUDA block per chunk of BNB_OPTIM32_CHUNK elements of one tensor. OPT >= 0: the kernel of
// that one optimizer (its id a compile-time constant, as the 8-bit kernels of blocksize 256); -1: any.
template <int OPT>
__global__ void optimizer_32bit_kernel(const long long* table, int n_tensors, int64_t total_chunks,
                                       bnb_optim_params h, double* norms) {
    if constexpr (OPT >= 0) h.optimizer = OPT;  // constant from here on: the compiler folds every switch on it
    const int ns = n_states(h.optimizer);
    for (int64_t chunk = blockIdx.x; chunk < total_chunks; chunk += gridDim.x) {
        int t;
        const TensorRow row = find_tensor(table, n_tensors, chunk, &t);
        const int64_t begin = (chunk - row.start) * BNB_OPTIM32_CHUNK;
        const int64_t end = min(begin + (int64_t)BNB_OPTIM32_CHUNK, row.n);
        float* s1 = (float*)row.s1;
        float* s2 = (float*)row.s2;
        const float lr = h.norm_pass ? 0.0f : step_size(h, norms, t);
        double su = 0.0, sp = 0.0;  // squares in float64: tiny parameters keep their norm
#pragma unroll 4
        for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
            const float p = load_f(row.p, row.p_dtype, i);
            const float g = load_f(row.g, row.g_dtype, i) * h.gnorm_scale;
            float s[3] = {s1[i], 0.0f, 0.0f};
            if (ns == 3) s[1] = s1[row.n + i], s[2] = s2[i];
            else if (ns == 2) s[1] = s2[i];
            const float u = update_direction(h, g, p, s);
            if (h.norm_pass) {
                su += (double)u * u;
                sp += (double)p * p;
                continue;
            }
            s1[i] = s[0];
            if (ns == 3) s1[row.n + i] = s[1], s2[i] = s[2];
            else if (ns == 2) s2[i] = s[1];
            store_f(row.p, row.p_dtype, i, new_param(h, p, u, lr));
        }
        if (h.norm_pass) add_norms(norms, t, su, sp);  // every thread of the block reaches this
    }
}

// 8-bit blockwise states: a logical warp per quantization block, the CUDA blocks looping over the
// quantization blocks (a grid that fills the device once, so the code books are staged in shared
// memory once per CUDA block, not once per 8 quantization blocks).
//
// EPL > 0 (blocksize == 32 * EPL): each lane keeps its EPL elements' new states in registers. One sweep
// reads p, g and the codes, writes the parameter and keeps the states; the warp's new absmax follows,
// then the codes are written from the registers. EPL == 0 (any blocksize): two sweeps, the second
// recomputing the states from the still-unchanged codes. Both orders give the same bits.
// MINB: 256-thread blocks per SM that the register cap must allow (__launch_bounds__): 3 up to EPL 8
// (80 registers; the per-optimizer kernels of EPL 8 spill at most a few bytes), 1 for EPL 16. H100 sweep,
// 64M-parameter 8-bit AdamW (EPL 8): 2 blocks 0.703 ms, 3 blocks 0.654 ms, 4 blocks 0.727 ms.
//
// OPT >= 0: the kernel of that one optimizer (its id a compile-time constant: no per-element switch, only
// its states' registers); OPT == -1 serves any optimizer. H100, 64M-parameter 8-bit AdamW: the per-optimizer
// kernel 0.654 ms (55% of the copy bandwidth), the any-optimizer one 0.869 ms. An L2 prefetch of the block a
// warp takes next made it slower (0.688 ms one block ahead, 0.704 two) and was dropped.
template <int EPL, int MINB, int OPT>
__global__ void __launch_bounds__(kThreads, MINB) optimizer_8bit_kernel(const long long* table, int n_tensors, int64_t total_blocks,
                                      const float* qmap1, const float* qmap2, bnb_optim_params h, double* norms) {
    if constexpr (OPT >= 0) h.optimizer = OPT;  // constant from here on: the compiler folds every switch on it
    __shared__ float q1[256], q2[256], mid1[255], mid2[255];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) {
        q1[i] = qmap1[i];
        q2[i] = qmap2 != nullptr ? qmap2[i] : 0.0f;
    }
    load_midpoints(mid1, qmap1, 256);
    if (qmap2 != nullptr) load_midpoints(mid2, qmap2, 256);
    __syncthreads();
    const int ns = n_states(h.optimizer);
    // state k: its code book, and where its codes / absmax live relative to the tensor's arrays
    const float* qk[3] = {q1, ns == 3 ? q1 : q2, q2};
    const float* midk[3] = {mid1, ns == 3 ? mid1 : mid2, mid2};
    const int lane = threadIdx.x % BNB_WARP;
    const int bs = h.blocksize;
    for (int64_t qb = (int64_t)blockIdx.x * kWarps + threadIdx.x / BNB_WARP; qb < total_blocks;
         qb += (int64_t)gridDim.x * kWarps) {
        int t;
        const TensorRow row = find_tensor(table, n_tensors, qb, &t);
        const int64_t blk = qb - row.start;
        const int64_t nb = ceil_div(row.n, bs);
        const int64_t base = blk * bs;
        const int len = (int)min((int64_t)bs, row.n - base);
        uint8_t* codes[3] = {(uint8_t*)row.s1 + base, nullptr, nullptr};
        float* absmax[3] = {row.absmax1 + blk, nullptr, nullptr};
        if (ns == 3) {
            codes[1] = (uint8_t*)row.s1 + row.n + base, absmax[1] = row.absmax1 + nb + blk;
            codes[2] = (uint8_t*)row.s2 + base, absmax[2] = row.absmax2 + blk;
        } else if (ns == 2) {
            codes[1] = (uint8_t*)row.s2 + base, absmax[1] = row.absmax2 + blk;
        }
        float old_max[3] = {0.0f, 0.0f, 0.0f};
        for (int k = 0; k < ns; ++k) old_max[k] = *absmax[k];
        const float lr = h.norm_pass ? 0.0f : step_size(h, norms, t);

        float new_max[3] = {0.0f, 0.0f, 0.0f};
        double su = 0.0, sp = 0.0;  // squares in float64: tiny parameters keep their norm
        if constexpr (EPL > 0) {
            // element of a lane's slot j: quads (a full block of aligned tensors, EPL a multiple of 4) take
            // 4 consecutive elements per 16-byte load, i = 128 (j / 4) + 4 lane + j % 4; otherwise
            // i = lane + 32 j, one element per load. Every load is issued before the first is used.
            const bool quads = EPL % 4 == 0 && len == bs && quad_aligned(row.p, row.p_dtype) &&
                               quad_aligned(row.g, row.g_dtype) && (uintptr_t)codes[0] % 4 == 0 &&
                               (uintptr_t)codes[1] % 4 == 0 && (uintptr_t)codes[2] % 4 == 0;
            float pv[EPL], gv[EPL];
            uint32_t cw[3][(EPL + 3) / 4] = {};  // the codes, 4 per word (slot j: byte j % 4 of word j / 4)
            if (quads) {
#pragma unroll
                for (int q = 0; q < EPL / 4; ++q) {
                    const int i0 = 128 * q + 4 * lane;
                    const float4 P = load_quad(row.p, row.p_dtype, base + i0);
                    const float4 G = load_quad(row.g, row.g_dtype, base + i0);
                    pv[4 * q] = P.x, pv[4 * q + 1] = P.y, pv[4 * q + 2] = P.z, pv[4 * q + 3] = P.w;
                    gv[4 * q] = G.x, gv[4 * q + 1] = G.y, gv[4 * q + 2] = G.z, gv[4 * q + 3] = G.w;
#pragma unroll
                    for (int k = 0; k < 3; ++k) cw[k][q] = k < ns ? *reinterpret_cast<const uint32_t*>(codes[k] + i0) : 0u;
                }
            } else {
#pragma unroll
                for (int j = 0; j < EPL; ++j) {
                    const int i = lane + BNB_WARP * j;
                    const bool ok = i < len;
                    pv[j] = ok ? load_f(row.p, row.p_dtype, base + i) : 0.0f;
                    gv[j] = ok ? load_f(row.g, row.g_dtype, base + i) : 0.0f;
#pragma unroll
                    for (int k = 0; k < 3; ++k) cw[k][j / 4] |= (ok && k < ns ? (uint32_t)codes[k][i] : 0u) << (8 * (j % 4));
                }
            }
            float kept[3][EPL];
#pragma unroll
            for (int j = 0; j < EPL; ++j) {
                const bool ok = quads || lane + BNB_WARP * j < len;
                const float p = pv[j];
                const float g = gv[j] * h.gnorm_scale;
                float s[3];
#pragma unroll
                for (int k = 0; k < 3; ++k) s[k] = k < ns ? qk[k][(cw[k][j / 4] >> (8 * (j % 4))) & 0xffu] * old_max[k] : 0.0f;
                const float u = update_direction(h, g, p, s);
                if (!ok) s[0] = s[1] = s[2] = 0.0f;  // a slot past the block's end: no state, no norm
                if (h.norm_pass) {
                    if (ok) su += (double)u * u, sp += (double)p * p;
                    continue;
                }
                pv[j] = new_param(h, p, u, lr);
#pragma unroll
                for (int k = 0; k < 3; ++k) {
                    kept[k][j] = s[k];
                    new_max[k] = fmaxf(new_max[k], fabsf(s[k]));
                }
            }
            if (h.norm_pass) {
                add_norms(norms, t, su, sp);
                continue;
            }
            if (quads) {
#pragma unroll
                for (int q = 0; q < EPL / 4; ++q)
                    store_quad(row.p, row.p_dtype, base + 128 * q + 4 * lane,
                               float4{pv[4 * q], pv[4 * q + 1], pv[4 * q + 2], pv[4 * q + 3]});
            } else {
#pragma unroll
                for (int j = 0; j < EPL; ++j)
                    if (lane + BNB_WARP * j < len) store_f(row.p, row.p_dtype, base + lane + BNB_WARP * j, pv[j]);
            }
#pragma unroll
            for (int k = 0; k < 3; ++k) {
                if (k >= ns) break;
                const float block_max = warp_max(new_max[k]);
                const float inv = inv_absmax(block_max);
                if (quads) {
#pragma unroll
                    for (int q = 0; q < EPL / 4; ++q) {
                        uint32_t w = 0;
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            w |= (uint32_t)nearest_index<256>(midk[k], scale_clamp(kept[k][4 * q + e], inv)) << (8 * e);
                        *reinterpret_cast<uint32_t*>(codes[k] + 128 * q + 4 * lane) = w;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < EPL; ++j) {
                        const int i = lane + BNB_WARP * j;
                        if (i < len) codes[k][i] = (uint8_t)nearest_index<256>(midk[k], scale_clamp(kept[k][j], inv));
                    }
                }
                if (lane == 0) *absmax[k] = block_max;
            }
            continue;
        }
#pragma unroll 4
        for (int i = lane; i < len; i += BNB_WARP) {  // sweep 1
            const float p = load_f(row.p, row.p_dtype, base + i);
            const float g = load_f(row.g, row.g_dtype, base + i) * h.gnorm_scale;
            float s[3];
            for (int k = 0; k < ns; ++k) s[k] = qk[k][codes[k][i]] * old_max[k];
            const float u = update_direction(h, g, p, s);
            for (int k = 0; k < ns; ++k) new_max[k] = fmaxf(new_max[k], fabsf(s[k]));
            if (h.norm_pass) {
                su += (double)u * u;
                sp += (double)p * p;
            }
        }
        if (h.norm_pass) {
            add_norms(norms, t, su, sp);
            continue;
        }
        float inv[3];
        for (int k = 0; k < ns; ++k) {
            new_max[k] = warp_max(new_max[k]);
            inv[k] = inv_absmax(new_max[k]);
        }
#pragma unroll 4
        for (int i = lane; i < len; i += BNB_WARP) {  // sweep 2
            const float p = load_f(row.p, row.p_dtype, base + i);
            const float g = load_f(row.g, row.g_dtype, base + i) * h.gnorm_scale;
            float s[3];
            for (int k = 0; k < ns; ++k) s[k] = qk[k][codes[k][i]] * old_max[k];
            const float u = update_direction(h, g, p, s);
            store_f(row.p, row.p_dtype, base + i, new_param(h, p, u, lr));
            for (int k = 0; k < ns; ++k) codes[k][i] = (uint8_t)nearest_index<256>(midk[k], scale_clamp(s[k], inv[k]));
        }
        if (lane == 0)
            for (int k = 0; k < ns; ++k) *absmax[k] = new_max[k];
    }
}

// Blocks of `kernel` (kThreads threads) that fill the current device once, at most `needed`.
template <typename Kernel>
unsigned int resident_grid(Kernel kernel, int64_t needed) {
    int device = 0, sms = 0, per_sm = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, 0) != cudaSuccess || sms < 1 ||
        per_sm < 1) {
        (void)cudaGetLastError();  // a failed query is not the launch's error: fall back to one block per work item
        return grid_for(needed, 1);
    }
    const int64_t resident = (int64_t)sms * per_sm;
    return (unsigned int)(needed < 1 ? 1 : (needed < resident ? needed : resident));
}

// Tuning knobs for sweeps on new GPUs (read at each launch; a getenv is far cheaper than the launch):
// BNB_API_CUDA_OPT8_BLOCKS: the blocks-per-SM build of the blocksize-256 kernel (2 or 3);
// BNB_API_CUDA_OPT8_GENERIC=1: the any-optimizer kernels instead of the per-optimizer ones (8-bit blocksize 256
// and 32-bit).
int sweep_knob(const char* name, int fallback) {
    const char* env = getenv(name);
    return env != nullptr && *env != '\0' ? atoi(env) : fallback;
}

template <int EPL, int MINB, int OPT = -1>
int launch_8bit(const long long* table, int n_tensors, long long total_work, const float* qmap1, const float* qmap2,
                const bnb_optim_params* params, double* norms, void* stream) {
    const unsigned int grid = resident_grid(optimizer_8bit_kernel<EPL, MINB, OPT>, ceil_div(total_work, kWarps));
    optimizer_8bit_kernel<EPL, MINB, OPT><<<grid, kThreads, 0, (cudaStream_t)stream>>>(
        table, n_tensors, total_work, qmap1, qmap2, *params, norms);
    BNB_RETURN_LAUNCH_ERROR();
}

// blocksize 256 (EPL 8), the default of every 8-bit optimizer: one kernel per optimizer.
template <int MINB>
int launch_256(const long long* table, int n_tensors, long long total_work, const float* qmap1, const float* qmap2,
               const bnb_optim_params* params, double* norms, void* stream) {
    if (sweep_knob("BNB_API_CUDA_OPT8_GENERIC", 0))
        return launch_8bit<8, MINB>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
    switch (params->optimizer) {
#define BNB_OPT8_CASE(ID) \
    case ID: return launch_8bit<8, MINB, ID>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
        BNB_OPT8_CASE(BNB_OPT_ADAM)
        BNB_OPT8_CASE(BNB_OPT_ADAMW)
        BNB_OPT8_CASE(BNB_OPT_MOMENTUM)
        BNB_OPT8_CASE(BNB_OPT_LION)
        BNB_OPT8_CASE(BNB_OPT_RMSPROP)
        BNB_OPT8_CASE(BNB_OPT_ADAGRAD)
        BNB_OPT8_CASE(BNB_OPT_LAMB)
        BNB_OPT8_CASE(BNB_OPT_LARS)
        BNB_OPT8_CASE(BNB_OPT_ADEMAMIX)
#undef BNB_OPT8_CASE
        default: return launch_8bit<8, MINB>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
    }
}

template <int OPT>
int launch_32bit_for(const long long* table, int n_tensors, long long total_work, const bnb_optim_params* params,
                     double* norms, cudaStream_t stream) {
    optimizer_32bit_kernel<OPT><<<grid_for(total_work, 1), kThreads, 0, stream>>>(table, n_tensors, total_work,
                                                                                  *params, norms);
    BNB_RETURN_LAUNCH_ERROR();
}

// The 32-bit kernel of params->optimizer (BNB_API_CUDA_OPT8_GENERIC=1, a sweep knob: the any-optimizer one).
int launch_32bit(const long long* table, int n_tensors, long long total_work, const bnb_optim_params* params,
                 double* norms, cudaStream_t stream) {
    if (sweep_knob("BNB_API_CUDA_OPT8_GENERIC", 0))
        return launch_32bit_for<-1>(table, n_tensors, total_work, params, norms, stream);
    switch (params->optimizer) {
#define BNB_OPT32_CASE(ID) \
    case ID: return launch_32bit_for<ID>(table, n_tensors, total_work, params, norms, stream);
        BNB_OPT32_CASE(BNB_OPT_ADAM)
        BNB_OPT32_CASE(BNB_OPT_ADAMW)
        BNB_OPT32_CASE(BNB_OPT_MOMENTUM)
        BNB_OPT32_CASE(BNB_OPT_LION)
        BNB_OPT32_CASE(BNB_OPT_RMSPROP)
        BNB_OPT32_CASE(BNB_OPT_ADAGRAD)
        BNB_OPT32_CASE(BNB_OPT_LAMB)
        BNB_OPT32_CASE(BNB_OPT_LARS)
        BNB_OPT32_CASE(BNB_OPT_ADEMAMIX)
#undef BNB_OPT32_CASE
        default: return launch_32bit_for<-1>(table, n_tensors, total_work, params, norms, stream);
    }
}

bool bad_params(const bnb_optim_params* h, int n_tensors, long long total_work) {
    return h == nullptr || n_tensors < 0 || total_work < 0 || h->optimizer < 0 || h->optimizer > BNB_OPT_ADEMAMIX ||
           h->step < 1;
}

}  // namespace

extern "C" int bnb_cuda_optimizer_32bit(const long long* table, int n_tensors, long long total_work,
                                        const bnb_optim_params* params, double* norms, void* stream) {
    if (bad_params(params, n_tensors, total_work) || ((params->norm_pass || params->max_unorm > 0.0f) && !norms))
        return (int)cudaErrorInvalidValue;
    if (n_tensors == 0 || total_work == 0) return 0;
    return launch_32bit(table, n_tensors, total_work, params, norms, (cudaStream_t)stream);
}

extern "C" int bnb_cuda_optimizer_8bit(const long long* table, int n_tensors, long long total_work,
                                       const float* qmap1, const float* qmap2, const bnb_optim_params* params,
                                       double* norms, void* stream) {
    if (bad_params(params, n_tensors, total_work) || qmap1 == nullptr || params->blocksize < 32 ||
        (params->blocksize & (params->blocksize - 1)) != 0 || ((params->norm_pass || params->max_unorm > 0.0f) && !norms))
        return (int)cudaErrorInvalidValue;
    if (params->optimizer == BNB_OPT_ADAM || params->optimizer == BNB_OPT_ADAMW || params->optimizer == BNB_OPT_LAMB ||
        params->optimizer == BNB_OPT_ADEMAMIX)
        if (qmap2 == nullptr) return (int)cudaErrorInvalidValue;
    if (n_tensors == 0 || total_work == 0) return 0;
    switch (params->blocksize) {  // registers hold a lane's states for the usual blocksizes
        case 64: return launch_8bit<2, 3>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
        case 128: return launch_8bit<4, 3>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
        case 256:
            switch (sweep_knob("BNB_API_CUDA_OPT8_BLOCKS", 3)) {
                case 2: return launch_256<2>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
                case 4: return launch_256<4>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
                default: break;
            }
            return launch_256<3>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
        case 512: return launch_8bit<16, 1>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
        default: return launch_8bit<0, 3>(table, n_tensors, total_work, qmap1, qmap2, params, norms, stream);
    }
}
