#include "kernels/cpu/squeeze_excite.h"

namespace pg::kernels::cpu {

void se_scale_forward(const SampleChannelScaleParams& p, const float* x, const float* s, float* out) {
  const int64_t planes = int64_t(p.N) * p.K;
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const float sc = s[nc];
    const float* xp = x + nc * p.HW;
    float* op = out + nc * p.HW;
    for (int64_t i = 0; i < p.HW; ++i) op[i] = xp[i] * sc;
  }
}

void se_scale_backward(const SampleChannelScaleParams& p, const float* g, const float* x, const float* s, float* dx,
                       float* ds) {
  const int64_t planes = int64_t(p.N) * p.K;
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const float* gp = g + nc * p.HW;
    if (ds) {
      const float* xp = x + nc * p.HW;
      double acc = 0.0;
      for (int64_t i = 0; i < p.HW; ++i) acc += double(gp[i]) * double(xp[i]);
      ds[nc] = float(acc);
    }
    if (dx) {
      const float sc = s[nc];
      float* dp = dx + nc * p.HW;
      for (int64_t i = 0; i < p.HW; ++i) dp[i] = gp[i] * sc;
    }
  }
}

}  // namespace pg::kernels::cpu
