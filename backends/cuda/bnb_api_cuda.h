/* bnb_api CUDA/HIP kernels: the plain-C ABI of libbnb_api_cuda.so (and libbnb_api_rocm.so).
 *
 * This file is read twice: by the compiler (the .cu sources include it inside extern "C") and by
 * cffi's cdef (backends/cuda/library.py), so it holds only C declarations: no preprocessor lines.
 *
 * Conventions: every function returns 0 (cudaSuccess) or a cudaError_t / hipError_t code, whose text
 * bnb_cuda_error_string() gives. Pointers are device pointers unless noted; `stream` is the
 * cudaStream_t of torch's current stream passed as void*. Lengths are element counts (int64).
 * Formats and rounding are those of bnb_api.core.ops (read its docstrings).
 */

enum bnb_abi { BNB_CUDA_ABI_VERSION = 1 };

/* dtype codes of float tensors (inputs / outputs given as void*) */
enum bnb_dtype { BNB_F32 = 0, BNB_F16 = 1, BNB_BF16 = 2 };

/* optimizer ids: the order of bnb_api.core.ops.OPTIMIZERS */
enum bnb_optimizer {
    BNB_OPT_ADAM = 0, BNB_OPT_ADAMW = 1, BNB_OPT_MOMENTUM = 2, BNB_OPT_LION = 3, BNB_OPT_RMSPROP = 4,
    BNB_OPT_ADAGRAD = 5, BNB_OPT_LAMB = 6, BNB_OPT_LARS = 7, BNB_OPT_ADEMAMIX = 8
};

/* fields of one row of the optimizer tensor table (int64 each; BNB_TABLE_WIDTH per tensor) */
enum bnb_table_field {
    BNB_T_P = 0, BNB_T_G = 1, BNB_T_S1 = 2, BNB_T_S2 = 3, BNB_T_ABSMAX1 = 4, BNB_T_ABSMAX2 = 5,
    BNB_T_N = 6, BNB_T_DTYPES = 7, BNB_T_START = 8, BNB_TABLE_WIDTH = 10
};

/* elements per CUDA block of the 32-bit optimizer kernel (table START counts these chunks) */
enum bnb_optim_chunk { BNB_OPTIM32_CHUNK = 2048 };

/* Hyper-parameters of one optimizer step, float32 as the reference rounds them (host memory). */
typedef struct bnb_optim_params {
    int optimizer;        /* enum bnb_optimizer */
    int step;             /* >= 1 */
    int blocksize;        /* 8-bit states: quantization block size */
    int norm_pass;        /* 1: only accumulate ||u||^2 and ||p||^2 per tensor into norms, write nothing */
    float beta1, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3;
    float alpha, eps, weight_decay, lr;
    float decay_factor;   /* 1 - lr * weight_decay (decoupled weight decay) */
    float gnorm_scale;
    float max_unorm;      /* 0: no update clipping */
    float c1, c2;         /* 1 - beta1^step, 1 - beta2^step */
} bnb_optim_params;

int bnb_cuda_abi_version(void);
const char* bnb_cuda_error_string(int error);
/* 0 when this library's runtime can use a device here (driver recent enough, device visible) */
int bnb_cuda_device_check(void);

/* 8-bit blockwise: out uint8 (n,), absmax float32 (ceil(n / blocksize),); code float32 (256,) sorted */
int bnb_cuda_quantize_blockwise(const void* A, int a_dtype, const float* code, unsigned char* out,
                                float* absmax, long long n, int blocksize, void* stream);
int bnb_cuda_dequantize_blockwise(const unsigned char* A, const float* absmax, const float* code, void* out,
                                  int out_dtype, long long n, int blocksize, void* stream);

/* 4-bit: out (n + 1) / 2 packed bytes. sorted_values (16,) ascending code book values and
 * sorted_codes (16,) the 4-bit code of each (bnb_api.core.reference.fourbit.sorted_code_4bit). */
int bnb_cuda_quantize_4bit(const void* A, int a_dtype, const float* sorted_values,
                           const unsigned char* sorted_codes, unsigned char* out, float* absmax, long long n,
                           int blocksize, void* stream);
/* code: (16,) float32 code book indexed by the 4-bit code */
int bnb_cuda_dequantize_4bit(const unsigned char* A, const float* absmax, const float* code, void* out,
                             int out_dtype, long long n, int blocksize, void* stream);

/* out (N,) of a_dtype = A (K,) . dequant(B (N, K) packed)^T. Plain statistics: absmax_f32 (nblocks,),
 * absmax_u8 NULL. Nested: absmax_u8 (nblocks,) codes, nested_absmax (ceil(nblocks / nested_blocksize),),
 * nested_code (256,), nested_offset (1,), absmax_f32 NULL. */
int bnb_cuda_gemv_4bit(const void* A, int a_dtype, const unsigned char* B, const float* absmax_f32,
                       const unsigned char* absmax_u8, const float* nested_absmax, const float* nested_code,
                       const float* nested_offset, int nested_blocksize, const float* code, void* out,
                       long long N, long long K, int blocksize, void* stream);

/* LLM.int8(): A (rows, K) -> out int8 (rows, K), row_absmax (rows,); with threshold > 0,
 * col_flags int32 (K,) (zeroed by this call) gets 1 for each outlier column. */
int bnb_cuda_int8_vectorwise_quant(const void* A, int a_dtype, signed char* out, float* row_absmax,
                                   int* col_flags, long long rows, long long K, float threshold,
                                   void* stream);
/* out int32 (M, N) = A int8 (M, K) . B int8 (N, K)^T, exact */
int bnb_cuda_int8_linear_matmul(const signed char* A, const signed char* B, int* out, long long M,
                                long long N, long long K, void* stream);
/* out (rows, N) of out_dtype = A * (row_stats x col_stats) / 127^2 (+ bias (N,) of bias_dtype or NULL) */
int bnb_cuda_int8_mm_dequant(const int* A, const float* row_stats, const float* col_stats, const void* bias,
                             int bias_dtype, void* out, int out_dtype, long long rows, long long N,
                             void* stream);

/* Fused optimizer steps over n_tensors tensors described by `table` (device int64,
 * n_tensors x BNB_TABLE_WIDTH). 32-bit: START = first chunk of BNB_OPTIM32_CHUNK elements, total_work =
 * all chunks. 8-bit: START = first quantization block, total_work = all blocks; qmap1 / qmap2 (256,)
 * device code books. norms: device float64 (2 * n_tensors,), zeroed by the caller before a norm pass. */
int bnb_cuda_optimizer_32bit(const long long* table, int n_tensors, long long total_work,
                             const bnb_optim_params* params, double* norms, void* stream);
int bnb_cuda_optimizer_8bit(const long long* table, int n_tensors, long long total_work,
                            const float* qmap1, const float* qmap2, const bnb_optim_params* params,
                            double* norms, void* stream);
