/* Exact nearest code of a sorted 256-entry code book for 64 values in [-1, 1] at once, with AVX-512 VBMI
 * byte permutes and no gathers (a 16-lane gather costs about 20 cycles on the machines we use, which made
 * the gather-based bucket_lut.h the bottleneck of the 8-bit optimizers).
 *
 * Buckets: the order-preserving key of x (bucket_fkey) splits into an octave o = key >> 23 (sign and
 * exponent) and 23 position bits. Each of the 64 octaves of [-1, -2^-31] and [2^-31, 1] is cut into 2^m
 * equal buckets, m (0..7) the fewest that leave at most one midpoint in each bucket; smaller magnitudes
 * fold into the lowest octave, which must hold no midpoint. m <= 7 lets the bucket come from the top 16
 * bits of x alone (sign, exponent, 7 mantissa bits), so it is computed on 32 word lanes at a time. Tables:
 *   oct[32 s + E - 96] = first | shift << 12 for sign s (0: negative, 1: positive), exponent E in 96..127:
 *     bucket = first + (position7 >> shift), below 512 (position7: the top 7 position bits);
 *   base[bucket] = number of midpoints below the bucket's first key.
 * code = base + (mid[base] < x): mid[base] is the one midpoint that can lie inside the bucket (+inf pad at
 * 255), so the code is the number of midpoints strictly below x, ties going to the lower code, exactly as
 * the other searches. No table (ok = 0) when a midpoint is below 2^-30 in magnitude, the midpoints are not
 * ascending, or more than 512 buckets would be needed.
 *
 * The 64 lanes: top words gathered by word permutes, the octave table by 64-entry word permutes, bucket bytes
 * packed with byte permutes, base by four 128-entry byte permutes, mid[base] by lut256_vbmi.h.
 */
#ifndef BNB_API_CPU_OCTAVE_LUT_VBMI_H
#define BNB_API_CPU_OCTAVE_LUT_VBMI_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bucket_lut.h"

#define OCTAVE_LUT_E0 96 /* lowest exponent with its own octave: 2^-31 */
#define OCTAVE_LUT_BUCKETS 512

typedef struct {
    uint16_t oct[64] __attribute__((aligned(64)));
    uint8_t base[OCTAVE_LUT_BUCKETS] __attribute__((aligned(64)));
    uint8_t mid_planes[4][256] __attribute__((aligned(64))); /* byte k of mid[i], lut256 layout */
    int ok;
    int nonneg; /* every midpoint > 0 (unsigned code books): negative values all get code 0 */
} octave_lut;

/* Octave (key >> 23) of sign s and biased exponent E. */
static inline uint32_t octave_lut_octave(int s, int e) { return s ? 256u + (uint32_t)e : 255u - (uint32_t)e; }

/* The tables of the 256 midpoints mid[0..254] (mid[255] = +inf pad); ok = 0 when impossible. */
static inline void octave_lut_build(octave_lut *t, const float *mid) {
    memset(t, 0, sizeof(*t));
    uint32_t keys[255];
    for (int i = 0; i < 255; i++) {
        if (i < 254 && !(mid[i] <= mid[i + 1])) return; /* unsorted or NaN */
        if (fabsf(mid[i]) < 0x1p-30f) return;           /* would fall in the folded lowest octave */
        keys[i] = bucket_fkey(mid[i]);
    }
    uint32_t nb = 0;
    for (int s = 0; s < 2; s++) {
        for (int e = OCTAVE_LUT_E0; e <= 127; e++) {
            const uint32_t o = octave_lut_octave(s, e);
            int a = 0; /* the octave's midpoints are keys[a .. z) (sorted keys) */
            while (a < 255 && (keys[a] >> 23) < o) a++;
            int z = a;
            while (z < 255 && (keys[z] >> 23) == o) z++;
            int m = 0;
            for (; m <= 7; m++) { /* fewest position bits leaving one midpoint per bucket */
                int clash = 0;
                for (int i = a; i + 1 < z && !clash; i++)
                    clash = (keys[i] & 0x7fffffu) >> (23 - m) == (keys[i + 1] & 0x7fffffu) >> (23 - m);
                if (!clash) break;
            }
            if (m > 7 || nb + (1u << m) > OCTAVE_LUT_BUCKETS) return;
            t->oct[32 * s + e - OCTAVE_LUT_E0] = (uint16_t)(nb | (uint32_t)(7 - m) << 12);
            int below = a; /* midpoints below each bucket's first key */
            for (uint32_t b = 0; b < (1u << m); b++) {
                const uint32_t start = o << 23 | b << (23 - m);
                while (below < z && keys[below] < start) below++;
                t->base[nb + b] = (uint8_t)below;
            }
            nb += 1u << m;
        }
    }
    for (int i = 0; i < 256; i++) {
        uint32_t u;
        memcpy(&u, &mid[i], 4);
        for (int k = 0; k < 4; k++) t->mid_planes[k][i] = (uint8_t)(u >> (8 * k));
    }
    t->nonneg = mid[0] > 0.0f;
    t->ok = 1;
}

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BNB_API_PORTABLE)
#include "lut256_vbmi.h"

/* Global buckets (low 9 bits of 32 word lanes) of 32 values in [-1, 1], given their top 16 bits hw.
 * Magnitudes below 2^-31 (zeros, -0 included) become +-2^-31 first, which lies in the same bucket (no
 * midpoint is that small); then hw >> 7 = sign and exponent 96..127, whose low 5 bits (E - 96) with bit 5
 * set for positive values index the octave table. */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i octave_lut_bucket32(const octave_lut *t,
                                                                                       __m512i hw) {
    /* as int16, positive values order by magnitude and negative ones against it: max with +-2^-31 raises both */
    hw = _mm512_max_epi16(hw, _mm512_ternarylogic_epi32(hw, _mm512_set1_epi16((short)0x8000),
                                                        _mm512_set1_epi16(OCTAVE_LUT_E0 << 7), 0xea));
    const __m512i neg = _mm512_srai_epi16(hw, 15); /* all ones in negative lanes */
    /* (hw >> 7) & 63 = E & 63 = 32 + E - 96: bit 5 flipped for negative values (A ^ (B & C)) */
    const __m512i oct = _mm512_ternarylogic_epi32(_mm512_srli_epi16(hw, 7), neg, _mm512_set1_epi16(32), 0x78);
    const __m512i ent = _mm512_permutex2var_epi16(_mm512_load_si512((const void *)t->oct), oct,
                                                  _mm512_load_si512((const void *)(t->oct + 32)));
    /* top 7 position bits in key order: the mantissa's, inverted for negative values */
    const __m512i position = _mm512_ternarylogic_epi32(hw, neg, _mm512_set1_epi16(0x7f), 0x28);
    return _mm512_add_epi16(_mm512_srlv_epi16(position, _mm512_srli_epi16(ent, 12)),
                            _mm512_and_si512(ent, _mm512_set1_epi16(0x1ff)));
}

/* octave_lut_bucket32 for tables with every midpoint positive (t->nonneg): negative values (negative as int16)
 * rise to the lowest positive octave with the tiny ones, whose bucket has no midpoint, so they get code 0, as the
 * other searches give them; positive values as in octave_lut_bucket32. The octave is E & 31 = E - 96, which the
 * 32-entry word permute takes as is: 8 operations instead of 11. */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i octave_lut_bucket32_nonneg(const octave_lut *t,
                                                                                              __m512i hw) {
    hw = _mm512_max_epi16(hw, _mm512_set1_epi16(OCTAVE_LUT_E0 << 7));
    const __m512i ent = _mm512_permutexvar_epi16(_mm512_srli_epi16(hw, 7), _mm512_load_si512((const void *)(t->oct + 32)));
    const __m512i position = _mm512_and_si512(hw, _mm512_set1_epi16(0x7f));
    return _mm512_add_epi16(_mm512_srlv_epi16(position, _mm512_srli_epi16(ent, 12)),
                            _mm512_and_si512(ent, _mm512_set1_epi16(0x1ff)));
}

/* The stages of octave_lut_base64_k, split so that loops can run step i + 2's first stage beside step i + 1's
 * second and step i's third (see lut256_order). Stage 1: the top halves h of the 64 values x[0..3] (16 each), in
 * word lanes: h[0] of values 0-31, h[1] of 32-63. */
LUT256_TARGET static inline __attribute__((always_inline)) void octave_lut_tops64(const __m512 x[4], __m512i h[2]) {
    /* word 2i+1 (the top half of float i) of the first source for i < 16, of the second for i >= 16 */
    static const uint16_t top[32] __attribute__((aligned(64))) = {
        1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
        33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
    const __m512i tw = _mm512_load_si512((const void *)top);
    h[0] = _mm512_permutex2var_epi16(_mm512_castps_si512(x[0]), tw, _mm512_castps_si512(x[1]));
    h[1] = _mm512_permutex2var_epi16(_mm512_castps_si512(x[2]), tw, _mm512_castps_si512(x[3]));
}

/* Stage 2: the buckets w (word lanes, as h) of values in [-1, 1] with top halves h. */
LUT256_TARGET static inline __attribute__((always_inline)) void octave_lut_buckets_of(const octave_lut *t,
                                                                                      const __m512i h[2],
                                                                                      const int nonneg, __m512i w[2]) {
    for (int k = 0; k < 2; k++) w[k] = nonneg ? octave_lut_bucket32_nonneg(t, h[k]) : octave_lut_bucket32(t, h[k]);
}

/* Stage 3: the bucket bases (64 bytes, memory order) of the buckets w from octave_lut_buckets_of. */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i octave_lut_bases_of(const octave_lut *t,
                                                                                       const __m512i w[2]) {
    /* byte 2i (low byte of word i) of the first source for i < 32, of the second for i >= 32 */
    static const uint8_t low[64] __attribute__((aligned(64))) = {
        0,  2,  4,  6,  8,  10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42,
        44, 46, 48, 50, 52, 54, 56, 58, 60, 62, 64, 66, 68, 70, 72, 74, 76, 78, 80, 82, 84, 86,
        88, 90, 92, 94, 96, 98, 100, 102, 104, 106, 108, 110, 112, 114, 116, 118, 120, 122, 124, 126};
    const __m512i p0 = _mm512_load_si512((const void *)low);
    const __m512i lo8 = _mm512_permutex2var_epi8(w[0], p0, w[1]);
    /* bit 8 of the buckets straight from the words (mask registers, no byte permute) */
    const __m512i bit8 = _mm512_set1_epi16(0x100);
    const __mmask64 b7 = _mm512_movepi8_mask(lo8),
                    b8 = _mm512_kunpackd(_mm512_test_epi16_mask(w[1], bit8), _mm512_test_epi16_mask(w[0], bit8));
    const uint8_t *tb = t->base;
#define OCT_T(k) _mm512_load_si512((const void *)(tb + 64 * (k)))
    const __m512i q0 = _mm512_mask_blend_epi8(b7, _mm512_permutex2var_epi8(OCT_T(0), lo8, OCT_T(1)),
                                              _mm512_permutex2var_epi8(OCT_T(2), lo8, OCT_T(3)));
    const __m512i q1 = _mm512_mask_blend_epi8(b7, _mm512_permutex2var_epi8(OCT_T(4), lo8, OCT_T(5)),
                                              _mm512_permutex2var_epi8(OCT_T(6), lo8, OCT_T(7)));
#undef OCT_T
    return _mm512_mask_blend_epi8(b8, q0, q1);
}

/* Bucket bases (64 bytes, memory order) of the 64 values x[0..3] (16 each), all in [-1, 1]; nonneg is t->nonneg
 * (a separate argument so that loops can be specialized on it). */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i octave_lut_base64_k(const octave_lut *t,
                                                                                       const __m512 x[4],
                                                                                       const int nonneg) {
    __m512i h[2], w[2];
    octave_lut_tops64(x, h);
    octave_lut_buckets_of(t, h, nonneg, w);
    return octave_lut_bases_of(t, w);
}

/* octave_lut_base64_k with the table's own nonneg flag. */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i octave_lut_base64(const octave_lut *t,
                                                                                     const __m512 x[4]) {
    return octave_lut_base64_k(t, x, t->nonneg);
}

/* Codes of x[0..3] from their bases and cv = lut256_order(L, base): base + (mid[base] < x); L holds mid_planes. */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i octave_lut_finish_ordered(const lut256 *L,
                                                                                             __m512i base, __m512i cv,
                                                                                             const __m512 x[4]) {
    __m512 m[4];
    lut256_lookup_ordered(L, cv, m);
    const __mmask32 up_lo = _mm512_kunpackw(_mm512_cmp_ps_mask(m[1], x[1], _CMP_LT_OQ),
                                            _mm512_cmp_ps_mask(m[0], x[0], _CMP_LT_OQ));
    const __mmask32 up_hi = _mm512_kunpackw(_mm512_cmp_ps_mask(m[3], x[3], _CMP_LT_OQ),
                                            _mm512_cmp_ps_mask(m[2], x[2], _CMP_LT_OQ));
    const __mmask64 up = _mm512_kunpackd(up_hi, up_lo);
    return _mm512_mask_add_epi8(base, up, base, _mm512_set1_epi8(1));
}

/* Codes of x[0..3] from their bases: base + (mid[base] < x); L holds mid_planes. */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i octave_lut_finish64(const lut256 *L, __m512i base,
                                                                                       const __m512 x[4]) {
    return octave_lut_finish_ordered(L, base, lut256_order(L, base), x);
}

/* Codes (64 bytes, memory order) of the 64 values x[0..3] (16 each), all in [-1, 1]; L holds mid_planes. */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i octave_lut_codes64(const octave_lut *t,
                                                                                      const lut256 *L,
                                                                                      const __m512 x[4]) {
    return octave_lut_finish64(L, octave_lut_base64(t, x), x);
}
#endif

#endif
