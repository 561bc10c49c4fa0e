/* AVX-512 (F/BW/VL/DQ) instantiation of the optimizer kernel (VW = 16): masked loads and stores for
 * partial vectors, and three exact nearest-code searches returning the same codes: over registers
 * (v_store_quant), by bucket table and gathers (v_store_quant_lut), and, on CPUs with VBMI, by octave tables
 * and byte permutes, 64 values per step (requant_oct_tile, octave_lut_vbmi.h). */
#include <float.h>

#include "optim_internal.h"
#include "lut256_vbmi.h"

#if BNBO_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif
#include <immintrin.h>

typedef __m512 vf;
#define VW 16
#define KNAME(name) name##_avx512

BNBO_INLINE __mmask16 v_mask(int cnt) { return cnt >= VW ? (__mmask16)0xffff : (__mmask16)((1u << cnt) - 1u); }

BNBO_INLINE vf v_set1(float x) { return _mm512_set1_ps(x); }
BNBO_INLINE vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
BNBO_INLINE vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
BNBO_INLINE vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
BNBO_INLINE vf v_div(vf a, vf b) { return _mm512_div_ps(a, b); }
BNBO_INLINE vf v_sqrt(vf a) { return _mm512_sqrt_ps(a); }
BNBO_INLINE vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }
BNBO_INLINE vf v_min(vf a, vf b) { return _mm512_min_ps(a, b); }
BNBO_INLINE vf v_abs(vf a) { return _mm512_abs_ps(a); }

BNBO_INLINE vf v_sign(vf a) {
    const vf one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    const __mmask16 pos = _mm512_cmp_ps_mask(a, zero, _CMP_GT_OQ), neg = _mm512_cmp_ps_mask(a, zero, _CMP_LT_OQ);
    return _mm512_sub_ps(_mm512_maskz_mov_ps(pos, one), _mm512_maskz_mov_ps(neg, one));
}

BNBO_INLINE vf v_keep(vf a, int cnt) { return cnt >= VW ? a : _mm512_maskz_mov_ps(v_mask(cnt), a); }

/* Sums of squares in float64 lanes: a float32 square never underflows or rounds there (tiny parameters
 * still get their norm). */
typedef struct {
    __m512d lo, hi;
} vsq;

BNBO_INLINE vsq v_sq_zero(void) {
    vsq s = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    return s;
}

BNBO_INLINE void v_sq_add(vsq *s, vf a) {
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
    const __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1));
    s->lo = _mm512_add_pd(s->lo, _mm512_mul_pd(lo, lo));
    s->hi = _mm512_add_pd(s->hi, _mm512_mul_pd(hi, hi));
}

BNBO_INLINE double v_sq_sum(vsq s) { return _mm512_reduce_add_pd(_mm512_add_pd(s.lo, s.hi)); }

BNBO_INLINE float v_hmax(vf a) { return _mm512_reduce_max_ps(a); }

BNBO_INLINE vf v_load_f32(const float *p, int cnt) {
    return cnt >= VW ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(v_mask(cnt), p);
}

BNBO_INLINE void v_store_f32(float *p, vf v, int cnt) {
    if (cnt >= VW)
        _mm512_storeu_ps(p, v);
    else
        _mm512_mask_storeu_ps(p, v_mask(cnt), v);
}

BNBO_INLINE vf v_load_dt(int dt, const void *base, int64_t i, int cnt) {
    if (dt == BNBO_F32) return v_load_f32((const float *)base + i, cnt);
    const uint16_t *p = (const uint16_t *)base + i;
    const __m256i h = cnt >= VW ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskz_loadu_epi16(v_mask(cnt), p);
    if (dt == BNBO_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

BNBO_INLINE void v_store_dt(int dt, void *base, int64_t i, vf v, int cnt) {
    if (dt == BNBO_F32) {
        v_store_f32((float *)base + i, v, cnt);
        return;
    }
    __m256i h;
    if (dt == BNBO_F16) {
        h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else { /* bf16: round to nearest even on the bits; NaN -> 0x7fc0 */
        const __m512i x = _mm512_castps_si512(v);
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)), lsb), 16);
        r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7fc0));
        h = _mm512_cvtepi32_epi16(r);
    }
    uint16_t *p = (uint16_t *)base + i;
    if (cnt >= VW)
        _mm256_storeu_si256((__m256i *)p, h);
    else
        _mm256_mask_storeu_epi16(p, v_mask(cnt), h);
}

BNBO_INLINE vf v_load_codes(const uint8_t *c, int cnt, const float *code) {
    const __m128i b = cnt >= VW ? _mm_loadu_si128((const __m128i *)c) : _mm_maskz_loadu_epi8(v_mask(cnt), c);
    return _mm512_i32gather_ps(_mm512_cvtepu8_epi32(b), code, 4);
}

/* Tile dequantization with VBMI, 64 codes per step and no gathers (lut256_vbmi.h): out = code * am[block] for
 * the tlen codes of whole bs-blocks (bs >= 64); the scratch holds whole multiples of 64 floats, so full
 * stores stay inside it. */
__attribute__((noinline)) LUT256_TARGET static void dequant_vbmi_tile(const bnbo_qtab *t, const uint8_t *c,
                                                                      int64_t tlen, int64_t bs, const float *am,
                                                                      float *out) {
    lut256 L;
    lut256_load(&L, t->planes);
    if (tlen % 64 == 0) { /* whole steps: each one's index permute a step ahead (lut256_order) */
        const int shift = __builtin_ctzll((unsigned long long)bs); /* bs: a power of two >= 64 */
        __m512i cv = lut256_order(&L, _mm512_loadu_si512((const void *)c));
        for (int64_t i = 0; i < tlen; i += 64) {
            const __m512i next = i + 64 < tlen ? lut256_order(&L, _mm512_loadu_si512((const void *)(c + i + 64))) : cv;
            __m512 v[4];
            lut256_lookup_ordered(&L, cv, v);
            const __m512 a = _mm512_set1_ps(am[i >> shift]);
            for (int j = 0; j < 4; j++) _mm512_storeu_ps(out + i + 16 * j, _mm512_mul_ps(v[j], a));
            cv = next;
        }
        return;
    }
    for (int64_t b = 0; b < tlen; b += bs, am++) { /* bs: a power of two >= 64 */
        const __m512 a = _mm512_set1_ps(*am);
        const int64_t e = tlen - b < bs ? tlen : b + bs;
        for (int64_t i = b; i < e; i += 64) {
            __m512 v[4];
            const __m512i codes = e - i >= 64 ? _mm512_loadu_si512((const void *)(c + i))
                                              : _mm512_maskz_loadu_epi8(((__mmask64)1 << (e - i)) - 1, c + i);
            lut256_lookup64(&L, codes, v);
            for (int j = 0; j < 4; j++) _mm512_storeu_ps(out + i + 16 * j, _mm512_mul_ps(v[j], a));
        }
    }
}

/* Block dequantization with gathers: out[i] = code[c[i]] * absmax. */
BNBO_INLINE void v_dequant(const bnbo_job *job, const bnbo_qtab *t, const uint8_t *c, int64_t len, float am,
                           float *out) {
    (void)job;
    const vf a = v_set1(am);
    int64_t i = 0;
    for (; i + VW <= len; i += VW) v_store_f32(out + i, v_mul(v_load_codes(c + i, VW, t->code), a), VW);
    if (i < len) v_store_f32(out + i, v_mul(v_load_codes(c + i, (int)(len - i), t->code), a), (int)(len - i));
}

/* Tile dequantization: VBMI when the CPU has it, else gathers block by block. */
BNBO_INLINE void v_dequant_tile(const bnbo_job *job, const bnbo_qtab *t, const uint8_t *c, int64_t tlen,
                                const float *am, float *out) {
    const int64_t bs = job->blocksize;
    if (job->vbmi) {
        dequant_vbmi_tile(t, c, tlen, bs, am, out);
        return;
    }
    for (int64_t o = 0; o < tlen; o += bs, am++) v_dequant(job, t, c + o, tlen - o < bs ? tlen - o : bs, *am, out + o);
}

/* The 255 midpoints (+inf pad) as a 16 x 16 table in registers: split = mid[16k + 15], col[j][h] = mid[16h + j]. */
typedef struct {
    __m512 split7;
    __m512 split;
    __m512 col[16];
} vq;

BNBO_INLINE vq v_qprep(const bnbo_qtab *tab) {
    vq q;
    q.split7 = _mm512_set1_ps(tab->split[7]);
    q.split = _mm512_load_ps(tab->split);
    for (int j = 0; j < 16; j++) q.col[j] = _mm512_load_ps(tab->col[j]);
    return q;
}

#define BNBO_LT(a, b) _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ)

/* Exact nearest code = number of midpoints strictly below x, in two 16-way binary searches without
 * memory access: h = number of split points below x (4 steps over one register), then the position
 * l inside row h (4 steps; the candidates of each step come from permutex2var over column registers,
 * selected by the bits of l found so far). code = 16 h + l. NaN compares false everywhere: code 0. */
BNBO_INLINE void v_store_quant(uint8_t *c, vf x, int cnt, const vq *q) {
    const __m512i i16 = _mm512_set1_epi32(16);
    __m512i h = _mm512_maskz_mov_epi32(BNBO_LT(q->split7, x), _mm512_set1_epi32(8));
    __mmask16 m = BNBO_LT(_mm512_permutexvar_ps(_mm512_add_epi32(h, _mm512_set1_epi32(3)), q->split), x);
    h = _mm512_mask_add_epi32(h, m, h, _mm512_set1_epi32(4));
    m = BNBO_LT(_mm512_permutexvar_ps(_mm512_add_epi32(h, _mm512_set1_epi32(1)), q->split), x);
    h = _mm512_mask_add_epi32(h, m, h, _mm512_set1_epi32(2));
    m = BNBO_LT(_mm512_permutexvar_ps(h, q->split), x);
    h = _mm512_mask_add_epi32(h, m, h, _mm512_set1_epi32(1));

    const __mmask16 m8 = BNBO_LT(_mm512_permutexvar_ps(h, q->col[7]), x);
    __m512i idx = _mm512_mask_or_epi32(h, m8, h, i16);
    const __mmask16 m4 = BNBO_LT(_mm512_permutex2var_ps(q->col[3], idx, q->col[11]), x);
    idx = _mm512_mask_or_epi32(h, m4, h, i16);
    const vf t2a = _mm512_permutex2var_ps(q->col[1], idx, q->col[5]);
    const vf t2b = _mm512_permutex2var_ps(q->col[9], idx, q->col[13]);
    const __mmask16 m2 = BNBO_LT(_mm512_mask_blend_ps(m8, t2a, t2b), x);
    idx = _mm512_mask_or_epi32(h, m2, h, i16);
    const vf ta = _mm512_permutex2var_ps(q->col[0], idx, q->col[2]);
    const vf tb = _mm512_permutex2var_ps(q->col[4], idx, q->col[6]);
    const vf tc = _mm512_permutex2var_ps(q->col[8], idx, q->col[10]);
    const vf td = _mm512_permutex2var_ps(q->col[12], idx, q->col[14]);
    const vf t1 = _mm512_mask_blend_ps(m8, _mm512_mask_blend_ps(m4, ta, tb), _mm512_mask_blend_ps(m4, tc, td));
    const __mmask16 m1 = BNBO_LT(t1, x);

    __m512i code = _mm512_slli_epi32(h, 4);
    code = _mm512_mask_add_epi32(code, m8, code, _mm512_set1_epi32(8));
    code = _mm512_mask_add_epi32(code, m4, code, _mm512_set1_epi32(4));
    code = _mm512_mask_add_epi32(code, m2, code, _mm512_set1_epi32(2));
    code = _mm512_mask_add_epi32(code, m1, code, _mm512_set1_epi32(1));
    const __m128i b = _mm512_cvtepi32_epi8(code);
    if (cnt >= VW)
        _mm_storeu_si128((__m128i *)c, b);
    else
        _mm_mask_storeu_epi8(c, v_mask(cnt), b);
}

#undef BNBO_LT

/* The bucket-table search (bucket_lut.h). */
typedef bucket_lut_zmm vql;

BNBO_INLINE vql v_qprep_lut(const bnbo_qtab *t) { return bucket_lut_zmm_load(&t->bl); }

BNBO_INLINE void v_store_quant_lut(uint8_t *c, vf x, int cnt, const vql *q) {
    const __m128i bytes = _mm512_cvtepi32_epi8(bucket_lut_zmm_codes(q, x));
    if (cnt >= VW)
        _mm_storeu_si128((__m128i *)c, bytes);
    else
        _mm_mask_storeu_epi8(c, v_mask(cnt), bytes);
}

/* The octave-table search (octave_lut_vbmi.h), 64 values per step; built only when the CPU has VBMI. */
BNBO_INLINE __mmask64 v_mask64(int64_t cnt) { return cnt >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << cnt) - 1); }

BNBO_INLINE __mmask16 v_lanes16(int64_t cnt, int j) {
    const int64_t c = cnt - 16 * j;
    return c >= 16 ? (__mmask16)0xffff : c <= 0 ? (__mmask16)0 : (__mmask16)((1u << c) - 1u);
}

/* x[0..3] = the 64 values at vals (cnt of them, zeros after) times vinv, clamped to [-1, 1] when clamp (as
 * k_requant's searches clamp). Blocks with absmax am below 2^126 need no clamp: |vals| <= am and inv = RN(1 / am)
 * give |RN(vals * inv)| <= RN(am * inv) <= 1 (rounding is monotone, and RN(a * RN(1 / a)) <= 1 for every normal
 * float32 a whose reciprocal is normal, checked exhaustively), so only NaN (which may get any code) differ. */
LUT256_TARGET BNBO_INLINE void v_scaled64(const float *vals, int64_t cnt, __m512 vinv, __m512 x[4], const int clamp) {
    const __m512 one = _mm512_set1_ps(1.0f), mone = _mm512_set1_ps(-1.0f);
    for (int j = 0; j < 4; j++) {
        const float *p = vals + 16 * j;
        x[j] = _mm512_mul_ps(cnt >= 64 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(v_lanes16(cnt, j), p), vinv);
        if (clamp) x[j] = _mm512_max_ps(_mm512_min_ps(x[j], one), mone);
    }
}

/* Phase 1 of requant_oct_tile for 64 values at i (cnt valid): scaled values back to vals, bases to codes. */
LUT256_TARGET BNBO_INLINE void v_oct_bases64(const octave_lut *t, float *vals, int64_t cnt, __m512 vinv,
                                             uint8_t *codes, const int nonneg, const int clamp) {
    __m512 x[4];
    v_scaled64(vals, cnt, vinv, x, clamp);
    if (cnt >= 64) {
        for (int j = 0; j < 4; j++) _mm512_storeu_ps(vals + 16 * j, x[j]);
        _mm512_storeu_si512((void *)codes, octave_lut_base64_k(t, x, nonneg));
        return;
    }
    for (int j = 0; j < 4; j++) _mm512_mask_storeu_ps(vals + 16 * j, v_lanes16(cnt, j), x[j]);
    _mm512_mask_storeu_epi8(codes, v_mask64(cnt), octave_lut_base64_k(t, x, nonneg));
}

/* Phase 2 of requant_oct_tile for 64 values (cnt valid): codes = base + (mid[base] < x). */
LUT256_TARGET BNBO_INLINE void v_oct_codes64(const lut256 *L, const float *vals, int64_t cnt, uint8_t *codes) {
    __m512 x[4];
    if (cnt >= 64) {
        for (int j = 0; j < 4; j++) x[j] = _mm512_loadu_ps(vals + 16 * j);
        _mm512_storeu_si512((void *)codes, octave_lut_finish64(L, _mm512_loadu_si512((const void *)codes), x));
        return;
    }
    for (int j = 0; j < 4; j++) x[j] = _mm512_maskz_loadu_ps(v_lanes16(cnt, j), vals + 16 * j);
    const __mmask64 m = v_mask64(cnt);
    _mm512_mask_storeu_epi8(codes, m, octave_lut_finish64(L, _mm512_maskz_loadu_epi8(m, codes), x));
}

/* Stage 1 of phase 1 for the 64 values at vals (a whole step, no clamp): scaled by vinv, stored back, top halves. */
LUT256_TARGET BNBO_INLINE void v_oct_tops64(float *vals, __m512 vinv, __m512i h[2]) {
    __m512 x[4];
    v_scaled64(vals, 64, vinv, x, 0);
    for (int j = 0; j < 4; j++) _mm512_storeu_ps(vals + 16 * j, x[j]);
    octave_lut_tops64(x, h);
}

#define BNBO_PIPE_BLOCKS 8 /* blocks of a tile that v_oct_bases_pipelined takes: tiles hold max(bs, 512) elements */

/* Phase 1 over a tile of whole 64-value steps whose blocks need no clamp (see v_scaled64), software-pipelined as
 * lut256_order explains: step i + 2's scaled values and top halves, step i + 1's buckets and step i's bases
 * (the three stages of octave_lut_base64_k). Returns 0, doing nothing, when the tile does not qualify. */
LUT256_TARGET BNBO_INLINE int v_oct_bases_pipelined(const octave_lut *t, float *vals, int64_t tlen, int64_t bs,
                                                   const float *am, uint8_t *codes, const int nonneg) {
    const int64_t nblk = tlen / bs;
    if (tlen % 64 != 0 || tlen % bs != 0 || nblk > BNBO_PIPE_BLOCKS) return 0;
    float inv[BNBO_PIPE_BLOCKS];
    for (int64_t b = 0; b < nblk; b++) {
        if (!(am[b] < 0x1p126f)) return 0;
        inv[b] = bnbo_inv_absmax(am[b]);
    }
    const int shift = __builtin_ctzll((unsigned long long)bs);
    __m512i h[2], w[2];
    v_oct_tops64(vals, _mm512_set1_ps(inv[0]), h);
    octave_lut_buckets_of(t, h, nonneg, w);
    if (tlen > 64) v_oct_tops64(vals + 64, _mm512_set1_ps(inv[64 >> shift]), h);
    for (int64_t i = 0; i < tlen; i += 64) {
        __m512i w_next[2] = {w[0], w[1]}, h_next[2] = {h[0], h[1]};
        if (i + 64 < tlen) octave_lut_buckets_of(t, h, nonneg, w_next);
        if (i + 128 < tlen) v_oct_tops64(vals + i + 128, _mm512_set1_ps(inv[(i + 128) >> shift]), h_next);
        _mm512_storeu_si512((void *)(codes + i), octave_lut_bases_of(t, w));
        for (int k = 0; k < 2; k++) {
            w[k] = w_next[k];
            h[k] = h_next[k];
        }
    }
    return 1;
}

/* Phase 1 of requant_oct_tile over the tile's blocks; nonneg = t->nonneg, a constant after inlining. */
LUT256_TARGET BNBO_INLINE void v_oct_bases_tile(const octave_lut *t, float *vals, int64_t tlen, int64_t bs,
                                                const float *am, uint8_t *codes, const int nonneg) {
    if (v_oct_bases_pipelined(t, vals, tlen, bs, am, codes, nonneg)) return;
    for (int64_t b = 0; b < tlen; b += bs, am++) { /* bs >= 64, a power of two: 64-value steps stay in one block */
        const float amax = *am;
        const __m512 vinv = _mm512_set1_ps(bnbo_inv_absmax(amax));
        const int64_t e = tlen - b < bs ? tlen : b + bs;
        if (amax < 0x1p126f) /* see v_scaled64 */
            for (int64_t i = b; i < e; i += 64) v_oct_bases64(t, vals + i, e - i, vinv, codes + i, nonneg, 0);
        else
            for (int64_t i = b; i < e; i += 64) v_oct_bases64(t, vals + i, e - i, vinv, codes + i, nonneg, 1);
    }
}

/* codes of the tlen values of a tile of whole bs-blocks: the nearest codes of vals * (1 / am[block]) clamped to
 * [-1, 1], as k_requant's other searches give them. Two passes over the tile, bases then codes, so each pass is
 * a loop of independent steps; the first leaves the scaled values in vals for the second. */
__attribute__((noinline)) LUT256_TARGET static void requant_oct_tile(const octave_lut *t, float *vals, int64_t tlen,
                                                                     int64_t bs, const float *am, uint8_t *codes) {
    if (t->nonneg)
        v_oct_bases_tile(t, vals, tlen, bs, am, codes, 1);
    else
        v_oct_bases_tile(t, vals, tlen, bs, am, codes, 0);
    lut256 L;
    lut256_load(&L, t->mid_planes);
    if (tlen % 64 != 0) {
        for (int64_t i = 0; i < tlen; i += 64) v_oct_codes64(&L, vals + i, tlen - i, codes + i);
        return;
    }
    /* whole steps: each one's index permute a step ahead (lut256_order) */
    __m512i base = _mm512_loadu_si512((const void *)codes), cv = lut256_order(&L, base);
    for (int64_t i = 0; i < tlen; i += 64) {
        __m512i base_next = base, cv_next = cv;
        if (i + 64 < tlen) {
            base_next = _mm512_loadu_si512((const void *)(codes + i + 64));
            cv_next = lut256_order(&L, base_next);
        }
        __m512 x[4];
        for (int j = 0; j < 4; j++) x[j] = _mm512_loadu_ps(vals + i + 16 * j);
        _mm512_storeu_si512((void *)(codes + i), octave_lut_finish_ordered(&L, base, cv, x));
        base = base_next;
        cv = cv_next;
    }
}

/* The search entry with octave tables: 64-value steps whose values all lie in [-1, 1] use them, others
 * (out of range, NaN) the bucket table or the register search. */
__attribute__((noinline)) LUT256_TARGET static void search_oct(const bnbo_qtab *tab, const float *xs, uint8_t *codes,
                                                               int64_t n) {
    lut256 L;
    lut256_load(&L, tab->ol.mid_planes);
    const __m512 one = _mm512_set1_ps(1.0f), mone = _mm512_set1_ps(-1.0f);
    for (int64_t i = 0; i < n; i += 64) {
        const int64_t cnt = n - i;
        __m512 x[4];
        int inside = 1;
        for (int j = 0; j < 4; j++) {
            const __mmask16 m = v_lanes16(cnt, j);
            x[j] = _mm512_maskz_loadu_ps(m, xs + i + 16 * j);
            const __mmask16 in = _mm512_cmp_ps_mask(x[j], one, _CMP_LE_OQ) & _mm512_cmp_ps_mask(x[j], mone, _CMP_GE_OQ);
            inside &= (in & m) == m;
        }
        if (inside) {
            _mm512_mask_storeu_epi8(codes + i, v_mask64(cnt), octave_lut_codes64(&tab->ol, &L, x));
            continue;
        }
        for (int j = 0; j < 4 && 16 * j < cnt; j++) {
            const int c = cnt - 16 * j >= 16 ? 16 : (int)(cnt - 16 * j);
            if (tab->bl.lut) {
                const vql ql = v_qprep_lut(tab);
                v_store_quant_lut(codes + i + 16 * j, x[j], c, &ql);
            } else {
                const vq q = v_qprep(tab);
                v_store_quant(codes + i + 16 * j, x[j], c, &q);
            }
        }
    }
}

BNBO_INLINE void v_requant_oct_tile(const bnbo_qtab *tab, float *vals, int64_t tlen, int64_t bs, const float *am,
                                    uint8_t *codes) {
    requant_oct_tile(&tab->ol, vals, tlen, bs, am, codes);
}

BNBO_INLINE void v_search_oct(const bnbo_qtab *tab, const float *x, uint8_t *codes, int64_t n) {
    search_oct(tab, x, codes, n);
}

#define BNBO_HAS_LUT 1
#define BNBO_HAS_OCT 1
#define BNBO_HAS_TILE 1
#include "optim_kernel.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif /* BNBO_X86 */
