/* Exact nearest code of a sorted 256-entry code book through a bucket table: one gather and one compare
 * per 16 lanes instead of an 8-step binary search. Shared by the quant kernels (quantize_blockwise) and the
 * optimizer kernels (8-bit state requantization); both families also keep a register-resident search for
 * small calls and code books too dense for a table, which returns the same codes.
 *
 * The order-preserving integer key of x (bucket_fkey: x < y <=> key(x) < key(y), -0 taken as +0), clamped
 * to [lo, hi], selects bucket (key >> shift) - b0. Entry = base | thr << 8: base = number of midpoints
 * below the bucket, thr = low key bits of the one midpoint inside it (1 << shift when none), so
 * code = base + (thr < (key & low mask)) = number of midpoints strictly below x. Exact because the table
 * uses the fewest key bits per bucket (mantissa bits 4..8 below the exponent) that leave at most one
 * midpoint in each bucket; no table when none does or the midpoints are not ascending.
 */
#ifndef BNB_API_CPU_BUCKET_LUT_H
#define BNB_API_CPU_BUCKET_LUT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t *lut; /* NULL: no table */
    uint32_t lo, hi, b0;
    int shift;
} bucket_lut;

static inline uint32_t bucket_fkey(float x) {
    uint32_t b;
    x += 0.0f;
    memcpy(&b, &x, 4);
    return b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
}

/* The table of the 255 midpoints mid[0..254] (lut NULL when impossible or out of memory); keys are
 * clamped to the keys of [-1, 1] (callers clamp the scaled values to [-1, 1] first). */
static inline void bucket_lut_build(bucket_lut *t, const float *mid) {
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < 254; i++)
        if (!(mid[i] <= mid[i + 1])) return; /* unsorted or NaN: no table */
    const uint32_t kmin = bucket_fkey(-1.0f), kmax = bucket_fkey(1.0f);
    uint32_t keys[255];
    for (int i = 0; i < 255; i++) keys[i] = bucket_fkey(mid[i]);
    const uint32_t lo = keys[0] > kmin ? keys[0] : kmin, hi = keys[254] < kmax ? keys[254] : kmax;
    if (lo > hi) return;
    for (int mbits = 4; mbits <= 8; mbits++) {
        const int s = 23 - mbits;
        const uint32_t b0 = lo >> s, b1 = (hi >> s) + 1, nb = b1 - b0 + 1;
        int dense = 0;
        for (int i = 0; i + 1 < 255 && !dense; i++)
            dense = (keys[i] >> s) >= b0 && (keys[i] >> s) <= b1 && (keys[i] >> s) == (keys[i + 1] >> s);
        if (dense) continue;
        uint32_t *lut = (uint32_t *)malloc(sizeof(uint32_t) * nb);
        if (!lut) return;
        int j = 0; /* midpoints with key below the current bucket */
        for (uint32_t b = 0; b < nb; b++) {
            const uint32_t start = (b0 + b) << s;
            while (j < 255 && keys[j] < start) j++;
            uint32_t thr = 1u << s;
            if (j < 255 && (keys[j] >> s) == b0 + b) thr = keys[j] & ((1u << s) - 1u);
            lut[b] = (uint32_t)j | thr << 8;
        }
        t->lut = lut;
        t->lo = b0 << s;
        t->hi = ((b1 + 1) << s) - 1u;
        t->b0 = b0;
        t->shift = s;
        return;
    }
}

static inline void bucket_lut_free(bucket_lut *t) {
    free(t->lut);
    t->lut = NULL;
}

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BNB_API_PORTABLE)
#include <immintrin.h>

#define BUCKET_LUT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq"), always_inline))

/* The table's constants in registers (AVX-512). */
typedef struct {
    __m512i lo, hi, b0, lowmask;
    __m128i shift;
    const uint32_t *lut;
} bucket_lut_zmm;

BUCKET_LUT_AVX512 static inline bucket_lut_zmm bucket_lut_zmm_load(const bucket_lut *t) {
    bucket_lut_zmm q;
    q.lo = _mm512_set1_epi32((int)t->lo);
    q.hi = _mm512_set1_epi32((int)t->hi);
    q.b0 = _mm512_set1_epi32((int)t->b0);
    q.lowmask = _mm512_set1_epi32((int)((1u << t->shift) - 1u));
    q.shift = _mm_cvtsi32_si128(t->shift);
    q.lut = t->lut;
    return q;
}

/* Codes (int32 lanes) of 16 values. */
BUCKET_LUT_AVX512 static inline __m512i bucket_lut_zmm_codes(const bucket_lut_zmm *q, __m512 x) {
    const __m512i b = _mm512_castps_si512(_mm512_add_ps(x, _mm512_setzero_ps())); /* -0 -> +0 */
    __m512i key = _mm512_xor_si512(b, _mm512_or_si512(_mm512_srai_epi32(b, 31), _mm512_set1_epi32(INT32_MIN)));
    key = _mm512_min_epu32(_mm512_max_epu32(key, q->lo), q->hi);
    const __m512i bucket = _mm512_sub_epi32(_mm512_srl_epi32(key, q->shift), q->b0);
    const __m512i e = _mm512_i32gather_epi32(bucket, (const void *)q->lut, 4);
    const __mmask16 up = _mm512_cmplt_epi32_mask(_mm512_srli_epi32(e, 8), _mm512_and_si512(key, q->lowmask));
    const __m512i code = _mm512_and_si512(e, _mm512_set1_epi32(255));
    return _mm512_mask_add_epi32(code, up, code, _mm512_set1_epi32(1));
}
#endif

#endif
