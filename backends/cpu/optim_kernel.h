/* The fused optimizer kernel, written once over a small vector layer.
 *
 * Included by optim_generic.c (scalar, VW = 1), optim_avx2.c (VW = 8) and optim_avx512.c (VW = 16) after
 * each defines: the float vector type `vf`, its width VW, the arithmetic v_set1 / v_add / v_sub / v_mul /
 * v_div / v_sqrt / v_max / v_min / v_abs / v_sign, the lane mask v_keep(v, cnt) (zeroes lanes >= cnt),
 * the float64 sums of squares `vsq` (v_sq_zero / v_sq_add / v_sq_sum), the reduction v_hmax, loads and stores of cnt <= VW elements (v_load_f32,
 * v_store_f32, v_load_dt / v_store_dt for the parameter dtype, v_load_codes = code-book lookup), the
 * requantization v_store_quant with its register-resident tables `vq` / v_qprep, and KNAME(name).
 * Optionally (BNBO_HAS_LUT) v_store_quant_lut / v_qprep_lut / `vql`: the bucket-table search, used when
 * the code book has a table (bnbo_qtab.bl); both searches return the same codes. Optionally (BNBO_HAS_OCT)
 * v_requant_oct_tile / v_search_oct: the octave-table search, used when the code book has octave tables
 * (bnbo_qtab.ol, built only on CPUs with VBMI); it too returns the same codes. Optionally (BNBO_HAS_TILE)
 * the ISA's own v_dequant_tile; otherwise tiles are dequantized block by block with v_dequant.
 *
 * Every formula follows core/reference/optim.py operation by operation (each torch op rounds to float32;
 * the build disables FMA contraction), so all three instantiations compute identical values. One
 * deliberate difference: the update u (never a state) is computed in fewer roundings, so it may differ from
 * the reference's by a few ulps: the bias corrections multiply by float32 reciprocals, and Adam's
 * (m / c1) / (sqrt(v / c2) + eps) * lr is m * (sqrt(c2) / c1 * lr) / (sqrt(v) + eps * sqrt(c2)), the
 * constants folded in double (k->rc1s, k->eps_s; 3 multiplies fewer per element, whose pipes bound the update).
 */
#include <float.h>

/* elements between the one being stepped and the one being prefetched: 8-bit states, 1.5 tiles (64M-parameter 8-bit
 * AdamW with fast memory, side by side: 2% faster than one tile, 512; 1024 slower); 32-bit states, 512 */
#define BNBO_PREFETCH_AHEAD_8 768
#define BNBO_PREFETCH_AHEAD_32 512
#define BNBO_ABSMAX_AHEAD 32    /* blocks between a tile's first and the absmax prefetched at its start */

/* Formula families: optimizers sharing an update direction (weight decay style comes from job->k). */
#define BNBO_FAM_ADAM 0 /* adam, adamw, lamb */
#define BNBO_FAM_MOMENTUM 1 /* momentum, lars */
#define BNBO_FAM_LION 2
#define BNBO_FAM_RMSPROP 3
#define BNBO_FAM_ADAGRAD 4
#define BNBO_FAM_ADEMAMIX 5

#define BNBO_FAM_NSTATES(f) ((f) == BNBO_FAM_ADAM ? 2 : (f) == BNBO_FAM_ADEMAMIX ? 3 : 1)

/* The update direction u; updates the float32 states s0..s2 (the reference's update_direction). The Adam family
 * returns u * ustep / k->rc1s: ustep is k->rc1s for u itself (norms), k->rc1s * lr_s for the step (see k_apply). */
BNBO_INLINE vf KNAME(k_direction)(const int fam, const bnbo_consts *k, vf p, vf g, vf *s0, vf *s1, vf *s2,
                                  float ustep) {
    if (k->gnorm != 1.0f) g = v_mul(g, v_set1(k->gnorm)); /* g * 1 is g */
    if (k->coupled_wd) g = v_add(g, v_mul(v_set1(k->wd), p));
    switch (fam) {
    case BNBO_FAM_ADAM: {
        *s0 = v_add(v_mul(*s0, v_set1(k->b1)), v_mul(v_set1(k->omb1), g));
        *s1 = v_add(v_mul(*s1, v_set1(k->b2)), v_mul(v_mul(v_set1(k->omb2), g), g));
        return v_div(v_mul(*s0, v_set1(ustep)), v_add(v_sqrt(*s1), v_set1(k->eps_s)));
    }
    case BNBO_FAM_ADEMAMIX: {
        *s0 = v_add(v_mul(*s0, v_set1(k->b1)), v_mul(v_set1(k->omb1), g));
        *s1 = v_add(v_mul(*s1, v_set1(k->b3)), v_mul(v_set1(k->omb3), g));
        *s2 = v_add(v_mul(*s2, v_set1(k->b2)), v_mul(v_mul(v_set1(k->omb2), g), g));
        const vf num = v_add(v_mul(*s0, v_set1(k->rc1)), v_mul(v_set1(k->alpha), *s1));
        return v_div(num, v_add(v_sqrt(v_mul(*s2, v_set1(k->rc2))), v_set1(k->eps)));
    }
    case BNBO_FAM_MOMENTUM:
        *s0 = k->first_step ? g : v_add(v_mul(*s0, v_set1(k->b1)), g);
        return *s0;
    case BNBO_FAM_LION: {
        const vf u = v_sign(v_add(v_mul(v_set1(k->b1), *s0), v_mul(v_set1(k->omb1), g)));
        *s0 = v_add(v_mul(*s0, v_set1(k->b2)), v_mul(v_set1(k->omb2), g));
        return u;
    }
    case BNBO_FAM_RMSPROP:
        *s0 = v_add(v_mul(*s0, v_set1(k->b1)), v_mul(v_mul(v_set1(k->omb1), g), g));
        return v_div(g, v_add(v_sqrt(*s0), v_set1(k->eps)));
    default: /* BNBO_FAM_ADAGRAD */
        *s0 = v_add(*s0, v_mul(g, g));
        return v_div(g, v_add(v_sqrt(*s0), v_set1(k->eps)));
    }
}

/* New parameter values: decoupled decay, then p - lr_s * u (the reference's apply_update); the Adam family's u
 * comes with lr_s in it (k_direction). */
BNBO_INLINE vf KNAME(k_apply)(const int fam, const bnbo_consts *k, vf p, vf u, float lr_s) {
    if (k->decoupled_wd) p = v_mul(p, v_set1(k->decay));
    return v_sub(p, fam == BNBO_FAM_ADAM ? u : v_mul(v_set1(lr_s), u));
}

/* k_direction's ustep for a pass in this mode. */
BNBO_INLINE float KNAME(k_ustep)(const bnbo_consts *k, int mode, float lr_s) {
    return mode == BNBO_MODE_APPLY ? k->rc1s * lr_s : k->rc1s;
}

/* cnt (<= VW) elements at i of a 32-bit-state parameter. */
BNBO_INLINE void KNAME(k_elems32)(const int fam, const int dt, const bnbo_consts *k, const bnbo_seg *sg, int64_t i,
                                  int cnt, int mode, float lr_s, vsq *au, vsq *ap) {
    const int ns = BNBO_FAM_NSTATES(fam);
    vf p = v_load_dt(dt, sg->p, i, cnt);
    const vf g = v_load_dt(dt, sg->g, i, cnt);
    vf s0 = v_load_f32(sg->f[0] + i, cnt);
    vf s1 = ns > 1 ? v_load_f32(sg->f[1] + i, cnt) : v_set1(0.0f);
    vf s2 = ns > 2 ? v_load_f32(sg->f[2] + i, cnt) : v_set1(0.0f);
    vf u = KNAME(k_direction)(fam, k, p, g, &s0, &s1, &s2, KNAME(k_ustep)(k, mode, lr_s));
    if (mode == BNBO_MODE_NORM) {
        u = v_keep(u, cnt);
        v_sq_add(au, u);
        v_sq_add(ap, p); /* masked loads leave the lanes >= cnt zero */
        return;
    }
    v_store_f32(sg->f[0] + i, s0, cnt);
    if (ns > 1) v_store_f32(sg->f[1] + i, s1, cnt);
    if (ns > 2) v_store_f32(sg->f[2] + i, s2, cnt);
    p = KNAME(k_apply)(fam, k, p, u, lr_s);
    v_store_dt(dt, sg->p, i, p, cnt);
}

/* Prefetch for the VW elements at i + BNBO_PREFETCH_AHEAD_8 / _32, one cache line of each stream (parameter,
 * gradient, states: codes when eight_bit, else floats) per 64 bytes of it, spread over the loop: DRAM latency is
 * not hidden by the hardware prefetchers alone across the 5 streams of a step, and bursts of prefetches stall.
 * Prefetches never fault; the end check keeps them useful. */
BNBO_INLINE void KNAME(k_prefetch)(const int ns, const int dt, const int eight_bit, const bnbo_seg *sg, int64_t i) {
    i += eight_bit ? BNBO_PREFETCH_AHEAD_8 : BNBO_PREFETCH_AHEAD_32;
    if (i >= sg->n) return;
    const int64_t esz = dt == BNBO_F32 ? 4 : 2, ssz = eight_bit ? 1 : 4;
    if (((i * esz) & 63) < VW * esz) {
        __builtin_prefetch((const char *)sg->p + i * esz, 1);
        __builtin_prefetch((const char *)sg->g + i * esz, 0);
    }
    if (((i * ssz) & 63) < VW * ssz)
        for (int j = 0; j < ns; j++)
            __builtin_prefetch(eight_bit ? (const void *)(sg->c[j] + i) : (const void *)(sg->f[j] + i), 1);
}

#define BNBO_NORM_FLUSH 1024 /* lane sums added to the chunk totals every this many elements */

BNBO_INLINE void KNAME(k_chunk32)(const int fam, const int dt, const bnbo_job *job, const bnbo_seg *sg, int64_t lo,
                                  int64_t hi, int mode, float lr_s, double *acc) {
    const bnbo_consts k = job->k;
    for (int64_t b = lo; b < hi; b += BNBO_NORM_FLUSH) {
        const int64_t e = hi - b < BNBO_NORM_FLUSH ? hi : b + BNBO_NORM_FLUSH;
        vsq au = v_sq_zero(), ap = v_sq_zero();
        int64_t i = b;
        for (; i + VW <= e; i += VW) {
            KNAME(k_prefetch)(BNBO_FAM_NSTATES(fam), dt, 0, sg, i);
            KNAME(k_elems32)(fam, dt, &k, sg, i, VW, mode, lr_s, &au, &ap);
        }
        if (i < e) KNAME(k_elems32)(fam, dt, &k, sg, i, (int)(e - i), mode, lr_s, &au, &ap);
        if (mode == BNBO_MODE_NORM) {
            acc[0] += v_sq_sum(au);
            acc[1] += v_sq_sum(ap);
        }
    }
}

/* cnt (<= VW) elements at offset i of the block starting at b0 of an 8-bit-state parameter; the block's
 * dequantized states are in scratch (state j at scratch + j * bs, bs = job->tile) and are replaced by the new
 * ones. sg is the caller's local copy: the intrinsics' stores may alias anything, so fields read through a
 * pointer would be reloaded at every vector. */
BNBO_INLINE void KNAME(k_elems8)(const int fam, const int dt, const int64_t bs, const bnbo_consts *k,
                                 const bnbo_seg *sg, int64_t b0, int64_t i, int cnt, int mode,
                                 float lr_s, float *scratch, vsq *au, vsq *ap, vf *mx) {
    const int ns = BNBO_FAM_NSTATES(fam);
    vf s[3];
    for (int j = 0; j < 3; j++) s[j] = j < ns ? v_load_f32(scratch + j * bs + i, cnt) : v_set1(0.0f);
    vf p = v_load_dt(dt, sg->p, b0 + i, cnt);
    const vf g = v_load_dt(dt, sg->g, b0 + i, cnt);
    vf u = KNAME(k_direction)(fam, k, p, g, &s[0], &s[1], &s[2], KNAME(k_ustep)(k, mode, lr_s));
    if (mode == BNBO_MODE_NORM) {
        u = v_keep(u, cnt);
        v_sq_add(au, u);
        v_sq_add(ap, p); /* masked loads leave the lanes >= cnt zero */
        return;
    }
    for (int j = 0; j < ns; j++) {
        const vf sj = v_keep(s[j], cnt);
        v_store_f32(scratch + j * bs + i, sj, cnt);
        mx[j] = v_max(mx[j], v_abs(sj));
    }
    p = KNAME(k_apply)(fam, k, p, u, lr_s);
    v_store_dt(dt, sg->p, b0 + i, p, cnt);
}

/* Requantize len values of one state of one block: new absmax, codes = nearest of x * (1 / absmax). */
BNBO_INLINE void KNAME(k_requant)(const bnbo_qtab *tab, const float *vals, int64_t len, float amax, uint8_t *codes) {
    const vf vinv = v_set1(bnbo_inv_absmax(amax)), one = v_set1(1.0f), mone = v_set1(-1.0f);
    int64_t i = 0;
#ifdef BNBO_HAS_LUT
    if (tab->bl.lut) {
        const vql ql = v_qprep_lut(tab);
        for (; i + VW <= len; i += VW)
            v_store_quant_lut(codes + i, v_max(v_min(v_mul(v_load_f32(vals + i, VW), vinv), one), mone), VW, &ql);
        if (i < len) {
            const int cnt = (int)(len - i);
            v_store_quant_lut(codes + i, v_max(v_min(v_mul(v_load_f32(vals + i, cnt), vinv), one), mone), cnt, &ql);
        }
        return;
    }
#endif
    const vq q = v_qprep(tab);
    for (; i + VW <= len; i += VW)
        v_store_quant(codes + i, v_max(v_min(v_mul(v_load_f32(vals + i, VW), vinv), one), mone), VW, &q);
    if (i < len) {
        const int cnt = (int)(len - i);
        v_store_quant(codes + i, v_max(v_min(v_mul(v_load_f32(vals + i, cnt), vinv), one), mone), cnt, &q);
    }
}

#ifndef BNBO_HAS_TILE
/* Dequantize the tlen codes of a tile of whole blocks (the last may be partial): out = code * absmax[block]. */
BNBO_INLINE void v_dequant_tile(const bnbo_job *job, const bnbo_qtab *t, const uint8_t *c, int64_t tlen,
                                const float *am, float *out) {
    const int64_t bs = job->blocksize;
    for (int64_t o = 0; o < tlen; o += bs, am++) v_dequant(job, t, c + o, tlen - o < bs ? tlen - o : bs, *am, out + o);
}
#endif

/* Requantize the tlen values of a tile of whole blocks with their new absmax am[block]. */
BNBO_INLINE void KNAME(k_requant_tile)(const bnbo_job *job, const bnbo_qtab *tab, float *vals, int64_t tlen,
                                       const float *am, uint8_t *codes) {
    const int64_t bs = job->blocksize;
#ifdef BNBO_HAS_OCT
    if (tab->ol.ok) {
        v_requant_oct_tile(tab, vals, tlen, bs, am, codes);
        return;
    }
#endif
    for (int64_t o = 0; o < tlen; o += bs, am++)
        KNAME(k_requant)(tab, vals + o, tlen - o < bs ? tlen - o : bs, *am, codes + o);
}

/* Elements [lo, hi) in tiles of job->tile elements (whole blocks): dequantize the tile's states, update
 * block by block (each block's new absmax), requantize the tile. mode is a constant after inlining; job and
 * seg are read into locals once (see k_elems8). */
BNBO_INLINE void KNAME(k_chunk8_mode)(const int fam, const int dt, const int mode, const bnbo_job *job,
                                      const bnbo_seg *seg, int64_t lo, int64_t hi, float lr_s, double *acc,
                                      float *scratch) {
    const int ns = BNBO_FAM_NSTATES(fam);
    const int64_t bs = job->blocksize, tile = job->tile;
    const bnbo_consts k = job->k;
    const bnbo_seg sg = *seg;
    const int64_t tile_blocks = tile / bs; /* the tile holds whole blocks; lo is on a block boundary */
    const int64_t n_blocks = (sg.n + bs - 1) / bs;
    for (int64_t t0 = lo, tb = lo / bs; t0 < hi; t0 += tile, tb += tile_blocks) {
        const int64_t tlen = hi - t0 < tile ? hi - t0 : tile;
        if (tb + BNBO_ABSMAX_AHEAD < n_blocks) /* the absmax streams, one line per 16 blocks: the prefetchers miss them */
            for (int j = 0; j < ns; j++) __builtin_prefetch(sg.am[j] + tb + BNBO_ABSMAX_AHEAD, 1);
        for (int j = 0; j < ns; j++)
            v_dequant_tile(job, job->tab[j], sg.c[j] + t0, tlen, sg.am[j] + tb, scratch + j * tile);
        int64_t blk = tb;
        for (int64_t o = 0; o < tlen; o += bs, blk++) {
            const int64_t b0 = t0 + o, len = tlen - o < bs ? tlen - o : bs;
            vf mx[3] = {v_set1(0.0f), v_set1(0.0f), v_set1(0.0f)};
            vsq au = v_sq_zero(), ap = v_sq_zero();
            int64_t i = 0;
            for (; i + VW <= len; i += VW) {
                KNAME(k_prefetch)(ns, dt, 1, &sg, b0 + i);
                KNAME(k_elems8)(fam, dt, tile, &k, &sg, b0, i, VW, mode, lr_s, scratch + o, &au, &ap, mx);
            }
            if (i < len)
                KNAME(k_elems8)(fam, dt, tile, &k, &sg, b0, i, (int)(len - i), mode, lr_s, scratch + o, &au, &ap, mx);
            if (mode == BNBO_MODE_NORM) {
                acc[0] += v_sq_sum(au);
                acc[1] += v_sq_sum(ap);
                continue;
            }
            for (int j = 0; j < ns; j++) sg.am[j][blk] = v_hmax(mx[j]);
        }
        if (mode == BNBO_MODE_APPLY)
            for (int j = 0; j < ns; j++)
                KNAME(k_requant_tile)(job, job->tab[j], scratch + j * tile, tlen, sg.am[j] + tb, sg.c[j] + t0);
    }
}

BNBO_INLINE void KNAME(k_chunk8)(const int fam, const int dt, const bnbo_job *job, const bnbo_seg *sg, int64_t lo,
                                 int64_t hi, int mode, float lr_s, double *acc, float *scratch) {
    if (mode == BNBO_MODE_APPLY)
        KNAME(k_chunk8_mode)(fam, dt, BNBO_MODE_APPLY, job, sg, lo, hi, lr_s, acc, scratch);
    else
        KNAME(k_chunk8_mode)(fam, dt, BNBO_MODE_NORM, job, sg, lo, hi, lr_s, acc, scratch);
}

static int KNAME(family)(int opt) {
    switch (opt) {
    case BNBO_ADAM:
    case BNBO_ADAMW:
    case BNBO_LAMB: return BNBO_FAM_ADAM;
    case BNBO_MOMENTUM:
    case BNBO_LARS: return BNBO_FAM_MOMENTUM;
    case BNBO_LION: return BNBO_FAM_LION;
    case BNBO_RMSPROP: return BNBO_FAM_RMSPROP;
    case BNBO_ADAGRAD: return BNBO_FAM_ADAGRAD;
    default: return BNBO_FAM_ADEMAMIX;
    }
}

#define BNBO_RUN(FAM, DT)                                                                                   \
    do {                                                                                                    \
        if (job->eight_bit)                                                                                 \
            KNAME(k_chunk8)(FAM, DT, job, seg, lo, hi, mode, lr_s, acc, scratch);                           \
        else                                                                                                \
            KNAME(k_chunk32)(FAM, DT, job, seg, lo, hi, mode, lr_s, acc);                                   \
    } while (0)

#define BNBO_RUN_DT(FAM)                                                                                    \
    do {                                                                                                    \
        switch (job->dtype) {                                                                               \
        case BNBO_F16: BNBO_RUN(FAM, BNBO_F16); break;                                                      \
        case BNBO_BF16: BNBO_RUN(FAM, BNBO_BF16); break;                                                    \
        default: BNBO_RUN(FAM, BNBO_F32); break;                                                            \
        }                                                                                                   \
    } while (0)

void KNAME(bnbo_chunk)(const bnbo_job *job, const bnbo_seg *seg, int64_t lo, int64_t hi, int mode, float lr_s,
                       double *acc, float *scratch) {
    switch (KNAME(family)(job->opt)) {
    case BNBO_FAM_ADAM: BNBO_RUN_DT(BNBO_FAM_ADAM); break;
    case BNBO_FAM_MOMENTUM: BNBO_RUN_DT(BNBO_FAM_MOMENTUM); break;
    case BNBO_FAM_LION: BNBO_RUN_DT(BNBO_FAM_LION); break;
    case BNBO_FAM_RMSPROP: BNBO_RUN_DT(BNBO_FAM_RMSPROP); break;
    case BNBO_FAM_ADAGRAD: BNBO_RUN_DT(BNBO_FAM_ADAGRAD); break;
    default: BNBO_RUN_DT(BNBO_FAM_ADEMAMIX); break;
    }
}

void KNAME(bnbo_search)(const bnbo_qtab *tab, const float *x, uint8_t *codes, int64_t n) {
    int64_t i = 0;
#ifdef BNBO_HAS_OCT
    if (tab->ol.ok) {
        v_search_oct(tab, x, codes, n);
        return;
    }
#endif
#ifdef BNBO_HAS_LUT
    if (tab->bl.lut) {
        const vql ql = v_qprep_lut(tab);
        for (; i + VW <= n; i += VW) v_store_quant_lut(codes + i, v_load_f32(x + i, VW), VW, &ql);
        if (i < n) v_store_quant_lut(codes + i, v_load_f32(x + i, (int)(n - i)), (int)(n - i), &ql);
        return;
    }
#endif
    const vq q = v_qprep(tab);
    for (; i + VW <= n; i += VW) v_store_quant(codes + i, v_load_f32(x + i, VW), VW, &q);
    if (i < n) v_store_quant(codes + i, v_load_f32(x + i, (int)(n - i)), (int)(n - i), &q);
}

#undef BNBO_RUN
#undef BNBO_RUN_DT
