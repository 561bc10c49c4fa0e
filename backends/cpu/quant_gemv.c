/* Fused 4-bit gemv: y[r] = sum_k A[k] * code[q(r, k)] * absmax(block of r*K + k), one row of activations, and
 * the entry point bnbq_gemv_4bit (several rows of A go to quant_gemv_batched.c when a batched kernel serves).
 *
 * The weight is never materialized: packed codes are looked up in the 16-entry code book held in a
 * register and multiplied with activations laid out once per call in the order the lookups produce (even /
 * odd elements, or nibble phases of whole registers, so no nibble shuffling is needed). float32/float16
 * activations: codes looked up with vpermps, 8 nibble phases per 64 bytes (gemv_rows_p8), multiplied in
 * float32. bf16 activations on CPUs with AVX512-BF16: codes looked up in the code book rounded to bf16
 * (vpermw), straight from the packed words with nested absmax (gemv_rows_bf16_p4), else widened to 16-bit
 * lanes first (gemv_rows_bf16), and multiplied pairwise by vdpbf16ps into float32. Each block's partial sum
 * is scaled by its absmax; nested absmax (uint8 codes of absmax - offset, blockwise with a 256-entry code
 * book) is decoded once per row group (bnbq_gemv_row_scales).
 * Rows are split across OpenMP threads in a few long runs each; the SIMD paths need K % blocksize == 0
 * (every row starts a block) and blocksize >= 32, otherwise the portable path serves, which handles any
 * layout.
 */
#include <stdlib.h>

#include "quant_gemv.h"

#if BNBQ_X86
/* Nested scales of blocks [g0, g0 + count) into dst: the 8-bit codes looked up 64 at a time (VBMI, the last
 * step masked), times their nested absmax, plus the offset, as block_absmax computes them (multiply, then
 * add). Reads no code or nested absmax past block g0 + count. */
LUT256_TARGET static void gemv_decode_nested_vbmi(const absmax_src *am, int64_t g0, int64_t count, float *dst) {
    lut256 L;
    lut256_load(&L, am->nested_planes);
    const __m512 off = _mm512_set1_ps(am->offset);
    const int sh = am->nested_shift;
    for (int64_t i = 0; i < count; i += 64) {
        const int64_t cnt = bnbq_min64(64, count - i);
        const __mmask64 m = cnt == 64 ? ~(__mmask64)0 : (((__mmask64)1 << cnt) - 1);
        __m512 v[4];
        lut256_lookup64(&L, _mm512_maskz_loadu_epi8(m, am->absmax_q + g0 + i), v);
        const int64_t g = g0 + i;
        if (cnt == 64 && (g >> sh) == ((g + 63) >> sh)) { /* the common step: one nested block, no masks */
            const __m512 na = _mm512_set1_ps(am->nested_absmax[g >> sh]);
            for (int j = 0; j < 4; j++) _mm512_storeu_ps(dst + i + 16 * j, _mm512_add_ps(_mm512_mul_ps(v[j], na), off));
            continue;
        }
        for (int j = 0; j < 4 && 16 * j < cnt; j++) {
            const int64_t gj = g + 16 * j, lanes = bnbq_min64(16, cnt - 16 * j);
            __m512 na;
            if ((gj >> sh) == ((gj + lanes - 1) >> sh)) {
                na = _mm512_set1_ps(am->nested_absmax[gj >> sh]);
            } else {
                float t[16] = {0};
                for (int64_t l = 0; l < lanes; l++) t[l] = am->nested_absmax[(gj + l) >> sh];
                na = _mm512_loadu_ps(t);
            }
            _mm512_mask_storeu_ps(dst + i + 16 * j, bnbq_mask16(lanes), _mm512_add_ps(_mm512_mul_ps(v[j], na), off));
        }
    }
}
#endif

/* Block scales of the rows [r, r + R) for the row kernels: pointers into absmax, or the nested scales
 * decoded once per row into buf (R * nbr floats) instead of per block inside the loops. */
void bnbq_gemv_row_scales(const absmax_src *am, int64_t r, int R, int64_t nbr, float *buf, const float **sc) {
#if BNBQ_X86
    if (!am->absmax && am->nested_planes) { /* the rows' blocks are contiguous: one decode for all R rows */
        gemv_decode_nested_vbmi(am, r * nbr, (int64_t)R * nbr, buf);
        for (int rr = 0; rr < R; rr++) sc[rr] = buf + (int64_t)rr * nbr;
        return;
    }
#endif
    for (int rr = 0; rr < R; rr++) {
        const int64_t g0 = (r + rr) * nbr;
        if (am->absmax) {
            sc[rr] = am->absmax + g0;
            continue;
        }
        float *dst = buf + (int64_t)rr * nbr;
        for (int64_t j = 0; j < nbr; j++) dst[j] = block_absmax(am, g0 + j);
        sc[rr] = dst;
    }
}

/* Portable path for any layout: per-block partial sums in float32, scaled by the block's absmax. */
static float gemv_row_generic(const float *Af, const uint8_t *B, int64_t r, int64_t K, int64_t bs, const float *code,
                              const absmax_src *am) {
    const int64_t e0 = r * K;
    float y = 0.0f;
    int64_t k = 0;
    while (k < K) {
        const int64_t g = (e0 + k) / bs;
        const int64_t end = bnbq_min64(K, (g + 1) * bs - e0);
        float part = 0.0f;
        for (; k < end; k++) {
            const int64_t e = e0 + k;
            const uint8_t byte = B[e >> 1];
            part += Af[k] * code[(e & 1) ? (byte & 15) : (byte >> 4)];
        }
        y += part * block_absmax(am, g);
    }
    return y;
}

#if BNBQ_X86
#define GEMV_MAX_ROWS GEMV_MAX_ROWS_ANY

/* R rows at once (sharing the activation loads); K % bs == 0, bs >= 32. Ae/Ao: even/odd activations. */
TGT_AVX512 static inline __attribute__((always_inline)) void gemv_rows_avx512(
    const int R, const uint8_t *B, int64_t r0, int64_t K, int64_t bs, const float *Ae, const float *Ao,
    __m512 table, const absmax_src *am, const float *const *sc, gemv_pf *pf, float *y) {
    const int64_t nbr = K / bs, half = K / 2, hb = bs / 2;
    const uint8_t *w[GEMV_MAX_ROWS];
    __m512 acc[GEMV_MAX_ROWS];
    for (int rr = 0; rr < R; rr++) {
        w[rr] = B + (r0 + rr) * half;
        acc[rr] = _mm512_setzero_ps();
    }
    gemv_prefetch_scales(am, r0 + GEMV_SCALE_AHEAD, GEMV_MAX_ROWS, nbr);
    for (int64_t j = 0; j < nbr; j++) {
        __m512 b0[GEMV_MAX_ROWS], b1[GEMV_MAX_ROWS];
        for (int rr = 0; rr < R; rr++) b0[rr] = b1[rr] = _mm512_setzero_ps();
        for (int64_t off = j * hb; off < (j + 1) * hb; off += 16) {
            if ((off & 63) == 0) gemv_pf_step(pf, R);
            const __m512 ae = _mm512_loadu_ps(Ae + off), ao = _mm512_loadu_ps(Ao + off);
            for (int rr = 0; rr < R; rr++) {
                const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w[rr] + off)));
                b0[rr] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table), ae, b0[rr]);
                b1[rr] = _mm512_fmadd_ps(_mm512_permutexvar_ps(q, table), ao, b1[rr]);
            }
        }
        for (int rr = 0; rr < R; rr++)
            acc[rr] = _mm512_fmadd_ps(_mm512_add_ps(b0[rr], b1[rr]), _mm512_set1_ps(sc[rr][j]), acc[rr]);
    }
    for (int rr = 0; rr < R; rr++) y[rr] = _mm512_reduce_add_ps(acc[rr]);
}

/* The start of a pass over rows [r0, r0 + R): row pointers, zeroed accumulators, and a prefetch of the block
 * scales of the rows ahead. */
TGT_AVX512 static inline __attribute__((always_inline)) void gemv_rows_init(const int R, const uint8_t *B, int64_t r0,
                                                                            int64_t half, const absmax_src *am,
                                                                            int64_t nbr, const uint8_t **w,
                                                                            __m512 *acc, __m512 *part) {
    for (int rr = 0; rr < R; rr++) {
        w[rr] = B + (r0 + rr) * half;
        acc[rr] = part[rr] = _mm512_setzero_ps();
    }
    gemv_prefetch_scales(am, r0 + GEMV_SCALE_AHEAD, GEMV_MAX_ROWS, nbr);
}

/* After step u of R rows (part = the step's sums per row): into acc with the block scale, once every
 * units_per_block steps when a block spans whole steps (a counter, no division per step), or every step
 * when a step holds two blocks (two_blocks: lanes 0-7 in block 2u, lanes 8-15 in block 2u + 1). */
TGT_AVX512 static inline __attribute__((always_inline)) void gemv_scale_step(const int R, const int two_blocks,
                                                                             int64_t units_per_block, int64_t u,
                                                                             int64_t *unit_in_block, int64_t *block,
                                                                             const float *const *sc, __m512 *part,
                                                                             __m512 *acc) {
    __m512 scale[GEMV_MAX_ROWS];
    if (two_blocks) {
        for (int rr = 0; rr < R; rr++)
            scale[rr] = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(sc[rr][2 * u]), _mm512_set1_ps(sc[rr][2 * u + 1]));
    } else {
        if (++*unit_in_block < units_per_block) return;
        *unit_in_block = 0;
        const int64_t j = (*block)++;
        for (int rr = 0; rr < R; rr++) scale[rr] = _mm512_set1_ps(sc[rr][j]);
    }
    for (int rr = 0; rr < R; rr++) {
        acc[rr] = _mm512_fmadd_ps(part[rr], scale[rr], acc[rr]);
        part[rr] = _mm512_setzero_ps();
    }
}

/* float32 activations, 128 weights (64 bytes) of R rows per step, K % 128 == 0 and bs >= 64. Dword lane i of
 * the 64 bytes holds weights 8i .. 8i+7; shifted right by 4s its low 4 bits, all vpermps reads, are weight
 * 8i + (s ^ 1) (high nibble first in each byte), so 8 lookups of the whole register with no unpacking take
 * the activations in that phase order: Ap[128u + 16s + i] = A[128u + 8i + (s ^ 1)]. Two thirds of the
 * shuffles of gemv_rows_avx512 (which widens 16 bytes per lookup pair). With bs == 64 lanes 0-7 belong to
 * block 2u and lanes 8-15 to block 2u + 1. */
TGT_AVX512 static inline __attribute__((always_inline)) void gemv_rows_p8(
    const int R, const uint8_t *B, int64_t r0, int64_t K, int64_t bs, const float *Ap, __m512 table,
    const absmax_src *am, const float *const *sc, gemv_pf *pf, float *y) {
    const int64_t half = K / 2, units = K / 128, nbr = K / bs, units_per_block = bs / 128;
    const uint8_t *w[GEMV_MAX_ROWS];
    __m512 acc[GEMV_MAX_ROWS], part[GEMV_MAX_ROWS];
    gemv_rows_init(R, B, r0, half, am, nbr, w, acc, part);
    int64_t unit_in_block = 0, block = 0;
    for (int64_t u = 0; u < units; u++) {
        gemv_pf_step(pf, R);
        const float *a = Ap + 128 * u;
        for (int rr = 0; rr < R; rr++) {
            const __m512i d = _mm512_loadu_si512((const void *)(w[rr] + 64 * u));
            __m512 t0 = _mm512_mul_ps(_mm512_permutexvar_ps(d, table), _mm512_loadu_ps(a));
            __m512 t1 = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 4), table), _mm512_loadu_ps(a + 16));
            t0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 8), table), _mm512_loadu_ps(a + 32), t0);
            t1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 12), table), _mm512_loadu_ps(a + 48), t1);
            t0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 16), table), _mm512_loadu_ps(a + 64), t0);
            t1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 20), table), _mm512_loadu_ps(a + 80), t1);
            t0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 24), table), _mm512_loadu_ps(a + 96), t0);
            t1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(d, 28), table), _mm512_loadu_ps(a + 112), t1);
            part[rr] = _mm512_add_ps(part[rr], _mm512_add_ps(t0, t1));
        }
        gemv_scale_step(R, bs < 128, units_per_block, u, &unit_in_block, &block, sc, part, acc);
    }
    for (int rr = 0; rr < R; rr++) y[rr] = _mm512_reduce_add_ps(acc[rr]);
}

/* Rows [r_begin, r_end) with float32 activations: gemv_rows_p8 on Ae in phase order (p8), else
 * gemv_rows_avx512 on the even / odd activations Ae / Ao. */
TGT_AVX512 static void gemv_range_avx512(const uint8_t *B, int64_t r_begin, int64_t r_end, int64_t K, int64_t bs,
                                         const float *Ae, const float *Ao, int p8, const float *code,
                                         const absmax_src *am, float *rowbuf, float *y) {
    const __m512 table = _mm512_loadu_ps(code);
    const float *sc[GEMV_MAX_ROWS];
    gemv_pf pf = gemv_pf_start(B, r_begin, r_end, K / 2, GEMV_PREFETCH_4ROWS);
    int64_t r = r_begin;
    for (; r + GEMV_MAX_ROWS <= r_end; r += GEMV_MAX_ROWS) {
        bnbq_gemv_row_scales(am, r, GEMV_MAX_ROWS, K / bs, rowbuf, sc);
        if (p8)
            gemv_rows_p8(GEMV_MAX_ROWS, B, r, K, bs, Ae, table, am, sc, &pf, y + r);
        else
            gemv_rows_avx512(GEMV_MAX_ROWS, B, r, K, bs, Ae, Ao, table, am, sc, &pf, y + r);
    }
    for (; r < r_end; r++) {
        bnbq_gemv_row_scales(am, r, 1, K / bs, rowbuf, sc);
        if (p8)
            gemv_rows_p8(1, B, r, K, bs, Ae, table, am, sc, &pf, y + r);
        else
            gemv_rows_avx512(1, B, r, K, bs, Ae, Ao, table, am, sc, &pf, y + r);
    }
}

/* bf16 activations (AVX512-BF16): 64 weights of R rows per step with vdpbf16ps. The 32 bytes are widened to
 * 16-bit lanes, the high and low nibbles looked up in the code book rounded to bf16 (vpermw), and each
 * pair of lanes multiplied with the even (Xe[k] = A[2k]) or odd (Xo[k] = A[2k+1]) activations and summed
 * in float32: half the shuffles of the float32 path. Products are exact; the only extra rounding is the
 * code book's to bf16 (<= 2^-8 relative, NF4 at most 3.2e-3), below the bf16 output's own tolerance.
 * Callers guarantee no subnormal products (vdpbf16ps flushes them): gemv_bf16_inputs_ok. */
TGT_AVX512BF16 static inline __attribute__((always_inline)) void gemv_rows_bf16(
    const int R, const uint8_t *B, int64_t r0, int64_t K, int64_t bs, const uint16_t *Xe, const uint16_t *Xo,
    __m512i table, const absmax_src *am, const float *const *sc, gemv_pf *pf, float *y) {
    const int64_t half = K / 2, units = K / 64, nbr = K / bs, units_per_block = bs >= 64 ? bs / 64 : 1;
    const uint8_t *w[GEMV_MAX_ROWS];
    __m512 acc[GEMV_MAX_ROWS], part[GEMV_MAX_ROWS];
    for (int rr = 0; rr < R; rr++) {
        w[rr] = B + (r0 + rr) * half;
        acc[rr] = part[rr] = _mm512_setzero_ps();
    }
    const __m512i low4 = _mm512_set1_epi16(15);
    gemv_prefetch_scales(am, r0 + GEMV_SCALE_AHEAD, GEMV_MAX_ROWS, nbr);
    int64_t unit_in_block = 0, block = 0;
    for (int64_t u = 0; u < units; u++) {
        const __m512bh xe = (__m512bh)_mm512_loadu_si512((const void *)(Xe + 32 * u));
        const __m512bh xo = (__m512bh)_mm512_loadu_si512((const void *)(Xo + 32 * u));
        if ((u & 1) == 0) gemv_pf_step(pf, R);
        for (int rr = 0; rr < R; rr++) {
            const __m512i q = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(w[rr] + 32 * u)));
            const __m512i whi = _mm512_permutexvar_epi16(_mm512_srli_epi16(q, 4), table);
            const __m512i wlo = _mm512_permutexvar_epi16(_mm512_and_si512(q, low4), table);
            part[rr] = _mm512_dpbf16_ps(part[rr], (__m512bh)whi, xe);
            part[rr] = _mm512_dpbf16_ps(part[rr], (__m512bh)wlo, xo);
        }
        gemv_scale_step(R, bs < 64, units_per_block, u, &unit_in_block, &block, sc, part, acc);
    }
    for (int rr = 0; rr < R; rr++) y[rr] = _mm512_reduce_add_ps(acc[rr]);
}

/* One step of gemv_rows_bf16_p4 (below): 128 weights of R rows into part[]. */
TGT_AVX512BF16 static inline __attribute__((always_inline)) void gemv_p4_unit(const int R, int64_t u,
                                                                             const uint16_t *Xp, __m512i table32,
                                                                             const uint8_t *const *w, __m512 *part) {
    const uint16_t *x = Xp + 128 * u;
    const __m512bh x0 = (__m512bh)_mm512_loadu_si512((const void *)x);
    const __m512bh x1 = (__m512bh)_mm512_loadu_si512((const void *)(x + 32));
    const __m512bh x2 = (__m512bh)_mm512_loadu_si512((const void *)(x + 64));
    const __m512bh x3 = (__m512bh)_mm512_loadu_si512((const void *)(x + 96));
    for (int rr = 0; rr < R; rr++) {
        const __m512i d = _mm512_loadu_si512((const void *)(w[rr] + 64 * u));
        __m512 t0 = _mm512_dpbf16_ps(part[rr], (__m512bh)_mm512_permutexvar_epi16(d, table32), x0);
        __m512 t1 = _mm512_dpbf16_ps(_mm512_setzero_ps(),
                                     (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(d, 4), table32), x1);
        t0 = _mm512_dpbf16_ps(t0, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(d, 8), table32), x2);
        t1 = _mm512_dpbf16_ps(t1, (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(d, 12), table32), x3);
        part[rr] = _mm512_add_ps(t0, t1);
    }
}

/* bf16 activations, 128 weights (64 bytes) of R rows per step, K % 128 == 0 and bs >= 64: no widening. Word w
 * of the 64 bytes holds weights 4w .. 4w+3; shifted right by 4s, its low 5 bits (all vpermw reads) index the
 * code book doubled to 32 entries (table[i] = code[i & 15] in bf16), which yields weight 4w + (s ^ 1) (high
 * nibble first in each byte), so 4 lookups of the whole register take the bf16 activations in that phase order:
 * Xp[128u + 32s + w] = A[128u + 4w + (s ^ 1)]. 13 vector operations per 128 weights and row where
 * gemv_rows_bf16 takes 16. With bs == 64 lanes 0-7 belong to block 2u and lanes 8-15 to block 2u + 1.
 * The 4-row passes run two steps per loop iteration: cold 11008 x 4096 nested absmax side by side here, with fast
 * memory 0.331-0.339 -> 0.315-0.328 ms (10 rounds each, 5 runs), as fast as reading the same bytes in 2-row passes
 * without arithmetic; with slow memory 0.482-0.487 -> 0.492-0.525 (still 89-92% of the probe). The 2-row passes of
 * float32 absmax keep one step (two per iteration: 1-2% faster with fast memory, 4-5% slower with slow). */
TGT_AVX512BF16 static inline __attribute__((always_inline)) void gemv_rows_bf16_p4(
    const int R, const uint8_t *B, int64_t r0, int64_t K, int64_t bs, const uint16_t *Xp, __m512i table32,
    const absmax_src *am, const float *const *sc, gemv_pf *pf, float *y) {
    const int64_t half = K / 2, units = K / 128, nbr = K / bs, units_per_block = bs / 128;
    const uint8_t *w[GEMV_MAX_ROWS];
    __m512 acc[GEMV_MAX_ROWS], part[GEMV_MAX_ROWS];
    gemv_rows_init(R, B, r0, half, am, nbr, w, acc, part);
    int64_t unit_in_block = 0, block = 0;
#define GEMV_P4_STEP(u)                                                                                      \
    gemv_pf_step(pf, R);                                                                                     \
    gemv_p4_unit(R, u, Xp, table32, w, part);                                                                \
    gemv_scale_step(R, bs < 128, units_per_block, u, &unit_in_block, &block, sc, part, acc);
    if (R == GEMV_MAX_ROWS) {
#pragma GCC unroll 2
        for (int64_t u = 0; u < units; u++) {
            GEMV_P4_STEP(u)
        }
    } else {
        for (int64_t u = 0; u < units; u++) {
            GEMV_P4_STEP(u)
        }
    }
#undef GEMV_P4_STEP
    for (int rr = 0; rr < R; rr++) y[rr] = _mm512_reduce_add_ps(acc[rr]);
}

/* Rows [r_begin, r_end) with bf16 activations: gemv_rows_bf16_p4 on Xe in phase order (p4), else gemv_rows_bf16
 * on the even / odd activations Xe / Xo. table16: the bf16 code book doubled to 32 entries. p4 with float32 absmax
 * reads 2 rows per pass: cold 11008 x 4096 side by side here, 0.550-0.581 -> 0.502-0.524 ms with slow memory and
 * 0.351-0.370 -> 0.347-0.361 with fast memory against 4-row passes of gemv_rows_bf16 (its scales, 12% of the bytes,
 * are another stream beside the weight's); with nested absmax 2-row passes were 0-20% slower fast. */
TGT_AVX512BF16 static void gemv_range_bf16(const uint8_t *B, int64_t r_begin, int64_t r_end, int64_t K, int64_t bs,
                                           const uint16_t *Xe, const uint16_t *Xo, int p4, const uint16_t *table16,
                                           const absmax_src *am, float *rowbuf, float *y) {
    const __m512i table = _mm512_loadu_si512((const void *)table16);
    const float *sc[GEMV_MAX_ROWS];
    const int two_rows = p4 && am->absmax;
    gemv_pf pf = gemv_pf_start(B, r_begin, r_end, K / 2, two_rows ? GEMV_PREFETCH_2ROWS : GEMV_PREFETCH_4ROWS);
    int64_t r = r_begin;
    if (two_rows)
        for (; r + 2 <= r_end; r += 2) {
            bnbq_gemv_row_scales(am, r, 2, K / bs, rowbuf, sc);
            gemv_rows_bf16_p4(2, B, r, K, bs, Xe, table, am, sc, &pf, y + r);
        }
    for (; r + GEMV_MAX_ROWS <= r_end; r += GEMV_MAX_ROWS) {
        bnbq_gemv_row_scales(am, r, GEMV_MAX_ROWS, K / bs, rowbuf, sc);
        if (p4)
            gemv_rows_bf16_p4(GEMV_MAX_ROWS, B, r, K, bs, Xe, table, am, sc, &pf, y + r);
        else
            gemv_rows_bf16(GEMV_MAX_ROWS, B, r, K, bs, Xe, Xo, table, am, sc, &pf, y + r);
    }
    for (; r < r_end; r++) {
        bnbq_gemv_row_scales(am, r, 1, K / bs, rowbuf, sc);
        if (p4)
            gemv_rows_bf16_p4(1, B, r, K, bs, Xe, table, am, sc, &pf, y + r);
        else
            gemv_rows_bf16(1, B, r, K, bs, Xe, Xo, table, am, sc, &pf, y + r);
    }
}


/* The activations of gemv_rows_bf16_p4 (K % 128 == 0): x[u + 32ph + i] = a[u + 4i + (ph ^ 1)], per 128 elements
 * two word permutes and a blend per phase (the scalar loop cost about 1.5 us per call at K = 4096). */
TGT_AVX512 static void gemv_layout_p4(const uint16_t *a, int64_t K, uint16_t *x) {
    uint16_t sel[4][32] __attribute__((aligned(64))); /* lane l: word 4 (l & 15) + (ph ^ 1) of a register pair */
    for (int ph = 0; ph < 4; ph++)
        for (int l = 0; l < 32; l++) sel[ph][l] = (uint16_t)(4 * (l & 15) + (ph ^ 1));
    for (int64_t u = 0; u < K; u += 128) {
        const __m512i w0 = _mm512_loadu_si512((const void *)(a + u)), w1 = _mm512_loadu_si512((const void *)(a + u + 32));
        const __m512i w2 = _mm512_loadu_si512((const void *)(a + u + 64)), w3 = _mm512_loadu_si512((const void *)(a + u + 96));
        for (int ph = 0; ph < 4; ph++) { /* lanes 0-15 from words 0-63, lanes 16-31 from words 64-127 */
            const __m512i idx = _mm512_load_si512((const void *)sel[ph]);
            const __m512i first = _mm512_permutex2var_epi16(w0, idx, w1), second = _mm512_permutex2var_epi16(w2, idx, w3);
            _mm512_storeu_si512((void *)(x + u + 32 * ph), _mm512_mask_blend_epi16(0xFFFF0000u, first, second));
        }
    }
}

/* The activations of gemv_rows_p8 (K % 128 == 0) as float32: x[u + 16ph + i] = A[u + 8i + (ph ^ 1)], a 16 x 8
 * transpose per 128 elements in three rounds of 8 two-register permutes (gathers cost 2 us per call at K = 4096
 * here, the scalar loop with its per-element dtype switch 1.5-4 us). float16 / bf16 inputs are widened into tmp
 * (K floats) first. Round 1: t[p][h] lane 4jj + ii = A[u + 8(4p + ii) + 4h + jj]; round 2: U (i < 8) and V
 * (i >= 8) hold two j = 4h + jj each; round 3: one j per output. */
TGT_AVX512 static void gemv_layout_p8(const void *A, int dtype, int64_t K, float *tmp, float *x) {
    const float *a = (const float *)A;
    if (dtype != BNBQ_F32) {
        const uint16_t *h = (const uint16_t *)A;
        for (int64_t k = 0; k < K; k += 16) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(h + k)); /* K % 128 == 0: whole vectors */
            const __m512 f = dtype == BNBQ_F16 ? _mm512_cvtph_ps(v)
                                               : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
            _mm512_storeu_ps(tmp + k, f);
        }
        a = tmp;
    }
    int32_t i1[2][16] __attribute__((aligned(64))), i2[2][16] __attribute__((aligned(64)));
    int32_t i3[2][16] __attribute__((aligned(64)));
    for (int l = 0; l < 16; l++) {
        const int ii = l & 3, jj = l >> 2, half = l >> 3, q = (l >> 2) & 1;
        for (int h = 0; h < 2; h++) i1[h][l] = 8 * ii + 4 * h + jj;
        for (int c = 0; c < 2; c++) i2[c][l] = 16 * q + 4 * (2 * c + half) + ii;
        for (int hf = 0; hf < 2; hf++) i3[hf][l] = 16 * half + 8 * hf + (l & 7);
    }
    __m512i idx1[2], idx2[2], idx3[2];
    for (int h = 0; h < 2; h++) {
        idx1[h] = _mm512_load_si512((const void *)i1[h]);
        idx2[h] = _mm512_load_si512((const void *)i2[h]);
        idx3[h] = _mm512_load_si512((const void *)i3[h]);
    }
    for (int64_t u = 0; u < K; u += 128) {
        __m512 r[8], t[4][2];
        for (int q = 0; q < 8; q++) r[q] = _mm512_loadu_ps(a + u + 16 * q);
        for (int p = 0; p < 4; p++)
            for (int h = 0; h < 2; h++) t[p][h] = _mm512_permutex2var_ps(r[2 * p], idx1[h], r[2 * p + 1]);
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 2; c++) {
                const __m512 U = _mm512_permutex2var_ps(t[0][h], idx2[c], t[1][h]);
                const __m512 V = _mm512_permutex2var_ps(t[2][h], idx2[c], t[3][h]);
                for (int hf = 0; hf < 2; hf++) {
                    const int j = 4 * h + 2 * c + hf;
                    _mm512_storeu_ps(x + u + 16 * (j ^ 1), _mm512_permutex2var_ps(U, idx3[hf], V));
                }
            }
    }
}

/* out[r] = y[r] in the output dtype, 16 at a time (the scalar loop took about 10 us for 11008 bf16 rows). */
TGT_AVX512 static void gemv_store_out_avx512(void *out, int dtype, const float *y, int64_t N) {
    for (int64_t r = 0; r < N; r += 16) {
        const __mmask16 m = bnbq_mask16(N - r);
        bnbq_store16(out, dtype, r, _mm512_maskz_loadu_ps(m, y + r), m);
    }
}

/* gemv_bf16_inputs_ok's activation test on 32 words at a time: no exponent in 1..26 (|x| < 2^-100, nonzero) and
 * no subnormal (exponent 0, mantissa nonzero). */
TGT_AVX512 static int gemv_bf16_activations_ok_avx512(const uint16_t *A, int64_t K) {
    const __m512i emask = _mm512_set1_epi16(0xff), mmask = _mm512_set1_epi16(0x7f);
    __mmask32 bad = 0;
    for (int64_t k = 0; k < K; k += 32) {
        const __mmask32 m = K - k >= 32 ? 0xFFFFFFFFu : (__mmask32)((1u << (K - k)) - 1u);
        const __m512i v = _mm512_maskz_loadu_epi16(m, A + k);
        const __m512i e = _mm512_and_si512(_mm512_srli_epi16(v, 7), emask);
        const __mmask32 e0 = _mm512_cmpeq_epi16_mask(e, _mm512_setzero_si512());
        bad |= _mm512_mask_cmplt_epu16_mask(~e0, e, _mm512_set1_epi16(127 - 100));
        bad |= _mm512_mask_test_epi16_mask(e0, v, mmask);
    }
    return bad == 0;
}

/* AVX2: 8 bytes (16 codes) at a time; the 16-entry table is two 8-entry halves selected by bit 3. */
TGT_AVX2 static inline __m256 lookup16_avx2(__m256i idx, __m256i bit3_to_sign, __m256 tlo, __m256 thi) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, idx), _mm256_permutevar8x32_ps(thi, idx),
                            _mm256_castsi256_ps(bit3_to_sign));
}

/* R (1 or 2: AVX2 has 16 registers) rows at once, sharing the activation loads; K % bs == 0, bs >= 32. */
TGT_AVX2 static inline __attribute__((always_inline)) void gemv_rows_avx2(
    const int R, const uint8_t *B, int64_t r0, int64_t K, int64_t bs, const float *Ae, const float *Ao,
    __m256 tlo, __m256 thi, const float *const *sc, gemv_pf *pf, float *y) {
    const int64_t nbr = K / bs, half = K / 2, hb = bs / 2;
    const uint8_t *w[2];
    __m256 acc[2];
    for (int rr = 0; rr < R; rr++) {
        w[rr] = B + (r0 + rr) * half;
        acc[rr] = _mm256_setzero_ps();
    }
    for (int64_t j = 0; j < nbr; j++) {
        __m256 b0[2], b1[2];
        for (int rr = 0; rr < R; rr++) b0[rr] = b1[rr] = _mm256_setzero_ps();
        for (int64_t off = j * hb; off < (j + 1) * hb; off += 8) {
            const __m256 ae = _mm256_loadu_ps(Ae + off), ao = _mm256_loadu_ps(Ao + off);
            if ((off & 63) == 0) gemv_pf_step(pf, R);
            for (int rr = 0; rr < R; rr++) {
                const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w[rr] + off)));
                const __m256i hi = _mm256_srli_epi32(q, 4);
                b0[rr] = _mm256_fmadd_ps(lookup16_avx2(hi, _mm256_slli_epi32(q, 24), tlo, thi), ae, b0[rr]);
                b1[rr] = _mm256_fmadd_ps(lookup16_avx2(q, _mm256_slli_epi32(q, 28), tlo, thi), ao, b1[rr]);
            }
        }
        for (int rr = 0; rr < R; rr++)
            acc[rr] = _mm256_fmadd_ps(_mm256_add_ps(b0[rr], b1[rr]), _mm256_set1_ps(sc[rr][j]), acc[rr]);
    }
    for (int rr = 0; rr < R; rr++) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[rr]), _mm256_extractf128_ps(acc[rr], 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[rr] = _mm_cvtss_f32(s);
    }
}

TGT_AVX2 static void gemv_range_avx2(const uint8_t *B, int64_t r_begin, int64_t r_end, int64_t K, int64_t bs,
                                     const float *Ae, const float *Ao, const float *code, const absmax_src *am,
                                     float *rowbuf, float *y) {
    const __m256 tlo = _mm256_loadu_ps(code), thi = _mm256_loadu_ps(code + 8);
    const int64_t nbr = K / bs;
    const float *sc[2];
    gemv_pf pf = gemv_pf_start(B, r_begin, r_end, K / 2, GEMV_PREFETCH); /* 2-row passes; not measured on AVX2 */
    int64_t r = r_begin;
    for (; r + 2 <= r_end; r += 2) {
        if (r % GEMV_MAX_ROWS == 0) gemv_prefetch_scales(am, r + GEMV_SCALE_AHEAD, GEMV_MAX_ROWS, nbr);
        bnbq_gemv_row_scales(am, r, 2, nbr, rowbuf, sc);
        gemv_rows_avx2(2, B, r, K, bs, Ae, Ao, tlo, thi, sc, &pf, y + r);
    }
    for (; r < r_end; r++) {
        bnbq_gemv_row_scales(am, r, 1, nbr, rowbuf, sc);
        gemv_rows_avx2(1, B, r, K, bs, Ae, Ao, tlo, thi, sc, &pf, y + r);
    }
}
#endif

/* The bf16 dot-product path flushes subnormal inputs and products: it serves only when every nonzero
 * activation has magnitude >= 2^-100 (products with a nonzero code stay normal) and no code is subnormal. */
static int gemv_bf16_inputs_ok(const uint16_t *A, int64_t K, const float *code) {
    for (int i = 0; i < 16; i++)
        if (code[i] != 0.0f && fabsf(code[i]) < 0x1p-20f) return 0;
#if BNBQ_X86
    return gemv_bf16_activations_ok_avx512(A, K); /* only asked on AVX-512 CPUs */
#else
    (void)A;
    (void)K;
    return 0;
#endif
}

/* Activation row A (K elements of dtype) laid out at dst for the chosen path (see bnbq_gemv_4bit); tmp: K floats
 * of scratch for the p8 path's widening. */
static void gemv_layout(const void *A, int dtype, int64_t K, int fast, int bf16dot, int p4, int p8, float *tmp,
                        float *dst) {
    if (p4) { /* 4 phases per 128 elements (gemv_rows_bf16_p4), bf16, in dst's first K/2 floats */
#if BNBQ_X86
        gemv_layout_p4((const uint16_t *)A, K, (uint16_t *)dst);
#endif
    } else if (bf16dot) { /* bf16 even elements then odd elements (in dst's first K/2 floats) */
        uint16_t *x = (uint16_t *)dst;
        const int64_t half = K / 2;
        for (int64_t i = 0; i < half; i++) {
            x[i] = ((const uint16_t *)A)[2 * i];
            x[half + i] = ((const uint16_t *)A)[2 * i + 1];
        }
    } else if (p8) { /* 8 phases per 128 elements (gemv_rows_p8) */
#if BNBQ_X86
        gemv_layout_p8(A, dtype, K, tmp, dst);
#endif
    } else if (fast) { /* even elements then odd elements */
        const int64_t half = K / 2;
        for (int64_t i = 0; i < half; i++) {
            dst[i] = bnbq_load(A, dtype, 2 * i);
            dst[half + i] = bnbq_load(A, dtype, 2 * i + 1);
        }
    } else {
        for (int64_t i = 0; i < K; i++) dst[i] = bnbq_load(A, dtype, i);
    }
    (void)tmp;
}

int bnbq_gemv_4bit(const void *A, int dtype, int64_t M, int64_t K, const uint8_t *B, int64_t B_len, int64_t N,
                   const float *absmax, const uint8_t *absmax_q, int64_t absmax_len, const float *code,
                   int64_t code_len, int64_t blocksize, const float *nested_absmax, int64_t nested_len,
                   const float *nested_code, int64_t nested_code_len, const float *nested_offset,
                   int64_t nested_blocksize, void *out, int64_t out_len, int nthreads) {
    if (!bnbq_valid_dtype(dtype) || M < 0 || K < 0 || N < 0 || code_len != 16 || !bnbq_is_pow2(blocksize) ||
        blocksize < 2)
        return BNBQ_EINVAL;
    if ((K > 0 && N > INT64_MAX / K) || (M > 0 && (K > INT64_MAX / M || N > INT64_MAX / M))) return BNBQ_EINVAL;
    const int64_t n = N * K, nb = (n + blocksize - 1) / blocksize;
    if (B_len != (n + 1) / 2 || absmax_len != nb || out_len != M * N ||
        (nb > 0 && (absmax == NULL) == (absmax_q == NULL)))
        return BNBQ_EINVAL;
    absmax_src am = {absmax, absmax_q, nested_absmax, nested_code, 0.0f, 0, nb};
    if (absmax_q) {
        if (!nested_absmax || !nested_code || !nested_offset || nested_code_len != 256 ||
            !bnbq_is_pow2(nested_blocksize) ||
            nested_len != (nb + nested_blocksize - 1) / nested_blocksize)
            return BNBQ_EINVAL;
        am.nested_shift = bnbq_log2(nested_blocksize);
        am.offset = *nested_offset;
    }
    if (N == 0 || M == 0) return BNBQ_OK;
    if (!out || !code) return BNBQ_EINVAL;
    if (K == 0) {
        for (int64_t r = 0; r < M * N; r++) bnbq_store(out, dtype, r, 0.0f);
        return BNBQ_OK;
    }
    if (!A || !B) return BNBQ_EINVAL;
    /* the float buffer below (M rows of K + 32 floats, M x N, per-thread scales) stays addressable */
    if (K > INT64_MAX / 8 / M - 32 || N > INT64_MAX / 8 / M) return BNBQ_EINVAL;

    const int isa = bnbq_isa_level();
    const int fast = isa != BNBQ_ISA_GENERIC && K % blocksize == 0 && blocksize >= 32;
    int team = bnbq_team(nthreads, n * M);
    if (team > N) team = (int)N;
    /* buf: activations (K floats per row of A, laid out per path), y (M x N), then per thread the decoded scales
     * of a row group (nested absmax on the AVX-512 paths), then K floats for the p8 widening */
    /* each thread's scales on cache lines of its own (64-byte aligned, whole lines): threads writing the
     * two ends of one line slowed nested-absmax calls by up to 1.7x, depending on where malloc put buf */
    const int bf16dot = fast && isa == BNBQ_ISA_AVX512 && dtype == BNBQ_BF16 && K % 64 == 0 &&
                        (bnbq_cpu_flags() & BNBQ_CPU_AVX512BF16) &&
                        gemv_bf16_inputs_ok((const uint16_t *)A, M * K, code);
    const int p8 = fast && !bf16dot && isa == BNBQ_ISA_AVX512 && K % 128 == 0 && blocksize >= 64;
    /* p4: cold (weights from DRAM, as in decoding), side by side with fast memory here, it took the nested gemv
     * 0.374-0.414 -> 0.347-0.371 ms (11008 x 4096); float32 absmax takes it in 2-row passes (gemv_range_bf16), in
     * 4-row passes it was slower cold (0.340-0.376 -> 0.382-0.407 ms) although faster warm (0.29 -> 0.25 ms).
     * Several rows of A always take it (quant_gemv_batched.c): there the arithmetic, not the memory, is the limit */
    const int p4 = bf16dot && K % 128 == 0 && blocksize >= 64;
    const int multi = M > 1 && (bf16dot || p8); /* one pass over the weight for all rows of A */
    const int64_t rowbuf = fast && absmax_q ? (GEMV_SCALE_ROWS * (K / blocksize) + 15) / 16 * 16 : 0;
    /* per thread too, the row-lanes kernels' transposed scales of two groups of 16 rows (quant_gemv_batched.c), and
     * with more bf16 rows of A than one row-lanes pass takes, two groups' decoded weights (2 x 16 x K bf16) */
    const int lanes_decoded = multi && p4 && GEMV_ROW_LANES && M - GEMV_MT >= GEMV_LANES_MIN_ROWS &&
                              K <= GEMV_LANES_DECODED_MAX_K;
    const int64_t lanes_scales =
        multi && (p4 || p8) && GEMV_ROW_LANES ? 2 * 16 * (K / blocksize) : 0; /* two groups */
    const int64_t lanes_weights = lanes_decoded ? 16 * K : 0;
    const int64_t acts = M * ((K + 15) / 16 * 16 + 16), head = acts + (M * N + 15) / 16 * 16;
    const int64_t widened = p8 && dtype != BNBQ_F32 ? K : 0;
    const int64_t per_thread = rowbuf + lanes_scales + lanes_weights;
    float *buf = (float *)aligned_alloc(64, sizeof(float) * (size_t)(head + (int64_t)team * per_thread + widened));
    if (!buf) return BNBQ_ENOMEM;
    const int64_t lda = acts / M; /* floats between laid-out rows of A: one cache line more than K, so the rows of
                                   * a chunk do not all fall in the same L1 sets */
    float *y = buf + acts, *rowbufs = buf + head;
    uint8_t nested_planes[4][256];
#if BNBQ_X86
    if (rowbuf && isa == BNBQ_ISA_AVX512 && (bnbq_cpu_flags() & BNBQ_CPU_AVX512VBMI)) {
        lut256_planes(nested_code, nested_planes);
        am.nested_planes = (const uint8_t(*)[256])nested_planes;
    }
#endif
    uint16_t table16[32]; /* the code book in bf16, twice (gemv_rows_bf16_p4 indexes it with 5 bits) */
    for (int i = 0; i < 32; i++) table16[i] = bnbq_f32_to_bf16(code[i & 15]);
#if !BNBQ_X86
    (void)table16, (void)nested_planes; /* the x86 kernels' inputs */
#endif
    const int64_t esz = bnbq_dtype_size(dtype);
    for (int64_t m = 0; m < M; m++)
        gemv_layout((const char *)A + m * K * esz, dtype, K, fast, bf16dot, p4, p8,
                    rowbufs + (int64_t)team * per_thread, buf + m * lda);
    /* a few long runs of contiguous rows per thread (the weight streams from DRAM best in long runs), handed
     * out dynamically: a thread that loses its core to another process does not hold back half of the rows */
    int64_t chunk_rows = (N + (int64_t)team * GEMV_CHUNKS_PER_THREAD - 1) / ((int64_t)team * GEMV_CHUNKS_PER_THREAD);
    const int64_t unit_rows = multi ? GEMV_MULTI_GROUP : GEMV_MAX_ROWS_ANY; /* whole groups of the row kernels */
    chunk_rows = (chunk_rows + unit_rows - 1) / unit_rows * unit_rows;
    const int64_t chunks = (N + chunk_rows - 1) / chunk_rows;
#pragma omp parallel for num_threads(team) if (team > 1) schedule(dynamic, 1)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t r_begin = c * chunk_rows, r_end = bnbq_min64(N, r_begin + chunk_rows);
#ifdef _OPENMP
        float *rb = rowbufs + (int64_t)omp_get_thread_num() * per_thread;
#else
        float *rb = rowbufs;
#endif
        (void)rb;
#if BNBQ_X86
        if (multi) {
            const int kind = p8 ? GEMV_KIND_P8 : p4 ? GEMV_KIND_P4 : GEMV_KIND_BF16;
            const int vbmi = GEMV_ROW_LANES && (bnbq_cpu_flags() & BNBQ_CPU_AVX512VBMI) &&
                             (bnbq_cpu_flags() & BNBQ_CPU_AVX512BF16);
            const uint16_t *lanes = kind == GEMV_KIND_P4 && vbmi ? (const uint16_t *)A : NULL;
            const int lanes_f32 = kind == GEMV_KIND_P8 && vbmi;
            bnbq_gemv_range_batched(kind, B, r_begin, r_end, M, N, K, blocksize, buf, lda, code, table16, &am, lanes,
                                    lanes_f32, rb, lanes || lanes_f32 ? rb + rowbuf : NULL,
                                    lanes && lanes_weights ? rb + rowbuf + lanes_scales : NULL, y);
            continue;
        }
#endif
        for (int64_t m = 0; m < M; m++) { /* one row of A at a time: the weight run is read again per row */
            const float *X = buf + m * lda;
            float *ym = y + m * N;
#if BNBQ_X86
            if (bf16dot)
                gemv_range_bf16(B, r_begin, r_end, K, blocksize, (const uint16_t *)X, (const uint16_t *)X + K / 2,
                                p4, table16, &am, rb, ym);
            else if (fast && isa == BNBQ_ISA_AVX512)
                gemv_range_avx512(B, r_begin, r_end, K, blocksize, X, X + K / 2, p8, code, &am, rb, ym);
            else if (fast)
                gemv_range_avx2(B, r_begin, r_end, K, blocksize, X, X + K / 2, code, &am, rb, ym);
            else
#endif
                for (int64_t r = r_begin; r < r_end; r++) ym[r] = gemv_row_generic(X, B, r, K, blocksize, code, &am);
        }
    }
#if BNBQ_X86
    if (isa == BNBQ_ISA_AVX512)
        gemv_store_out_avx512(out, dtype, y, M * N);
    else
#endif
        for (int64_t r = 0; r < M * N; r++) bnbq_store(out, dtype, r, y[r]);
    free(buf);
    return BNBQ_OK;
}
