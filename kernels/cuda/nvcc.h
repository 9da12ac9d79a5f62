// The nvcc side of kernels/cuda/compat.h: the CUDA runtime and bf16 headers and the
// project's portability macros as the real thing (see compat.h for the macros).
#pragma once

#if !defined(__CUDACC__)
#error "kernels/cuda/nvcc.h is for nvcc; host code includes kernels/cuda/compat.h"
#endif

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#define PG_SIMT 0
#define PG_HOST_DEVICE __host__ __device__
#define PG_DEVICE_INLINE __device__ __forceinline__
// One extern declaration of an untyped array for all kernels of a file (nvcc rejects
// `extern __shared__` arrays of different types with the same name in one file).
#define PG_DYNAMIC_SMEM(type, name)                                      \
  extern __shared__ __align__(16) unsigned char pg_dynamic_smem_raw_[]; \
  type* name = reinterpret_cast<type*>(pg_dynamic_smem_raw_)
#define PG_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  kernel<<<(grid), (block), (smem_bytes), (stream)>>>(__VA_ARGS__)
