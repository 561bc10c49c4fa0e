// Library identity and error text, for the Python wrapper.
#include "common.cuh"

extern "C" int bnb_cuda_abi_version(void) { return BNB_CUDA_ABI_VERSION; }

extern "C" const char* bnb_cuda_error_string(int error) { return cudaGetErrorString((cudaError_t)error); }
