// gemm_ordered (kernels/cpu/gemm.h): the scalar family and the choice of family.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/cpu/gemm_impl.h"

namespace pg::kernels::cpu {

// The vector families (gemm_avx2.cpp, gemm_avx512.cpp), compiled with their own flags.
size_t gemm_avx2_workspace_floats();
void gemm_avx2(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc, float* ws);
size_t gemm_avx512_workspace_floats();
void gemm_avx512(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                 float* ws);

namespace {

// One float per "register": the same chains through std::fma (a CPU without FMA gets the
// same bits, slowly, from the C library's correctly rounded fma).
struct Scalar {
  using V = float;
  static constexpr int kW = 1, kMR = 4, kNV = 4;
  static V zero() { return 0.f; }
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V bcast(const float* p) { return *p; }
  static V fma(V a, V b, V c) { return std::fma(a, b, c); }
  static V add(V a, V b) { return a + b; }
};

GemmIsa best_isa() {
  static const GemmIsa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return GemmIsa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GemmIsa::kAvx2;
    return GemmIsa::kScalar;
  }();
  return best;
}

}  // namespace

bool gemm_isa_supported(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::kAuto:
    case GemmIsa::kScalar:
      return true;
    case GemmIsa::kAvx2:
      return best_isa() == GemmIsa::kAvx2 || best_isa() == GemmIsa::kAvx512;
    case GemmIsa::kAvx512:
      return best_isa() == GemmIsa::kAvx512;
  }
  return false;
}

const char* gemm_ordered_isa() {
  switch (best_isa()) {
    case GemmIsa::kAvx512:
      return "avx512";
    case GemmIsa::kAvx2:
      return "avx2";
    default:
      return "scalar";
  }
}

size_t gemm_ordered_workspace_floats() {
  return std::max({GemmKernel<Scalar>::kWorkspaceFloats, gemm_avx2_workspace_floats(),
                   gemm_avx512_workspace_floats()});
}

void gemm_ordered(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                  float* workspace, GemmIsa isa) {
  if (isa == GemmIsa::kAuto) isa = best_isa();
  if (!gemm_isa_supported(isa)) throw Error("gemm_ordered: this CPU cannot run the requested instruction set");
  if (M <= 0 || N <= 0) return;
  switch (isa) {
    case GemmIsa::kAvx512:
      gemm_avx512(M, N, K, A, lda, B, ldb, C, ldc, workspace);
      return;
    case GemmIsa::kAvx2:
      gemm_avx2(M, N, K, A, lda, B, ldb, C, ldc, workspace);
      return;
    default:
      GemmKernel<Scalar>::run(M, N, K, A, lda, B, ldb, C, ldc, workspace);
  }
}

}  // namespace pg::kernels::cpu
