#include "kernels/cpu/preprocess.h"

namespace pg::kernels::cpu {

void normalize_u8(const NormalizeParams& p, const uint8_t* rgb, float* out) {
  const int64_t hw = int64_t(p.H) * p.W;
  for (int64_t n = 0; n < p.N; ++n)
    for (int c = 0; c < 3; ++c)
      for (int64_t i = 0; i < hw; ++i) {
        const float v = static_cast<float>(rgb[(n * hw + i) * 3 + c]) / 255.0f;
        out[(n * 3 + c) * hw + i] = (v - p.mean[c]) / p.std[c];
      }
}

}  // namespace pg::kernels::cpu
