// The one header a kernels/cuda source includes for the CUDA surface its kernels use. Under
// nvcc: the CUDA runtime and the real thing (kernels/cuda/nvcc.h). Under a host compiler: the
// CPU execution mode, the same source run on the SIMT runtime (kernels/simt/cuda_compat.h).
// Neither side sees the other's headers.
//
// Portability macros (both sides):
//   PG_SIMT                          1 on the host runtime, 0 under nvcc
//   PG_HOST_DEVICE                   __host__ __device__
//   PG_DEVICE_INLINE                 __device__ __forceinline__
//   PG_DYNAMIC_SMEM(type, name)      `type* name` pointing at the block's dynamic shared memory
//   PG_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)
//                                    kernel<<<grid, block, smem_bytes, stream>>>(args...)
// (details of the host side: kernels/simt/cuda_compat.h)
#pragma once

#if defined(__CUDACC__)
#include "kernels/cuda/nvcc.h"
#else
#include "kernels/simt/cuda_compat.h"
#endif
