// Small portability helpers for kernels/cuda sources (both nvcc and the host SIMT runtime).
//   PG_UNROLL   `#pragma unroll` under nvcc; nothing on the host (g++ warns on it).
#pragma once

#include "kernels/simt/cuda_compat.h"

#if PG_SIMT
#define PG_UNROLL
#else
#define PG_UNROLL _Pragma("unroll")
#endif
