#include "kernels/cpu/activations.h"

#include "kernels/cpu/smooth_math.h"

// Every product and sum rounded on its own (the header's contract); no-trapping-math lets the
// compiler turn smooth_math.h's selects into vector blends (it changes no value). The same
// options as smooth_math.h's, so its functions inline here.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off", "no-trapping-math")
#endif

namespace pg::kernels::cpu {

namespace {

// std::max(a, b) and std::min(a, b) (NaN as they pass it); <algorithm>'s own, compiled without
// this file's options, would not inline into its loops.
inline float max_as_std(float a, float b) { return a < b ? b : a; }
inline float min_as_std(float a, float b) { return b < a ? b : a; }

template <class F>
void each(const float* x, float* y, int64_t n, F f) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class F>
void each2(const float* s, const float* g, float* dx, int64_t n, F f) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) dx[i] = f(s[i], g[i]);
}

}  // namespace

void activation_forward(Activation a, const float* x, float* y, int64_t n) {
  switch (a) {
    case Activation::silu:
      return each(x, y, n, [](float v) { return smooth::silu(v); });
    case Activation::sigmoid:
      return each(x, y, n, [](float v) { return smooth::sigmoid(v); });
    case Activation::hardswish:
      return each(x, y, n, [](float v) { return v * min_as_std(max_as_std(v + 3.f, 0.f), 6.f) / 6.f; });
    case Activation::hardsigmoid:
      return each(x, y, n, [](float v) { return min_as_std(max_as_std(v + 3.f, 0.f), 6.f) / 6.f; });
  }
}

void activation_backward(Activation a, const float* saved, const float* g, float* dx, int64_t n) {
  switch (a) {
    case Activation::silu:
      return each2(saved, g, dx, n, [](float x, float gv) { return smooth::silu_grad(x, gv); });
    case Activation::sigmoid:
      return each2(saved, g, dx, n, [](float y, float gv) { return gv * (1.f - y) * y; });
    case Activation::hardswish:
      return each2(saved, g, dx, n, [](float x, float gv) {
        if (x < -3.f) return 0.f;
        if (x <= 3.f) return gv * (x / 3.f + 0.5f);
        return gv;
      });
    case Activation::hardsigmoid:
      return each2(saved, g, dx, n,
                   [](float x, float gv) { return x > -3.f && x < 3.f ? gv * (1.f / 6.f) : 0.f; });
  }
}

}  // namespace pg::kernels::cpu
