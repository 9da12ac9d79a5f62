// Small portability helpers for kernels/cuda sources (both nvcc and the host SIMT runtime).
//   PG_UNROLL             `#pragma unroll` under nvcc; nothing on the host (g++ warns on it).
//   PG_NO_FP_CONTRACT     at the top of a .cu whose float results must be bit-identical to
//                         a CPU twin: on the host runtime __fmul_rn/__fadd_rn are plain * and
//                         +, which g++ -O3 -march=native would fuse into an FMA once inlined
//                         (GNU C++ contracts by default); under nvcc the _rn intrinsics are
//                         never fused, so it is empty there.
//   imin, imax            int min/max on both sides.
//   grid_1d(n, block, cap)  blocks of `block` threads for a grid-stride loop over n items:
//                         ceil(n / block), at least 1, at most cap.
#pragma once

#include <cstdint>

#include "kernels/cuda/compat.h"

#if PG_SIMT && defined(__clang__)
#define PG_NO_FP_CONTRACT _Pragma("clang fp contract(off)")
#elif PG_SIMT && defined(__GNUC__)
#define PG_NO_FP_CONTRACT _Pragma("GCC optimize(\"fp-contract=off\")")
#else
#define PG_NO_FP_CONTRACT
#endif

namespace pg::kernels::cuda {
PG_DEVICE_INLINE int imax(int a, int b) { return a > b ? a : b; }
PG_DEVICE_INLINE int imin(int a, int b) { return a < b ? a : b; }
inline unsigned grid_1d(int64_t n, int block, int64_t cap = 8192) {
  const int64_t b = (n + block - 1) / block;
  return unsigned(b < 1 ? 1 : (b > cap ? cap : b));
}
}  // namespace pg::kernels::cuda

#if PG_SIMT
#define PG_UNROLL
#else
#define PG_UNROLL _Pragma("unroll")
#endif
