/* Public C API of the cpu quantization kernels (blockwise 8-bit, 4-bit NF4/FP4, gemv_4bit, LLM.int8()).
 *
 * Read by both the C compiler and cffi's cdef (build_quant.py takes the text between the cdef markers),
 * so the prototypes and constants exist once. Every function takes the length of every buffer it
 * touches, checks them against each other, and returns BNBQ_OK or a negative BNBQ_E* code; it never
 * reads or writes outside the lengths it was given. `nthreads` caps the OpenMP team (1 = serial); calls
 * below BNBQ_PARALLEL_MIN_WORK elements of work never open a parallel region.
 *
 * Float buffers come in three dtypes (BNBQ_F32 / BNBQ_F16 / BNBQ_BF16), converted with IEEE
 * round-to-nearest-even exactly as torch's `.to(dtype)`.
 */
#ifndef BNB_API_CPU_QUANT_H
#define BNB_API_CPU_QUANT_H

#include <stdint.h>

/* cdef-begin */
#define BNBQ_OK 0
#define BNBQ_EINVAL -1
#define BNBQ_ENOMEM -2

#define BNBQ_F32 0
#define BNBQ_F16 1
#define BNBQ_BF16 2

/* instruction-set levels of the dispatch, lowest first */
#define BNBQ_ISA_GENERIC 0
#define BNBQ_ISA_AVX2 1
#define BNBQ_ISA_AVX512 2

/* bits of bnbq_cpu_flags() */
#define BNBQ_CPU_AVX2 1
#define BNBQ_CPU_FMA 2
#define BNBQ_CPU_F16C 4
#define BNBQ_CPU_AVX512F 8
#define BNBQ_CPU_AVX512BW 16
#define BNBQ_CPU_AVX512VL 32
#define BNBQ_CPU_AVX512DQ 64
#define BNBQ_CPU_AVX512VNNI 128
#define BNBQ_CPU_AVX512BF16 256
#define BNBQ_CPU_AVX512FP16 512
#define BNBQ_CPU_AVX512VBMI 1024

/* below this many elements of work a kernel runs on the calling thread only */
#define BNBQ_PARALLEL_MIN_WORK 131072

int bnbq_cpu_flags(void);
int bnbq_isa_detected(void);
int bnbq_isa_active(void);
int bnbq_set_isa(int isa);
int bnbq_openmp_max_threads(void);
/* output pool blocks (quant_memory.c): 2 MiB-aligned, huge-page advised; NULL when out of memory */
void *bnbq_pool_alloc(int64_t nbytes);
void bnbq_pool_free(void *p);

int bnbq_quantize_blockwise(const void *A, int dtype, int64_t n, const float *code, int64_t code_len,
                            int64_t blocksize, uint8_t *out, int64_t out_len, float *absmax, int64_t absmax_len,
                            int nthreads);
int bnbq_dequantize_blockwise(const uint8_t *A, int64_t n, const float *absmax, int64_t absmax_len,
                              const float *code, int64_t code_len, int64_t blocksize, void *out, int dtype,
                              int64_t out_len, int nthreads);
int bnbq_quantize_4bit(const void *A, int dtype, int64_t n, const float *sorted_values, const uint8_t *sorted_codes,
                       int64_t table_len, int64_t blocksize, uint8_t *packed, int64_t packed_len, float *absmax,
                       int64_t absmax_len, int nthreads);
int bnbq_dequantize_4bit(const uint8_t *packed, int64_t packed_len, const float *absmax, int64_t absmax_len,
                         const float *code, int64_t code_len, int64_t blocksize, int64_t n, void *out, int dtype,
                         int64_t out_len, int nthreads);
int bnbq_gemv_4bit(const void *A, int dtype, int64_t M, int64_t K, const uint8_t *B, int64_t B_len, int64_t N,
                   const float *absmax, const uint8_t *absmax_q, int64_t absmax_len, const float *code,
                   int64_t code_len, int64_t blocksize, const float *nested_absmax, int64_t nested_len,
                   const float *nested_code, int64_t nested_code_len, const float *nested_offset,
                   int64_t nested_blocksize, void *out, int64_t out_len, int nthreads);
int bnbq_int8_vectorwise_quant(const void *A, int dtype, int64_t rows, int64_t K, float threshold, int8_t *codes,
                               int64_t codes_len, float *row_absmax, int64_t row_absmax_len, uint8_t *outlier_flags,
                               int64_t flags_len, int nthreads);
int bnbq_int8_linear_matmul(const int8_t *A, int64_t M, int64_t K, const int8_t *B, int64_t N, int32_t *C,
                            int64_t C_len, int nthreads);
int bnbq_int8_mm_dequant(const int32_t *A, int64_t M, int64_t N, const float *row_stats, int64_t row_len,
                         const float *col_stats, int64_t col_len, const void *bias, int bias_dtype, int64_t bias_len,
                         void *out, int out_dtype, int64_t out_len, int nthreads);
int bnbq_int8_mm_outlier_row(const void *A, int dtype, int64_t K, const int8_t *CB, int64_t N, const float *SCB,
                             int64_t scb_len, float threshold, const void *bias, int bias_dtype, int64_t bias_len,
                             void *out, int64_t out_len, int nthreads);
/* cdef-end */

#endif
