/* Runtime CPU dispatch of the quant kernels: detect the instruction sets once, pick the highest level
 * (AVX-512 F/BW/VL/DQ, else AVX2+FMA+F16C, else the portable scalar code), let callers force a lower one. */
#include "quant_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int g_flags = -1;
static int g_detected = BNBQ_ISA_GENERIC;
static int g_active = -1;

static void detect(void) {
    int f = 0;
#if BNBQ_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) f |= BNBQ_CPU_AVX2;
    if (__builtin_cpu_supports("fma")) f |= BNBQ_CPU_FMA;
    if (__builtin_cpu_supports("f16c")) f |= BNBQ_CPU_F16C;
    if (__builtin_cpu_supports("avx512f")) f |= BNBQ_CPU_AVX512F;
    if (__builtin_cpu_supports("avx512bw")) f |= BNBQ_CPU_AVX512BW;
    if (__builtin_cpu_supports("avx512vl")) f |= BNBQ_CPU_AVX512VL;
    if (__builtin_cpu_supports("avx512dq")) f |= BNBQ_CPU_AVX512DQ;
    if (__builtin_cpu_supports("avx512vnni")) f |= BNBQ_CPU_AVX512VNNI;
    if (__builtin_cpu_supports("avx512bf16")) f |= BNBQ_CPU_AVX512BF16;
    if (__builtin_cpu_supports("avx512fp16")) f |= BNBQ_CPU_AVX512FP16;
    if (__builtin_cpu_supports("avx512vbmi")) f |= BNBQ_CPU_AVX512VBMI;
#endif
    const int avx2 = BNBQ_CPU_AVX2 | BNBQ_CPU_FMA | BNBQ_CPU_F16C;
    const int avx512 = avx2 | BNBQ_CPU_AVX512F | BNBQ_CPU_AVX512BW | BNBQ_CPU_AVX512VL | BNBQ_CPU_AVX512DQ;
    g_detected = (f & avx512) == avx512 ? BNBQ_ISA_AVX512 : (f & avx2) == avx2 ? BNBQ_ISA_AVX2 : BNBQ_ISA_GENERIC;
    g_flags = f;
}

int bnbq_cpu_flags(void) {
    if (g_flags < 0) detect();
    return g_flags;
}

int bnbq_isa_detected(void) {
    if (g_flags < 0) detect();
    return g_detected;
}

int bnbq_isa_level(void) {
    if (g_active < 0) g_active = bnbq_isa_detected();
    return g_active;
}

int bnbq_isa_active(void) { return bnbq_isa_level(); }

int bnbq_set_isa(int isa) {
    if (isa < BNBQ_ISA_GENERIC || isa > BNBQ_ISA_AVX512) return BNBQ_EINVAL;
    const int det = bnbq_isa_detected();
    g_active = isa < det ? isa : det;
    return g_active;
}

int bnbq_openmp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
