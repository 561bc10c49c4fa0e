/* Portable scalar instantiation of the optimizer kernel (VW = 1): compiles anywhere (aarch64 included)
 * and is the oracle the SIMD versions are tested against. */
#include <math.h>

#include "optim_internal.h"

typedef float vf;
#define VW 1
#define KNAME(name) name##_generic

BNBO_INLINE vf v_set1(float x) { return x; }
BNBO_INLINE vf v_add(vf a, vf b) { return a + b; }
BNBO_INLINE vf v_sub(vf a, vf b) { return a - b; }
BNBO_INLINE vf v_mul(vf a, vf b) { return a * b; }
BNBO_INLINE vf v_div(vf a, vf b) { return a / b; }
BNBO_INLINE vf v_sqrt(vf a) { return sqrtf(a); }
BNBO_INLINE vf v_max(vf a, vf b) { return a > b ? a : b; }
BNBO_INLINE vf v_min(vf a, vf b) { return a < b ? a : b; }
BNBO_INLINE vf v_abs(vf a) { return fabsf(a); }
BNBO_INLINE vf v_sign(vf a) { return (float)((a > 0.0f) - (a < 0.0f)); }
BNBO_INLINE vf v_keep(vf a, int cnt) { return cnt > 0 ? a : 0.0f; }
typedef double vsq; /* sums of squares in float64 */
BNBO_INLINE vsq v_sq_zero(void) { return 0.0; }
BNBO_INLINE void v_sq_add(vsq *s, vf a) { *s += (double)a * (double)a; }
BNBO_INLINE double v_sq_sum(vsq s) { return s; }
BNBO_INLINE float v_hmax(vf a) { return a; }

BNBO_INLINE vf v_load_f32(const float *p, int cnt) {
    (void)cnt;
    return *p;
}

BNBO_INLINE void v_store_f32(float *p, vf v, int cnt) {
    (void)cnt;
    *p = v;
}

BNBO_INLINE vf v_load_dt(int dt, const void *base, int64_t i, int cnt) {
    (void)cnt;
    if (dt == BNBO_F16) return bnbo_f16_to_f32(((const uint16_t *)base)[i]);
    if (dt == BNBO_BF16) return bnbo_bf16_to_f32(((const uint16_t *)base)[i]);
    return ((const float *)base)[i];
}

BNBO_INLINE void v_store_dt(int dt, void *base, int64_t i, vf v, int cnt) {
    (void)cnt;
    if (dt == BNBO_F16)
        ((uint16_t *)base)[i] = bnbo_f32_to_f16(v);
    else if (dt == BNBO_BF16)
        ((uint16_t *)base)[i] = bnbo_f32_to_bf16(v);
    else
        ((float *)base)[i] = v;
}

BNBO_INLINE vf v_load_codes(const uint8_t *c, int cnt, const float *code) {
    (void)cnt;
    return code[*c];
}

/* Block dequantization: out[i] = code[c[i]] * absmax. */
BNBO_INLINE void v_dequant(const bnbo_job *job, const bnbo_qtab *t, const uint8_t *c, int64_t len, float am,
                           float *out) {
    (void)job;
    for (int64_t i = 0; i < len; i++) out[i] = t->code[c[i]] * am;
}

typedef struct {
    const float *mid;
} vq;

BNBO_INLINE vq v_qprep(const bnbo_qtab *tab) {
    vq q = {tab->mid};
    return q;
}

/* Branch-free binary search: the count of midpoints strictly below x (mid[255] = +inf is never below). */
BNBO_INLINE void v_store_quant(uint8_t *c, vf x, int cnt, const vq *q) {
    (void)cnt;
    unsigned idx = 0;
    for (unsigned step = 128; step; step >>= 1) idx += q->mid[idx + step - 1] < x ? step : 0;
    *c = (uint8_t)idx;
}

#include "optim_kernel.h"
