// Winograd F(2x2, 3x3) forward and data-gradient against the im2col path (itself checked
// against plain loops in test_ops.cpp) on odd shapes, paddings 0..2, tile blocks that start
// mid-row, the fused epilogue, and ParchGrad scales with zeros (compacted channels), all
// zeros, and none.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/winograd.h"

using namespace pg::kernels;

namespace {

std::vector<float> randn(size_t n, uint32_t seed, float s = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = s * d(g);
  return v;
}

// max |a - b| / max |b|: the error relative to the output's scale.
double rel(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0, m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    e = std::max(e, double(std::fabs(a[i] - b[i])));
    m = std::max(m, double(std::fabs(b[i])));
  }
  return m > 0 ? e / m : e;
}

Conv2dParams conv(int N, int C, int K, int H, int W, int pad) {
  Conv2dParams p;
  p.N = N;
  p.C = C;
  p.K = K;
  p.H = H;
  p.W = W;
  p.R = p.S = 3;
  p.pad_h = p.pad_w = pad;
  conv2d_output_size(p);
  return p;
}

}  // namespace

TEST_CASE("winograd: eligibility") {
  CHECK(cpu::winograd_eligible(conv(1, 8, 8, 16, 16, 1)));
  CHECK(!cpu::winograd_eligible(conv(1, 8, 8, 8, 8, 1)));  // too small a plane
  Conv2dParams s2 = conv(1, 8, 8, 32, 32, 1);
  s2.stride_h = s2.stride_w = 2;
  conv2d_output_size(s2);
  CHECK(!cpu::winograd_eligible(s2));
  Conv2dParams g = conv(1, 8, 8, 32, 32, 1);
  g.groups = 2;
  CHECK(!cpu::winograd_eligible(g));
}

TEST_CASE("winograd: forward and dgrad match im2col on odd shapes") {
  struct Case {
    int N, C, K, H, W, pad;
  } cases[] = {{2, 5, 7, 15, 17, 1}, {1, 4, 9, 16, 21, 0}, {3, 6, 4, 14, 15, 2}, {2, 17, 12, 19, 14, 1},
               {1, 64, 40, 23, 29, 1}};
  uint32_t seed = 1;
  for (const Case& c : cases) {
    CAPTURE(c.C);
    CAPTURE(c.H);
    CAPTURE(c.pad);
    const Conv2dParams p = conv(c.N, c.C, c.K, c.H, c.W, c.pad);
    REQUIRE(p.P >= 14);
    const auto x = randn(size_t(p.N) * p.C * p.H * p.W, seed++);
    const auto w = randn(size_t(p.K) * p.C * 9, seed++, 0.2f);
    const auto bias = randn(size_t(p.K), seed++);
    const auto bn_scale = [&] {
      auto s = randn(size_t(p.K), seed++);
      for (auto& v : s) v = 0.5f + std::fabs(v);
      return s;
    }();
    const auto bn_shift = randn(size_t(p.K), seed++);
    const int threads = 3;
    std::vector<float> ws(std::max(cpu::conv2d_workspace_floats(p, threads), cpu::winograd_workspace_floats(p, threads)));
    std::vector<float> U(cpu::winograd_weight_floats(p)), Ud(U.size());
    cpu::winograd_forward_weights(p, w.data(), U.data());
    cpu::winograd_dgrad_weights(p, w.data(), Ud.data());

    std::vector<float> gap1(size_t(p.N) * p.K), gap2(gap1.size());
    cpu::ConvEpilogue e1{bias.data(), gap1.data(), bn_scale.data(), bn_shift.data()};
    cpu::ConvEpilogue e2{bias.data(), gap2.data(), bn_scale.data(), bn_shift.data()};
    std::vector<float> y1(size_t(p.N) * p.K * p.P * p.Q), y2(y1.size(), NAN);
    cpu::conv2d_forward(p, x.data(), w.data(), e1, y1.data(), ws.data());
    cpu::winograd_forward(p, x.data(), U.data(), e2, y2.data(), ws.data());
    CHECK(rel(y2, y1) < 2e-6);
    CHECK(rel(gap2, gap1) < 2e-6);

    const auto dy = randn(y1.size(), seed++);
    auto scale = randn(size_t(p.N) * p.K, seed++);
    for (size_t i = 0; i < scale.size(); ++i)
      if (i % 3 == 1) scale[i] = 0.f;  // dropped channels
    std::vector<float> allzero(scale.size(), 0.f);
    for (const float* sc : {(const float*)nullptr, (const float*)scale.data(), (const float*)allzero.data()}) {
      std::vector<float> d1(x.size()), d2(x.size(), NAN);
      cpu::conv2d_dgrad(p, dy.data(), w.data(), sc, d1.data(), ws.data());
      cpu::winograd_dgrad(p, dy.data(), Ud.data(), sc, d2.data(), ws.data());
      CHECK(std::none_of(d2.begin(), d2.end(), [](float v) { return std::isnan(v); }));
      CHECK(rel(d2, d1) < 2e-6);
    }
  }
}
