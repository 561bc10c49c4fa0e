/* AVX2 + FMA + F16C instantiation of the optimizer kernel (VW = 8). FMA is enabled for the target but
 * never contracted (the build passes -ffp-contract=off), so results equal the scalar kernel. */
#include "optim_internal.h"

#if BNBO_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#include <immintrin.h>

typedef __m256 vf;
#define VW 8
#define KNAME(name) name##_avx2

BNBO_INLINE vf v_set1(float x) { return _mm256_set1_ps(x); }
BNBO_INLINE vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
BNBO_INLINE vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
BNBO_INLINE vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
BNBO_INLINE vf v_div(vf a, vf b) { return _mm256_div_ps(a, b); }
BNBO_INLINE vf v_sqrt(vf a) { return _mm256_sqrt_ps(a); }
BNBO_INLINE vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); }
BNBO_INLINE vf v_min(vf a, vf b) { return _mm256_min_ps(a, b); }
BNBO_INLINE vf v_abs(vf a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }

BNBO_INLINE vf v_sign(vf a) {
    const vf one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const vf pos = _mm256_and_ps(_mm256_cmp_ps(a, zero, _CMP_GT_OQ), one);
    const vf neg = _mm256_and_ps(_mm256_cmp_ps(a, zero, _CMP_LT_OQ), one);
    return _mm256_sub_ps(pos, neg);
}

BNBO_INLINE __m256i v_lanes(int cnt) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(cnt), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

BNBO_INLINE vf v_keep(vf a, int cnt) {
    if (cnt >= VW) return a;
    return _mm256_and_ps(a, _mm256_castsi256_ps(v_lanes(cnt)));
}

/* Sums of squares in float64 lanes: a float32 square never underflows or rounds there. */
typedef struct {
    __m256d lo, hi;
} vsq;

BNBO_INLINE vsq v_sq_zero(void) {
    vsq s = {_mm256_setzero_pd(), _mm256_setzero_pd()};
    return s;
}

BNBO_INLINE void v_sq_add(vsq *s, vf a) {
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(a)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1));
    s->lo = _mm256_add_pd(s->lo, _mm256_mul_pd(lo, lo));
    s->hi = _mm256_add_pd(s->hi, _mm256_mul_pd(hi, hi));
}

BNBO_INLINE double v_sq_sum(vsq s) {
    const __m256d t = _mm256_add_pd(s.lo, s.hi);
    const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(_mm_add_sd(u, _mm_unpackhi_pd(u, u)));
}

BNBO_INLINE float v_hmax(vf a) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

BNBO_INLINE vf v_load_f32(const float *p, int cnt) {
    if (cnt >= VW) return _mm256_loadu_ps(p);
    return _mm256_maskload_ps(p, v_lanes(cnt));
}

BNBO_INLINE void v_store_f32(float *p, vf v, int cnt) {
    if (cnt >= VW)
        _mm256_storeu_ps(p, v);
    else
        _mm256_maskstore_ps(p, v_lanes(cnt), v);
}

/* 8 16-bit values (zero-filled past cnt) */
BNBO_INLINE __m128i v_load_u16(const uint16_t *p, int cnt) {
    if (cnt >= VW) return _mm_loadu_si128((const __m128i *)p);
    uint16_t tmp[8] = {0};
    memcpy(tmp, p, (size_t)cnt * 2);
    return _mm_loadu_si128((const __m128i *)tmp);
}

BNBO_INLINE void v_store_u16(uint16_t *p, __m128i v, int cnt) {
    if (cnt >= VW) {
        _mm_storeu_si128((__m128i *)p, v);
        return;
    }
    uint16_t tmp[8];
    _mm_storeu_si128((__m128i *)tmp, v);
    memcpy(p, tmp, (size_t)cnt * 2);
}

BNBO_INLINE vf v_load_dt(int dt, const void *base, int64_t i, int cnt) {
    if (dt == BNBO_F32) return v_load_f32((const float *)base + i, cnt);
    const __m128i h = v_load_u16((const uint16_t *)base + i, cnt);
    if (dt == BNBO_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

BNBO_INLINE void v_store_dt(int dt, void *base, int64_t i, vf v, int cnt) {
    if (dt == BNBO_F32) {
        v_store_f32((float *)base + i, v, cnt);
        return;
    }
    __m128i h;
    if (dt == BNBO_F16) {
        h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else { /* bf16: round to nearest even on the bits; NaN -> 0x7fc0 */
        const __m256i x = _mm256_castps_si256(v);
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
        __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
        const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
        h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    }
    v_store_u16((uint16_t *)base + i, h, cnt);
}

BNBO_INLINE __m256i v_load_idx(const uint8_t *c, int cnt) {
    if (cnt >= VW) return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));
    uint8_t tmp[8] = {0};
    memcpy(tmp, c, (size_t)cnt);
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)tmp));
}

BNBO_INLINE vf v_load_codes(const uint8_t *c, int cnt, const float *code) {
    return _mm256_i32gather_ps(code, v_load_idx(c, cnt), 4);
}

/* Block dequantization: out[i] = code[c[i]] * absmax (gathers from the 1 KiB code book). */
BNBO_INLINE void v_dequant(const bnbo_job *job, const bnbo_qtab *t, const uint8_t *c, int64_t len, float am,
                           float *out) {
    (void)job;
    const vf a = v_set1(am);
    int64_t i = 0;
    for (; i + VW <= len; i += VW) v_store_f32(out + i, v_mul(v_load_codes(c + i, VW, t->code), a), VW);
    if (i < len) v_store_f32(out + i, v_mul(v_load_codes(c + i, (int)(len - i), t->code), a), (int)(len - i));
}

typedef struct {
    const float *mid;
} vq;

BNBO_INLINE vq v_qprep(const bnbo_qtab *tab) {
    vq q = {tab->mid};
    return q;
}

/* Branch-free binary search over the 256 midpoints with gathers (8 steps). */
BNBO_INLINE void v_store_quant(uint8_t *c, vf x, int cnt, const vq *q) {
    __m256i idx = _mm256_setzero_si256();
    for (int step = 128; step; step >>= 1) {
        const vf t = _mm256_i32gather_ps(q->mid, _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1)), 4);
        const __m256i lt = _mm256_castps_si256(_mm256_cmp_ps(t, x, _CMP_LT_OQ));
        idx = _mm256_add_epi32(idx, _mm256_and_si256(lt, _mm256_set1_epi32(step)));
    }
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(idx), _mm256_extracti128_si256(idx, 1));
    const __m128i b = _mm_packus_epi16(w, w);
    if (cnt >= VW) {
        _mm_storel_epi64((__m128i *)c, b);
        return;
    }
    uint8_t tmp[16];
    _mm_storeu_si128((__m128i *)tmp, b);
    memcpy(c, tmp, (size_t)cnt);
}

/* The bucket-table search (bucket_lut.h): order-preserving key, one gather, one correction. */
typedef struct {
    __m256i lo, hi, b0, lowmask;
    __m128i shift;
    const uint32_t *lut;
} vql;

BNBO_INLINE vql v_qprep_lut(const bnbo_qtab *t) {
    vql q;
    q.lo = _mm256_set1_epi32((int)t->bl.lo);
    q.hi = _mm256_set1_epi32((int)t->bl.hi);
    q.b0 = _mm256_set1_epi32((int)t->bl.b0);
    q.lowmask = _mm256_set1_epi32((int)((1u << t->bl.shift) - 1u));
    q.shift = _mm_cvtsi32_si128(t->bl.shift);
    q.lut = t->bl.lut;
    return q;
}

BNBO_INLINE void v_store_quant_lut(uint8_t *c, vf x, int cnt, const vql *q) {
    const __m256i b = _mm256_castps_si256(_mm256_add_ps(x, _mm256_setzero_ps())); /* -0 -> +0 */
    __m256i key = _mm256_xor_si256(b, _mm256_or_si256(_mm256_srai_epi32(b, 31), _mm256_set1_epi32(INT32_MIN)));
    key = _mm256_min_epu32(_mm256_max_epu32(key, q->lo), q->hi);
    const __m256i bucket = _mm256_sub_epi32(_mm256_srl_epi32(key, q->shift), q->b0);
    const __m256i e = _mm256_i32gather_epi32((const int *)q->lut, bucket, 4);
    /* thresholds and low bits are < 2^20: a signed compare is exact */
    const __m256i up = _mm256_cmpgt_epi32(_mm256_and_si256(key, q->lowmask), _mm256_srli_epi32(e, 8));
    const __m256i code = _mm256_sub_epi32(_mm256_and_si256(e, _mm256_set1_epi32(255)), up);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(code), _mm256_extracti128_si256(code, 1));
    const __m128i bytes = _mm_packus_epi16(w, w);
    if (cnt >= VW) {
        _mm_storel_epi64((__m128i *)c, bytes);
        return;
    }
    uint8_t tmp[16];
    _mm_storeu_si128((__m128i *)tmp, bytes);
    memcpy(c, tmp, (size_t)cnt);
}

#define BNBO_HAS_LUT 1
#include "optim_kernel.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* BNBO_X86 */
