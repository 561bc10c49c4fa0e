// Compatibility header: compiles the CUDA sources of backends/cuda with hipcc (force-included with
// `-include hip_compat.h`). It maps the CUDA runtime names the kernels use onto HIP; the kernels
// themselves are not forked. Logical warps are 32 lanes (BNB_WARP); on wave64 GPUs a wavefront holds
// two of them and shuffles use width 32 (see BNB_SHFL_XOR in common.cuh).
#pragma once

#define BNB_HIP 1

#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaErrorInvalidValue hipErrorInvalidValue
#define cudaStream_t hipStream_t
#define cudaGetLastError hipGetLastError
#define cudaGetErrorString hipGetErrorString
#define cudaMemsetAsync hipMemsetAsync
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaErrorNoDevice hipErrorNoDevice
#define cudaGetDevice hipGetDevice
#define cudaDeviceGetAttribute hipDeviceGetAttribute
#define cudaDevAttrMultiProcessorCount hipDeviceAttributeMultiprocessorCount
#define cudaDevAttrComputeCapabilityMajor hipDeviceAttributeComputeCapabilityMajor
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor hipOccupancyMaxActiveBlocksPerMultiprocessor
