#include "kernels/cpu/maps.h"

#include <cmath>

// x*g must be rounded before it is added, as the CUDA kernel's __fmul_rn/__fadd_rn: GNU C++
// contracts a*b + c into an FMA by default (-march=native has FMA), so not in this file.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pg::kernels::cpu {

void channel_map(const ChannelMapParams& p, const float* g, const float* x, float* m) {
  const float C = float(p.C);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t i = 0; i < p.HW; ++i) {
      const int64_t base = n * p.C * p.HW + i;
      float s = 0.f;
      for (int64_t c = 0; c < p.C; ++c) {
        const int64_t j = base + c * p.HW;
        switch (p.kind) {
          case MapKind::abs_grad: s += std::fabs(g[j]); break;
          case MapKind::abs_input_x_grad: s += std::fabs(x[j] * g[j]); break;
          case MapKind::abs_mean_input_x_grad: s += x[j] * g[j]; break;
        }
      }
      const float mean = s / C;
      m[n * p.HW + i] = p.kind == MapKind::abs_mean_input_x_grad ? std::fabs(mean) : mean;
    }
}

}  // namespace pg::kernels::cpu
