/* gemv_4bit with several rows of A (batched decoding, short prompts): each weight row is read from memory once for
 * all of them. Called by bnbq_gemv_4bit (quant_gemv.c) for each thread's run of weight rows. */
#include <string.h>

#include "quant_gemv.h"

#if BNBQ_X86
/* Several rows of activations (the batched decode): each weight row is read from memory once for all of them.
 * Per step the weight's bytes are looked up once, into all 8 (float32, p8) or 4 (bf16, p4) or 2 (bf16 widened)
 * phases held in registers, then multiplied with each of MT activation rows in turn, with the arithmetic of
 * the one-row kernels (gemv_rows_p8 / gemv_rows_bf16_p4 / gemv_rows_bf16, same order of operations), so each
 * output has the same bits as a one-row call on its row taking the same kernel. bf16 with float32 absmax takes
 * p4 here (with 8 rows 1.85 ms against 2.6 for the widened kernel, 11008 x 4096) while one row takes the widened
 * kernel; from GEMV_LANES_MIN_ROWS rows bf16 takes the row-lanes kernel (gemv_lanes16), and float32 from
 * GEMV_LANES_F32_MIN_ROWS rows the float32 row lanes (gemv_lanes16_f32, gemv_lanes32_f32), whose sums run in another
 * order than the one-row kernels'; and one row of bf16
 * activations below 2^-100 sends all rows to the float32 path. The activations are walked in chunks of
 * GEMV_CHUNK_BYTES per row, so MT rows of a chunk stay in L1 while a group of weight rows goes over them (whole
 * rows of 8 float32 activation rows, 128 KiB at K = 4096, ran 3x slower from L2); the sums of each (weight
 * row, activation row) pair wait in a gemv_pair between chunks. */
#define GEMV_CHUNK_BYTES 2048  /* bytes of each activation row per chunk: MT rows take 16 KiB of L1 */

/* F(MT) with MT = mt as a constant (1..8): the kernels are unrolled per count of activation rows. */
#define GEMV_SWITCH_MT(mt, F)                                                                                   \
    switch (mt) {                                                                                               \
    case 1: F(1); break;                                                                                        \
    case 2: F(2); break;                                                                                        \
    case 3: F(3); break;                                                                                        \
    case 4: F(4); break;                                                                                        \
    case 5: F(5); break;                                                                                        \
    case 6: F(6); break;                                                                                        \
    case 7: F(7); break;                                                                                        \
    default: F(8); break;                                                                                       \
    }

typedef struct {
    __m512 acc, part; /* the one-row kernels' accumulator and the current block's partial sum */
} gemv_pair;

/* gemv_scale_step for MT activation rows against one weight row: one scale for all of them. */
TGT_AVX512 static inline __attribute__((always_inline)) void gemv_scale_shared(const int MT, const int two_blocks,
                                                                               int64_t units_per_block, int64_t u,
                                                                               int64_t *unit_in_block, int64_t *block,
                                                                               const float *sc, __m512 *part,
                                                                               __m512 *acc) {
    __m512 scale;
    if (two_blocks) {
        scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(sc[2 * u]), _mm512_set1_ps(sc[2 * u + 1]));
    } else {
        if (++*unit_in_block < units_per_block) return;
        *unit_in_block = 0;
        scale = _mm512_set1_ps(sc[(*block)++]);
    }
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) {
        acc[m] = _mm512_fmadd_ps(part[m], scale, acc[m]);
        part[m] = _mm512_setzero_ps();
    }
}

/* Steps [u0, u1) of one weight row w (units of 128 weights; 64 for GEMV_KIND_BF16) for MT activation rows at X +
 * m * ldx (floats), the pairs' sums in st[0..MT). pf: the prefetch stream, stepped when not NULL. */
TGT_AVX512BF16 static inline __attribute__((always_inline)) void gemv_multi_steps(
    const int KIND, const int MT, const uint8_t *w, int64_t u0, int64_t u1, int64_t K, int64_t bs, const float *X,
    int64_t ldx, __m512 table, __m512i table16, const float *sc, gemv_pf *pf, gemv_pair *st) {
    const int64_t unit = KIND == GEMV_KIND_BF16 ? 64 : 128;
    const int two_blocks = bs < unit;
    const int64_t units_per_block = two_blocks ? 1 : bs / unit;
    int64_t unit_in_block = two_blocks ? 0 : u0 % units_per_block, block = two_blocks ? 0 : u0 / units_per_block;
    __m512 acc[GEMV_MT], part[GEMV_MT];
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) {
        acc[m] = st[m].acc;
        part[m] = st[m].part;
    }
    for (int64_t u = u0; u < u1; u++) {
        if (KIND == GEMV_KIND_P8) {
            if (pf) gemv_pf_step(pf, 1);
            const __m512i d = _mm512_loadu_si512((const void *)(w + 64 * u));
            __m512 ph[8];
            _Pragma("GCC unroll 8")
            for (int s = 0; s < 8; s++) ph[s] = _mm512_permutexvar_ps(s ? _mm512_srli_epi32(d, 4 * s) : d, table);
            _Pragma("GCC unroll 8")
            for (int m = 0; m < MT; m++) {
                const float *a = X + m * ldx + 128 * u;
                __m512 t0 = _mm512_mul_ps(ph[0], _mm512_loadu_ps(a));
                __m512 t1 = _mm512_mul_ps(ph[1], _mm512_loadu_ps(a + 16));
                t0 = _mm512_fmadd_ps(ph[2], _mm512_loadu_ps(a + 32), t0);
                t1 = _mm512_fmadd_ps(ph[3], _mm512_loadu_ps(a + 48), t1);
                t0 = _mm512_fmadd_ps(ph[4], _mm512_loadu_ps(a + 64), t0);
                t1 = _mm512_fmadd_ps(ph[5], _mm512_loadu_ps(a + 80), t1);
                t0 = _mm512_fmadd_ps(ph[6], _mm512_loadu_ps(a + 96), t0);
                t1 = _mm512_fmadd_ps(ph[7], _mm512_loadu_ps(a + 112), t1);
                part[m] = _mm512_add_ps(part[m], _mm512_add_ps(t0, t1));
            }
        } else if (KIND == GEMV_KIND_P4) {
            if (pf) gemv_pf_step(pf, 1);
            const __m512i d = _mm512_loadu_si512((const void *)(w + 64 * u));
            __m512bh ph[4];
            _Pragma("GCC unroll 4")
            for (int s = 0; s < 4; s++)
                ph[s] = (__m512bh)_mm512_permutexvar_epi16(s ? _mm512_srli_epi16(d, 4 * s) : d, table16);
            _Pragma("GCC unroll 8")
            for (int m = 0; m < MT; m++) {
                const uint16_t *x = (const uint16_t *)(X + m * ldx) + 128 * u;
                __m512 t0 = _mm512_dpbf16_ps(part[m], ph[0], (__m512bh)_mm512_loadu_si512((const void *)x));
                __m512 t1 = _mm512_dpbf16_ps(_mm512_setzero_ps(), ph[1],
                                             (__m512bh)_mm512_loadu_si512((const void *)(x + 32)));
                t0 = _mm512_dpbf16_ps(t0, ph[2], (__m512bh)_mm512_loadu_si512((const void *)(x + 64)));
                t1 = _mm512_dpbf16_ps(t1, ph[3], (__m512bh)_mm512_loadu_si512((const void *)(x + 96)));
                part[m] = _mm512_add_ps(t0, t1);
            }
        } else {
            if (pf && (u & 1) == 0) gemv_pf_step(pf, 1);
            const __m512i q = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(w + 32 * u)));
            const __m512bh whi = (__m512bh)_mm512_permutexvar_epi16(_mm512_srli_epi16(q, 4), table16);
            const __m512bh wlo = (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(q, _mm512_set1_epi16(15)), table16);
            _Pragma("GCC unroll 8")
            for (int m = 0; m < MT; m++) {
                const uint16_t *x = (const uint16_t *)(X + m * ldx) + 32 * u;
                part[m] = _mm512_dpbf16_ps(part[m], whi, (__m512bh)_mm512_loadu_si512((const void *)x));
                part[m] = _mm512_dpbf16_ps(part[m], wlo, (__m512bh)_mm512_loadu_si512((const void *)(x + K / 2)));
            }
        }
        gemv_scale_shared(MT, two_blocks, units_per_block, u, &unit_in_block, &block, sc, part, acc);
    }
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) {
        st[m].acc = acc[m];
        st[m].part = part[m];
    }
}

/* GEMV_KIND_P4 for two weight rows w[0], w[1] at once: each activation vector loaded is used by both (half the
 * loads of two gemv_multi_steps calls, which were the limit), with the same arithmetic per pair. */
TGT_AVX512BF16 static inline __attribute__((always_inline)) void gemv_multi_p4x2(
    const int MT, const uint8_t *const *w, int64_t u0, int64_t u1, int64_t bs, const float *X, int64_t ldx,
    __m512i table16, const float *const *sc, gemv_pf *pf, gemv_pair *const *st) {
    const int two_blocks = bs < 128;
    const int64_t units_per_block = two_blocks ? 1 : bs / 128;
    int64_t unit_in_block = two_blocks ? 0 : u0 % units_per_block, block = two_blocks ? 0 : u0 / units_per_block;
    __m512 acc[2][GEMV_MT], part[2][GEMV_MT];
    _Pragma("GCC unroll 2")
    for (int k = 0; k < 2; k++) {
        _Pragma("GCC unroll 8")
        for (int m = 0; m < MT; m++) {
            acc[k][m] = st[k][m].acc;
            part[k][m] = st[k][m].part;
        }
    }
    for (int64_t u = u0; u < u1; u++) {
        if (pf) gemv_pf_step(pf, 2);
        __m512bh ph[2][4];
        _Pragma("GCC unroll 2")
        for (int k = 0; k < 2; k++) {
            const __m512i d = _mm512_loadu_si512((const void *)(w[k] + 64 * u));
            _Pragma("GCC unroll 4")
            for (int s = 0; s < 4; s++)
                ph[k][s] = (__m512bh)_mm512_permutexvar_epi16(s ? _mm512_srli_epi16(d, 4 * s) : d, table16);
        }
        _Pragma("GCC unroll 8")
        for (int m = 0; m < MT; m++) {
            const uint16_t *x = (const uint16_t *)(X + m * ldx) + 128 * u;
            const __m512bh x0 = (__m512bh)_mm512_loadu_si512((const void *)x);
            const __m512bh x1 = (__m512bh)_mm512_loadu_si512((const void *)(x + 32));
            const __m512bh x2 = (__m512bh)_mm512_loadu_si512((const void *)(x + 64));
            const __m512bh x3 = (__m512bh)_mm512_loadu_si512((const void *)(x + 96));
            _Pragma("GCC unroll 2")
            for (int k = 0; k < 2; k++) {
                __m512 t0 = _mm512_dpbf16_ps(part[k][m], ph[k][0], x0);
                __m512 t1 = _mm512_dpbf16_ps(_mm512_setzero_ps(), ph[k][1], x1);
                t0 = _mm512_dpbf16_ps(t0, ph[k][2], x2);
                t1 = _mm512_dpbf16_ps(t1, ph[k][3], x3);
                part[k][m] = _mm512_add_ps(t0, t1);
            }
        }
        if (two_blocks) {
            _Pragma("GCC unroll 2")
            for (int k = 0; k < 2; k++) {
                const __m512 scale =
                    _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(sc[k][2 * u]), _mm512_set1_ps(sc[k][2 * u + 1]));
                _Pragma("GCC unroll 8")
                for (int m = 0; m < MT; m++) {
                    acc[k][m] = _mm512_fmadd_ps(part[k][m], scale, acc[k][m]);
                    part[k][m] = _mm512_setzero_ps();
                }
            }
        } else if (++unit_in_block == units_per_block) {
            unit_in_block = 0;
            _Pragma("GCC unroll 2")
            for (int k = 0; k < 2; k++) {
                const __m512 scale = _mm512_set1_ps(sc[k][block]);
                _Pragma("GCC unroll 8")
                for (int m = 0; m < MT; m++) {
                    acc[k][m] = _mm512_fmadd_ps(part[k][m], scale, acc[k][m]);
                    part[k][m] = _mm512_setzero_ps();
                }
            }
            block++;
        }
    }
    _Pragma("GCC unroll 2")
    for (int k = 0; k < 2; k++) {
        _Pragma("GCC unroll 8")
        for (int m = 0; m < MT; m++) {
            st[k][m].acc = acc[k][m];
            st[k][m].part = part[k][m];
        }
    }
}

#define GEMV_X2_MT 4 /* activation rows per gemv_multi_p4x2 call: 2 x 4 pairs of accumulators in registers (8 spill) */

#define GEMV_MULTI_MT(KIND)                                                                                   \
    switch (mt) {                                                                                             \
    case 1: gemv_multi_steps(KIND, 1, w, c0, c1, K, bs, Xm, ldx, table, table16, sc[rr], p, st[rr]); break; \
    case 2: gemv_multi_steps(KIND, 2, w, c0, c1, K, bs, Xm, ldx, table, table16, sc[rr], p, st[rr]); break; \
    case 3: gemv_multi_steps(KIND, 3, w, c0, c1, K, bs, Xm, ldx, table, table16, sc[rr], p, st[rr]); break; \
    case 4: gemv_multi_steps(KIND, 4, w, c0, c1, K, bs, Xm, ldx, table, table16, sc[rr], p, st[rr]); break; \
    case 5: gemv_multi_steps(KIND, 5, w, c0, c1, K, bs, Xm, ldx, table, table16, sc[rr], p, st[rr]); break; \
    case 6: gemv_multi_steps(KIND, 6, w, c0, c1, K, bs, Xm, ldx, table, table16, sc[rr], p, st[rr]); break; \
    case 7: gemv_multi_steps(KIND, 7, w, c0, c1, K, bs, Xm, ldx, table, table16, sc[rr], p, st[rr]); break; \
    default: gemv_multi_steps(KIND, 8, w, c0, c1, K, bs, Xm, ldx, table, table16, sc[rr], p, st[rr]); break; \
    }

/* bf16 activations, several rows, 16 weight rows in the 16 float lanes ("row lanes"): per 64 bytes of each of the
 * 16 rows, the bytes are transposed (a 16 x 16 dword transpose: 64 shuffles), each byte's two nibbles are looked
 * up into the bf16 pair of its row's lane (vpermb, vpsrlvw, vpermw), and multiplied with the broadcast bf16 pair of
 * each of MT activation rows (A: plain bf16 rows, lda words apart): one vdpbf16ps per pair of weights, row and
 * activation row, each activation row summing into its own register of 16 outputs (no horizontal sums). Block
 * sums are scaled by the 16 rows' scales of the block, one load from the transposed scales scT (16 per block).
 * More than GEMV_MT rows of A: the first pass also saves the decoded pairs (wbuf, 32 bytes per weight, in L2), and
 * the other passes run on them two groups of 16 weight rows at a time (gemv_lanes32_decoded: each broadcast of A
 * feeds both groups, half the loads per product), a chunk of K at a time so that the chunk stays in L1 for all
 * passes. 11008 x 4096 NF4, warm: 32 rows 4.6 -> 3.6-3.9 ms, 64 rows 9.2 -> 6.9-7.1; a separate decode pass
 * before all the passes (not overlapped with the first one's products) was slower: 8 rows 1.18-1.25 -> 1.28-1.33. */
#define TGT_AVX512BF16_VBMI \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vbmi,avx2,fma,f16c")))

TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
    }
    for (int g = 0; g < 4; g++) { /* u[4q + g]: column 4l + q of rows 4g..4g+3 in 128-bit lane l */
        u[0 + g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 + g] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[8 + g] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[12 + g] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    for (int q = 0; q < 4; q++) { /* column 4l + q of all 16 rows into r[4l + q] */
        const __m512i v0 = _mm512_shuffle_i32x4(u[4 * q], u[4 * q + 1], 0x44);
        const __m512i v1 = _mm512_shuffle_i32x4(u[4 * q], u[4 * q + 1], 0xEE);
        const __m512i v2 = _mm512_shuffle_i32x4(u[4 * q + 2], u[4 * q + 3], 0x44);
        const __m512i v3 = _mm512_shuffle_i32x4(u[4 * q + 2], u[4 * q + 3], 0xEE);
        r[q] = _mm512_shuffle_i32x4(v0, v2, 0x88);
        r[4 + q] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
        r[8 + q] = _mm512_shuffle_i32x4(v1, v3, 0x88);
        r[12 + q] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
    }
}

/* Step s (64 bytes) of the 16 weight rows from n0 (half bytes each), transposed: r[c] = dword column c of the 16 rows. */
TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_load_t16(const uint8_t *B, int64_t n0,
                                                                                   int64_t half, int64_t s,
                                                                                   __m512i r[16]) {
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512((const void *)(B + (n0 + i) * half + 64 * s));
    gemv_transpose16(r);
}

/* vpermb indexes taking byte p of each dword into bytes 0 and 2 of the dword (bytes 1, 3 zeroed by the mask). */
TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes_picks(__m512i pick[4]) {
    for (int p = 0; p < 4; p++) {
        uint8_t ix[64] __attribute__((aligned(64)));
        for (int i = 0; i < 64; i++) ix[i] = (uint8_t)((i & ~3) + p);
        pick[p] = _mm512_load_si512((const void *)ix);
    }
}

/* The weights of byte p of the transposed dwords r (one weight row per dword): the bf16 pair (2b, 2b + 1) of
 * each of the 16 rows, the high nibble in word 2n (weight 2b), the low one in word 2n + 1. */
TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) __m512bh gemv_lanes_pair(__m512i r, __m512i pick,
                                                                                          __m512i table32) {
    const __m512i w8 = _mm512_maskz_permutexvar_epi8(0x5555555555555555ULL, pick, r);
    return (__m512bh)_mm512_permutexvar_epi16(_mm512_srlv_epi16(w8, _mm512_set1_epi32(4)), table32);
}

/* One (column c, pair p) step of the row-lanes kernels: the 16 rows' weight pair wv (bytes b of the rows) times
 * the bf16 pair b of each of MT activation rows, into accumulator p % NACC of the row. */
#define GEMV_LANES_PAIR_STEP(MT, NACC, wv, b, p)                                                                 \
    do {                                                                                                          \
        _Pragma("GCC unroll 8") for (int m = 0; m < (MT); m++) {                                                  \
            int32_t pair;                                                                                         \
            memcpy(&pair, A + m * lda + 2 * (b), 4);                                                              \
            const int a = (p) & ((NACC) - 1);                                                                     \
            blk[a][m] = _mm512_dpbf16_ps(blk[a][m], (wv), (__m512bh)_mm512_set1_epi32(pair));                     \
        }                                                                                                         \
    } while (0)

/* The end of a dword column of the row-lanes kernels: at a block's end, its sums times the 16 rows' scales of the
 * block (scT) into the totals. */
#define GEMV_LANES_COLUMN_END(MT, NACC)                                                                          \
    do {                                                                                                          \
        if (++dw_in_block == dwords_per_block) {                                                                  \
            const __m512 scale = _mm512_load_ps(scT + 16 * block);                                                \
            _Pragma("GCC unroll 8") for (int m = 0; m < (MT); m++) {                                              \
                __m512 sum = blk[0][m];                                                                           \
                _Pragma("GCC unroll 4") for (int a = 1; a < (NACC); a++) sum = _mm512_add_ps(sum, blk[a][m]);     \
                tot[m] = _mm512_fmadd_ps(sum, scale, tot[m]);                                                     \
                _Pragma("GCC unroll 4") for (int a = 0; a < (NACC); a++) blk[a][m] = _mm512_setzero_ps();         \
            }                                                                                                     \
            dw_in_block = 0;                                                                                      \
            block++;                                                                                              \
        }                                                                                                         \
    } while (0)

/* NACC accumulators per activation row (pairs p of a dword take accumulator p % NACC): at least 16 independent
 * vdpbf16ps chains (latency about 6 cycles, 2 per cycle; one chain per row ran at 0.85 per cycle) */
#define GEMV_LANES_NACC(MT) ((MT) <= 4 ? 4 : 2)

/* The 16 weight rows from n0 against MT activation rows, into y. wsave (not NULL): the decoded pairs are also stored
 * there, step s (64 bytes of each row), column c, pair p at wsave[64 s + 4 c + p], for gemv_lanes16_decoded /
 * gemv_lanes32_decoded to take them for more rows. */
TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes16(
    const int MT, const uint8_t *B, int64_t n0, int64_t K, int64_t bs, const uint16_t *A, int64_t lda,
    const float *scT, __m512i table32, gemv_pf *pf, __m512bh *wsave, float *y, int64_t ldy) {
    const int64_t half = K / 2, steps = half / 64, dwords_per_block = bs / 8;
    const int NACC = GEMV_LANES_NACC(MT);
    __m512 tot[GEMV_MT], blk[4][GEMV_MT];
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) {
        tot[m] = _mm512_setzero_ps();
        _Pragma("GCC unroll 4")
        for (int a = 0; a < 4; a++) blk[a][m] = _mm512_setzero_ps();
    }
    __m512i pick[4];
    gemv_lanes_picks(pick);
    int64_t block = 0, dw_in_block = 0;
    for (int64_t s = 0; s < steps; s++) {
        if (pf) gemv_pf_step(pf, 16);
        __m512i r[16];
        gemv_load_t16(B, n0, half, s, r);
        for (int c = 0; c < 16; c++) {
            _Pragma("GCC unroll 4")
            for (int p = 0; p < 4; p++) {
                const __m512bh wv = gemv_lanes_pair(r[c], pick[p], table32);
                if (wsave) _mm512_store_si512((void *)(wsave + 64 * s + 4 * c + p), (__m512i)wv);
                GEMV_LANES_PAIR_STEP(MT, NACC, wv, 64 * s + 4 * c + p, p); /* byte of the rows = pair 2b, 2b + 1 */
            }
            GEMV_LANES_COLUMN_END(MT, NACC);
        }
    }
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) _mm512_storeu_ps(y + m * ldy + n0, tot[m]);
}

/* gemv_lanes16's arithmetic over the pairs it saved in wbuf for steps [s0, s1), for MT more activation rows (more
 * than one pass of rows: the weight is read and decoded once, by the first pass; steps [s0, s1) of it at wbuf). The totals continue from y
 * (s0 > 0) and go back to it, so each output has the same bits as from gemv_lanes16. */
TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes16_decoded(
    const int MT, const __m512bh *wbuf, int64_t n0, int64_t s0, int64_t s1, int64_t bs, const uint16_t *A,
    int64_t lda, const float *scT, float *y, int64_t ldy) {
    const int64_t dwords_per_block = bs / 8;
    const int NACC = GEMV_LANES_NACC(MT);
    __m512 tot[GEMV_MT], blk[4][GEMV_MT];
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) {
        tot[m] = s0 ? _mm512_loadu_ps(y + m * ldy + n0) : _mm512_setzero_ps();
        _Pragma("GCC unroll 4")
        for (int a = 0; a < 4; a++) blk[a][m] = _mm512_setzero_ps();
    }
    int64_t block = 16 * s0 / dwords_per_block, dw_in_block = 0;
    for (int64_t s = s0; s < s1; s++) {
        const __m512bh *w = wbuf + 64 * (s - s0);
        for (int c = 0; c < 16; c++) {
            _Pragma("GCC unroll 4")
            for (int p = 0; p < 4; p++) GEMV_LANES_PAIR_STEP(MT, NACC, w[4 * c + p], 64 * s + 4 * c + p, p);
            GEMV_LANES_COLUMN_END(MT, NACC);
        }
    }
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) _mm512_storeu_ps(y + m * ldy + n0, tot[m]);
}

/* gemv_lanes16_decoded for mt (1..8) activation rows of K words each at A. */
__attribute__((noinline)) TGT_AVX512BF16_VBMI static void gemv_lanes_decoded_tile(int mt, const __m512bh *wbuf,
                                                                                  int64_t n0, int64_t s0, int64_t s1,
                                                                                  int64_t K, int64_t bs,
                                                                                  const uint16_t *A, const float *scT,
                                                                                  float *y, int64_t ldy) {
#define GEMV_LANES_D(T) gemv_lanes16_decoded(T, wbuf, n0, s0, s1, bs, A, K, scT, y, ldy)
    GEMV_SWITCH_MT(mt, GEMV_LANES_D);
#undef GEMV_LANES_D
}

/* gemv_lanes16 for mt (1..8) activation rows of K words each at A. */
__attribute__((noinline)) TGT_AVX512BF16_VBMI static void gemv_lanes_tile(int mt, const uint8_t *B, int64_t n0,
                                                                          int64_t K, int64_t bs, const uint16_t *A,
                                                                          const float *scT, const uint16_t *table16,
                                                                          gemv_pf *pf, __m512bh *wsave, float *y,
                                                                          int64_t ldy) {
    const __m512i table32 = _mm512_loadu_si512((const void *)table16);
#define GEMV_LANES(T) gemv_lanes16(T, B, n0, K, bs, A, K, scT, table32, pf, wsave, y, ldy)
    GEMV_SWITCH_MT(mt, GEMV_LANES);
#undef GEMV_LANES
}

/* Two groups of 16 weight rows at once (the x2 row-lanes kernels): block sums blk[a][k][m] (accumulator a, group k,
 * row m of A), totals in y (group k of row m at y + m * ldy + 16 k). */
TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes2_start(const int MT,
                                                                                       __m512 blk[4][2][GEMV_MT],
                                                                                       float *y, int64_t ldy) {
    _Pragma("GCC unroll 2")
    for (int k = 0; k < 2; k++) {
        _Pragma("GCC unroll 8")
        for (int m = 0; m < MT; m++) {
            _mm512_storeu_ps(y + m * ldy + 16 * k, _mm512_setzero_ps());
            _Pragma("GCC unroll 4")
            for (int a = 0; a < 4; a++) blk[a][k][m] = _mm512_setzero_ps();
        }
    }
}

/* The end of a dword column; at a block's end (every dwords_per_block columns), the NACC sums of each (group, row)
 * times the group's scales of the block (transposed scales scT, and scT + 16 * nbr for the second group) into the
 * totals, the sums zeroed. */
TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes2_column_end(
    const int MT, const int NACC, __m512 blk[4][2][GEMV_MT], const float *scT, int64_t nbr, int64_t dwords_per_block,
    int64_t *dw_in_block, int64_t *block, float *y, int64_t ldy) {
    if (++*dw_in_block < dwords_per_block) return;
    *dw_in_block = 0;
    scT += 16 * (*block)++;
    _Pragma("GCC unroll 2")
    for (int k = 0; k < 2; k++) {
        const __m512 scale = _mm512_load_ps(scT + 16 * nbr * k);
        _Pragma("GCC unroll 8")
        for (int m = 0; m < MT; m++) {
            __m512 sum = blk[0][k][m];
            _Pragma("GCC unroll 4")
            for (int a = 1; a < NACC; a++) sum = _mm512_add_ps(sum, blk[a][k][m]);
            float *t = y + m * ldy + 16 * k;
            _mm512_storeu_ps(t, _mm512_fmadd_ps(sum, scale, _mm512_loadu_ps(t)));
            _Pragma("GCC unroll 4")
            for (int a = 0; a < NACC; a++) blk[a][k][m] = _mm512_setzero_ps();
        }
    }
}

/* gemv_lanes16 for two groups of 16 weight rows at once (rows n0 .. n0 + 31, transposed scales scT and
 * scT + 16 * (K / bs)): each broadcast activation pair feeds both groups, half the broadcast loads per product, and
 * the totals stay in y (zeroed first). With 5 or more rows of A one accumulator per (group, row): the arithmetic of
 * gemv_lanes32_decoded, so later passes over the saved pairs give their rows the same sums. wsave (not NULL): group
 * k's decoded pairs also go to wsave[k], laid out as gemv_lanes16 saves them. */
#define GEMV_LANES_X2_NACC(MT) ((MT) >= 5 ? 1 : (MT) >= 3 ? 2 : 4) /* >= 12 vdpbf16ps chains (8 with one row) */

TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes32(
    const int MT, const uint8_t *B, int64_t n0, int64_t K, int64_t bs, const uint16_t *A, int64_t lda,
    const float *scT, __m512i table32, gemv_pf *pf, __m512bh *const *wsave, float *y, int64_t ldy) {
    const int64_t half = K / 2, steps = half / 64, dwords_per_block = bs / 8, nbr = K / bs;
    const int NACC = GEMV_LANES_X2_NACC(MT);
    __m512 blk[4][2][GEMV_MT];
    gemv_lanes2_start(MT, blk, y + n0, ldy);
    __m512i pick[4];
    gemv_lanes_picks(pick);
    int64_t block = 0, dw_in_block = 0;
    for (int64_t s = 0; s < steps; s++) {
        if (pf) gemv_pf_step(pf, 32);
        __m512i r[2][16];
        for (int k = 0; k < 2; k++) gemv_load_t16(B, n0 + 16 * k, half, s, r[k]);
        for (int c = 0; c < 16; c++) {
            _Pragma("GCC unroll 4")
            for (int p = 0; p < 4; p++) {
                const __m512bh w0 = gemv_lanes_pair(r[0][c], pick[p], table32);
                const __m512bh w1 = gemv_lanes_pair(r[1][c], pick[p], table32);
                const int64_t b = 64 * s + 4 * c + p; /* byte of the rows = pair 2b, 2b + 1 */
                if (wsave) {
                    _mm512_store_si512((void *)(wsave[0] + b), (__m512i)w0);
                    _mm512_store_si512((void *)(wsave[1] + b), (__m512i)w1);
                }
                const int a = p & (NACC - 1);
                _Pragma("GCC unroll 8")
                for (int m = 0; m < MT; m++) {
                    int32_t pr;
                    memcpy(&pr, A + m * lda + 2 * b, 4);
                    const __m512bh x = (__m512bh)_mm512_set1_epi32(pr);
                    blk[a][0][m] = _mm512_dpbf16_ps(blk[a][0][m], w0, x);
                    blk[a][1][m] = _mm512_dpbf16_ps(blk[a][1][m], w1, x);
                }
            }
            gemv_lanes2_column_end(MT, NACC, blk, scT, nbr, dwords_per_block, &dw_in_block, &block, y + n0, ldy);
        }
    }
}

/* gemv_lanes32 for mt (1..8) activation rows of K words each at A. */
__attribute__((noinline)) TGT_AVX512BF16_VBMI static void gemv_lanes32_tile(int mt, const uint8_t *B, int64_t n0,
                                                                            int64_t K, int64_t bs, const uint16_t *A,
                                                                            const float *scT, const uint16_t *table16,
                                                                            gemv_pf *pf, __m512bh *const *wsave,
                                                                            float *y, int64_t ldy) {
    const __m512i table32 = _mm512_loadu_si512((const void *)table16);
#define GEMV_LANES_X2(T) gemv_lanes32(T, B, n0, K, bs, A, K, scT, table32, pf, wsave, y, ldy)
    GEMV_SWITCH_MT(mt, GEMV_LANES_X2);
#undef GEMV_LANES_X2
}

/* float32 activations, several rows, in row lanes as gemv_lanes16: each nibble of the transposed dwords is looked
 * up in the float32 code book (vpermps takes the index's low 4 bits, so a shift is all the extraction) and multiplied
 * with the broadcast activation of each of MT rows (one vfmadd231ps with a {1to16} operand per 16 weights and row).
 * The activations are in the p8 layout (gemv_layout_p8): nibble s of dword column c of step u (128 weights) is the
 * weight that X[128 u + 16 s + c] multiplies, so the kernel reads them with no layout of its own. Against the p8
 * batched kernel (one activation load per 16 products, the load port its limit) this needs no vector loads of A. */
#define GEMV_LANES_F32_NACC(MT) ((MT) >= 8 ? 1 : (MT) >= 4 ? 2 : 4) /* >= 8 independent FMA chains */

TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes16_f32(
    const int MT, const uint8_t *B, int64_t n0, int64_t K, int64_t bs, const float *X, int64_t ldx,
    const float *scT, __m512 table, gemv_pf *pf, float *y, int64_t ldy) {
    const int64_t half = K / 2, steps = half / 64, dwords_per_block = bs / 8;
    const int NACC = GEMV_LANES_F32_NACC(MT);
    __m512 tot[GEMV_MT], blk[4][GEMV_MT];
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) {
        tot[m] = _mm512_setzero_ps();
        _Pragma("GCC unroll 4")
        for (int a = 0; a < 4; a++) blk[a][m] = _mm512_setzero_ps();
    }
    int64_t block = 0, dw_in_block = 0;
    for (int64_t s = 0; s < steps; s++) {
        if (pf) gemv_pf_step(pf, 16);
        __m512i r[16];
        gemv_load_t16(B, n0, half, s, r);
        const float *xs = X + 128 * s;
        for (int c = 0; c < 16; c++) {
            _Pragma("GCC unroll 8")
            for (int ph = 0; ph < 8; ph++) {
                const __m512 wv = _mm512_permutexvar_ps(ph ? _mm512_srli_epi32(r[c], 4 * ph) : r[c], table);
                _Pragma("GCC unroll 8")
                for (int m = 0; m < MT; m++) {
                    const int a = ph & (NACC - 1);
                    blk[a][m] = _mm512_fmadd_ps(wv, _mm512_set1_ps(xs[m * ldx + 16 * ph + c]), blk[a][m]);
                }
            }
            GEMV_LANES_COLUMN_END(MT, NACC);
        }
    }
    _Pragma("GCC unroll 8")
    for (int m = 0; m < MT; m++) _mm512_storeu_ps(y + m * ldy + n0, tot[m]);
}

/* gemv_lanes16_f32 for mt (1..8) activation rows in the p8 layout at X, ldx floats apart. */
__attribute__((noinline)) TGT_AVX512BF16_VBMI static void gemv_lanes_f32_tile(int mt, const uint8_t *B, int64_t n0,
                                                                              int64_t K, int64_t bs, const float *X,
                                                                              int64_t ldx, const float *scT,
                                                                              const float *code, gemv_pf *pf, float *y,
                                                                              int64_t ldy) {
    const __m512 table = _mm512_loadu_ps(code);
#define GEMV_LANES_F(T) gemv_lanes16_f32(T, B, n0, K, bs, X, ldx, scT, table, pf, y, ldy)
    GEMV_SWITCH_MT(mt, GEMV_LANES_F);
#undef GEMV_LANES_F
}

/* gemv_lanes16_f32 for two groups of 16 weight rows at once (rows n0 .. n0 + 31, transposed scales scT and
 * scT + 16 * (K / bs)): each broadcast activation feeds both groups, one load per two products (the broadcasts were
 * the limit of gemv_lanes16_f32: one per product, two per cycle). The totals stay in y (zeroed first). */
#define GEMV_LANES_F32X2_NACC(MT) ((MT) >= 4 ? 1 : (MT) >= 2 ? 2 : 4) /* >= 8 independent FMA chains */

TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes32_f32(
    const int MT, const uint8_t *B, int64_t n0, int64_t K, int64_t bs, const float *X, int64_t ldx,
    const float *scT, __m512 table, gemv_pf *pf, float *y, int64_t ldy) {
    const int64_t half = K / 2, steps = half / 64, dwords_per_block = bs / 8, nbr = K / bs;
    const int NACC = GEMV_LANES_F32X2_NACC(MT);
    __m512 blk[4][2][GEMV_MT];
    gemv_lanes2_start(MT, blk, y + n0, ldy);
    int64_t block = 0, dw_in_block = 0;
    for (int64_t s = 0; s < steps; s++) {
        if (pf) gemv_pf_step(pf, 32);
        __m512i r[2][16];
        for (int k = 0; k < 2; k++) gemv_load_t16(B, n0 + 16 * k, half, s, r[k]);
        const float *xs = X + 128 * s;
        for (int c = 0; c < 16; c++) {
            _Pragma("GCC unroll 8")
            for (int ph = 0; ph < 8; ph++) {
                const __m512 w0 = _mm512_permutexvar_ps(ph ? _mm512_srli_epi32(r[0][c], 4 * ph) : r[0][c], table);
                const __m512 w1 = _mm512_permutexvar_ps(ph ? _mm512_srli_epi32(r[1][c], 4 * ph) : r[1][c], table);
                const int a = ph & (NACC - 1);
                _Pragma("GCC unroll 8")
                for (int m = 0; m < MT; m++) {
                    const __m512 x = _mm512_set1_ps(xs[m * ldx + 16 * ph + c]);
                    blk[a][0][m] = _mm512_fmadd_ps(w0, x, blk[a][0][m]);
                    blk[a][1][m] = _mm512_fmadd_ps(w1, x, blk[a][1][m]);
                }
            }
            gemv_lanes2_column_end(MT, NACC, blk, scT, nbr, dwords_per_block, &dw_in_block, &block, y + n0, ldy);
        }
    }
}

/* gemv_lanes32_f32 for mt (1..8) activation rows in the p8 layout at X, ldx floats apart. */
__attribute__((noinline)) TGT_AVX512BF16_VBMI static void gemv_lanes32_f32_tile(int mt, const uint8_t *B, int64_t n0,
                                                                                int64_t K, int64_t bs, const float *X,
                                                                                int64_t ldx, const float *scT,
                                                                                const float *code, gemv_pf *pf,
                                                                                float *y, int64_t ldy) {
    const __m512 table = _mm512_loadu_ps(code);
#define GEMV_LANES_F2(T) gemv_lanes32_f32(T, B, n0, K, bs, X, ldx, scT, table, pf, y, ldy)
    GEMV_SWITCH_MT(mt, GEMV_LANES_F2);
#undef GEMV_LANES_F2
}

/* gemv_lanes16_decoded for two groups of 16 weight rows at once (rows n0 + 16 k .. for group k, pairs saved in
 * w[k], transposed scales scT[k]): each broadcast activation pair feeds both groups, one accumulator per (group,
 * row of A) is 16 independent vdpbf16ps chains, and the totals stay in y (zeroed at s0 = 0). Steps [s0, s1), whole
 * blocks: half the loads per product of gemv_lanes16_decoded, whose loads were its limit. */
TGT_AVX512BF16_VBMI static inline __attribute__((always_inline)) void gemv_lanes32_decoded(
    const int MT, const __m512bh *const *w, const int64_t *n0, int64_t s0, int64_t s1, int64_t bs,
    const uint16_t *A, int64_t lda, const float *const *scT, float *y, int64_t ldy) {
    const int64_t dwords_per_block = bs / 8;
    __m512 blk[2][GEMV_MT];
    _Pragma("GCC unroll 2")
    for (int k = 0; k < 2; k++) {
        _Pragma("GCC unroll 8")
        for (int m = 0; m < MT; m++) {
            blk[k][m] = _mm512_setzero_ps();
            if (s0 == 0) _mm512_storeu_ps(y + m * ldy + n0[k], blk[k][m]);
        }
    }
    int64_t block = 16 * s0 / dwords_per_block, dw_in_block = 0;
    for (int64_t s = s0; s < s1; s++) {
        const int64_t o = 64 * s;
        for (int c = 0; c < 16; c++) {
            _Pragma("GCC unroll 4")
            for (int p = 0; p < 4; p++) {
                const __m512bh w0 = w[0][o + 4 * c + p], w1 = w[1][o + 4 * c + p];
                const int64_t b = 64 * s + 4 * c + p;
                _Pragma("GCC unroll 8")
                for (int m = 0; m < MT; m++) {
                    int32_t pr;
                    memcpy(&pr, A + m * lda + 2 * b, 4);
                    const __m512bh x = (__m512bh)_mm512_set1_epi32(pr);
                    blk[0][m] = _mm512_dpbf16_ps(blk[0][m], w0, x);
                    blk[1][m] = _mm512_dpbf16_ps(blk[1][m], w1, x);
                }
            }
            if (++dw_in_block == dwords_per_block) {
                _Pragma("GCC unroll 2")
                for (int k = 0; k < 2; k++) {
                    const __m512 scale = _mm512_load_ps(scT[k] + 16 * block);
                    _Pragma("GCC unroll 8")
                    for (int m = 0; m < MT; m++) {
                        float *t = y + m * ldy + n0[k];
                        _mm512_storeu_ps(t, _mm512_fmadd_ps(blk[k][m], scale, _mm512_loadu_ps(t)));
                        blk[k][m] = _mm512_setzero_ps();
                    }
                }
                dw_in_block = 0;
                block++;
            }
        }
    }
}

/* gemv_lanes32_decoded for mt (1..8) activation rows of K words each at A. */
__attribute__((noinline)) TGT_AVX512BF16_VBMI static void gemv_lanes32_decoded_tile(int mt, const __m512bh *const *w,
                                                                                    const int64_t *n0, int64_t s0,
                                                                                    int64_t s1, int64_t K, int64_t bs,
                                                                                    const uint16_t *A,
                                                                                    const float *const *scT, float *y,
                                                                                    int64_t ldy) {
#define GEMV_LANES_P(T) gemv_lanes32_decoded(T, w, n0, s0, s1, bs, A, K, scT, y, ldy)
    GEMV_SWITCH_MT(mt, GEMV_LANES_P);
#undef GEMV_LANES_P
}

/* scT[16 b + i] = sc[i][b]: the block scales of 16 weight rows, block by block (nbr blocks; scT 64-byte aligned). */
TGT_AVX512BF16_VBMI static void gemv_scales_t16(const float *const sc[16], int64_t nbr, float *scT) {
    for (int64_t b0 = 0; b0 < nbr; b0 += 16) {
        const int cnt = (int)bnbq_min64(16, nbr - b0);
        const __mmask16 m = (__mmask16)((1u << cnt) - 1u);
        __m512i r[16];
        for (int i = 0; i < 16; i++) r[i] = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, sc[i] + b0));
        gemv_transpose16(r); /* r[j]: block b0 + j of the 16 rows */
        for (int j = 0; j < cnt; j++) _mm512_store_si512((void *)(scT + 16 * (b0 + j)), r[j]);
    }
}

/* The row-lanes passes after the first (rows GEMV_MT.. of A) for ng (1 or 2) decoded groups of 16 weight rows at
 * n0[k] (their pairs in wbuf slot k, transposed scales at scT + 16 nbr k), chunk by chunk of K, so that a chunk of the
 * decoded weight and of each pass's rows of A stay in L1 for all passes. */
TGT_AVX512BF16_VBMI static void gemv_lanes_decoded_passes(int64_t M, int64_t N, int64_t K, int64_t bs,
                                                          const uint16_t *A, const int64_t *n0, int ng,
                                                          const float *scT, const __m512bh *wbuf, float *y) {
    const int64_t steps = K / 128, chunk_steps = gemv_lanes_chunk(bs) / 128, nbr = K / bs;
    const __m512bh *w[2] = {wbuf, wbuf + K / 2};
    const float *sct[2] = {scT, scT + 16 * nbr};
    for (int64_t s0 = 0; s0 < steps; s0 += chunk_steps) {
        const int64_t s1 = bnbq_min64(steps, s0 + chunk_steps);
        for (int64_t m0 = GEMV_MT; m0 + GEMV_LANES_MIN_ROWS <= M; m0 += GEMV_MT) {
            const int mt = (int)bnbq_min64(GEMV_MT, M - m0);
            if (ng == 2)
                gemv_lanes32_decoded_tile(mt, w, n0, s0, s1, K, bs, A + m0 * K, sct, y + m0 * N, N);
            else
                gemv_lanes_decoded_tile(mt, w[0] + 64 * s0, n0[0], s0, s1, K, bs, A + m0 * K, sct[0], y + m0 * N, N);
        }
    }
}

/* Weight rows [r_begin, r_end) against the M laid-out activation rows at X (row m at X + m * ldx floats):
 * y[m * N + r]. Groups of GEMV_MULTI_GROUP weight rows (their scales decoded together) go over each chunk of
 * GEMV_MT activation rows; the weight is read from memory in the first pass (m0 = 0), which steps the prefetch
 * stream, and from L1/L2 in the next ones. */
TGT_AVX512BF16 void bnbq_gemv_range_batched(const int kind, const uint8_t *B, int64_t r_begin, int64_t r_end,
                                            int64_t M, int64_t N, int64_t K, int64_t bs, const float *X, int64_t ldx,
                                            const float *code, const uint16_t *table16_src, const absmax_src *am,
                                            const uint16_t *A_bf16, int lanes_f32, float *rowbuf, float *scT,
                                            void *wbuf, float *y) {
    const __m512 table = _mm512_loadu_ps(code);
    const __m512i table16 = _mm512_loadu_si512((const void *)table16_src);
    const int64_t nbr = K / bs, unit = kind == GEMV_KIND_BF16 ? 64 : 128, units = K / unit;
    const int64_t act_bytes = kind == GEMV_KIND_P8 ? 4 : 2;
    const int64_t chunk = bnbq_max64(1, GEMV_CHUNK_BYTES / (unit * act_bytes)); /* units per chunk */
    gemv_pair st[GEMV_MULTI_GROUP][GEMV_MT] __attribute__((aligned(64)));
    gemv_pf pf = gemv_pf_start(B, r_begin, r_end, K / 2, GEMV_PREFETCH);
    int slot = 0;           /* decoded groups waiting for their other passes */
    int64_t pending[2] = {0, 0}; /* their first rows */
    for (int64_t r0 = r_begin; r0 < r_end; r0 += GEMV_MULTI_GROUP) {
        if (lanes_f32 && GEMV_MULTI_GROUP == 16 && M >= GEMV_LANES_F32X2_MIN_ROWS && r_end - r0 >= 32) {
            /* float32 row lanes, two groups of 16 weight rows at a time */
            gemv_prefetch_scales(am, r0 + 32, 32, nbr);
            for (int k = 0; k < 2; k++) {
                const float *sc[16];
                bnbq_gemv_row_scales(am, r0 + 16 * k, 16, nbr, rowbuf, sc);
                gemv_scales_t16(sc, nbr, scT + 16 * nbr * k);
            }
            for (int64_t m0 = 0; m0 < M; m0 += GEMV_MT)
                gemv_lanes32_f32_tile((int)bnbq_min64(GEMV_MT, M - m0), B, r0, K, bs, X + m0 * ldx, ldx, scT, code,
                                      m0 == 0 ? &pf : NULL, y + m0 * N, N);
            r0 += 16; /* and 16 more by the loop */
            continue;
        }
        if (A_bf16 && GEMV_MULTI_GROUP == 16 && M >= GEMV_LANES_MIN_ROWS &&
            (M % GEMV_MT == 0 || M % GEMV_MT >= GEMV_LANES_MIN_ROWS) && r_end - r0 >= 32) {
            /* bf16 row lanes, every pass of rows in row lanes: two groups of 16 weight rows at a time; with more than
             * one pass the first saves both groups' pairs (wbuf slots 0 and 1) and the others run on them */
            const int dec = wbuf && M - GEMV_MT >= GEMV_LANES_MIN_ROWS;
            if (dec && slot) { /* a lone group waiting for its other passes */
                gemv_lanes_decoded_passes(M, N, K, bs, A_bf16, pending, 1, scT, (const __m512bh *)wbuf, y);
                slot = 0;
            }
            gemv_prefetch_scales(am, r0 + 32, 32, nbr);
            for (int k = 0; k < 2; k++) {
                const float *sc[16];
                bnbq_gemv_row_scales(am, r0 + 16 * k, 16, nbr, rowbuf, sc);
                gemv_scales_t16(sc, nbr, scT + 16 * nbr * k);
            }
            __m512bh *ws[2] = {(__m512bh *)wbuf, (__m512bh *)wbuf + K / 2};
            for (int64_t m0 = 0; m0 < (dec ? 1 : M); m0 += GEMV_MT)
                gemv_lanes32_tile((int)bnbq_min64(GEMV_MT, M - m0), B, r0, K, bs, A_bf16 + m0 * K, scT, table16_src,
                                  m0 == 0 ? &pf : NULL, dec ? ws : NULL, y + m0 * N, N);
            if (dec) {
                const int64_t n0s[2] = {r0, r0 + 16};
                gemv_lanes_decoded_passes(M, N, K, bs, A_bf16, n0s, 2, scT, (const __m512bh *)wbuf, y);
            }
            r0 += 16; /* and 16 more by the loop */
            continue;
        }
        const int g = (int)bnbq_min64(GEMV_MULTI_GROUP, r_end - r0);
        const float *sc[GEMV_MULTI_GROUP];
        gemv_prefetch_scales(am, r0 + GEMV_MULTI_GROUP, GEMV_MULTI_GROUP, nbr);
        bnbq_gemv_row_scales(am, r0, g, nbr, rowbuf, sc);
        const int64_t min_rows = lanes_f32 ? GEMV_LANES_F32_MIN_ROWS : GEMV_LANES_MIN_ROWS;
        const int lanes = (A_bf16 || lanes_f32) && g == 16 && M >= min_rows;
        /* more than one row-lanes pass (M > GEMV_MT): the first pass saves the decoded weight of the group (wbuf, slot
         * 0 or 1), and the other passes run on it, two groups at a time, once the second group is decoded */
        const int decoded = lanes && wbuf && M - GEMV_MT >= GEMV_LANES_MIN_ROWS;
        float *scTg = decoded ? scT + slot * 16 * nbr : scT;
        __m512bh *wg = decoded ? (__m512bh *)wbuf + slot * (K / 2) : NULL; /* K / 128 steps of 64 pairs */
        if (lanes) gemv_scales_t16(sc, nbr, scTg);
        for (int64_t m0 = 0; m0 < M; m0 += GEMV_MT) {
            const int mt = (int)bnbq_min64(GEMV_MT, M - m0);
            const float *Xm = X + m0 * ldx;
            gemv_pf *p = m0 == 0 ? &pf : NULL;
            if (lanes && lanes_f32 && mt >= min_rows) { /* row lanes, float32: A in the p8 layout */
                gemv_lanes_f32_tile(mt, B, r0, K, bs, Xm, ldx, scTg, code, p, y + m0 * N, N);
                continue;
            }
            if (lanes && !lanes_f32 && mt >= GEMV_LANES_MIN_ROWS) { /* row lanes: 16 weight rows, A as it is */
                if (m0 && decoded) continue;
                gemv_lanes_tile(mt, B, r0, K, bs, A_bf16 + m0 * K, scTg, table16_src, p, wg, y + m0 * N, N);
                continue;
            }
            for (int rr = 0; rr < g; rr++)
                for (int m = 0; m < mt; m++) st[rr][m].acc = st[rr][m].part = _mm512_setzero_ps();
            for (int64_t c0 = 0; c0 < units; c0 += chunk) {
                const int64_t c1 = bnbq_min64(units, c0 + chunk);
                int rr = 0;
                if (kind == GEMV_KIND_P4)
                    for (; rr + 2 <= g; rr += 2) {
                        const uint8_t *w2[2] = {B + (r0 + rr) * (K / 2), B + (r0 + rr + 1) * (K / 2)};
                        const float *sc2[2] = {sc[rr], sc[rr + 1]};
                        for (int m1 = 0; m1 < mt; m1 += GEMV_X2_MT) {
                            gemv_pair *st2[2] = {st[rr] + m1, st[rr + 1] + m1};
                            const float *Xq = Xm + m1 * ldx;
                            gemv_pf *q = m1 == 0 ? p : NULL;
                            switch (bnbq_min64(GEMV_X2_MT, mt - m1)) {
                            case 1: gemv_multi_p4x2(1, w2, c0, c1, bs, Xq, ldx, table16, sc2, q, st2); break;
                            case 2: gemv_multi_p4x2(2, w2, c0, c1, bs, Xq, ldx, table16, sc2, q, st2); break;
                            case 3: gemv_multi_p4x2(3, w2, c0, c1, bs, Xq, ldx, table16, sc2, q, st2); break;
                            default: gemv_multi_p4x2(4, w2, c0, c1, bs, Xq, ldx, table16, sc2, q, st2); break;
                            }
                        }
                    }
                for (; rr < g; rr++) {
                    const uint8_t *w = B + (r0 + rr) * (K / 2);
                    if (kind == GEMV_KIND_P8)
                        GEMV_MULTI_MT(GEMV_KIND_P8)
                    else if (kind == GEMV_KIND_P4)
                        GEMV_MULTI_MT(GEMV_KIND_P4)
                    else
                        GEMV_MULTI_MT(GEMV_KIND_BF16)
                }
            }
            for (int rr = 0; rr < g; rr++)
                for (int m = 0; m < mt; m++) y[(m0 + m) * N + r0 + rr] = _mm512_reduce_add_ps(st[rr][m].acc);
        }
        if (decoded) {
            pending[slot] = r0;
            if (++slot == 2) {
                gemv_lanes_decoded_passes(M, N, K, bs, A_bf16, pending, 2, scT, (const __m512bh *)wbuf, y);
                slot = 0;
            }
        }
    }
    if (slot) gemv_lanes_decoded_passes(M, N, K, bs, A_bf16, pending, 1, scT, (const __m512bh *)wbuf, y);
}
#undef GEMV_MULTI_MT
#endif /* BNBQ_X86 */
