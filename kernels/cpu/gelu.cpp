#include "kernels/cpu/gelu.h"

#include "kernels/cpu/smooth_math.h"

// smooth_math.h's options (no contraction; no-trapping-math so its selects become vector
// blends, which changes no value), so its functions inline here.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off", "no-trapping-math")
#endif

namespace pg::kernels::cpu {

void gelu_forward(const float* x, int64_t n, float* y) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = smooth::gelu(x[i]);
}

void gelu_backward(const float* x, const float* dy, int64_t n, float* dx) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = smooth::gelu_grad(x[i], dy[i]);
}

}  // namespace pg::kernels::cpu
