// Error measures shared by the kernel tests on the host (tests/cuda_host) and on the GPU
// (tests/cuda), so that both hold the kernels to the same numbers.
#pragma once
#include <algorithm>
#include <cmath>
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

}  // namespace pg::testing
