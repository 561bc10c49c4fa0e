/* Public C API of the cpu fused optimizer kernels (bnb_api::optimizer_step / optimizer_step_multi).
 *
 * Read by both the C compiler and cffi's cdef (build_optim.py takes the text between the cdef markers),
 * so the prototypes and constants exist once. The update formulas are those of
 * core/reference/optim.py, evaluated in float32 with the same operation order (no FMA contraction), so
 * states and parameters match the reference within float rounding and 8-bit codes are the reference's
 * nearest codes of the same float32 values.
 *
 * bnbo_step() steps every tensor of `params` (one parameter group) in one call: 32-bit states (float)
 * or 8-bit blockwise states (uint8 codes + float absmax per `blocksize` block, code books qmap1/qmap2
 * of 256 ascending floats). Every buffer comes with its length; the lengths are checked against each
 * other before anything is read, and no kernel touches an element outside them. Returns BNBO_OK or a
 * negative BNBO_E* code. `nthreads` caps the OpenMP team; calls below BNBO_PARALLEL_MIN_WORK elements
 * run serially.
 */
#ifndef BNB_API_CPU_OPTIM_H
#define BNB_API_CPU_OPTIM_H

#include <stdint.h>

/* cdef-begin */
#define BNBO_OK 0
#define BNBO_EINVAL -1
#define BNBO_ENOMEM -2

/* parameter / gradient dtypes */
#define BNBO_F32 0
#define BNBO_F16 1
#define BNBO_BF16 2

/* optimizers (same order as bnb_api.core.ops.OPTIMIZERS) */
#define BNBO_ADAM 0
#define BNBO_ADAMW 1
#define BNBO_MOMENTUM 2
#define BNBO_LION 3
#define BNBO_RMSPROP 4
#define BNBO_ADAGRAD 5
#define BNBO_LAMB 6
#define BNBO_LARS 7
#define BNBO_ADEMAMIX 8

/* instruction-set levels of the dispatch, lowest first */
#define BNBO_ISA_GENERIC 0
#define BNBO_ISA_AVX2 1
#define BNBO_ISA_AVX512 2
#define BNBO_ISA_AVX512VBMI 3 /* AVX-512 plus VBMI byte permutes (code-book lookups without gathers) */

#define BNBO_QMAP_SIZE 256
#define BNBO_MIN_BLOCKSIZE 64
#define BNBO_PARALLEL_MIN_WORK 32768

/* Hyper-parameters as the op receives them (Python floats = double); the kernels round each derived
 * constant to float32 exactly where torch does (e.g. float(1 - beta1), float(1 - beta1**step)). */
typedef struct {
    int optimizer;
    int64_t step;
    double lr;
    double beta1;
    double beta2;
    double beta3;
    double alpha;
    double eps;
    double weight_decay;
    double gnorm_scale;
    double max_unorm;
} bnbo_hparams;

/* One parameter: p and g hold n elements of the call's dtype. state1: float (32-bit) or uint8 codes
 * (8-bit), n elements (AdEMAMix: 2n, m1 then m2); state2: n elements for adam/adamw/lamb/ademamix, else
 * NULL with n_state2 = 0. 8-bit: absmax1 has ceil(n / blocksize) floats (AdEMAMix: twice that), absmax2
 * ceil(n / blocksize) for two-state optimizers, else NULL / 0; 32-bit: both NULL / 0. */
typedef struct {
    void *p;
    const void *g;
    void *state1;
    void *state2;
    float *absmax1;
    float *absmax2;
    int64_t n;
    int64_t n_state1;
    int64_t n_state2;
    int64_t n_absmax1;
    int64_t n_absmax2;
} bnbo_tensor;

int bnbo_step(const bnbo_hparams *h, int dtype, int eight_bit, const float *qmap1, int64_t n_qmap1,
              const float *qmap2, int64_t n_qmap2, int64_t blocksize, const bnbo_tensor *params, int64_t n_params,
              int nthreads);

/* Nearest-code search alone (the requantization kernel), for tests: codes[i] = number of float32
 * midpoints (qmap[j] + qmap[j+1]) / 2 strictly below x[i]. */
int bnbo_nearest_codes(const float *qmap, int64_t n_qmap, const float *x, uint8_t *codes, int64_t n);

/* Which search requantizes with this code book on the active instruction set (calls of at least
 * BNBO_PARALLEL_MIN_WORK elements; smaller ones use the register search): BNBO_SEARCH_* or BNBO_EINVAL. */
#define BNBO_SEARCH_REGISTER 0 /* 8-step search over registers (any sorted code book) */
#define BNBO_SEARCH_BUCKET 1   /* bucket table + one gather per 16 values (bucket_lut.h) */
#define BNBO_SEARCH_OCTAVE 2   /* octave tables + byte permutes, 64 values per step (octave_lut_vbmi.h) */
int bnbo_search_kind(const float *qmap, int64_t n_qmap);

int bnbo_isa_detected(void);
int bnbo_isa_active(void);
int bnbo_set_isa(int isa);
int bnbo_openmp_max_threads(void);
/* cdef-end */

#endif
