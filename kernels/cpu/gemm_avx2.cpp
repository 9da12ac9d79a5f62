// gemm_ordered's AVX2 micro-kernel: 6 x 16 tiles (12 accumulator registers), compiled for
// AVX2 and FMA by the target switch below whatever the build's flags; it runs only where the
// CPU has both (gemm.cpp chooses).
// The standard headers come before the target switch, so that no inline function of theirs is
// compiled for AVX2 here and then shared with other files by the linker; everything compiled
// under it has internal linkage (gemm_impl.h).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#include <immintrin.h>

#include "kernels/cpu/gemm_impl.h"

namespace pg::kernels::cpu {
namespace {

struct Avx2 {
  using V = __m256;
  static constexpr int kW = 8, kMR = 6, kNV = 2;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
};

}  // namespace

void gemm_avx2(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc, float* ws) {
  GemmKernel<Avx2>::run(M, N, K, A, lda, B, ldb, C, ldc, ws);
}

}  // namespace pg::kernels::cpu

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

namespace pg::kernels::cpu {

// Outside the target switch: called on every CPU.
size_t gemm_avx2_workspace_floats() { return GemmKernel<Avx2>::kWorkspaceFloats; }

}  // namespace pg::kernels::cpu
