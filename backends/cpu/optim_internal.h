/* Internal declarations shared by the optimizer dispatch (optim_dispatch.c) and its per-ISA kernels
 * (optim_generic.c, optim_avx2.c, optim_avx512.c, all built from the template optim_kernel.h). */
#ifndef BNB_API_CPU_OPTIM_INTERNAL_H
#define BNB_API_CPU_OPTIM_INTERNAL_H

#include <float.h>
#include <stdint.h>
#include <string.h>

#include "bucket_lut.h"
#include "octave_lut_vbmi.h"
#include "optim.h"

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(BNB_API_PORTABLE)
#define BNBO_X86 1
#else
#define BNBO_X86 0
#endif

#define BNBO_ALIGN64 __attribute__((aligned(64)))
#define BNBO_INLINE static inline __attribute__((always_inline))

/* float32 constants of one step, rounded from the double hyper-parameters as torch rounds them. */
typedef struct {
    float gnorm;      /* float(gnorm_scale) */
    float wd;         /* float(weight_decay): coupled decay g += wd * p */
    float b1, b2, b3; /* float(beta) */
    float omb1, omb2, omb3; /* float(1 - beta) */
    float rc1, rc2;   /* 1 / float(1 - beta1**step), 1 / float(1 - beta2**step), rounded to float32 */
    float rc1s, eps_s; /* Adam's folded constants: sqrt(c2) / c1 and eps * sqrt(c2), c = 1 - beta**step (double) */
    float alpha, eps;
    float decay;      /* float(1 - lr * weight_decay): decoupled decay p *= decay */
    int coupled_wd;   /* optimizer adds wd * p to g and weight_decay > 0 */
    int decoupled_wd; /* optimizer decays p and weight_decay > 0 */
    int first_step;   /* step == 1 (momentum / lars copy g into m) */
} bnbo_consts;

/* Search tables of one code book: mid[i] = (q[i] + q[i+1]) * 0.5f, mid[255] = +inf; split[k] = mid[16k+15];
 * col[j][h] = mid[16h + j] (the transposed 16x16 layout of the AVX-512 two-level search). */
typedef struct {
    float mid[256] BNBO_ALIGN64;
    float split[16] BNBO_ALIGN64;
    float col[16][16] BNBO_ALIGN64;
    float code[256] BNBO_ALIGN64;
    uint8_t planes[4][256] BNBO_ALIGN64; /* byte k of code[i] (little endian): the VBMI lookup tables */
    bucket_lut bl; /* bucket table of the SIMD search (bucket_lut.h), lut NULL when none */
    octave_lut ol; /* octave tables of the VBMI search (octave_lut_vbmi.h), ol.ok 0 when none */
} bnbo_qtab;

/* One parameter as the kernels see it: up to three state streams (in the optimizer's order, see
 * optim_dispatch.c), float (32-bit) or codes + absmax (8-bit). */
typedef struct {
    void *p;
    const void *g;
    float *f[3];
    uint8_t *c[3];
    float *am[3];
    int64_t n;
} bnbo_seg;

typedef struct {
    int opt;
    int dtype;
    int eight_bit;
    int nstates;
    int vbmi; /* AVX-512 kernels may use VBMI byte permutes */
    int64_t blocksize;
    int64_t tile; /* 8-bit: elements per tile, a multiple of blocksize (scratch holds 3 tiles of floats) */
    bnbo_consts k;
    const bnbo_qtab *tab[3];
} bnbo_job;

/* Mode of a pass over a chunk: NORM accumulates ||u||^2 and ||p||^2 into acc[0], acc[1] and writes
 * nothing; APPLY writes p and the states with the learning rate lr_s (= float(lr) * clip scale). */
#define BNBO_MODE_NORM 0
#define BNBO_MODE_APPLY 1

/* Elements [lo, hi) of seg (8-bit: lo and hi on block boundaries, or hi == seg->n). scratch holds
 * 3 * job->tile floats for the 8-bit path. */
typedef void (*bnbo_chunk_fn)(const bnbo_job *job, const bnbo_seg *seg, int64_t lo, int64_t hi, int mode, float lr_s,
                              double *acc, float *scratch);
typedef void (*bnbo_search_fn)(const bnbo_qtab *tab, const float *x, uint8_t *codes, int64_t n);

void bnbo_chunk_generic(const bnbo_job *job, const bnbo_seg *seg, int64_t lo, int64_t hi, int mode, float lr_s,
                        double *acc, float *scratch);
void bnbo_search_generic(const bnbo_qtab *tab, const float *x, uint8_t *codes, int64_t n);
#if BNBO_X86
void bnbo_chunk_avx2(const bnbo_job *job, const bnbo_seg *seg, int64_t lo, int64_t hi, int mode, float lr_s,
                     double *acc, float *scratch);
void bnbo_search_avx2(const bnbo_qtab *tab, const float *x, uint8_t *codes, int64_t n);
void bnbo_chunk_avx512(const bnbo_job *job, const bnbo_seg *seg, int64_t lo, int64_t hi, int mode, float lr_s,
                       double *acc, float *scratch);
void bnbo_search_avx512(const bnbo_qtab *tab, const float *x, uint8_t *codes, int64_t n);
#endif

/* The scale of a block's requantization: 1 / absmax (0 for an all-zero block), at most FLT_MAX. */
BNBO_INLINE float bnbo_inv_absmax(float amax) {
    const float inv = amax > 0.0f ? 1.0f / amax : 0.0f;
    return inv > FLT_MAX ? FLT_MAX : inv;
}

/* ---- scalar float conversions, IEEE round-to-nearest-even as torch's .to(dtype) ---- */

BNBO_INLINE uint32_t bnbo_f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

BNBO_INLINE float bnbo_u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

BNBO_INLINE float bnbo_bf16_to_f32(uint16_t h) { return bnbo_u2f((uint32_t)h << 16); }

BNBO_INLINE uint16_t bnbo_f32_to_bf16(float f) {
    uint32_t u = bnbo_f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

BNBO_INLINE float bnbo_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bnbo_u2f(sign | 0x7f800000u | (m << 13));
    if (e == 0) return bnbo_u2f(sign | bnbo_f2u((float)m * 5.9604644775390625e-8f)); /* m * 2^-24, exact */
    return bnbo_u2f(sign | ((e + 112u) << 23) | (m << 13));
}

BNBO_INLINE uint16_t bnbo_f32_to_f16(float f) {
    uint32_t x = bnbo_f2u(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) return sign | 0x7e00u;
    if (x >= 0x477ff000u) return sign | 0x7c00u; /* >= 65520 rounds to inf */
    if (x < 0x38800000u) {                        /* below 2^-14: subnormal half, rounded by a float add */
        const float t = bnbo_u2f(x) + 0.5f;
        return sign | (uint16_t)(bnbo_f2u(t) - 0x3f000000u);
    }
    x += 0xc8000fffu + ((x >> 13) & 1u); /* rebias the exponent by -112 and round to nearest even */
    return sign | (uint16_t)(x >> 13);
}

#endif
