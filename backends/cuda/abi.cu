// Library identity and error text, for the Python wrapper.
#include "common.cuh"

extern "C" int bnb_cuda_abi_version(void) { return BNB_CUDA_ABI_VERSION; }

extern "C" const char* bnb_cuda_error_string(int error) { return cudaGetErrorString((cudaError_t)error); }

// The statically linked runtime needs a driver at least as new as the toolkit that built it: a
// first runtime call reports an insufficient-driver error (or no device) before any kernel is tried.
extern "C" int bnb_cuda_device_check(void) {
    int count = 0;
    BNB_CHECK(cudaGetDeviceCount(&count));
    return count > 0 ? 0 : (int)cudaErrorNoDevice;
}
