#include "parchgrad/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <boost/math/distributions/students_t.hpp>

namespace pg::eval {

std::vector<float> clean_map(const float* map, int64_t HW) {
  std::vector<float> a(static_cast<size_t>(HW));
  for (int64_t i = 0; i < HW; ++i) a[size_t(i)] = std::isnan(map[i]) ? 0.f : std::fabs(map[i]);
  return a;
}

std::vector<int32_t> pixel_order(const float* map, int64_t HW, Order order) {
  const std::vector<float> a = clean_map(map, HW);
  std::vector<int32_t> idx(static_cast<size_t>(HW));
  std::iota(idx.begin(), idx.end(), 0);
  if (order == Order::MoRF)
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t i, int32_t j) { return a[size_t(i)] > a[size_t(j)]; });
  else
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t i, int32_t j) { return a[size_t(i)] < a[size_t(j)]; });
  return idx;
}

int64_t pixels_for_ratio(int64_t HW, double ratio) {
  const int64_t k = int64_t(double(HW) * ratio);
  return std::clamp<int64_t>(k, 0, HW);
}

void remove_pixels(const float* x, int C, int64_t HW, const int32_t* order, int64_t count, float* dst) {
  std::copy(x, x + C * HW, dst);
  for (int64_t i = 0; i < count; ++i)
    for (int c = 0; c < C; ++c) dst[c * HW + order[i]] = 0.f;
}

void keep_pixels(const float* x, int C, int64_t HW, const int32_t* order, int64_t count, float* dst) {
  std::fill(dst, dst + C * HW, 0.f);
  for (int64_t i = 0; i < count; ++i)
    for (int c = 0; c < C; ++c) dst[c * HW + order[i]] = x[c * HW + order[i]];
}

int argmax(const float* v, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return int(best);
}

RatioMetrics ratio_metrics(const float* p0, const float* pr, int K, int y) {
  RatioMetrics m;
  const int yhat = argmax(p0, K);
  m.prob = pr[y];
  m.aopc = double(p0[y]) - double(pr[y]);
  m.lodds = std::log(double(pr[y]) / (double(p0[y]) + 1e-10));
  m.acc = argmax(pr, K) == y ? 1 : 0;
  m.fracdiff = std::fabs(double(p0[yhat]) - double(pr[yhat]));
  return m;
}

double trapezoid(const std::vector<double>& x, const std::vector<double>& y) {
  double s = 0;
  for (size_t i = 1; i < x.size() && i < y.size(); ++i) s += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) * 0.5;
  return s;
}

BoxMetrics box_metrics(const float* map, int64_t HW, const uint8_t* mask) {
  BoxMetrics b;
  const std::vector<float> a = clean_map(map, HW);
  double r_in = 0, r_tot = 0;
  int64_t best = 0;
  for (int64_t i = 0; i < HW; ++i) {
    const double v = a[size_t(i)];
    r_tot += v;
    if (mask[i]) {
      r_in += v;
      ++b.area;
    }
    if (a[size_t(i)] > a[size_t(best)]) best = i;
  }
  if (b.area == 0) {
    b.why = "box is empty in the input";
  } else if (b.area == HW) {
    b.why = "box covers the whole input";
  } else if (!(r_tot > 0)) {
    b.why = "map is zero everywhere";
  } else {
    b.valid = true;
  }
  if (!b.valid) return b;
  b.mu_in = r_in / r_tot;
  b.mu_out = 1.0 - b.mu_in;
  b.mu_in_w = b.mu_in * double(HW) / double(b.area);
  b.mu_out_w = b.mu_out * double(HW) / double(HW - b.area);
  b.pointing_hit = mask[best] != 0;
  return b;
}

MeanCI mean_ci95(const std::vector<double>& v) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  MeanCI m;
  m.n = int64_t(v.size());
  m.mean = m.lo = m.hi = nan;
  if (v.empty()) return m;
  double s = 0;
  for (double x : v) s += x;
  m.mean = s / double(v.size());
  if (v.size() < 2) return m;
  double ss = 0;
  for (double x : v) ss += (x - m.mean) * (x - m.mean);
  const double sd = std::sqrt(ss / double(v.size() - 1));
  const boost::math::students_t t(double(v.size() - 1));
  const double half = boost::math::quantile(t, 0.975) * sd / std::sqrt(double(v.size()));
  m.lo = m.mean - half;
  m.hi = m.mean + half;
  return m;
}

}  // namespace pg::eval
