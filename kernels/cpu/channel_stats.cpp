#include "kernels/cpu/channel_stats.h"

#include <algorithm>
#include <vector>

namespace pg::kernels::cpu {

void channel_gap(const ChannelGapParams& p, const float* y, const float* raw_scale, const float* raw_shift,
                 float* gap) {
  for (int64_t plane = 0; plane < int64_t(p.N) * p.C; ++plane) {
    const int c = int(plane % p.C);
    const float sc = raw_scale ? raw_scale[c] : 1.f, sh = raw_shift ? raw_shift[c] : 0.f;
    double acc = 0;
    for (int64_t i = 0; i < p.HW; ++i) {
      const float v = (y[plane * p.HW + i] - sh) / sc;
      acc += v > 0.f ? v : 0.f;
    }
    gap[plane] = float(acc / double(p.HW));
  }
}

namespace {
double unbiased_variance(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= double(v.size());
  double s = 0;
  for (double x : v) s += (x - mean) * (x - mean);
  return s / double(v.size() - 1);
}
}  // namespace

void spatial_variances(const SpatialVarianceParams& p, const float* g, const float* grad_scale,
                       const uint8_t* select, double* M, double* Nv) {
  std::vector<double> sh(size_t(p.HW)), sl(size_t(p.HW));
  for (int n = 0; n < p.N; ++n) {
    std::fill(sh.begin(), sh.end(), 0.0);
    std::fill(sl.begin(), sl.end(), 0.0);
    for (int c = 0; c < p.C; ++c) {
      const float* gc = g + (int64_t(n) * p.C + c) * p.HW;
      const double b = grad_scale ? double(grad_scale[c]) : 1.0;
      std::vector<double>& dst = select[int64_t(n) * p.C + c] ? sh : sl;
      for (int64_t i = 0; i < p.HW; ++i) dst[size_t(i)] += b * double(gc[i]);
    }
    M[n] = unbiased_variance(sh) + 1e-7;
    Nv[n] = unbiased_variance(sl) + 1e-7;
  }
}

void class_moments_update(const ClassMomentsParams& p, const float* gap, const int32_t* labels, ClassMoment* acc) {
  for (int n = 0; n < p.N; ++n) {
    const int k = labels[n];
    if (k < 0 || k >= p.classes) continue;
    for (int c = 0; c < p.C; ++c) {
      ClassMoment& a = acc[int64_t(k) * p.C + c];
      const double x = gap[int64_t(n) * p.C + c];
      a.count += 1;
      const double d = x - a.mean;
      a.mean += d / a.count;
      a.m2 += d * (x - a.mean);
    }
  }
}

}  // namespace pg::kernels::cpu
