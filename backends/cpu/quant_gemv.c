/* Fused 4-bit gemv: y[r] = sum_k A[k] * code[q(r, k)] * absmax(block of r*K + k), one row of activations.
 *
 * The weight is never materialized: each 16-byte chunk of packed codes is widened to 16 lanes, the high
 * and low nibbles are looked up in the 16-entry code book held in a register (vpermps), and multiplied
 * with the activations split once per call into even and odd elements (so no nibble shuffling is
 * needed). Each block's partial sum is scaled by its absmax; nested absmax (uint8 codes of
 * absmax - offset, blockwise with a 256-entry code book) is decoded inline per block. Rows are split
 * across OpenMP threads; the fast paths need K % blocksize == 0 (every row starts a block), otherwise the
 * portable path serves, which handles any layout.
 */
#include <stdlib.h>

#include "quant_internal.h"

#define GEMV_CHUNK_ROWS 64 /* rows per scheduling unit (a multiple of GEMV_MAX_ROWS) */
#define GEMV_PREFETCH 8192 /* bytes ahead in each weight row stream */

typedef struct {
    const float *absmax;        /* float32 absmax per block, or NULL when nested */
    const uint8_t *absmax_q;    /* nested: uint8 codes per block */
    const float *nested_absmax; /* nested: float32 per nested block */
    const float *nested_code;   /* nested: 256 entries */
    float offset;
    int nested_shift; /* log2(nested_blocksize) */
} absmax_src;

BNBQ_INLINE float block_absmax(const absmax_src *a, int64_t g) {
    if (a->absmax) return a->absmax[g];
    return a->nested_code[a->absmax_q[g]] * a->nested_absmax[g >> a->nested_shift] + a->offset;
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
#define GEMV_MAX_ROWS 4

/* R rows at once (sharing the activation loads); K % bs == 0, bs >= 32. Ae/Ao: even/odd activations. */
TGT_AVX512 static inline __attribute__((always_inline)) void gemv_rows_avx512(
    const int R, const uint8_t *B, int64_t r0, int64_t K, int64_t bs, const float *Ae, const float *Ao,
    __m512 table, const absmax_src *am, float *y) {
    const int64_t nbr = K / bs, half = K / 2, hb = bs / 2;
    const uint8_t *w[GEMV_MAX_ROWS];
    __m512 acc[GEMV_MAX_ROWS];
    for (int rr = 0; rr < R; rr++) {
        w[rr] = B + (r0 + rr) * half;
        acc[rr] = _mm512_setzero_ps();
    }
    for (int64_t j = 0; j < nbr; j++) {
        __m512 b0[GEMV_MAX_ROWS], b1[GEMV_MAX_ROWS];
        for (int rr = 0; rr < R; rr++) b0[rr] = b1[rr] = _mm512_setzero_ps();
        if (((j * hb) & 63) == 0)
            for (int rr = 0; rr < R; rr++) _mm_prefetch((const char *)(w[rr] + j * hb + GEMV_PREFETCH), _MM_HINT_T0);
        for (int64_t off = j * hb; off < (j + 1) * hb; off += 16) {
            const __m512 ae = _mm512_loadu_ps(Ae + off), ao = _mm512_loadu_ps(Ao + off);
            for (int rr = 0; rr < R; rr++) {
                const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(w[rr] + off)));
                b0[rr] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table), ae, b0[rr]);
                b1[rr] = _mm512_fmadd_ps(_mm512_permutexvar_ps(q, table), ao, b1[rr]);
            }
        }
        for (int rr = 0; rr < R; rr++)
            acc[rr] = _mm512_fmadd_ps(_mm512_add_ps(b0[rr], b1[rr]),
                                      _mm512_set1_ps(block_absmax(am, (r0 + rr) * nbr + j)), acc[rr]);
    }
    for (int rr = 0; rr < R; rr++) y[rr] = _mm512_reduce_add_ps(acc[rr]);
}

TGT_AVX512 static void gemv_range_avx512(const uint8_t *B, int64_t r_begin, int64_t r_end, int64_t K, int64_t bs,
                                         const float *Ae, const float *Ao, const float *code, const absmax_src *am,
                                         float *y) {
    const __m512 table = _mm512_loadu_ps(code);
    int64_t r = r_begin;
    for (; r + GEMV_MAX_ROWS <= r_end; r += GEMV_MAX_ROWS)
        gemv_rows_avx512(GEMV_MAX_ROWS, B, r, K, bs, Ae, Ao, table, am, y + r);
    for (; r < r_end; r++) gemv_rows_avx512(1, B, r, K, bs, Ae, Ao, table, am, y + r);
}

/* AVX2: 8 bytes (16 codes) at a time; the 16-entry table is two 8-entry halves selected by bit 3. */
TGT_AVX2 static inline __m256 lookup16_avx2(__m256i idx, __m256i bit3_to_sign, __m256 tlo, __m256 thi) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(tlo, idx), _mm256_permutevar8x32_ps(thi, idx),
                            _mm256_castsi256_ps(bit3_to_sign));
}

TGT_AVX2 static void gemv_range_avx2(const uint8_t *B, int64_t r_begin, int64_t r_end, int64_t K, int64_t bs,
                                     const float *Ae, const float *Ao, const float *code, const absmax_src *am,
                                     float *y) {
    const __m256 tlo = _mm256_loadu_ps(code), thi = _mm256_loadu_ps(code + 8);
    const int64_t nbr = K / bs, half = K / 2, hb = bs / 2;
    for (int64_t r = r_begin; r < r_end; r++) {
        const uint8_t *w = B + r * half;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t j = 0; j < nbr; j++) {
            __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
            for (int64_t off = j * hb; off < (j + 1) * hb; off += 8) {
                __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(w + off)));
                __m256i hi = _mm256_srli_epi32(q, 4);
                b0 = _mm256_fmadd_ps(lookup16_avx2(hi, _mm256_slli_epi32(q, 24), tlo, thi), _mm256_loadu_ps(Ae + off), b0);
                b1 = _mm256_fmadd_ps(lookup16_avx2(q, _mm256_slli_epi32(q, 28), tlo, thi), _mm256_loadu_ps(Ao + off), b1);
            }
            acc = _mm256_fmadd_ps(_mm256_add_ps(b0, b1), _mm256_set1_ps(block_absmax(am, r * nbr + j)), acc);
        }
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[r] = _mm_cvtss_f32(s);
    }
}
#endif

int bnbq_gemv_4bit(const void *A, int dtype, int64_t K, const uint8_t *B, int64_t B_len, int64_t N,
                   const float *absmax, const uint8_t *absmax_q, int64_t absmax_len, const float *code,
                   int64_t code_len, int64_t blocksize, const float *nested_absmax, int64_t nested_len,
                   const float *nested_code, int64_t nested_code_len, float nested_offset, int64_t nested_blocksize,
                   void *out, int64_t out_len, int nthreads) {
    if (!bnbq_valid_dtype(dtype) || K < 0 || N < 0 || code_len != 16 || !bnbq_is_pow2(blocksize) || blocksize < 2)
        return BNBQ_EINVAL;
    if (K > 0 && N > INT64_MAX / K) return BNBQ_EINVAL;
    const int64_t n = N * K, nb = (n + blocksize - 1) / blocksize;
    if (B_len != (n + 1) / 2 || absmax_len != nb || out_len != N || (nb > 0 && (absmax == NULL) == (absmax_q == NULL)))
        return BNBQ_EINVAL;
    absmax_src am = {absmax, absmax_q, nested_absmax, nested_code, nested_offset, 0};
    if (absmax_q) {
        if (!nested_absmax || !nested_code || nested_code_len != 256 || !bnbq_is_pow2(nested_blocksize) ||
            nested_len != (nb + nested_blocksize - 1) / nested_blocksize)
            return BNBQ_EINVAL;
        am.nested_shift = bnbq_log2(nested_blocksize);
    }
    if (N == 0) return BNBQ_OK;
    if (!out || !code) return BNBQ_EINVAL;
    if (K == 0) {
        for (int64_t r = 0; r < N; r++) bnbq_store(out, dtype, r, 0.0f);
        return BNBQ_OK;
    }
    if (!A || !B) return BNBQ_EINVAL;

    float *buf = (float *)malloc(sizeof(float) * (size_t)(K + N));
    if (!buf) return BNBQ_ENOMEM;
    float *y = buf + K;
    const int isa = bnbq_isa_level();
    const int fast = isa != BNBQ_ISA_GENERIC && K % blocksize == 0 && blocksize >= 32;
    if (fast) { /* even elements then odd elements */
        const int64_t half = K / 2;
        for (int64_t i = 0; i < half; i++) {
            buf[i] = bnbq_load(A, dtype, 2 * i);
            buf[half + i] = bnbq_load(A, dtype, 2 * i + 1);
        }
    } else {
        for (int64_t i = 0; i < K; i++) buf[i] = bnbq_load(A, dtype, i);
    }
    int team = bnbq_team(nthreads, n);
    if (team > N) team = (int)N;
    /* chunks of GEMV_CHUNK_ROWS rows handed out dynamically: a thread that loses its core to another
     * process does not hold back half of the rows */
    const int64_t chunks = (N + GEMV_CHUNK_ROWS - 1) / GEMV_CHUNK_ROWS;
#pragma omp parallel for num_threads(team) if (team > 1) schedule(dynamic, 1)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t r_begin = c * GEMV_CHUNK_ROWS, r_end = bnbq_min64(N, r_begin + GEMV_CHUNK_ROWS);
#if BNBQ_X86
        if (fast && isa == BNBQ_ISA_AVX512)
            gemv_range_avx512(B, r_begin, r_end, K, blocksize, buf, buf + K / 2, code, &am, y);
        else if (fast)
            gemv_range_avx2(B, r_begin, r_end, K, blocksize, buf, buf + K / 2, code, &am, y);
        else
#endif
            for (int64_t r = r_begin; r < r_end; r++) y[r] = gemv_row_generic(buf, B, r, K, blocksize, code, &am);
    }
    for (int64_t r = 0; r < N; r++) bnbq_store(out, dtype, r, y[r]);
    free(buf);
    return BNBQ_OK;
}
