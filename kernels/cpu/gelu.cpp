#include "kernels/cpu/gelu.h"

#include <cmath>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pg::kernels::cpu {

void gelu_forward(const float* x, int64_t n, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(x[i]);
    y[i] = float((v * 0.5) * (1.0 + std::erf(v * M_SQRT1_2)));
  }
}

void gelu_backward(const float* x, const float* dy, int64_t n, float* dx) {
  constexpr double kBeta = M_2_SQRTPI * M_SQRT1_2 * 0.5;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double v = double(x[i]);
    const double cdf = 0.5 * (1.0 + std::erf(v * M_SQRT1_2));
    const double pdf = std::exp(-0.5 * (v * v)) * kBeta;
    dx[i] = float(double(dy[i]) * (cdf + v * pdf));
  }
}

}  // namespace pg::kernels::cpu
