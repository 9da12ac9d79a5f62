// Error measures and operand roundings shared by the kernel tests on the host
// (tests/cuda_host) and on the GPU (tests/cuda), so that both hold the kernels to the same
// numbers.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace pg::testing {

// max_i |a_i - b_i| / max(bound_i, 1e-30); NaN counts as infinite. bound_i is the sum of
// the absolute values of the terms of element i (or the value itself), so this is the error
// relative to what the element's rounding can be.
inline double max_rel(const std::vector<float>& a, const std::vector<float>& b, const std::vector<float>& bound) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double e = std::fabs(double(a[i]) - double(b[i])) / std::max(double(bound[i]), 1e-30);
    worst = std::max(worst, std::isnan(e) ? INFINITY : e);
  }
  return worst;
}

// Rounds to TF32 as cvt.rna does (round to nearest, ties away from zero, 10 mantissa bits).
inline float tf32_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & 0xFFFFE000u;
  std::memcpy(&x, &u, 4);
  return x;
}

// Rounds to BF16 as __float2bfloat16_rn does (round to nearest, ties to even, 8 significant
// bits); finite inputs only.
inline float bf16_round(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&x, &u, 4);
  return x;
}

}  // namespace pg::testing
