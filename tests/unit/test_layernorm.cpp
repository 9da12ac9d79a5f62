// ConvNeXt's new operations (kernels/cpu/layernorm.h, gelu.h) and model: LayerNorm over
// channels against plain loops (the order contract bit for bit), its statistics, batch,
// position and thread invariance, input gradients against central finite differences; exact
// GELU against known values and its derivative; the depthwise 7x7 pad-3 conv with bias (the
// blocks' first conv) against loops; convnext_tiny's convs in Conv2d module order, its Linear
// layers outside convs() and never offered to a hook.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "autograd/hooks.h"
#include "kernels/cpu/depthwise.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "nn/model.h"
#include "tests/unit/support.h"

namespace kc = pg::kernels::cpu;
using pg::kernels::LayerNormParams;
using pg::test::randn;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Double operations rounded one at a time (a volatile result cannot be fused into an FMA).
double mul(double a, double b) {
  volatile double r = a * b;
  return r;
}

// The header's order contract as plain loops, one position at a time.
std::vector<float> ln_ref(const LayerNormParams& p, const std::vector<float>& x, const std::vector<float>& w,
                          const std::vector<float>& b) {
  std::vector<float> y(x.size());
  for (int n = 0; n < p.N; ++n)
    for (int64_t i = 0; i < p.HW; ++i) {
      auto at = [&](int c) { return size_t((int64_t(n) * p.C + c) * p.HW + i); };
      double s = 0;
      for (int c = 0; c < p.C; ++c) s += double(x[at(c)]);
      const double mean = s / double(p.C);
      double q = 0;
      for (int c = 0; c < p.C; ++c) {
        const double d = double(x[at(c)]) - mean;
        q += mul(d, d);
      }
      const double rstd = 1.0 / std::sqrt(q / double(p.C) + p.eps);
      for (int c = 0; c < p.C; ++c)
        y[at(c)] = float(mul(mul(double(x[at(c)]) - mean, rstd), double(w[size_t(c)])) + double(b[size_t(c)]));
    }
  return y;
}

LayerNormParams lnp(int N, int C, int64_t HW) {
  LayerNormParams p;
  p.N = N, p.C = C, p.HW = HW;
  p.eps = 1e-6;
  return p;
}

}  // namespace

TEST_CASE("layernorm forward: the order contract bit for bit, zero mean and unit variance per position") {
  for (auto [N, C, HW] : {std::tuple{2, 5, int64_t(7)}, std::tuple{1, 96, int64_t(130)}, std::tuple{3, 1, int64_t(4)}}) {
    const LayerNormParams p = lnp(N, C, HW);
    const auto x = randn(size_t(N * C * HW), 3, 2.f);
    auto w = randn(size_t(C), 4);
    auto b = randn(size_t(C), 5);
    std::vector<float> y(x.size(), 7.f);
    kc::layernorm_forward(p, x.data(), w.data(), b.data(), y.data());
    CHECK(same_bits(y, ln_ref(p, x, w, b)));
    // Without the affine part: mean 0 and (biased) variance 1 at every position (C > 1).
    if (C > 1) {
      kc::layernorm_forward(p, x.data(), nullptr, nullptr, y.data());
      for (int n = 0; n < N; ++n)
        for (int64_t i = 0; i < HW; ++i) {
          double s = 0, q = 0;
          for (int c = 0; c < C; ++c) s += y[size_t((int64_t(n) * C + c) * HW + i)];
          for (int c = 0; c < C; ++c) q += std::pow(y[size_t((int64_t(n) * C + c) * HW + i)] - s / C, 2);
          CHECK(std::fabs(s / C) < 1e-6);
          CHECK(std::fabs(q / C - 1.0) < 1e-5);
        }
    } else {  // one channel: x - mean is 0, the output is the bias
      kc::layernorm_forward(p, x.data(), w.data(), b.data(), y.data());
      for (float v : y) CHECK(v == b[0]);
    }
  }
}

TEST_CASE("layernorm: a sample's bits depend neither on the batch, the position nor the thread count") {
  const int C = 24;
  const int64_t HW = 150;  // not a multiple of the 64-position chunk
  const LayerNormParams p3 = lnp(3, C, HW), p1 = lnp(1, C, HW);
  auto x = randn(size_t(3 * C * HW), 8);
  // Position 149 of sample 2 equals position 3 of sample 0.
  for (int c = 0; c < C; ++c) x[size_t((2 * C + c) * HW + 149)] = x[size_t(c * HW + 3)];
  const auto w = randn(size_t(C), 9), b = randn(size_t(C), 10), dy = randn(x.size(), 11);
  std::vector<float> y(x.size()), dx(x.size()), y1(size_t(C * HW)), dx1(size_t(C * HW));
  kc::layernorm_forward(p3, x.data(), w.data(), b.data(), y.data());
  kc::layernorm_backward(p3, x.data(), w.data(), dy.data(), dx.data());
  kc::layernorm_forward(p1, x.data() + 2 * C * HW, w.data(), b.data(), y1.data());
  kc::layernorm_backward(p1, x.data() + 2 * C * HW, w.data(), dy.data() + 2 * C * HW, dx1.data());
  CHECK(std::memcmp(y1.data(), y.data() + 2 * C * HW, y1.size() * 4) == 0);
  CHECK(std::memcmp(dx1.data(), dx.data() + 2 * C * HW, dx1.size() * 4) == 0);
  for (int c = 0; c < C; ++c) CHECK(y[size_t((2 * C + c) * HW + 149)] == y[size_t(c * HW + 3)]);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  std::vector<float> ys(x.size()), dxs(x.size());
  kc::layernorm_forward(p3, x.data(), w.data(), b.data(), ys.data());
  kc::layernorm_backward(p3, x.data(), w.data(), dy.data(), dxs.data());
  omp_set_num_threads(threads);
  CHECK(same_bits(ys, y));
  CHECK(same_bits(dxs, dx));
  // In place (dx aliasing dy) gives the same bits.
  std::vector<float> g = dy;
  kc::layernorm_backward(p3, x.data(), w.data(), g.data(), g.data());
  CHECK(same_bits(g, dx));
}

TEST_CASE("layernorm backward: central finite differences through the mean and the variance") {
  const LayerNormParams p = lnp(2, 6, 5);
  auto x = randn(size_t(2 * 6 * 5), 21, 1.5f);
  const auto w = randn(6, 22), b = randn(6, 23), dy = randn(x.size(), 24);
  std::vector<float> dx(x.size()), y(x.size());
  kc::layernorm_backward(p, x.data(), w.data(), dy.data(), dx.data());
  auto loss = [&]() {
    kc::layernorm_forward(p, x.data(), w.data(), b.data(), y.data());
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * dy[i];
    return s;
  };
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float h = 1e-2f, keep = x[i];
    x[i] = keep + h;
    const double lp = loss();
    x[i] = keep - h;
    const double lm = loss();
    x[i] = keep;
    const double fd = (lp - lm) / (double(keep + h) - double(keep - h));
    worst = std::max(worst, std::fabs(fd - dx[i]) / (1.0 + std::fabs(fd)));
  }
  CHECK(worst < 2e-3);
  // The gradient is orthogonal to the directions the normalisation removes: per position,
  // sum_c dx = 0 (a shift of all channels changes nothing) and sum_c dx * x = 0 (nor a scale
  // about the mean, up to eps).
  for (int n = 0; n < 2; ++n)
    for (int i = 0; i < 5; ++i) {
      double s = 0, m = 0, sx = 0;
      for (int c = 0; c < 6; ++c) sx += x[size_t((n * 6 + c) * 5 + i)];
      for (int c = 0; c < 6; ++c) {
        const size_t k = size_t((n * 6 + c) * 5 + i);
        s += dx[k];
        m += dx[k] * (x[k] - sx / 6);
      }
      CHECK(std::fabs(s) < 1e-5);
      CHECK(std::fabs(m) < 1e-4);
    }
}

TEST_CASE("gelu: exact (erf) values, PyTorch's derivative, finite differences") {
  std::vector<float> x = {0.f, 1.f, -1.f, 3.f, -3.f, 0.5f, -10.f, 10.f, -0.f, 1e-8f};
  std::vector<float> y(x.size()), g(x.size(), 1.f), d(x.size());
  kc::gelu_forward(x.data(), int64_t(x.size()), y.data());
  kc::gelu_backward(x.data(), g.data(), int64_t(x.size()), d.data());
  // x * Phi(x) and Phi(x) + x * phi(x), from PyTorch in float64, rounded to float; at -10 the
  // exact values (40 digits), where PyTorch's 1 + erf(x / sqrt 2) cancels to 0 (-0 and
  // -10 phi(-10) = -7.6946e-22) and the engine's erfc does not.
  const double want_y[8] = {0.0, 0.841344746068543, -0.15865525393145702, 2.99595030590511, -0.00404969409489031,
                            0.34573123063700656, -7.6198530241605261e-23, 10.0};
  const double want_d[8] = {0.5, 1.0833154705876864, -0.08331547058768635, 1.011945647204184, -0.01194564720418392,
                            0.8674951246561629, -7.6184000964648141e-22, 1.0};
  for (int i = 0; i < 8; ++i) {
    CHECK(y[size_t(i)] == float(want_y[i]));
    CHECK(d[size_t(i)] == doctest::Approx(float(want_d[i])).epsilon(1e-7));
  }
  // In place and finite differences over a range.
  auto r = randn(257, 31, 2.f);
  std::vector<float> yr(r.size()), dr(r.size()), ones(r.size(), 1.f);
  kc::gelu_forward(r.data(), int64_t(r.size()), yr.data());
  kc::gelu_backward(r.data(), ones.data(), int64_t(r.size()), dr.data());
  std::vector<float> ip = r;
  kc::gelu_forward(ip.data(), int64_t(ip.size()), ip.data());
  CHECK(same_bits(ip, yr));
  for (size_t i = 0; i < r.size(); ++i) {
    const double v = r[i], h = 1e-3;
    auto f = [](double t) { return 0.5 * t * (1 + std::erf(t / std::sqrt(2.0))); };
    // Correctly rounded (the engine's double result within ~1e-13 of x Phi(x), then rounded once).
    const long double vl = r[i];
    CHECK(yr[i] == float(vl * std::erfc(-vl * 0.7071067811865475244008443621048490393L) / 2));
    CHECK(std::fabs((f(v + h) - f(v - h)) / (2 * h) - dr[i]) < 1e-6);
  }
}

TEST_CASE("depthwise 7x7, pad 3, with bias (ConvNeXt's block conv): values against loops") {
  pg::kernels::Conv2dParams p;
  p.N = 2, p.C = 3, p.H = 9, p.W = 8, p.K = 3, p.R = p.S = 7;
  p.stride_h = p.stride_w = 1;
  p.pad_h = p.pad_w = 3;
  p.dil_h = p.dil_w = 1;
  p.groups = 3;
  REQUIRE(pg::kernels::conv2d_output_size(p));
  REQUIRE(kc::depthwise_supported(p));
  CHECK(p.P == 9);
  CHECK(p.Q == 8);
  const auto x = randn(size_t(2 * 3 * 9 * 8), 51), w = randn(size_t(3 * 49), 52), bias = randn(3, 53);
  std::vector<float> y(x.size());
  kc::ConvEpilogue epi;
  epi.bias = bias.data();
  kc::depthwise_forward(p, x.data(), w.data(), epi, y.data());
  double worst = 0;
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c)
      for (int oh = 0; oh < 9; ++oh)
        for (int ow = 0; ow < 8; ++ow) {
          double s = bias[size_t(c)];
          for (int r = 0; r < 7; ++r)
            for (int q = 0; q < 7; ++q) {
              const int ih = oh - 3 + r, iw = ow - 3 + q;
              if (ih >= 0 && ih < 9 && iw >= 0 && iw < 8)
                s += double(x[size_t(((n * 3 + c) * 9 + ih) * 8 + iw)]) * w[size_t(c * 49 + r * 7 + q)];
            }
          worst = std::max(worst, std::fabs(s - y[size_t(((n * 3 + c) * 9 + oh) * 8 + ow)]));
        }
  CHECK(worst < 1e-5);
}

namespace {
// Records every conv site a hook is offered.
struct SeenHook : pg::ag::ConvHook {
  std::vector<std::string> seen;
  bool hooks(const pg::ag::ConvSite& s) const override {
    const_cast<SeenHook*>(this)->seen.push_back(s.name);
    return false;
  }
  void on_forward(const pg::ag::ConvSite&, const pg::Tensor&) override {}
  pg::Tensor on_backward(const pg::ag::ConvSite&, pg::Tensor&) override { return pg::Tensor(); }
};
}  // namespace

TEST_CASE("convnext_tiny: 22 convs in Conv2d module order, the Linear layers outside convs() and unhooked") {
  auto m = pg::nn::random_model("convnext_tiny", 10, 7);
  const auto& convs = m->convs();
  REQUIRE(convs.size() == 22);
  std::vector<std::string> want = {"features.0.0"};
  const int depths[4] = {3, 3, 9, 3};
  for (int s = 0; s < 4; ++s) {
    for (int b = 0; b < depths[s]; ++b)
      want.push_back("features." + std::to_string(2 * s + 1) + "." + std::to_string(b) + ".block.0");
    if (s < 3) want.push_back("features." + std::to_string(2 * s + 2) + ".1");
  }
  for (size_t i = 0; i < convs.size(); ++i) {
    CHECK(convs[i]->site.name == want[i]);
    CHECK(convs[i]->site.index == int(i));
    CHECK(convs[i]->hookable);
  }
  // One forward at 32x32 (stride 4, then 2, 2, 2: 8x8 down to 1x1): only the 22 convs are
  // offered to a hook, in order.
  pg::nn::Context ctx;
  SeenHook hook;
  ctx.hook = &hook;
  pg::Tensor x({1, 3, 32, 32});
  const auto xv = randn(size_t(3 * 32 * 32), 61);
  std::copy(xv.begin(), xv.end(), x.data());
  pg::ag::Var out = m->forward(ctx, pg::ag::Var{x, -1});
  CHECK(out.value.dim(1) == 10);
  CHECK(hook.seen == want);
  CHECK(m->arch() == "convnext_tiny");
}
