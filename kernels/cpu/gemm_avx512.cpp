// gemm_ordered's AVX-512 micro-kernel: 8 x 48 tiles (24 accumulator registers). This file
// alone is compiled with -mavx512f (CMakeLists.txt); it runs only where the CPU has it.
#include <immintrin.h>

#include "kernels/cpu/gemm_impl.h"

namespace pg::kernels::cpu {
namespace {

struct Avx512 {
  using V = __m512;
  static constexpr int kW = 16, kMR = 8, kNV = 3;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V bcast(const float* p) { return _mm512_set1_ps(*p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
};

}  // namespace

size_t gemm_avx512_workspace_floats() { return GemmKernel<Avx512>::kWorkspaceFloats; }

void gemm_avx512(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                 float* ws) {
  GemmKernel<Avx512>::run(M, N, K, A, lda, B, ldb, C, ldc, ws);
}

}  // namespace pg::kernels::cpu
