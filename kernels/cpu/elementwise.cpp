#include "kernels/cpu/elementwise.h"

// y * scale + shift must round twice, as the CUDA kernel's __fmul_rn/__fadd_rn: GNU C++
// contracts a*b + c into an FMA by default (-march=native has FMA), so not in this file.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pg::kernels::cpu {

void add(int64_t n, const float* a, const float* b, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void channel_affine(const ChannelAffineParams& p, float* y, const float* scale, const float* shift) {
  for (int64_t plane = 0; plane < int64_t(p.N) * p.C; ++plane) {
    const int c = int(plane % p.C);
    float* yp = y + plane * p.HW;
    if (scale && shift) {
      const float s = scale[c], b = shift[c];
      for (int64_t i = 0; i < p.HW; ++i) {
        const float t = yp[i] * s;
        yp[i] = t + b;
      }
    } else if (scale) {
      const float s = scale[c];
      for (int64_t i = 0; i < p.HW; ++i) yp[i] *= s;
    } else if (shift) {
      const float b = shift[c];
      for (int64_t i = 0; i < p.HW; ++i) yp[i] += b;
    }
  }
}

void sample_channel_scale(const SampleChannelScaleParams& p, const float* dy, const float* scale, float* out) {
  for (int64_t plane = 0; plane < int64_t(p.N) * p.K; ++plane) {
    const float s = scale[plane];
    for (int64_t i = plane * p.HW; i < (plane + 1) * p.HW; ++i) out[i] = s * dy[i];
  }
}

void scale(int64_t n, float alpha, const float* x, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = alpha * x[i];
}

}  // namespace pg::kernels::cpu
