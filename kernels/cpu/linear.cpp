#include "kernels/cpu/linear.h"

#include <cstdint>

#include "kernels/cpu/blas.h"

namespace pg::kernels::cpu {

void linear_forward(int N, int in, int out, const float* x, const float* w, const float* b, float* y) {
  blas::sgemm(false, true, N, out, in, 1.f, x, in, w, in, 0.f, y, out);
  if (b)
    for (int n = 0; n < N; ++n)
      for (int o = 0; o < out; ++o) y[int64_t(n) * out + o] += b[o];
}

void linear_backward(int N, int in, int out, const float* dy, const float* w, float* dx) {
  blas::sgemm(false, false, N, in, out, 1.f, dy, out, w, in, 0.f, dx, in);
}

}  // namespace pg::kernels::cpu
