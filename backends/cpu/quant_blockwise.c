/* Blockwise 8-bit (any sorted 256-entry code book) and 4-bit (NF4/FP4) quantize / dequantize.
 *
 * Semantics (core/ops.py): one float32 absmax per block of the flattened input, the last block partial;
 * values scaled by x * (1/absmax) (reciprocal capped at FLT_MAX, 0 for an all-zero block), clamped to
 * [-1, 1], mapped to the count of float32 midpoints of the sorted code book strictly below the value.
 * 4-bit: element 2i in the high nibble of byte i, an odd length padded with the code of 0.
 *
 * Each kernel exists as a portable `_generic` block function (the oracle), the same code compiled for
 * AVX2 (compiler-vectorized), and a hand-written AVX-512 version.
 */
#include <stdlib.h>

#include "quant_internal.h"
#include "bucket_lut.h"
#include "lut256_vbmi.h"
#include "octave_lut_vbmi.h"

#define DQ8_GROUP_ELEMS 16384 /* dequantize_blockwise: elements per scheduling unit of the VBMI path */
#define Q8_PREFETCH 2048 /* quantize_blockwise, octave path: elements read ahead by software prefetch */
#define Q8_LUT_MIN_ELEMS 65536 /* quantize_blockwise: from this size the bucket table (built per call) pays */
#define SEARCH_TABLE_LEN 256 /* floats of the AVX-512 search tables (see search_tables) */

/* midpoints (c[i] + c[i+1]) * 0.5 in float32, padded with +inf to `len` (a power of two) */
static void midpoints(const float *code, int n_code, float *mid, int len) {
    for (int i = 0; i < len; i++) mid[i] = i < n_code - 1 ? (code[i] + code[i + 1]) * 0.5f : INFINITY;
}

BNBQ_INLINE float clamp1(float v) { return v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v); }

/* ================================ 8-bit blockwise ================================ */

BNBQ_INLINE void q8_block_body(const void *A, int dtype, int64_t s, int64_t len, const float *mid, uint8_t *out,
                               float *absmax) {
    float amax = 0.0f;
    for (int64_t i = 0; i < len; i++) {
        float a = fabsf(bnbq_load(A, dtype, s + i));
        amax = a > amax ? a : amax;
    }
    *absmax = amax;
    const float inv = bnbq_inv_absmax(amax);
    for (int64_t i = 0; i < len; i++) out[s + i] = (uint8_t)bnbq_bucket(mid, 256, clamp1(bnbq_load(A, dtype, s + i) * inv));
}

BNBQ_INLINE void dq8_block_body(const uint8_t *A, int64_t s, int64_t len, float scale, const float *code, void *out,
                                int dtype) {
    for (int64_t i = 0; i < len; i++) bnbq_store(out, dtype, s + i, code[A[s + i]] * scale);
}

static void q8_block_generic(const void *A, int dtype, int64_t s, int64_t len, const float *mid, uint8_t *out,
                             float *absmax) {
    q8_block_body(A, dtype, s, len, mid, out, absmax);
}

static void dq8_block_generic(const uint8_t *A, int64_t s, int64_t len, float scale, const float *code, void *out,
                              int dtype) {
    dq8_block_body(A, s, len, scale, code, out, dtype);
}

#if BNBQ_X86
TGT_AVX2 static void q8_block_avx2(const void *A, int dtype, int64_t s, int64_t len, const float *mid, uint8_t *out,
                                   float *absmax) {
    q8_block_body(A, dtype, s, len, mid, out, absmax);
}

TGT_AVX2 static void dq8_block_avx2(const uint8_t *A, int64_t s, int64_t len, float scale, const float *code,
                                    void *out, int dtype) {
    dq8_block_body(A, s, len, scale, code, out, dtype);
}

/* Tables for the vectorized binary search over 256 slots (mid[255] = +inf), one per step, so that every
 * probe is a register permute instead of a gather: t[0..15] = mid[16k+15] (steps 128..16, k = idx/16 +
 * step/16 - 1), t[16..31] = mid[16h+7] (step 8), t[32..63] = mid[8j+3] (step 4), t[64..127] = mid[4q+1]
 * (step 2), t[128..255] = mid[2r] (step 1). */
static void search_tables(const float *mid, float *t) {
    for (int k = 0; k < 16; k++) t[k] = mid[16 * k + 15];
    for (int h = 0; h < 16; h++) t[16 + h] = mid[16 * h + 7];
    for (int j = 0; j < 32; j++) t[32 + j] = mid[8 * j + 3];
    for (int q = 0; q < 64; q++) t[64 + q] = mid[4 * q + 1];
    for (int r = 0; r < 128; r++) t[128 + r] = mid[2 * r];
}

typedef struct {
    __m512 t1, t2, t3[2], t4[4], t5[8];
} search_regs;

TGT_AVX512 static inline void load_search_regs(search_regs *s, const float *t) {
    s->t1 = _mm512_loadu_ps(t);
    s->t2 = _mm512_loadu_ps(t + 16);
    for (int i = 0; i < 2; i++) s->t3[i] = _mm512_loadu_ps(t + 32 + 16 * i);
    for (int i = 0; i < 4; i++) s->t4[i] = _mm512_loadu_ps(t + 64 + 16 * i);
    for (int i = 0; i < 8; i++) s->t5[i] = _mm512_loadu_ps(t + 128 + 16 * i);
}

TGT_AVX512 static inline __m512i probe_step(__m512i idx, __m512 m, __m512 v, int step) {
    return _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(m, v, _CMP_LT_OQ), idx, _mm512_set1_epi32(step));
}

TGT_AVX512 static inline __m512i bucket256_avx512(__m512 v, const search_regs *s) {
    __m512i idx = _mm512_setzero_si512();
    for (int step = 128; step >= 16; step >>= 1) {
        __m512i k = _mm512_add_epi32(_mm512_srli_epi32(idx, 4), _mm512_set1_epi32(step / 16 - 1));
        idx = probe_step(idx, _mm512_permutexvar_ps(k, s->t1), v, step);
    }
    idx = probe_step(idx, _mm512_permutexvar_ps(_mm512_srli_epi32(idx, 4), s->t2), v, 8);
    idx = probe_step(idx, _mm512_permutex2var_ps(s->t3[0], _mm512_srli_epi32(idx, 3), s->t3[1]), v, 4);
    const __m512i b5 = _mm512_set1_epi32(32), b6 = _mm512_set1_epi32(64);
    {
        const __m512i q = _mm512_srli_epi32(idx, 2);
        const __m512 lo = _mm512_permutex2var_ps(s->t4[0], q, s->t4[1]);
        const __m512 hi = _mm512_permutex2var_ps(s->t4[2], q, s->t4[3]);
        idx = probe_step(idx, _mm512_mask_blend_ps(_mm512_test_epi32_mask(q, b5), lo, hi), v, 2);
    }
    {
        const __m512i r = _mm512_srli_epi32(idx, 1);
        const __mmask16 m5 = _mm512_test_epi32_mask(r, b5), m6 = _mm512_test_epi32_mask(r, b6);
        const __m512 g0 = _mm512_permutex2var_ps(s->t5[0], r, s->t5[1]);
        const __m512 g1 = _mm512_permutex2var_ps(s->t5[2], r, s->t5[3]);
        const __m512 g2 = _mm512_permutex2var_ps(s->t5[4], r, s->t5[5]);
        const __m512 g3 = _mm512_permutex2var_ps(s->t5[6], r, s->t5[7]);
        const __m512 m = _mm512_mask_blend_ps(m6, _mm512_mask_blend_ps(m5, g0, g1), _mm512_mask_blend_ps(m5, g2, g3));
        idx = probe_step(idx, m, v, 1);
    }
    return idx;
}

/* One block: absmax, then the codes through the bucket table `t` (bucket_lut.h, one gather per 16 values)
 * or, when t is NULL, the register binary search over `tables` (8 probes); both give the same codes. */
TGT_AVX512 static void q8_block_avx512(const void *A, int dtype, int64_t s, int64_t len, const float *tables,
                                       const bucket_lut *t, uint8_t *out, float *absmax) {
    __m512 vmax = _mm512_setzero_ps();
    for (int64_t i = 0; i < len; i += 16)
        vmax = _mm512_max_ps(vmax, _mm512_abs_ps(bnbq_load16(A, dtype, s + i, bnbq_mask16(len - i))));
    const float amax = _mm512_reduce_max_ps(vmax);
    *absmax = amax;
    const __m512 inv = _mm512_set1_ps(bnbq_inv_absmax(amax)), one = _mm512_set1_ps(1.0f), neg = _mm512_set1_ps(-1.0f);
    search_regs regs;
    bucket_lut_zmm q;
    if (t)
        q = bucket_lut_zmm_load(t);
    else
        load_search_regs(&regs, tables);
    for (int64_t i = 0; i < len; i += 16) {
        const __mmask16 m = bnbq_mask16(len - i);
        __m512 v = _mm512_mul_ps(bnbq_load16(A, dtype, s + i, m), inv);
        v = _mm512_min_ps(_mm512_max_ps(v, neg), one);
        _mm512_mask_cvtepi32_storeu_epi8(out + s + i, m, t ? bucket_lut_zmm_codes(&q, v) : bucket256_avx512(v, &regs));
    }
}

TGT_AVX512 static void dq8_block_avx512(const uint8_t *A, int64_t s, int64_t len, float scale, const float *code,
                                        void *out, int dtype) {
    const __m512 sc = _mm512_set1_ps(scale);
    for (int64_t i = 0; i < len; i += 16) {
        const __mmask16 m = bnbq_mask16(len - i);
        __m512i q = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, A + s + i));
        __m512 v = _mm512_mul_ps(_mm512_i32gather_ps(q, code, 4), sc);
        bnbq_store16(out, dtype, s + i, v, m);
    }
}

/* Blocks [b_begin, b_end) with the octave search (octave_lut_vbmi.h, CPUs with VBMI): each block's absmax,
 * then its codes 64 at a time, no gathers; the same codes as q8_block_avx512. */
LUT256_TARGET static void q8_blocks_vbmi(const void *A, int dtype, int64_t n, int64_t blocksize, int64_t b_begin,
                                        int64_t b_end, const octave_lut *t, uint8_t *out, float *absmax) {
    lut256 L;
    lut256_load(&L, t->mid_planes);
    const __m512 one = _mm512_set1_ps(1.0f), neg = _mm512_set1_ps(-1.0f);
    const int64_t esz = bnbq_dtype_size(dtype);
    for (int64_t b = b_begin; b < b_end; b++) {
        const int64_t s = b * blocksize, len = bnbq_min64(blocksize, n - s);
        __m512 vmax = _mm512_setzero_ps();
        for (int64_t i = 0; i < len; i += 16) {
            if (((s + i + Q8_PREFETCH) * esz & 63) < 16 * esz && s + i + Q8_PREFETCH < n)
                _mm_prefetch((const char *)A + (s + i + Q8_PREFETCH) * esz, _MM_HINT_T0);
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(bnbq_load16(A, dtype, s + i, bnbq_mask16(len - i))));
        }
        const float amax = _mm512_reduce_max_ps(vmax);
        absmax[b] = amax;
        const __m512 inv = _mm512_set1_ps(bnbq_inv_absmax(amax));
        for (int64_t i = 0; i < len; i += 64) {
            const int64_t cnt = bnbq_min64(64, len - i);
            __m512 x[4];
            for (int j = 0; j < 4; j++) {
                const __mmask16 m = cnt > 16 * j ? bnbq_mask16(cnt - 16 * j) : 0;
                const __m512 v = _mm512_mul_ps(bnbq_load16(A, dtype, s + i + 16 * j, m), inv);
                x[j] = _mm512_min_ps(_mm512_max_ps(v, neg), one);
            }
            const __mmask64 m = cnt == 64 ? ~(__mmask64)0 : (((__mmask64)1 << cnt) - 1);
            _mm512_mask_storeu_epi8(out + s + i, m, octave_lut_codes64(t, &L, x));
        }
    }
}

/* Blocks [b_begin, b_end) with the VBMI table lookup (lut256_vbmi.h): 64 codes per step, no gathers. */
LUT256_TARGET static void dq8_blocks_vbmi(const uint8_t *A, int64_t n, int64_t blocksize, int64_t b_begin,
                                         int64_t b_end, const float *absmax, const uint8_t planes[4][256],
                                         void *out, int dtype) {
    lut256 L;
    lut256_load(&L, planes);
    const int stream = blocksize >= 64 && bnbq_stream_ok(out, n * bnbq_dtype_size(dtype));
    for (int64_t b = b_begin; b < b_end; b++) {
        const int64_t s = b * blocksize, len = bnbq_min64(blocksize, n - s);
        const __m512 sc = _mm512_set1_ps(absmax[b]);
        for (int64_t i = 0; i < len; i += 64) {
            const int64_t cnt = bnbq_min64(64, len - i);
            const __mmask64 m = cnt == 64 ? ~(__mmask64)0 : (((__mmask64)1 << cnt) - 1);
            __m512 v[4];
            lut256_lookup64(&L, _mm512_maskz_loadu_epi8(m, A + s + i), v);
            if (stream && cnt == 64) {
                bnbq_stream32(out, dtype, s + i, _mm512_mul_ps(v[0], sc), _mm512_mul_ps(v[1], sc));
                bnbq_stream32(out, dtype, s + i + 32, _mm512_mul_ps(v[2], sc), _mm512_mul_ps(v[3], sc));
                continue;
            }
            for (int j = 0; j < 4 && 16 * j < cnt; j++)
                bnbq_store16(out, dtype, s + i + 16 * j, _mm512_mul_ps(v[j], sc), bnbq_mask16(cnt - 16 * j));
        }
    }
    _mm_sfence();
}
#endif

static int check_blocks(int64_t n, int64_t blocksize, int64_t absmax_len) {
    if (n < 0 || !bnbq_is_pow2(blocksize) || blocksize < 2) return 0;
    return absmax_len == (n + blocksize - 1) / blocksize;
}

int bnbq_quantize_blockwise(const void *A, int dtype, int64_t n, const float *code, int64_t code_len,
                            int64_t blocksize, uint8_t *out, int64_t out_len, float *absmax, int64_t absmax_len,
                            int nthreads) {
    if (!bnbq_valid_dtype(dtype) || code_len != 256 || out_len != n || !check_blocks(n, blocksize, absmax_len))
        return BNBQ_EINVAL;
    if (n == 0) return BNBQ_OK;
    if (!A || !code || !out || !absmax) return BNBQ_EINVAL;
    float mid[256], tables[SEARCH_TABLE_LEN];
    midpoints(code, 256, mid, 256);
    bnbq_hugepage_hint(out, n);
    const int isa = bnbq_isa_level();
    bucket_lut lut;
    memset(&lut, 0, sizeof(lut));
    const int team = bnbq_team(nthreads, n);
#if BNBQ_X86
    search_tables(mid, tables);
    if (isa == BNBQ_ISA_AVX512 && n >= Q8_LUT_MIN_ELEMS && (bnbq_cpu_flags() & BNBQ_CPU_AVX512VBMI)) {
        octave_lut ol;
        octave_lut_build(&ol, mid);
        if (ol.ok) {
            const int64_t per = bnbq_max64(1, DQ8_GROUP_ELEMS / blocksize), groups = (absmax_len + per - 1) / per;
#pragma omp parallel for num_threads(team) if (team > 1) schedule(static)
            for (int64_t gi = 0; gi < groups; gi++)
                q8_blocks_vbmi(A, dtype, n, blocksize, gi * per, bnbq_min64(absmax_len, (gi + 1) * per), &ol, out,
                               absmax);
            return BNBQ_OK;
        }
    }
    if (isa == BNBQ_ISA_AVX512 && n >= Q8_LUT_MIN_ELEMS) bucket_lut_build(&lut, mid);
#else
    (void)tables;
#endif
#pragma omp parallel for num_threads(team) if (team > 1) schedule(static)
    for (int64_t b = 0; b < absmax_len; b++) {
        const int64_t s = b * blocksize, len = bnbq_min64(blocksize, n - s);
#if BNBQ_X86
        if (isa == BNBQ_ISA_AVX512) {
            q8_block_avx512(A, dtype, s, len, tables, lut.lut ? &lut : NULL, out, absmax + b);
            continue;
        }
        if (isa == BNBQ_ISA_AVX2) {
            q8_block_avx2(A, dtype, s, len, mid, out, absmax + b);
            continue;
        }
#endif
        (void)isa;
        q8_block_generic(A, dtype, s, len, mid, out, absmax + b);
    }
    bucket_lut_free(&lut);
    return BNBQ_OK;
}

int bnbq_dequantize_blockwise(const uint8_t *A, int64_t n, const float *absmax, int64_t absmax_len,
                              const float *code, int64_t code_len, int64_t blocksize, void *out, int dtype,
                              int64_t out_len, int nthreads) {
    if (!bnbq_valid_dtype(dtype) || code_len != 256 || out_len != n || !check_blocks(n, blocksize, absmax_len))
        return BNBQ_EINVAL;
    if (n == 0) return BNBQ_OK;
    if (!A || !code || !out || !absmax) return BNBQ_EINVAL;
    bnbq_hugepage_hint(out, n * bnbq_dtype_size(dtype));
    const int isa = bnbq_isa_level();
    const int team = bnbq_team(nthreads, n);
#if BNBQ_X86
    if (isa == BNBQ_ISA_AVX512 && (bnbq_cpu_flags() & BNBQ_CPU_AVX512VBMI)) {
        uint8_t planes[4][256];
        lut256_planes(code, planes);
        const int64_t per = bnbq_max64(1, DQ8_GROUP_ELEMS / blocksize), groups = (absmax_len + per - 1) / per;
#pragma omp parallel for num_threads(team) if (team > 1) schedule(static)
        for (int64_t gi = 0; gi < groups; gi++)
            dq8_blocks_vbmi(A, n, blocksize, gi * per, bnbq_min64(absmax_len, (gi + 1) * per), absmax, planes, out,
                            dtype);
        return BNBQ_OK;
    }
#endif
#pragma omp parallel for num_threads(team) if (team > 1) schedule(static)
    for (int64_t b = 0; b < absmax_len; b++) {
        const int64_t s = b * blocksize, len = bnbq_min64(blocksize, n - s);
#if BNBQ_X86
        if (isa == BNBQ_ISA_AVX512) {
            dq8_block_avx512(A, s, len, absmax[b], code, out, dtype);
            continue;
        }
        if (isa == BNBQ_ISA_AVX2) {
            dq8_block_avx2(A, s, len, absmax[b], code, out, dtype);
            continue;
        }
#endif
        (void)isa;
        dq8_block_generic(A, s, len, absmax[b], code, out, dtype);
    }
    return BNBQ_OK;
}

/* ================================ 4-bit NF4 / FP4 ================================ */

/* Quantize elements [s, s+len) of a block already scaled by `inv`; s is even. `zero_code` pads an odd end. */
BNBQ_INLINE void q4_range_body(const void *A, int dtype, int64_t s, int64_t len, float inv, const float *mid,
                               const uint8_t *codes, uint8_t zero_code, uint8_t *packed) {
    for (int64_t i = 0; i < len; i += 2) {
        const uint8_t hi = codes[bnbq_bucket(mid, 16, clamp1(bnbq_load(A, dtype, s + i) * inv))];
        const uint8_t lo =
            i + 1 < len ? codes[bnbq_bucket(mid, 16, clamp1(bnbq_load(A, dtype, s + i + 1) * inv))] : zero_code;
        packed[(s + i) >> 1] = (uint8_t)((hi << 4) | lo);
    }
}

BNBQ_INLINE void q4_block_body(const void *A, int dtype, int64_t s, int64_t len, const float *mid,
                               const uint8_t *codes, uint8_t zero_code, uint8_t *packed, float *absmax) {
    float amax = 0.0f;
    for (int64_t i = 0; i < len; i++) {
        float a = fabsf(bnbq_load(A, dtype, s + i));
        amax = a > amax ? a : amax;
    }
    *absmax = amax;
    q4_range_body(A, dtype, s, len, bnbq_inv_absmax(amax), mid, codes, zero_code, packed);
}

/* Dequantize elements [s, s+len) of one block (s even) */
BNBQ_INLINE void dq4_range_body(const uint8_t *packed, int64_t s, int64_t len, float scale, const float *code,
                                void *out, int dtype) {
    for (int64_t i = 0; i < len; i++) {
        const int64_t e = s + i;
        const uint8_t byte = packed[e >> 1];
        bnbq_store(out, dtype, e, code[(e & 1) ? (byte & 15) : (byte >> 4)] * scale);
    }
}

static void q4_block_generic(const void *A, int dtype, int64_t s, int64_t len, const float *mid,
                             const uint8_t *codes, uint8_t zero_code, uint8_t *packed, float *absmax) {
    q4_block_body(A, dtype, s, len, mid, codes, zero_code, packed, absmax);
}

static void dq4_block_generic(const uint8_t *packed, int64_t s, int64_t len, float scale, const float *code,
                              void *out, int dtype) {
    dq4_range_body(packed, s, len, scale, code, out, dtype);
}

#if BNBQ_X86
TGT_AVX2 static void q4_block_avx2(const void *A, int dtype, int64_t s, int64_t len, const float *mid,
                                   const uint8_t *codes, uint8_t zero_code, uint8_t *packed, float *absmax) {
    q4_block_body(A, dtype, s, len, mid, codes, zero_code, packed, absmax);
}

TGT_AVX2 static void dq4_block_avx2(const uint8_t *packed, int64_t s, int64_t len, float scale, const float *code,
                                    void *out, int dtype) {
    dq4_range_body(packed, s, len, scale, code, out, dtype);
}

TGT_AVX512 static inline __m512i codes16_avx512(__m512 v, __m512 tmid, __m512i tcode) {
    __m512i idx = _mm512_setzero_si512();
    for (int step = 8; step >= 1; step >>= 1) {
        __m512 m = _mm512_permutexvar_ps(_mm512_add_epi32(idx, _mm512_set1_epi32(step - 1)), tmid);
        idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(m, v, _CMP_LT_OQ), idx, _mm512_set1_epi32(step));
    }
    return _mm512_permutexvar_epi32(idx, tcode);
}

TGT_AVX512 static void q4_block_avx512(const void *A, int dtype, int64_t s, int64_t len, const float *mid,
                                       const uint8_t *codes, uint8_t zero_code, uint8_t *packed, float *absmax) {
    __m512 vmax = _mm512_setzero_ps();
    for (int64_t i = 0; i < len; i += 16)
        vmax = _mm512_max_ps(vmax, _mm512_abs_ps(bnbq_load16(A, dtype, s + i, bnbq_mask16(len - i))));
    const float amax = _mm512_reduce_max_ps(vmax);
    *absmax = amax;
    const float inv_s = bnbq_inv_absmax(amax);
    const __m512 inv = _mm512_set1_ps(inv_s), one = _mm512_set1_ps(1.0f), neg = _mm512_set1_ps(-1.0f);
    const __m512 tmid = _mm512_loadu_ps(mid);
    const __m512i tcode = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)codes));
    const __m128i pairs = _mm_set1_epi16(0x0110); /* hi * 16 + lo */
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m512 v0 = _mm512_mul_ps(bnbq_load16(A, dtype, s + i, 0xFFFF), inv);
        __m512 v1 = _mm512_mul_ps(bnbq_load16(A, dtype, s + i + 16, 0xFFFF), inv);
        v0 = _mm512_min_ps(_mm512_max_ps(v0, neg), one);
        v1 = _mm512_min_ps(_mm512_max_ps(v1, neg), one);
        __m128i c0 = _mm512_cvtepi32_epi8(codes16_avx512(v0, tmid, tcode));
        __m128i c1 = _mm512_cvtepi32_epi8(codes16_avx512(v1, tmid, tcode));
        __m128i b = _mm_packus_epi16(_mm_maddubs_epi16(c0, pairs), _mm_maddubs_epi16(c1, pairs));
        _mm_storeu_si128((__m128i *)(packed + ((s + i) >> 1)), b);
    }
    if (i < len) q4_range_body(A, dtype, s + i, len - i, inv_s, mid, codes, zero_code, packed);
}

TGT_AVX512 static void dq4_block_avx512(const uint8_t *packed, int64_t s, int64_t len, float scale,
                                        const float *code, void *out, int dtype, int stream) {
    const __m512 sc = _mm512_set1_ps(scale), table = _mm512_loadu_ps(code);
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
        /* 16 bytes -> 32 nibble codes in element order: (b >> 4) then (b & 15) */
        __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(packed + ((s + i) >> 1))));
        w = _mm256_or_si256(_mm256_srli_epi16(w, 4), _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(15)), 8));
        __m512i q0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(w));
        __m512i q1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(w, 1));
        const __m512 v0 = _mm512_mul_ps(_mm512_permutexvar_ps(q0, table), sc);
        const __m512 v1 = _mm512_mul_ps(_mm512_permutexvar_ps(q1, table), sc);
        if (stream) {
            bnbq_stream32(out, dtype, s + i, v0, v1);
            continue;
        }
        bnbq_store16(out, dtype, s + i, v0, 0xFFFF);
        bnbq_store16(out, dtype, s + i + 16, v1, 0xFFFF);
    }
    if (i < len) dq4_range_body(packed, s + i, len - i, scale, code, out, dtype);
}
#endif

#if BNBQ_X86
/* bf16 output on CPUs with AVX512-BF16: vcvtne2ps2bf16 rounds 32 floats to nearest even in one step. It
 * flushes subnormals and keeps NaN payloads, so NaN lanes are set to torch's 0x7fc0 and a pair of vectors
 * holding a subnormal takes the exact integer rounding of bnbq_f32x16_to_bf16 instead. */
TGT_AVX512BF16 static inline __m512i bf16x32_rne(__m512 v0, __m512 v1) {
    if (_mm512_fpclass_ps_mask(v0, 0x20) | _mm512_fpclass_ps_mask(v1, 0x20)) /* 0x20: denormal */
        return _mm512_inserti64x4(_mm512_castsi256_si512(bnbq_f32x16_to_bf16(v0)), bnbq_f32x16_to_bf16(v1), 1);
    const __m512i r = (__m512i)_mm512_cvtne2ps_pbh(v1, v0);
    const __mmask32 nan = (__mmask32)_mm512_fpclass_ps_mask(v0, 0x81) | ((__mmask32)_mm512_fpclass_ps_mask(v1, 0x81) << 16);
    return _mm512_mask_mov_epi16(r, nan, _mm512_set1_epi16(0x7fc0));
}

TGT_AVX512BF16 static void dq4_block_avx512_bf16out(const uint8_t *packed, int64_t s, int64_t len, float scale,
                                                    const float *code, uint16_t *out, int stream) {
    const __m512 sc = _mm512_set1_ps(scale), table = _mm512_loadu_ps(code);
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(packed + ((s + i) >> 1))));
        w = _mm256_or_si256(_mm256_srli_epi16(w, 4), _mm256_slli_epi16(_mm256_and_si256(w, _mm256_set1_epi16(15)), 8));
        const __m512 v0 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm256_castsi256_si128(w)), table), sc);
        const __m512 v1 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm256_extracti128_si256(w, 1)), table), sc);
        const __m512i h = bf16x32_rne(v0, v1);
        if (stream)
            _mm512_stream_si512((void *)(out + s + i), h);
        else
            _mm512_storeu_si512((void *)(out + s + i), h);
    }
    if (i < len) dq4_range_body(packed, s + i, len - i, scale, code, out, BNBQ_BF16);
}
#endif

int bnbq_quantize_4bit(const void *A, int dtype, int64_t n, const float *sorted_values, const uint8_t *sorted_codes,
                       int64_t table_len, int64_t blocksize, uint8_t *packed, int64_t packed_len, float *absmax,
                       int64_t absmax_len, int nthreads) {
    if (!bnbq_valid_dtype(dtype) || table_len != 16 || blocksize < 2 || packed_len != (n + 1) / 2 ||
        !check_blocks(n, blocksize, absmax_len))
        return BNBQ_EINVAL;
    if (n == 0) return BNBQ_OK;
    if (!A || !sorted_values || !sorted_codes || !packed || !absmax) return BNBQ_EINVAL;
    for (int i = 0; i < 16; i++)
        if (sorted_codes[i] > 15) return BNBQ_EINVAL;
    float mid[16];
    midpoints(sorted_values, 16, mid, 16);
    bnbq_hugepage_hint(packed, packed_len);
    const uint8_t zero_code = sorted_codes[bnbq_bucket(mid, 16, 0.0f)];
    const int isa = bnbq_isa_level();
    const int team = bnbq_team(nthreads, n);
#pragma omp parallel for num_threads(team) if (team > 1) schedule(static)
    for (int64_t b = 0; b < absmax_len; b++) {
        const int64_t s = b * blocksize, len = bnbq_min64(blocksize, n - s);
#if BNBQ_X86
        if (isa == BNBQ_ISA_AVX512) {
            q4_block_avx512(A, dtype, s, len, mid, sorted_codes, zero_code, packed, absmax + b);
            continue;
        }
        if (isa == BNBQ_ISA_AVX2) {
            q4_block_avx2(A, dtype, s, len, mid, sorted_codes, zero_code, packed, absmax + b);
            continue;
        }
#endif
        (void)isa;
        q4_block_generic(A, dtype, s, len, mid, sorted_codes, zero_code, packed, absmax + b);
    }
    return BNBQ_OK;
}

int bnbq_dequantize_4bit(const uint8_t *packed, int64_t packed_len, const float *absmax, int64_t absmax_len,
                         const float *code, int64_t code_len, int64_t blocksize, int64_t n, void *out, int dtype,
                         int64_t out_len, int nthreads) {
    if (!bnbq_valid_dtype(dtype) || code_len != 16 || blocksize < 2 || packed_len != (n + 1) / 2 || out_len != n ||
        !check_blocks(n, blocksize, absmax_len))
        return BNBQ_EINVAL;
    if (n == 0) return BNBQ_OK;
    if (!packed || !absmax || !code || !out) return BNBQ_EINVAL;
    bnbq_hugepage_hint(out, n * bnbq_dtype_size(dtype));
    const int isa = bnbq_isa_level();
    const int team = bnbq_team(nthreads, n);
    /* streaming stores need every block to start on a 64-byte boundary of out: blocksize >= 32 */
    const int stream = blocksize >= 32 && bnbq_stream_ok(out, n * bnbq_dtype_size(dtype));
    const int bf16out = isa == BNBQ_ISA_AVX512 && dtype == BNBQ_BF16 && (bnbq_cpu_flags() & BNBQ_CPU_AVX512BF16);
#pragma omp parallel num_threads(team) if (team > 1)
    {
#pragma omp for schedule(static) nowait
        for (int64_t b = 0; b < absmax_len; b++) {
            const int64_t s = b * blocksize, len = bnbq_min64(blocksize, n - s);
#if BNBQ_X86
            if (bf16out) {
                dq4_block_avx512_bf16out(packed, s, len, absmax[b], code, (uint16_t *)out, stream);
                continue;
            }
            if (isa == BNBQ_ISA_AVX512) {
                dq4_block_avx512(packed, s, len, absmax[b], code, out, dtype, stream);
                continue;
            }
            if (isa == BNBQ_ISA_AVX2) {
                dq4_block_avx2(packed, s, len, absmax[b], code, out, dtype);
                continue;
            }
#endif
            (void)isa, (void)bf16out, (void)stream;
            dq4_block_generic(packed, s, len, absmax[b], code, out, dtype);
        }
#if BNBQ_X86
        if (stream) _mm_sfence(); /* order this thread's streaming stores before the region ends */
#endif
    }
    return BNBQ_OK;
}
