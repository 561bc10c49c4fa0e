/* Internal interface between the gemv_4bit kernels of quant_gemv.c (one row of A, the entry point) and
 * quant_gemv_batched.c (several rows of A): shared sizes, the block scales (absmax_src) and the weight prefetch
 * stream. Not part of the cffi interface. */
#ifndef BNB_API_CPU_QUANT_GEMV_H
#define BNB_API_CPU_QUANT_GEMV_H

#include "lut256_vbmi.h"
#include "quant_internal.h"

#ifndef GEMV_CHUNKS_PER_THREAD
#define GEMV_CHUNKS_PER_THREAD 4 /* scheduling units per thread: long contiguous runs of rows, some balance */
#endif
/* Bytes ahead of the weight read, in one linear prefetch stream (gemv_pf). Cold 11008 x 4096 gemv here, both memory
 * phases of this VM side by side: one row of A in 4-row passes 12 KiB (nested absmax with slow memory 0.486 ->
 * 0.452 ms against 16 KiB, even with fast memory; 8 KiB is as fast slow but 5-10% slower fast, 4 KiB 20-40% slower),
 * in 2-row passes 8 KiB; the batched kernels (several rows of A, compute-bound) keep 16 KiB. */
#ifndef GEMV_PREFETCH
#define GEMV_PREFETCH 16384
#endif
#ifndef GEMV_PREFETCH_4ROWS
#define GEMV_PREFETCH_4ROWS 12288
#endif
#ifndef GEMV_PREFETCH_2ROWS
#define GEMV_PREFETCH_2ROWS 8192
#endif
#define GEMV_MAX_ROWS_ANY 4 /* rows per pass of the SIMD paths */
#define GEMV_SCALE_AHEAD 8  /* rows ahead whose block scales are prefetched */
#ifndef GEMV_MULTI_GROUP
#define GEMV_MULTI_GROUP 16 /* several rows of A: weight rows per pass (the row-lanes kernel takes 16; 4-32 alike
                             * for the others) */
#endif
#ifndef GEMV_ROW_LANES
#define GEMV_ROW_LANES 1 /* the row-lanes kernel for bf16 with several rows (0: the other batched kernels only) */
#endif
/* rows of A from which a pass takes the row-lanes kernel: with 8 rows 1.28-1.37 ms against 1.54-1.66 for the p4
 * batched kernel (11008 x 4096), 5 rows even, 4 rows 1.04 against 0.86-0.89 (its decode is shared by fewer rows) */
#define GEMV_LANES_MIN_ROWS 5
#ifndef GEMV_LANES_F32_MIN_ROWS
#define GEMV_LANES_F32_MIN_ROWS 2 /* the same for float32 activations (gemv_lanes16_f32) */
#endif
#ifndef GEMV_LANES_F32X2_MIN_ROWS
#define GEMV_LANES_F32X2_MIN_ROWS 3 /* and from this many, two groups of 16 weight rows at a time (gemv_lanes32_f32) */
#endif
#define GEMV_MT 8 /* rows of A per pass of the batched kernels */
/* several row-lanes passes: the first saves two groups' decoded weights (64 K bytes, kept in L2 up to this K) and
 * the others go over them in chunks of this many weights per row (whole blocks; a chunk stays in L1 for all) */
#define GEMV_LANES_DECODED_MAX_K 12288
#define GEMV_LANES_CHUNK 512
static inline int64_t gemv_lanes_chunk(int64_t bs) { return bs > GEMV_LANES_CHUNK ? bs : GEMV_LANES_CHUNK; }
/* rows whose scales are decoded at once (a thread's scale buffer holds this many rows) */
#define GEMV_SCALE_ROWS (GEMV_MULTI_GROUP > GEMV_MAX_ROWS_ANY ? GEMV_MULTI_GROUP : GEMV_MAX_ROWS_ANY)

typedef struct {
    const float *absmax;        /* float32 absmax per block, or NULL when nested */
    const uint8_t *absmax_q;    /* nested: uint8 codes per block */
    const float *nested_absmax; /* nested: float32 per nested block */
    const float *nested_code;   /* nested: 256 entries */
    float offset;
    int nested_shift; /* log2(nested_blocksize) */
    int64_t n_blocks; /* entries of absmax / absmax_q */
    const uint8_t (*nested_planes)[256]; /* nested, VBMI CPUs: byte planes of nested_code (lut256_vbmi.h) */
} absmax_src;

BNBQ_INLINE float block_absmax(const absmax_src *a, int64_t g) {
    if (a->absmax) return a->absmax[g];
    return a->nested_code[a->absmax_q[g]] * a->nested_absmax[g >> a->nested_shift] + a->offset;
}

#if BNBQ_X86
/* Prefetch the block scales of rows [r, r + rows): the weight streams are prefetched in the inner loops,
 * and without this every row's first scale is a DRAM miss that stalls the row (about 0.25 ms of a cold
 * 11008 x 4096 gemv here). */
static inline void gemv_prefetch_scales(const absmax_src *am, int64_t r, int64_t rows, int64_t nbr) {
    const int64_t g0 = r * nbr, g1 = bnbq_min64((r + rows) * nbr, am->n_blocks); /* never past the array */
    if (g0 >= g1) return;
    /* a byte stream walked with unsigned addresses, as gemv_pf_start: with a signed index and without -fwrapv,
     * gcc 12 dropped these loops from the inlined bf16 kernels (cold 11008 x 4096 gemv 0.52 -> 0.60 ms) */
    const uintptr_t base = am->absmax ? (uintptr_t)am->absmax : (uintptr_t)am->absmax_q;
    const uintptr_t esz = am->absmax ? sizeof(float) : 1;
    for (uintptr_t a = base + (uintptr_t)g0 * esz, end = base + (uintptr_t)g1 * esz; a < end; a += 64)
        _mm_prefetch((const char *)a, _MM_HINT_T0);
}

/* The weight prefetch: one linear stream a few KiB ahead of the rows being read (GEMV_PREFETCH*). A pass reads R
 * consecutive rows side by side (R streams one row apart); prefetching each of them ahead (same column,
 * rows further down) left the cold read at about 60% of DRAM bandwidth here, while this single stream,
 * R lines per 64 bytes of row progress, walks memory in address order as a plain sequential read does and
 * brings the cold read to its speed (touch-only test, 11008 x 4096 NF4 in 4-row passes: 0.73 -> 0.45 ms).
 * It never runs past the end of B (prefetches do not fault, but the address must stay inside the array). */
typedef struct {
    uintptr_t next, end; /* addresses as integers: the stream may point past the array, it never loads there */
} gemv_pf;

/* The stream of a run of rows [r_begin, r_end), stopping at r_end, `ahead` bytes ahead of the read: its first
 * `ahead` bytes are prefetched at once (a run's start is otherwise read by demand misses: about 6% of a cold
 * 11008 x 4096 gemv here), then the stream runs that far ahead. */
static inline gemv_pf gemv_pf_start(const uint8_t *B, int64_t r_begin, int64_t r_end, int64_t half, uintptr_t ahead) {
    const uintptr_t start = (uintptr_t)(B + r_begin * half), end = (uintptr_t)(B + r_end * half);
    for (uintptr_t a = start; a < start + ahead && a < end; a += 64) _mm_prefetch((const char *)a, _MM_HINT_T0);
    gemv_pf p = {start + ahead, end};
    return p;
}

/* The next R lines of the stream (called once per 64 bytes read in each of the pass's R rows). */
static inline void gemv_pf_step(gemv_pf *p, int R) {
    for (int i = 0; i < R; i++, p->next += 64)
        if (p->next < p->end) _mm_prefetch((const char *)p->next, _MM_HINT_T0);
}

#endif /* BNBQ_X86 */

/* Kinds of batched kernel: the activation layouts of gemv_layout (quant_gemv.c). */
#define GEMV_KIND_P8 0   /* float32 activations in 8 phases per 128 (gemv_layout_p8), float32 code book */
#define GEMV_KIND_P4 1   /* bf16 activations in 4 phases per 128 (gemv_layout_p4), bf16 code book doubled */
#define GEMV_KIND_BF16 2 /* bf16 activations, even then odd halves, bf16 code book */

/* Block scales of the rows [r, r + R) (R <= GEMV_SCALE_ROWS): pointers into absmax, or the nested scales decoded
 * into buf (R * nbr floats). */
void bnbq_gemv_row_scales(const absmax_src *am, int64_t r, int R, int64_t nbr, float *buf, const float **sc);

#if BNBQ_X86
/* Weight rows [r_begin, r_end) against the M rows of A laid out for `kind` at X (row m at X + m * ldx floats):
 * y[m * N + r] (quant_gemv_batched.c). A_bf16: A itself (bf16, M x K) when the row-lanes kernel may serve; it then
 * needs scT, 2 * 16 * (K / bs) floats, 64-byte aligned, for the transposed scales of two groups of 16 rows; wbuf (not
 * NULL, with M > GEMV_MT): 64 K bytes, 64-byte aligned, for two groups' decoded weights. lanes_f32: float32 / float16
 * activations take the float32 row lanes (X in the p8 layout), which need scT too. */
void bnbq_gemv_range_batched(const int kind, const uint8_t *B, int64_t r_begin, int64_t r_end, int64_t M, int64_t N,
                             int64_t K, int64_t bs, const float *X, int64_t ldx, const float *code,
                             const uint16_t *table16_src, const absmax_src *am, const uint16_t *A_bf16, int lanes_f32,
                             float *rowbuf, float *scT, void *wbuf, float *y);
#endif

#endif
