/* LLM.int8() kernels: row-wise int8 quantization with outlier columns, exact int8 x int8 -> int32
 * matmul (AVX-512 VNNI / AVX2 vpmaddwd / portable), the int32 -> float dequantization fused with the
 * bias, and a fused batch-1 int8_mm_outlier.
 *
 * Semantics are those of core/reference/int8.py: entries with |x| >= threshold (threshold > 0) are left
 * out of the row absmax and every column holding one is zeroed in the codes; codes = rint(x * (127 /
 * absmax)) clamped to [-127, 127]; dequant = (A * (row * col)) * (1/127^2) + bias in float32, in that
 * order. Integer products wrap modulo 2^32 like torch's int32 arithmetic.
 */
#include <stdlib.h>

#include "quant_internal.h"

static const float INV_127_SQ = (float)(1.0 / (127.0 * 127.0));

/* ================================ vectorwise quant ================================ */

BNBQ_INLINE int8_t quant_code(float x, float scale) {
    float r = rintf(x * scale);
    r = r < -127.0f ? -127.0f : (r > 127.0f ? 127.0f : r);
    return r == r ? (int8_t)r : 0;
}

/* One row: absmax of the entries below the threshold (all entries if threshold == 0), outlier flags in
 * `tflags` (this thread's array), then the codes of the row with its outliers set to 0. */
BNBQ_INLINE void vq_row_body(const void *A, int dtype, int64_t row, int64_t K, float thr, int8_t *codes,
                             float *row_absmax, uint8_t *tflags) {
    const int64_t s = row * K;
    float amax = 0.0f;
    int nan = 0;
    for (int64_t k = 0; k < K; k++) {
        const float a = fabsf(bnbq_load(A, dtype, s + k));
        if (thr > 0.0f && a >= thr) {
            tflags[k] = 1;
            continue;
        }
        nan |= a != a;
        amax = a > amax ? a : amax;
    }
    if (nan) amax = NAN; /* torch's amax propagates NaN (its codes are then all 0) */
    row_absmax[row] = amax;
    const float scale = amax > 0.0f ? (1.0f / amax) * 127.0f : 0.0f; /* torch: 127 / t is reciprocal(t) * 127 */
    for (int64_t k = 0; k < K; k++) {
        const float x = bnbq_load(A, dtype, s + k);
        codes[s + k] = (thr > 0.0f && fabsf(x) >= thr) ? 0 : quant_code(x, scale);
    }
}

static void vq_row_generic(const void *A, int dtype, int64_t row, int64_t K, float thr, int8_t *codes,
                           float *row_absmax, uint8_t *tflags) {
    vq_row_body(A, dtype, row, K, thr, codes, row_absmax, tflags);
}

#if BNBQ_X86
TGT_AVX2 static void vq_row_avx2(const void *A, int dtype, int64_t row, int64_t K, float thr, int8_t *codes,
                                 float *row_absmax, uint8_t *tflags) {
    vq_row_body(A, dtype, row, K, thr, codes, row_absmax, tflags);
}

#define VQ_PREFETCH 16384

TGT_AVX512 static void vq_row_avx512(const void *A, uintptr_t a_end, int dtype, int64_t row, int64_t K, float thr,
                                     int8_t *codes, float *row_absmax, uint8_t *tflags) {
    const int64_t s = row * K;
    const __m512 vthr = _mm512_set1_ps(thr > 0.0f ? thr : INFINITY);
    const __mmask16 detect = thr > 0.0f ? 0xFFFF : 0; /* threshold 0: no outliers (inf included) */
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 nan = 0;
    /* the rows ahead as one linear prefetch stream, VQ_PREFETCH bytes ahead of this row's first pass (which
     * reads it from DRAM; the second pass finds it in L1): a line per 64 bytes read, never past A's end */
    const int64_t esize = dtype == BNBQ_F32 ? 4 : 2;
    uintptr_t pf = (uintptr_t)A + (uintptr_t)(s * esize) + VQ_PREFETCH;
    for (int64_t k = 0; k < K; k += 16) {
        if (((k * esize) & 63) == 0) {
            if (pf < a_end) _mm_prefetch((const char *)pf, _MM_HINT_T0);
            pf += 64;
        }
        const __mmask16 m = bnbq_mask16(K - k);
        const __m512 a = _mm512_abs_ps(bnbq_load16(A, dtype, s + k, m));
        const __mmask16 out = _mm512_mask_cmp_ps_mask(m & detect, a, vthr, _CMP_GE_OQ);
        if (out) {
            for (int l = 0; l < 16; l++)
                if (out & (1u << l)) tflags[k + l] = 1;
        }
        nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
        vmax = _mm512_mask_max_ps(vmax, (__mmask16)~out, vmax, a);
    }
    const float amax = nan ? NAN : _mm512_reduce_max_ps(vmax); /* torch's amax propagates NaN */
    row_absmax[row] = amax;
    const __m512 scale = _mm512_set1_ps(amax > 0.0f ? (1.0f / amax) * 127.0f : 0.0f);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    /* 64 codes per step: saturating packs to bytes (lane-interleaved, undone by one dword permute) and
     * one 64-byte store, instead of four narrowing stores */
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    const __m512i m127 = _mm512_set1_epi8(-127);
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
        __m512i q[4];
        for (int j = 0; j < 4; j++) {
            const __m512 x = bnbq_load16(A, dtype, s + k + 16 * j, 0xFFFF);
            const __m512 r = _mm512_mul_ps(x, scale);
            const __mmask16 keep = (_mm512_cmp_ps_mask(_mm512_abs_ps(x), vthr, _CMP_LT_OQ) | (__mmask16)~detect) &
                                   _mm512_cmp_ps_mask(r, r, _CMP_ORD_Q);
            q[j] = _mm512_maskz_mov_epi32(keep, _mm512_cvtps_epi32(r)); /* round to nearest even */
        }
        __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
        b = _mm512_max_epi8(b, m127);
        _mm512_storeu_si512((void *)(codes + s + k), _mm512_permutexvar_epi32(order, b));
    }
    for (; k < K; k += 16) {
        const __mmask16 m = bnbq_mask16(K - k);
        const __m512 x = bnbq_load16(A, dtype, s + k, m);
        const __mmask16 keep = m & (_mm512_cmp_ps_mask(_mm512_abs_ps(x), vthr, _CMP_LT_OQ) | (__mmask16)~detect);
        __m512 r = _mm512_mul_ps(x, scale);
        __m512i q = _mm512_cvtps_epi32(r); /* round to nearest even (MXCSR default) */
        q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
        q = _mm512_maskz_mov_epi32(keep & _mm512_cmp_ps_mask(r, r, _CMP_ORD_Q), q);
        _mm512_mask_cvtepi32_storeu_epi8(codes + s + k, m, q);
    }
}
#endif

/* Row `row` of A (rows x K, `rows` in all): row absmax, codes, outlier columns flagged in tflags. */
static void vq_row(int isa, const void *A, int64_t rows, int dtype, int64_t row, int64_t K, float thr, int8_t *codes,
                   float *row_absmax, uint8_t *tflags) {
#if BNBQ_X86
    if (isa == BNBQ_ISA_AVX512) {
        const uintptr_t a_end = (uintptr_t)A + (uintptr_t)(rows * K * (dtype == BNBQ_F32 ? 4 : 2));
        return vq_row_avx512(A, a_end, dtype, row, K, thr, codes, row_absmax, tflags);
    }
    if (isa == BNBQ_ISA_AVX2) return vq_row_avx2(A, dtype, row, K, thr, codes, row_absmax, tflags);
#endif
    (void)isa;
    vq_row_generic(A, dtype, row, K, thr, codes, row_absmax, tflags);
}

int bnbq_int8_vectorwise_quant(const void *A, int dtype, int64_t rows, int64_t K, float threshold, int8_t *codes,
                               int64_t codes_len, float *row_absmax, int64_t row_absmax_len, uint8_t *outlier_flags,
                               int64_t flags_len, int nthreads) {
    if (!bnbq_valid_dtype(dtype) || rows < 0 || K < 0 || !(threshold >= 0.0f) || row_absmax_len != rows ||
        flags_len != K || (K > 0 && rows > INT64_MAX / K) || codes_len != rows * K)
        return BNBQ_EINVAL;
    if (K > 0) memset(outlier_flags, 0, (size_t)K);
    if (rows == 0) return BNBQ_OK;
    if (K == 0) {
        memset(row_absmax, 0, sizeof(float) * (size_t)rows);
        return BNBQ_OK;
    }
    if (!A || !codes || !row_absmax || !outlier_flags) return BNBQ_EINVAL;
    bnbq_hugepage_hint(codes, codes_len);
    const int isa = bnbq_isa_level();
    int team = bnbq_team(nthreads, rows * K);
    if (team > rows) team = (int)rows;
    uint8_t *tflags = (uint8_t *)calloc((size_t)team, (size_t)K);
    if (!tflags) return BNBQ_ENOMEM;
    int64_t n_out = 0;
    int64_t *cols = NULL;
#pragma omp parallel num_threads(team) if (team > 1)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            vq_row(isa, A, rows, dtype, r, K, threshold, codes, row_absmax, tflags + (size_t)t * K);
    }
    for (int t = 0; t < team; t++)
        for (int64_t k = 0; k < K; k++) outlier_flags[k] |= tflags[(size_t)t * K + k];
    free(tflags);
    for (int64_t k = 0; k < K; k++) n_out += outlier_flags[k];
    if (n_out == 0) return BNBQ_OK;
    cols = (int64_t *)malloc(sizeof(int64_t) * (size_t)n_out);
    if (!cols) return BNBQ_ENOMEM;
    for (int64_t k = 0, j = 0; k < K; k++)
        if (outlier_flags[k]) cols[j++] = k;
    /* a column with an outlier in any row is zeroed in every row */
#pragma omp parallel for num_threads(team) if (team > 1) schedule(static)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n_out; j++) codes[r * K + cols[j]] = 0;
    free(cols);
    return BNBQ_OK;
}

/* ================================ int8 matmul ================================ */

/* C[m, n] = sum_k A[m, k] * B[n, k] for n in [n_begin, n_end), wrapping modulo 2^32 */
static void mm_generic(const int8_t *A, int64_t M, int64_t K, const int8_t *B, int64_t N, int32_t *C, int64_t n_begin,
                       int64_t n_end) {
    for (int64_t n = n_begin; n < n_end; n++)
        for (int64_t m = 0; m < M; m++) {
            uint32_t acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (uint32_t)((int32_t)A[m * K + k] * (int32_t)B[n * K + k]);
            C[m * N + n] = (int32_t)acc;
        }
}

#if BNBQ_X86
TGT_AVX2 static void mm_avx2(const int8_t *A, int64_t M, int64_t K, const int8_t *B, int64_t N, int32_t *C,
                             int64_t n_begin, int64_t n_end) {
    const int64_t K16 = K & ~(int64_t)15;
    for (int64_t n = n_begin; n < n_end; n++)
        for (int64_t m = 0; m < M; m++) {
            const int8_t *a = A + m * K, *b = B + n * K;
            __m256i acc = _mm256_setzero_si256();
            for (int64_t k = 0; k < K16; k += 16) {
                __m256i a16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(a + k)));
                __m256i b16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + k)));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a16, b16));
            }
            __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
            s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
            uint32_t tot = (uint32_t)_mm_cvtsi128_si32(s);
            for (int64_t k = K16; k < K; k++) tot += (uint32_t)((int32_t)a[k] * (int32_t)b[k]);
            C[m * N + n] = (int32_t)tot;
        }
}

#define MM_PREFETCH 16384 /* bytes of B ahead, in one linear prefetch stream (batch-1 rows) */

/* VNNI: vpdpbusd multiplies unsigned by signed bytes, so B is offset by 128 (B ^ 0x80 as unsigned, one xor per
 * load) and 128 * sum_k A[m, k] (asum[m], once per call) is subtracted: no per-B-row correction sums in the
 * loop. MR rows of A times NR rows of B per register tile; the K loop runs unmasked, its tail masked. */
TGT_VNNI static inline __attribute__((always_inline)) void mm_step_vnni(const int MR, const int NR, __mmask64 mk,
                                                                        const int8_t *A, int64_t m0, int64_t K,
                                                                        const int8_t *B, int64_t n0, int64_t k,
                                                                        __m512i acc[4][4]) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512i b[4];
    for (int j = 0; j < NR; j++) b[j] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, B + (n0 + j) * K + k), flip);
    for (int i = 0; i < MR; i++) {
        const __m512i a = _mm512_maskz_loadu_epi8(mk, A + (m0 + i) * K + k);
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], b[j], a);
    }
}

TGT_VNNI static inline __attribute__((always_inline)) void mm_tile_vnni(const int MR, const int NR, const int8_t *A,
                                                                        const uint32_t *asum, int64_t m0, int64_t K,
                                                                        const int8_t *B, int64_t n0, int64_t N,
                                                                        int32_t *C) {
    __m512i acc[4][4];
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) acc[i][j] = _mm512_setzero_si512();
    /* few rows of A (batch-1 inference): streaming B from memory is the whole cost. The NR rows read side
     * by side are contiguous, so one linear stream MM_PREFETCH bytes ahead of their progress (NR lines per
     * 64 columns) walks B in address order, as a sequential read does; prefetching each row ahead instead
     * (same column, rows further down) reads cold weights markedly slower here (see quant_gemv.c). Tiles of
     * later rows of A find B in cache; the prefetch still pays for tiles of many rows (8 rows of 4096^2 with
     * 8 x 2 tiles: 0.50 ms without it, 0.42 with it). */
    const uintptr_t pf_end = (uintptr_t)(B + N * K);
    uintptr_t pf = (uintptr_t)(B + n0 * K) + MM_PREFETCH;
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
        for (int j = 0; j < NR; j++, pf += 64)
            if (pf < pf_end) _mm_prefetch((const char *)pf, _MM_HINT_T0);
        mm_step_vnni(MR, NR, ~(__mmask64)0, A, m0, K, B, n0, k, acc);
    }
    if (k < K) mm_step_vnni(MR, NR, ((__mmask64)1 << (K - k)) - 1, A, m0, K, B, n0, k, acc);
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++)
            C[(m0 + i) * N + n0 + j] = (int32_t)((uint32_t)_mm512_reduce_add_epi32(acc[i][j]) - (asum[m0 + i] << 7));
}

/* A tile of MR rows of A times nr (1..4) rows of B, NR a compile-time constant. */
#define MM_TILE(MR_, nr, n0)                                                                                     \
    do {                                                                                                         \
        switch (nr) {                                                                                            \
        case 4: mm_tile_vnni(MR_, 4, A, asum, m, K, B, n0, N, C); break;                                         \
        case 3: mm_tile_vnni(MR_, 3, A, asum, m, K, B, n0, N, C); break;                                         \
        case 2: mm_tile_vnni(MR_, 2, A, asum, m, K, B, n0, N, C); break;                                         \
        default: mm_tile_vnni(MR_, 1, A, asum, m, K, B, n0, N, C); break;                                        \
        }                                                                                                        \
    } while (0)

/* Rows [n_begin, n_end) of B in groups of 4, each against tiles of 4 rows of A (16 accumulators) and one tile of
 * the last 1..3 rows (4 or more independent accumulator chains in the few-row, batch-1 case). 8 x 2 tiles ran
 * at half the speed per row here. */
TGT_VNNI static void mm_vnni(const int8_t *A, const uint32_t *asum, int64_t M, int64_t K, const int8_t *B, int64_t N,
                             int32_t *C, int64_t n_begin, int64_t n_end, int burst) {
    if (M <= 4 && burst) /* the start of this range, which the tiles' prefetch stream (running ahead) does not cover */
        for (uintptr_t a = (uintptr_t)(B + n_begin * K), e = (uintptr_t)(B + n_end * K); a < e && a < (uintptr_t)(B + n_begin * K) + MM_PREFETCH; a += 64)
            _mm_prefetch((const char *)a, _MM_HINT_T0);
    for (int64_t n = n_begin; n < n_end; n += 4) {
        const int nr = n + 4 <= n_end ? 4 : (int)(n_end - n);
        int64_t m = 0;
        for (; m + 4 <= M; m += 4) MM_TILE(4, nr, n);
        switch (M - m) { /* the last 1..3 rows of A in one tile */
        case 3: MM_TILE(3, nr, n); break;
        case 2: MM_TILE(2, nr, n); break;
        case 1: MM_TILE(1, nr, n); break;
        default: break;
        }
    }
}
#undef MM_TILE
#endif

/* How a call multiplies: the ISA, and for VNNI the row sums of A (the unsigned offset of B, modulo 2^32 as the
 * products wrap; malloc'd, freed by mm_plan_free). Shared by the matmul and the fused outlier path. */
typedef struct {
    int isa;
    uint32_t *asum;
} mm_plan;

static int mm_plan_init(mm_plan *p, const int8_t *A, int64_t M, int64_t K) {
    p->isa = bnbq_isa_level();
    p->asum = NULL;
#if BNBQ_X86
    if (p->isa == BNBQ_ISA_AVX512 && (bnbq_cpu_flags() & BNBQ_CPU_AVX512VNNI)) {
        p->asum = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)(M > 0 ? M : 1));
        if (!p->asum) return BNBQ_ENOMEM;
        for (int64_t m = 0; m < M; m++) {
            uint32_t t = 0;
            for (int64_t k = 0; k < K; k++) t += (uint32_t)(int32_t)A[m * K + k];
            p->asum[m] = t;
        }
    }
#else
    (void)A, (void)M, (void)K;
#endif
    return BNBQ_OK;
}

static void mm_plan_free(mm_plan *p) { free(p->asum); }

/* C[:, n] for rows n in [nb, ne) of B with the plan's kernel; burst: prefetch the start of the range first (the
 * first range of a thread; later ranges continue the previous one's prefetch stream). */
static void mm_rows(const mm_plan *p, const int8_t *A, int64_t M, int64_t K, const int8_t *B, int64_t N, int32_t *C,
                    int64_t nb, int64_t ne, int burst) {
#if BNBQ_X86
    if (p->asum) {
        mm_vnni(A, p->asum, M, K, B, N, C, nb, ne, burst);
        return;
    }
    if (p->isa != BNBQ_ISA_GENERIC) {
        mm_avx2(A, M, K, B, N, C, nb, ne);
        return;
    }
#endif
    (void)p, (void)burst;
    mm_generic(A, M, K, B, N, C, nb, ne);
}

/* Threads take whole groups of 4 rows of B: thread t of nt gets rows [*nb, *ne). */
static void mm_thread_rows(int64_t N, int64_t t, int64_t nt, int64_t *nb, int64_t *ne) {
    const int64_t quads = (N + 3) / 4;
    *nb = bnbq_min64(N, (quads * t / nt) * 4);
    *ne = bnbq_min64(N, (quads * (t + 1) / nt) * 4);
}

static int mm_team(int nthreads, int64_t M, int64_t K, int64_t N) {
    const int team = bnbq_team(nthreads, (M + 1) * N * (K / 16 + 1));
    return team > N ? (int)(N > 0 ? N : 1) : team;
}

static int int8_matmul(const int8_t *A, int64_t M, int64_t K, const int8_t *B, int64_t N, int32_t *C, int nthreads) {
    mm_plan plan;
    const int rc = mm_plan_init(&plan, A, M, K);
    if (rc != BNBQ_OK) return rc;
    const int team = mm_team(nthreads, M, K, N);
#pragma omp parallel num_threads(team) if (team > 1)
    {
        int64_t t = 0, nt = 1, nb, ne;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        mm_thread_rows(N, t, nt, &nb, &ne);
        mm_rows(&plan, A, M, K, B, N, C, nb, ne, 1);
    }
    mm_plan_free(&plan);
    return BNBQ_OK;
}

int bnbq_int8_linear_matmul(const int8_t *A, int64_t M, int64_t K, const int8_t *B, int64_t N, int32_t *C,
                            int64_t C_len, int nthreads) {
    if (M < 0 || K < 0 || N < 0 || (N > 0 && M > INT64_MAX / N) || (K > 0 && M > INT64_MAX / K) ||
        (K > 0 && N > INT64_MAX / K) || C_len != M * N)
        return BNBQ_EINVAL;
    if (M == 0 || N == 0) return BNBQ_OK;
    if (!C || (K > 0 && (!A || !B))) return BNBQ_EINVAL;
    if (K == 0) {
        memset(C, 0, sizeof(int32_t) * (size_t)(M * N));
        return BNBQ_OK;
    }
    return int8_matmul(A, M, K, B, N, C, nthreads);
}

/* ================================ dequant (+ bias) ================================ */

BNBQ_INLINE void mmdq_row_body(const int32_t *A, int64_t m, int64_t N, float rs, const float *col, const void *bias,
                               int bias_dtype, void *out, int out_dtype) {
    for (int64_t n = 0; n < N; n++) {
        float v = ((float)A[m * N + n] * (rs * col[n])) * INV_127_SQ;
        if (bias) v = v + bnbq_load(bias, bias_dtype, n);
        bnbq_store(out, out_dtype, m * N + n, v);
    }
}

static void mmdq_row_generic(const int32_t *A, int64_t m, int64_t N, float rs, const float *col, const void *bias,
                             int bias_dtype, void *out, int out_dtype) {
    mmdq_row_body(A, m, N, rs, col, bias, bias_dtype, out, out_dtype);
}

#if BNBQ_X86
TGT_AVX2 static void mmdq_row_avx2(const int32_t *A, int64_t m, int64_t N, float rs, const float *col,
                                   const void *bias, int bias_dtype, void *out, int out_dtype) {
    mmdq_row_body(A, m, N, rs, col, bias, bias_dtype, out, out_dtype);
}

TGT_AVX512 static void mmdq_row_avx512(const int32_t *A, int64_t m, int64_t N, float rs, const float *col,
                                       const void *bias, int bias_dtype, void *out, int out_dtype) {
    const __m512 vrs = _mm512_set1_ps(rs), inv = _mm512_set1_ps(INV_127_SQ);
    for (int64_t n = 0; n < N; n += 16) {
        const __mmask16 mk = bnbq_mask16(N - n);
        const __m512 a = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mk, A + m * N + n));
        __m512 v = _mm512_mul_ps(_mm512_mul_ps(a, _mm512_mul_ps(vrs, _mm512_maskz_loadu_ps(mk, col + n))), inv);
        if (bias) v = _mm512_add_ps(v, bnbq_load16(bias, bias_dtype, n, mk));
        bnbq_store16(out, out_dtype, m * N + n, v, mk);
    }
}
#endif

int bnbq_int8_mm_dequant(const int32_t *A, int64_t M, int64_t N, const float *row_stats, int64_t row_len,
                         const float *col_stats, int64_t col_len, const void *bias, int bias_dtype, int64_t bias_len,
                         void *out, int out_dtype, int64_t out_len, int nthreads) {
    if (M < 0 || N < 0 || (N > 0 && M > INT64_MAX / N) || row_len != M || col_len != N || out_len != M * N ||
        !bnbq_valid_dtype(out_dtype) || (bias && (!bnbq_valid_dtype(bias_dtype) || bias_len != N)))
        return BNBQ_EINVAL;
    if (M == 0 || N == 0) return BNBQ_OK;
    if (!A || !row_stats || !col_stats || !out) return BNBQ_EINVAL;
    bnbq_hugepage_hint(out, out_len * bnbq_dtype_size(out_dtype));
    const int isa = bnbq_isa_level();
    const int team = bnbq_team(nthreads, M * N);
#pragma omp parallel for num_threads(team) if (team > 1) schedule(static)
    for (int64_t m = 0; m < M; m++) {
#if BNBQ_X86
        if (isa == BNBQ_ISA_AVX512) {
            mmdq_row_avx512(A, m, N, row_stats[m], col_stats, bias, bias_dtype, out, out_dtype);
            continue;
        }
        if (isa == BNBQ_ISA_AVX2) {
            mmdq_row_avx2(A, m, N, row_stats[m], col_stats, bias, bias_dtype, out, out_dtype);
            continue;
        }
#endif
        (void)isa;
        mmdq_row_generic(A, m, N, row_stats[m], col_stats, bias, bias_dtype, out, out_dtype);
    }
    return BNBQ_OK;
}

/* ================================ fused batch-1 int8_mm_outlier ================================ */

/* Rows of the weight per step of a thread: their int8 products, then their outputs (scale, bias, outlier
 * columns) while the rows are still in L2: MM_OUTLIER_CHUNK bytes of weight, whole groups of 4 rows. */
#define MM_OUTLIER_CHUNK 262144

int bnbq_int8_mm_outlier_row(const void *A, int dtype, int64_t K, const int8_t *CB, int64_t N, const float *SCB,
                             int64_t scb_len, float threshold, const void *bias, int bias_dtype, int64_t bias_len,
                             void *out, int64_t out_len, int nthreads) {
    if (!bnbq_valid_dtype(dtype) || K < 0 || N < 0 || (K > 0 && N > INT64_MAX / K) || scb_len != N ||
        out_len != N || !(threshold >= 0.0f) || (bias && (!bnbq_valid_dtype(bias_dtype) || bias_len != N)))
        return BNBQ_EINVAL;
    if (N == 0) return BNBQ_OK;
    if (!out || !SCB || (K > 0 && (!A || !CB))) return BNBQ_EINVAL;
    /* scratch: the row as float, its int8 codes, the outlier column list, the int32 products */
    char *mem = (char *)malloc((size_t)K * (sizeof(float) + sizeof(int64_t) + 2) + sizeof(int32_t) * (size_t)N + 64);
    if (!mem) return BNBQ_ENOMEM;
    float *x = (float *)mem;
    int64_t *cols = (int64_t *)(x + K);
    int32_t *prod = (int32_t *)(cols + K);
    int8_t *ca = (int8_t *)(prod + N);
    uint8_t *flags = (uint8_t *)(ca + K);
    float sca = 0.0f;
    int64_t n_out = 0;
    memset(flags, 0, (size_t)K);
    if (K > 0) {
        vq_row(bnbq_isa_level(), A, 1, dtype, 0, K, threshold, ca, &sca, flags);
        for (int64_t k = 0; k < K; k++) {
            x[k] = bnbq_load(A, dtype, k);
            if (flags[k]) cols[n_out++] = k;
        }
    }
    mm_plan plan;
    const int rc = mm_plan_init(&plan, ca, 1, K);
    if (rc != BNBQ_OK) {
        free(mem);
        return rc;
    }
    const int team = mm_team(nthreads, 1, K, N);
    int64_t chunk = (MM_OUTLIER_CHUNK / (K > 0 ? K : 1)) & ~(int64_t)3;
    if (chunk < 4) chunk = 4;
#pragma omp parallel num_threads(team) if (team > 1)
    {
        int64_t t = 0, nt = 1, nb, ne;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        mm_thread_rows(N, t, nt, &nb, &ne);
        for (int64_t c0 = nb; c0 < ne; c0 += chunk) {
            const int64_t c1 = bnbq_min64(ne, c0 + chunk);
            if (K > 0)
                mm_rows(&plan, ca, 1, K, CB, N, prod, c0, c1, c0 == nb);
            else
                memset(prod + c0, 0, sizeof(int32_t) * (size_t)(c1 - c0));
            for (int64_t n = c0; n < c1; n++) {
                float v = ((float)prod[n] * (sca * SCB[n])) * INV_127_SQ;
                if (bias) v = v + bnbq_load(bias, bias_dtype, n);
                if (n_out) { /* the row's outlier-column bytes: in L2 since its product above */
                    const float ws = SCB[n] / 127.0f;
                    float part = 0.0f;
                    for (int64_t j = 0; j < n_out; j++) part += x[cols[j]] * ((float)CB[n * K + cols[j]] * ws);
                    v += part;
                }
                bnbq_store(out, dtype, n, v);
            }
        }
    }
    mm_plan_free(&plan);
    free(mem);
    return BNBQ_OK;
}
