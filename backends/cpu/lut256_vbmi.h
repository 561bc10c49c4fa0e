/* A 256-entry float32 table looked up for 64 byte indices at once with AVX-512 VBMI, no gathers.
 *
 * The table is held as 4 byte planes (byte k of every entry, little endian), each 256 bytes in 4 registers.
 * Per plane, two permutex2var_epi8 cover indices 0..127 and 128..255 and a blend on bit 7 picks one; the 4
 * plane results are interleaved into floats by unpack, whose lane order is undone by permuting the 64 input
 * indices first. Shared by the quant kernels (dequantize_blockwise) and the optimizer kernels (8-bit state
 * dequantization); a gather costs about as much per 16 lanes as this does per 64 on the machines we use.
 */
#ifndef BNB_API_CPU_LUT256_VBMI_H
#define BNB_API_CPU_LUT256_VBMI_H

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BNB_API_PORTABLE)
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#define LUT256_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx2,fma,f16c")))

typedef struct {
    __m512i plane[4][4]; /* plane[k][q]: byte k of entries 64q .. 64q+63 */
    __m512i order;       /* input permutation that makes the unpacked floats come out in index order */
} lut256;

/* planes[k][i] = byte k of table[i] (scalar; once per call or per code book). */
static inline void lut256_planes(const float *table, uint8_t planes[4][256]) {
    for (int i = 0; i < 256; i++) {
        uint32_t u;
        memcpy(&u, &table[i], 4);
        for (int k = 0; k < 4; k++) planes[k][i] = (uint8_t)(u >> (8 * k));
    }
}

LUT256_TARGET static inline __attribute__((always_inline)) void lut256_load(lut256 *L, const uint8_t planes[4][256]) {
    static const uint8_t order[64] __attribute__((aligned(64))) = {
        0,  1,  2,  3,  16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51, 4,  5,  6,  7,  20, 21,
        22, 23, 36, 37, 38, 39, 52, 53, 54, 55, 8,  9,  10, 11, 24, 25, 26, 27, 40, 41, 42, 43,
        56, 57, 58, 59, 12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63};
    L->order = _mm512_load_si512((const void *)order);
    for (int k = 0; k < 4; k++)
        for (int q = 0; q < 4; q++) L->plane[k][q] = _mm512_loadu_si512((const void *)(planes[k] + 64 * q));
}

/* Stage 1 of lut256_lookup64: the 64 indices permuted into the order the unpacks undo. Loops that look up one
 * step ahead (stage 1 of step i + 1 beside stage 2 of step i) run faster than the plain lookup: a permute costs
 * 5 cycles of latency on the machines we use, and one step's chain is longer than the scheduler hides. */
LUT256_TARGET static inline __attribute__((always_inline)) __m512i lut256_order(const lut256 *L, __m512i idx) {
    return _mm512_permutexvar_epi8(L->order, idx);
}

/* Stage 2: out[j] = table[idx[16j .. 16j+15]] given cv = lut256_order(L, idx). */
LUT256_TARGET static inline __attribute__((always_inline)) void lut256_lookup_ordered(const lut256 *L, __m512i cv,
                                                                                       __m512 out[4]) {
    const __mmask64 hi = _mm512_movepi8_mask(cv);
    __m512i b[4];
    for (int k = 0; k < 4; k++)
        b[k] = _mm512_mask_blend_epi8(hi, _mm512_permutex2var_epi8(L->plane[k][0], cv, L->plane[k][1]),
                                      _mm512_permutex2var_epi8(L->plane[k][2], cv, L->plane[k][3]));
    const __m512i lo01 = _mm512_unpacklo_epi8(b[0], b[1]), hi01 = _mm512_unpackhi_epi8(b[0], b[1]);
    const __m512i lo23 = _mm512_unpacklo_epi8(b[2], b[3]), hi23 = _mm512_unpackhi_epi8(b[2], b[3]);
    out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(lo01, lo23));
    out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(lo01, lo23));
    out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(hi01, hi23));
    out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(hi01, hi23));
}

/* out[j] = table[idx[16j .. 16j+15]] for the 64 byte indices idx (in memory order). */
LUT256_TARGET static inline __attribute__((always_inline)) void lut256_lookup64(const lut256 *L, __m512i idx,
                                                                                 __m512 out[4]) {
    lut256_lookup_ordered(L, lut256_order(L, idx), out);
}
#endif

#endif
