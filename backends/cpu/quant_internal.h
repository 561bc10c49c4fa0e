/* Internal helpers shared by the quant*.c kernels: dtype conversion (bit-exact with torch), ISA target
 * attributes, the active dispatch level and the OpenMP team size. Not part of the cffi interface. */
#ifndef BNB_API_CPU_QUANT_INTERNAL_H
#define BNB_API_CPU_QUANT_INTERNAL_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BNB_API_PORTABLE)
#define BNBQ_X86 1
#include <immintrin.h>
#define TGT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define TGT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define TGT_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,f16c")))
#define TGT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#else
#define BNBQ_X86 0
#endif

#define BNBQ_INLINE static inline __attribute__((always_inline))

/* The dispatch level chosen at load (or forced by bnbq_set_isa); read by every public entry point. */
int bnbq_isa_level(void);

BNBQ_INLINE int64_t bnbq_min64(int64_t a, int64_t b) { return a < b ? a : b; }
BNBQ_INLINE int64_t bnbq_max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* OpenMP team size for `work` elements: 1 (serial, no parallel region) below the threshold. */
BNBQ_INLINE int bnbq_team(int nthreads, int64_t work) {
    if (nthreads < 1 || work < BNBQ_PARALLEL_MIN_WORK) return 1;
    return nthreads;
}

BNBQ_INLINE int bnbq_valid_dtype(int dtype) { return dtype == BNBQ_F32 || dtype == BNBQ_F16 || dtype == BNBQ_BF16; }

BNBQ_INLINE int bnbq_is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

BNBQ_INLINE int bnbq_log2(int64_t x) {
    int s = 0;
    while (((int64_t)1 << s) < x) s++;
    return s;
}

/* Ask for transparent huge pages on a large output buffer before its first touch: a fresh multi-MB
 * tensor otherwise costs one page fault per 4 KiB, which dominates memory-bound kernels. A hint only:
 * contents and ownership are unchanged. */
static inline void bnbq_hugepage_hint(void *p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    if (!p || bytes < (int64_t)(4 * huge)) return;
    const uintptr_t b = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + (uintptr_t)bytes) & ~(huge - 1);
    if (e > b) madvise((void *)b, e - b, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

BNBQ_INLINE int64_t bnbq_dtype_size(int dtype) { return dtype == BNBQ_F32 ? 4 : 2; }

/* ---- scalar conversions (IEEE round-to-nearest-even, subnormals kept; same bits as torch) ---- */

BNBQ_INLINE uint32_t bnbq_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

BNBQ_INLINE float bnbq_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

BNBQ_INLINE float bnbq_bf16_to_f32(uint16_t h) { return bnbq_bits_f32((uint32_t)h << 16); }

BNBQ_INLINE uint16_t bnbq_f32_to_bf16(float f) {
    uint32_t u = bnbq_f32_bits(f);
    if (f != f) return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Half <-> float by exact float arithmetic (the classic bit-manipulation algorithm). Needs
 * -ffp-contract=off so that no step is fused into an FMA. */
BNBQ_INLINE float bnbq_f16_to_f32(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normalized = bnbq_bits_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = bnbq_bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t result =
        sign | (two_w < (1u << 27) ? bnbq_f32_bits(denormalized) : bnbq_f32_bits(normalized));
    return bnbq_bits_f32(result);
}

BNBQ_INLINE uint16_t bnbq_f32_to_f16(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = bnbq_f32_bits(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = bnbq_bits_f32((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = bnbq_f32_bits(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

BNBQ_INLINE float bnbq_load(const void *p, int dtype, int64_t i) {
    switch (dtype) {
        case BNBQ_F16: return bnbq_f16_to_f32(((const uint16_t *)p)[i]);
        case BNBQ_BF16: return bnbq_bf16_to_f32(((const uint16_t *)p)[i]);
        default: return ((const float *)p)[i];
    }
}

BNBQ_INLINE void bnbq_store(void *p, int dtype, int64_t i, float v) {
    switch (dtype) {
        case BNBQ_F16: ((uint16_t *)p)[i] = bnbq_f32_to_f16(v); break;
        case BNBQ_BF16: ((uint16_t *)p)[i] = bnbq_f32_to_bf16(v); break;
        default: ((float *)p)[i] = v;
    }
}

/* Reciprocal scale of a block as the reference computes it: 1/absmax capped at FLT_MAX, 0 if absmax == 0. */
BNBQ_INLINE float bnbq_inv_absmax(float amax) {
    if (!(amax > 0.0f)) return 0.0f;
    float inv = 1.0f / amax;
    return inv > FLT_MAX ? FLT_MAX : inv;
}

/* Count of `mid[0..len)` strictly below v for ascending mid padded to a power of two `len` with +inf. */
BNBQ_INLINE int bnbq_bucket(const float *mid, int len, float v) {
    int idx = 0;
    for (int step = len >> 1; step > 0; step >>= 1)
        if (mid[idx + step - 1] < v) idx += step;
    return idx;
}

/* Outputs of at least this many bytes are written with non-temporal stores by the dequantize kernels: they
 * do not fit the last-level cache anyway, and streaming skips the read-for-ownership of every line. Smaller
 * ones are written through the cache, where the caller (a matmul) finds them. Measured here (32 MiB L3;
 * dequantize_4bit, output recycled by the pool): 16 and 32 MiB outputs about 5% faster with plain stores
 * (and the F.linear that reads a 32 MiB one 8% faster), 48, 64 and 86 MiB ones 3-14% faster streamed. */
#define BNBQ_STREAM_MIN_BYTES ((int64_t)40 << 20)

BNBQ_INLINE int bnbq_stream_ok(const void *out, int64_t bytes) {
    return bytes >= BNBQ_STREAM_MIN_BYTES && ((uintptr_t)out & 63) == 0;
}

#if BNBQ_X86
/* ---- AVX-512 vector loads/stores of 16 values in any dtype, with a lane mask for tails ---- */

TGT_AVX512 static inline __m512 bnbq_load16(const void *p, int dtype, int64_t i, __mmask16 m) {
    if (dtype == BNBQ_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (dtype == BNBQ_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

TGT_AVX512 static inline __m256i bnbq_f32x16_to_bf16(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
    return _mm512_cvtepi32_epi16(r);
}

TGT_AVX512 static inline void bnbq_store16(void *p, int dtype, int64_t i, __m512 v, __mmask16 m) {
    if (dtype == BNBQ_F32) {
        _mm512_mask_storeu_ps((float *)p + i, m, v);
    } else if (dtype == BNBQ_F16) {
        _mm256_mask_storeu_epi16((uint16_t *)p + i, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else {
        _mm256_mask_storeu_epi16((uint16_t *)p + i, m, bnbq_f32x16_to_bf16(v));
    }
}

/* Non-temporal store of the 32 values v0, v1 at element i of out (64-byte aligned there). */
TGT_AVX512 static inline void bnbq_stream32(void *out, int dtype, int64_t i, __m512 v0, __m512 v1) {
    if (dtype == BNBQ_F32) {
        _mm512_stream_ps((float *)out + i, v0);
        _mm512_stream_ps((float *)out + i + 16, v1);
        return;
    }
    __m256i h0, h1;
    if (dtype == BNBQ_F16) {
        h0 = _mm512_cvtps_ph(v0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        h1 = _mm512_cvtps_ph(v1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
        h0 = bnbq_f32x16_to_bf16(v0);
        h1 = bnbq_f32x16_to_bf16(v1);
    }
    _mm512_stream_si512((void *)((uint16_t *)out + i), _mm512_inserti64x4(_mm512_castsi256_si512(h0), h1, 1));
}

TGT_AVX512 static inline __mmask16 bnbq_mask16(int64_t remaining) {
    return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1u);
}
#endif

#endif
