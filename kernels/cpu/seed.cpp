#include "kernels/cpu/seed.h"

#include <algorithm>
#include <cmath>

namespace pg::kernels::cpu {

void probability_seed(const SeedParams& p, const float* logits, const int32_t* targets, float* probs, float* seed) {
  for (int64_t n = 0; n < p.N; ++n) {
    const float* l = logits + n * p.K;
    double mx = l[0];
    for (int64_t k = 1; k < p.K; ++k) mx = std::max(mx, double(l[k]));
    double sum = 0;
    for (int64_t k = 0; k < p.K; ++k) sum += std::exp(double(l[k]) - mx);
    for (int64_t k = 0; k < p.K; ++k) {
      const float pk = float(std::exp(double(l[k]) - mx) / sum);
      if (probs) probs[n * p.K + k] = pk;
      seed[n * p.K + k] = k == targets[n] ? pk : 0.f;
    }
  }
}

}  // namespace pg::kernels::cpu
