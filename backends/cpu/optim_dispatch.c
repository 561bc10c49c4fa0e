/* bnbo_step: argument validation, per-call constants and search tables, the work split into chunks
 * (OpenMP across chunks above BNBO_PARALLEL_MIN_WORK elements), the two-pass update clipping of
 * LAMB / LARS (pass 1: ||u|| and ||p|| per parameter, nothing written; pass 2: the step), and runtime
 * selection of the AVX-512 / AVX2 / generic kernel. */
#include <math.h>
#include <stdlib.h>

#include "optim_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* ---- instruction-set dispatch ---- */

static int g_detected = -1;
static int g_active = -1;

int bnbo_isa_detected(void) {
    if (g_detected < 0) {
        int isa = BNBO_ISA_GENERIC;
#if BNBO_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
            isa = BNBO_ISA_AVX2;
            if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
                isa = BNBO_ISA_AVX512;
                if (__builtin_cpu_supports("avx512vbmi")) isa = BNBO_ISA_AVX512VBMI;
            }
        }
#endif
        g_detected = isa;
    }
    return g_detected;
}

int bnbo_isa_active(void) {
    if (g_active < 0) g_active = bnbo_isa_detected();
    return g_active;
}

int bnbo_set_isa(int isa) {
    if (isa < BNBO_ISA_GENERIC || isa > BNBO_ISA_AVX512VBMI) return BNBO_EINVAL;
    const int det = bnbo_isa_detected();
    g_active = isa < det ? isa : det;
    return g_active;
}

int bnbo_openmp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static bnbo_chunk_fn chunk_fn(void) {
#if BNBO_X86
    switch (bnbo_isa_active()) {
    case BNBO_ISA_AVX512VBMI:
    case BNBO_ISA_AVX512: return bnbo_chunk_avx512;
    case BNBO_ISA_AVX2: return bnbo_chunk_avx2;
    default: break;
    }
#endif
    return bnbo_chunk_generic;
}

static bnbo_search_fn search_fn(void) {
#if BNBO_X86
    switch (bnbo_isa_active()) {
    case BNBO_ISA_AVX512VBMI:
    case BNBO_ISA_AVX512: return bnbo_search_avx512;
    case BNBO_ISA_AVX2: return bnbo_search_avx2;
    default: break;
    }
#endif
    return bnbo_search_generic;
}

/* ---- tables and constants ---- */

static void build_qtab(bnbo_qtab *t, const float *q, int with_lut) {
    for (int i = 0; i < 255; i++) t->mid[i] = (q[i] + q[i + 1]) * 0.5f;
    t->mid[255] = INFINITY;
    for (int k = 0; k < 16; k++) t->split[k] = t->mid[16 * k + 15];
    for (int j = 0; j < 16; j++)
        for (int h = 0; h < 16; h++) t->col[j][h] = t->mid[16 * h + j];
    memcpy(t->code, q, sizeof(t->code));
    for (int i = 0; i < 256; i++) {
        const uint32_t u = bnbo_f2u(q[i]);
        for (int k = 0; k < 4; k++) t->planes[k][i] = (uint8_t)(u >> (8 * k));
    }
    memset(&t->bl, 0, sizeof(t->bl));
    t->ol.ok = 0;
    if (with_lut && bnbo_isa_active() >= BNBO_ISA_AVX512VBMI) octave_lut_build(&t->ol, t->mid);
    if (with_lut && !t->ol.ok && bnbo_isa_active() != BNBO_ISA_GENERIC) bucket_lut_build(&t->bl, t->mid);
}

static int two_state(int opt) {
    return opt == BNBO_ADAM || opt == BNBO_ADAMW || opt == BNBO_LAMB || opt == BNBO_ADEMAMIX;
}

static int coupled(int opt) {
    return opt == BNBO_ADAM || opt == BNBO_MOMENTUM || opt == BNBO_LARS || opt == BNBO_RMSPROP || opt == BNBO_ADAGRAD;
}

static void make_consts(bnbo_consts *k, const bnbo_hparams *h) {
    k->gnorm = (float)h->gnorm_scale;
    k->wd = (float)h->weight_decay;
    k->b1 = (float)h->beta1;
    k->b2 = (float)h->beta2;
    k->b3 = (float)h->beta3;
    k->omb1 = (float)(1.0 - h->beta1);
    k->omb2 = (float)(1.0 - h->beta2);
    k->omb3 = (float)(1.0 - h->beta3);
    k->rc1 = 1.0f / (float)(1.0 - pow(h->beta1, (double)h->step));
    k->rc2 = 1.0f / (float)(1.0 - pow(h->beta2, (double)h->step));
    const double c1 = 1.0 - pow(h->beta1, (double)h->step), sqrt_c2 = sqrt(1.0 - pow(h->beta2, (double)h->step));
    k->rc1s = (float)(sqrt_c2 / c1);
    k->eps_s = (float)(h->eps * sqrt_c2);
    k->alpha = (float)h->alpha;
    k->eps = (float)h->eps;
    k->decay = (float)(1.0 - h->lr * h->weight_decay);
    k->coupled_wd = coupled(h->optimizer) && h->weight_decay > 0;
    k->decoupled_wd = !coupled(h->optimizer) && h->weight_decay > 0;
    k->first_step = h->step == 1;
}

/* ---- validation ---- */

static int64_t n_blocks(int64_t n, int64_t bs) { return n / bs + (n % bs != 0); }

static int check_tensor(const bnbo_tensor *t, int opt, int eight_bit, int64_t bs) {
    const int64_t n = t->n;
    if (n < 0) return BNBO_EINVAL;
    const int64_t want1 = opt == BNBO_ADEMAMIX ? 2 * n : n;
    const int64_t want2 = two_state(opt) ? n : 0;
    if (t->n_state1 != want1 || t->n_state2 != want2) return BNBO_EINVAL;
    if (n == 0) return BNBO_OK;
    if (!t->p || !t->g || !t->state1 || (want2 && !t->state2)) return BNBO_EINVAL;
    if (!eight_bit) return t->n_absmax1 == 0 && t->n_absmax2 == 0 ? BNBO_OK : BNBO_EINVAL;
    const int64_t nb = n_blocks(n, bs);
    if (t->n_absmax1 != (opt == BNBO_ADEMAMIX ? 2 * nb : nb) || t->n_absmax2 != (want2 ? nb : 0)) return BNBO_EINVAL;
    if (!t->absmax1 || (want2 && !t->absmax2)) return BNBO_EINVAL;
    return BNBO_OK;
}

/* The state streams of one parameter in the kernels' order (adam: m, v; ademamix: m1, m2, v; else the one
 * state); m, m1, m2 and one-state optimizers use qmap1, the second moment v of two-state ones qmap2. */
static void make_seg(bnbo_seg *s, const bnbo_tensor *t, int opt, int eight_bit, int64_t bs) {
    memset(s, 0, sizeof(*s));
    s->p = t->p;
    s->g = t->g;
    s->n = t->n;
    const int64_t nb = eight_bit ? n_blocks(t->n, bs) : 0;
    int k = 0;
    for (int part = 0; part < (opt == BNBO_ADEMAMIX ? 2 : 1); part++, k++) {
        if (eight_bit) {
            s->c[k] = (uint8_t *)t->state1 + part * t->n;
            s->am[k] = t->absmax1 + part * nb;
        } else {
            s->f[k] = (float *)t->state1 + part * t->n;
        }
    }
    if (two_state(opt)) {
        if (eight_bit) {
            s->c[k] = (uint8_t *)t->state2;
            s->am[k] = t->absmax2;
        } else {
            s->f[k] = (float *)t->state2;
        }
    }
}

/* ---- the step ---- */

typedef struct {
    int64_t param, lo, hi;
} chunk_t;

#define BNBO_CHUNK 16384
#define BNBO_LUT_MIN_WORK 32768
#define BNBO_TILE 512 /* 8-bit: blocks are dequantized and requantized this many elements at a time */

int bnbo_nearest_codes(const float *qmap, int64_t n_qmap, const float *x, uint8_t *codes, int64_t n) {
    if (!qmap || n_qmap != BNBO_QMAP_SIZE || n < 0 || (n > 0 && (!x || !codes))) return BNBO_EINVAL;
    bnbo_qtab *tab = (bnbo_qtab *)aligned_alloc(64, sizeof(bnbo_qtab));
    if (!tab) return BNBO_ENOMEM;
    build_qtab(tab, qmap, 1);
    search_fn()(tab, x, codes, n);
    bucket_lut_free(&tab->bl);
    free(tab);
    return BNBO_OK;
}

int bnbo_search_kind(const float *qmap, int64_t n_qmap) {
    if (!qmap || n_qmap != BNBO_QMAP_SIZE) return BNBO_EINVAL;
    bnbo_qtab *tab = (bnbo_qtab *)aligned_alloc(64, sizeof(bnbo_qtab));
    if (!tab) return BNBO_ENOMEM;
    build_qtab(tab, qmap, 1);
    const int kind = tab->ol.ok ? BNBO_SEARCH_OCTAVE : tab->bl.lut ? BNBO_SEARCH_BUCKET : BNBO_SEARCH_REGISTER;
    bucket_lut_free(&tab->bl);
    free(tab);
    return kind;
}

int bnbo_step(const bnbo_hparams *h, int dtype, int eight_bit, const float *qmap1, int64_t n_qmap1,
              const float *qmap2, int64_t n_qmap2, int64_t blocksize, const bnbo_tensor *params, int64_t n_params,
              int nthreads) {
    if (!h || h->optimizer < BNBO_ADAM || h->optimizer > BNBO_ADEMAMIX || h->step < 1 || n_params < 0) return BNBO_EINVAL;
    if (dtype != BNBO_F32 && dtype != BNBO_F16 && dtype != BNBO_BF16) return BNBO_EINVAL;
    if (n_params > 0 && !params) return BNBO_EINVAL;
    const int opt = h->optimizer;
    eight_bit = eight_bit != 0;
    if (eight_bit) {
        if (blocksize < BNBO_MIN_BLOCKSIZE || (blocksize & (blocksize - 1)) || blocksize > ((int64_t)1 << 30))
            return BNBO_EINVAL;
        if (!qmap1 || n_qmap1 != BNBO_QMAP_SIZE) return BNBO_EINVAL;
        if (two_state(opt) && (!qmap2 || n_qmap2 != BNBO_QMAP_SIZE)) return BNBO_EINVAL;
    } else {
        blocksize = BNBO_CHUNK;
    }
    for (int64_t i = 0; i < n_params; i++)
        if (check_tensor(&params[i], opt, eight_bit, blocksize) != BNBO_OK) return BNBO_EINVAL;

    int rc = BNBO_ENOMEM;
    bnbo_qtab *tabs = NULL;
    bnbo_seg *segs = NULL;
    chunk_t *chunks = NULL;
    double *acc = NULL;
    float *lr_s = NULL;
    bnbo_job job;
    memset(&job, 0, sizeof(job));
    job.opt = opt;
    job.dtype = dtype;
    job.eight_bit = eight_bit;
    job.blocksize = blocksize;
    job.tile = blocksize >= BNBO_TILE ? blocksize : BNBO_TILE; /* power-of-two blocks divide BNBO_TILE */
    job.vbmi = bnbo_isa_active() >= BNBO_ISA_AVX512VBMI;
    make_consts(&job.k, h);

    tabs = (bnbo_qtab *)aligned_alloc(64, 2 * sizeof(bnbo_qtab));
    segs = (bnbo_seg *)malloc(sizeof(bnbo_seg) * (size_t)(n_params ? n_params : 1));
    lr_s = (float *)malloc(sizeof(float) * (size_t)(n_params ? n_params : 1));
    if (tabs) tabs[0].bl.lut = tabs[1].bl.lut = NULL;
    if (!tabs || !segs || !lr_s) goto done;

    /* chunks: whole blocks (8-bit) of about BNBO_CHUNK elements */
    const int64_t csize = eight_bit ? (blocksize >= BNBO_CHUNK ? blocksize : BNBO_CHUNK) : BNBO_CHUNK;
    int64_t nchunks = 0, total = 0;
    for (int64_t i = 0; i < n_params; i++) {
        nchunks += n_blocks(params[i].n, csize);
        total += params[i].n;
    }
    chunks = (chunk_t *)malloc(sizeof(chunk_t) * (size_t)(nchunks ? nchunks : 1));
    acc = (double *)calloc((size_t)(nchunks ? nchunks : 1) * 2, sizeof(double));
    if (!chunks || !acc) goto done;
    {
        int64_t c = 0;
        for (int64_t i = 0; i < n_params; i++) {
            make_seg(&segs[i], &params[i], opt, eight_bit, blocksize);
            for (int64_t lo = 0; lo < params[i].n; lo += csize, c++) {
                chunks[c].param = i;
                chunks[c].lo = lo;
                chunks[c].hi = params[i].n - lo < csize ? params[i].n : lo + csize;
            }
            lr_s[i] = (float)h->lr;
        }
    }
    if (eight_bit) { /* the bucket tables pay off on larger calls only (same codes either way) */
        build_qtab(&tabs[0], qmap1, total >= BNBO_LUT_MIN_WORK);
        build_qtab(&tabs[1], two_state(opt) ? qmap2 : qmap1, total >= BNBO_LUT_MIN_WORK);
    }
    job.tab[0] = &tabs[0];
    job.tab[1] = opt == BNBO_ADEMAMIX ? &tabs[0] : &tabs[1];
    job.tab[2] = &tabs[1];

    const bnbo_chunk_fn fn = chunk_fn();
    int nt = nthreads < 1 ? 1 : nthreads;
    if (total < BNBO_PARALLEL_MIN_WORK || nchunks < 2) nt = 1;
    if (nt > nchunks) nt = (int)(nchunks ? nchunks : 1);
    const int64_t scratch_floats = eight_bit ? 3 * job.tile : 0;
    int failed = 0;

    for (int pass = h->max_unorm > 0 ? BNBO_MODE_NORM : BNBO_MODE_APPLY; pass <= BNBO_MODE_APPLY; pass++) {
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
        {
            float *scratch = NULL;
            int ok = 1;
            if (scratch_floats) {
                scratch = (float *)aligned_alloc(64, (size_t)scratch_floats * sizeof(float));
                ok = scratch != NULL;
                if (!ok) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
                    failed = 1;
                }
            }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
            for (int64_t c = 0; c < nchunks; c++) {
                if (!ok) continue;
                const chunk_t *ch = &chunks[c];
                fn(&job, &segs[ch->param], ch->lo, ch->hi, pass, lr_s[ch->param], &acc[2 * c], scratch);
            }
            free(scratch);
        }
        if (failed) goto done;
        if (pass == BNBO_MODE_NORM) { /* update clipping: s = min(1, max_unorm ||p|| / ||u||) per parameter */
            int64_t c = 0;
            for (int64_t i = 0; i < n_params; i++) {
                double usq = 0.0, psq = 0.0;
                for (; c < nchunks && chunks[c].param == i; c++) {
                    usq += acc[2 * c];
                    psq += acc[2 * c + 1];
                }
                const float unorm = (float)sqrt(usq);
                const float limit = (float)h->max_unorm * (float)sqrt(psq);
                const float scale = (limit > 0.0f && unorm > limit) ? limit / fmaxf(unorm, 1e-38f) : 1.0f;
                lr_s[i] = (float)h->lr * scale;
            }
        }
    }
    rc = BNBO_OK;
done:
    if (tabs) {
        bucket_lut_free(&tabs[0].bl);
        bucket_lut_free(&tabs[1].bl);
    }
    free(tabs);
    free(segs);
    free(chunks);
    free(acc);
    free(lr_s);
    return rc;
}
