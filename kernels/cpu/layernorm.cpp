// LayerNorm over channels: positions in chunks of kChunk, each chunk's per-position sums kept
// in double on the stack and accumulated channel by channel (reads are contiguous along the
// plane; each position's sum still runs over c in order, which is the header's contract).
#include "kernels/cpu/layernorm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

// Every product and sum rounded on its own (GNU C++ contracts a * b + c into an FMA by
// default under -march=native): the order contract of the header.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pg::kernels::cpu {

namespace {

constexpr int kChunk = 64;

// mean and rstd of positions [i0, i0 + m) of one sample's [C, HW] block.
void stats(const LayerNormParams& p, const float* xs, int64_t i0, int m, double* mean, double* rstd) {
  for (int j = 0; j < m; ++j) mean[j] = 0.0;
  for (int c = 0; c < p.C; ++c) {
    const float* xc = xs + int64_t(c) * p.HW + i0;
    for (int j = 0; j < m; ++j) mean[j] += double(xc[j]);
  }
  double q[kChunk];
  for (int j = 0; j < m; ++j) {
    mean[j] = mean[j] / double(p.C);
    q[j] = 0.0;
  }
  for (int c = 0; c < p.C; ++c) {
    const float* xc = xs + int64_t(c) * p.HW + i0;
    for (int j = 0; j < m; ++j) {
      const double d = double(xc[j]) - mean[j];
      q[j] += d * d;
    }
  }
  for (int j = 0; j < m; ++j) rstd[j] = 1.0 / std::sqrt(q[j] / double(p.C) + p.eps);
}

}  // namespace

void layernorm_forward(const LayerNormParams& p, const float* x, const float* w, const float* b, float* y) {
  const int64_t chunks = (p.HW + kChunk - 1) / kChunk, units = int64_t(p.N) * chunks, plane = int64_t(p.C) * p.HW;
#pragma omp parallel for schedule(static)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t n = u / chunks, i0 = (u % chunks) * kChunk;
    const int m = int(std::min<int64_t>(kChunk, p.HW - i0));
    const float* xs = x + n * plane;
    float* ys = y + n * plane;
    double mean[kChunk], rstd[kChunk];
    stats(p, xs, i0, m, mean, rstd);
    for (int c = 0; c < p.C; ++c) {
      const float* xc = xs + int64_t(c) * p.HW + i0;
      float* yc = ys + int64_t(c) * p.HW + i0;
      const double wc = w ? double(w[c]) : 1.0, bc = b ? double(b[c]) : 0.0;
      for (int j = 0; j < m; ++j) yc[j] = float(((double(xc[j]) - mean[j]) * rstd[j]) * wc + bc);
    }
  }
}

void layernorm_backward(const LayerNormParams& p, const float* x, const float* w, const float* dy, float* dx) {
  const int64_t chunks = (p.HW + kChunk - 1) / kChunk, units = int64_t(p.N) * chunks, plane = int64_t(p.C) * p.HW;
#pragma omp parallel for schedule(static)
  for (int64_t u = 0; u < units; ++u) {
    const int64_t n = u / chunks, i0 = (u % chunks) * kChunk;
    const int m = int(std::min<int64_t>(kChunk, p.HW - i0));
    const float* xs = x + n * plane;
    const float* gs = dy + n * plane;
    float* ds = dx + n * plane;
    double mean[kChunk], rstd[kChunk], a[kChunk], bsum[kChunk];
    stats(p, xs, i0, m, mean, rstd);
    for (int j = 0; j < m; ++j) a[j] = bsum[j] = 0.0;
    for (int c = 0; c < p.C; ++c) {
      const float* xc = xs + int64_t(c) * p.HW + i0;
      const float* gc = gs + int64_t(c) * p.HW + i0;
      const double wc = w ? double(w[c]) : 1.0;
      for (int j = 0; j < m; ++j) {
        const double g = double(gc[j]) * wc;
        const double xh = (double(xc[j]) - mean[j]) * rstd[j];
        a[j] += g;
        bsum[j] += g * xh;
      }
    }
    for (int j = 0; j < m; ++j) {
      a[j] = a[j] / double(p.C);
      bsum[j] = bsum[j] / double(p.C);
    }
    for (int c = 0; c < p.C; ++c) {
      const float* xc = xs + int64_t(c) * p.HW + i0;
      const float* gc = gs + int64_t(c) * p.HW + i0;
      float* dc = ds + int64_t(c) * p.HW + i0;
      const double wc = w ? double(w[c]) : 1.0;
      for (int j = 0; j < m; ++j) {
        const double g = double(gc[j]) * wc;
        const double xh = (double(xc[j]) - mean[j]) * rstd[j];
        dc[j] = float(rstd[j] * ((g - a[j]) - xh * bsum[j]));
      }
    }
  }
}

}  // namespace pg::kernels::cpu
