#include "kernels/cpu/relu.h"

namespace pg::kernels::cpu {

void relu_forward(float* x, int64_t n, uint64_t* mask) {
  const int64_t words = relu_mask_words(n);
#pragma omp parallel for schedule(static)
  for (int64_t wi = 0; wi < words; ++wi) {
    const int64_t b = wi * 64, e = b + 64 < n ? b + 64 : n;
    uint64_t bits = 0;
    for (int64_t i = b; i < e; ++i) {
      const bool pos = x[i] > 0.f;
      bits |= uint64_t(pos) << (i - b);
      x[i] = pos ? x[i] : 0.f;
    }
    if (mask) mask[wi] = bits;
  }
}

void relu6_forward(float* x, int64_t n, uint64_t* mask) {
  const int64_t words = relu_mask_words(n);
#pragma omp parallel for schedule(static)
  for (int64_t wi = 0; wi < words; ++wi) {
    const int64_t b = wi * 64, e = b + 64 < n ? b + 64 : n;
    uint64_t bits = 0;
    for (int64_t i = b; i < e; ++i) {
      const float v = x[i];
      const bool pass = v > 0.f && v < 6.f;
      bits |= uint64_t(pass) << (i - b);
      x[i] = v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
    }
    if (mask) mask[wi] = bits;
  }
}

void relu_backward(float* g, int64_t n, const uint64_t* mask) {
  const int64_t words = relu_mask_words(n);
#pragma omp parallel for schedule(static)
  for (int64_t wi = 0; wi < words; ++wi) {
    const int64_t b = wi * 64, e = b + 64 < n ? b + 64 : n;
    const uint64_t bits = mask[wi];
    for (int64_t i = b; i < e; ++i) g[i] = (bits >> (i - b)) & 1u ? g[i] : 0.f;
  }
}

}  // namespace pg::kernels::cpu
