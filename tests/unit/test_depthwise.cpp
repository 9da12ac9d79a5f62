// The depthwise convolution and ReLU6 kernels (kernels/cpu/depthwise.h, relu.h): values against
// loops, the arithmetic order bit for bit, position and batch invariance, the fused ParchGrad
// scale, and input gradients against central finite differences.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/depthwise.h"
#include "kernels/cpu/relu.h"
#include "tests/unit/support.h"

namespace kc = pg::kernels::cpu;
using pg::kernels::Conv2dParams;

using pg::test::randn;

namespace {

Conv2dParams dw(int N, int C, int H, int W, int R, int stride, int pad, int dil = 1) {
  Conv2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W, p.K = C, p.R = R, p.S = R;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dil_h = p.dil_w = dil;
  p.groups = C;
  REQUIRE(pg::kernels::conv2d_output_size(p));
  return p;
}

// Float operations rounded one at a time, whatever the compiler contracts (a volatile result
// is stored, so a * b + c cannot become one FMA).
float mul(float a, float b) {
  volatile float r = a * b;
  return r;
}
float add(float a, float b) {
  volatile float r = a + b;
  return r;
}

// The order contract of depthwise.h, in those operations.
std::vector<float> forward_ref(const Conv2dParams& p, const std::vector<float>& x, const std::vector<float>& w,
                               const float* bias) {
  std::vector<float> y(size_t(p.N) * p.C * p.P * p.Q);
  for (int n = 0; n < p.N; ++n)
    for (int c = 0; c < p.C; ++c)
      for (int oh = 0; oh < p.P; ++oh)
        for (int ow = 0; ow < p.Q; ++ow) {
          float acc = 0.f;
          for (int r = 0; r < p.R; ++r)
            for (int s = 0; s < p.S; ++s) {
              const int ih = oh * p.stride_h - p.pad_h + r * p.dil_h, iw = ow * p.stride_w - p.pad_w + s * p.dil_w;
              if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
              acc = add(acc, mul(x[((size_t(n) * p.C + c) * p.H + ih) * p.W + iw], w[(size_t(c) * p.R + r) * p.S + s]));
            }
          if (bias) acc = add(acc, bias[c]);
          y[((size_t(n) * p.C + c) * p.P + oh) * p.Q + ow] = acc;
        }
  return y;
}

std::vector<float> dgrad_ref(const Conv2dParams& p, const std::vector<float>& dy, const std::vector<float>& w,
                             const float* scale) {
  std::vector<float> dx(size_t(p.N) * p.C * p.H * p.W);
  for (int n = 0; n < p.N; ++n)
    for (int c = 0; c < p.C; ++c) {
      const float sc = scale ? scale[n * p.C + c] : 1.f;
      for (int ih = 0; ih < p.H; ++ih)
        for (int iw = 0; iw < p.W; ++iw) {
          float acc = 0.f;
          for (int r = 0; r < p.R && sc != 0.f; ++r)
            for (int s = 0; s < p.S; ++s) {
              const int th = ih + p.pad_h - r * p.dil_h, tw = iw + p.pad_w - s * p.dil_w;
              if (th < 0 || tw < 0 || th % p.stride_h || tw % p.stride_w) continue;
              const int oh = th / p.stride_h, ow = tw / p.stride_w;
              if (oh >= p.P || ow >= p.Q) continue;
              acc = add(acc, mul(mul(sc, dy[((size_t(n) * p.C + c) * p.P + oh) * p.Q + ow]), w[(size_t(c) * p.R + r) * p.S + s]));
            }
          dx[((size_t(n) * p.C + c) * p.H + ih) * p.W + iw] = acc;
        }
    }
  return dx;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0) {
      MESSAGE("first difference at " << i << ": " << a[i] << " vs " << b[i]);
      return false;
    }
  return true;
}

struct Case {
  const char* name;
  Conv2dParams p;
};
std::vector<Case> cases() {
  return {{"3x3 s1 p1", dw(2, 5, 9, 11, 3, 1, 1)},       {"3x3 s2 p1 even", dw(3, 4, 12, 10, 3, 2, 1)},
          {"3x3 s2 p1 odd", dw(2, 6, 13, 9, 3, 2, 1)},    {"5x5 s2 p2", dw(2, 3, 11, 12, 5, 2, 2)},
          {"3x3 dilation 2", dw(1, 4, 10, 9, 3, 1, 2, 2)}, {"3x3 s1 p1 2x2 input", dw(2, 3, 2, 2, 3, 1, 1)},
          // Several vector tiles (8 columns by 4 rows) with partial ones at the right and bottom.
          {"3x3 s1 p1 wide", dw(1, 2, 9, 33, 3, 1, 1)},     {"3x3 s1 no pad", dw(1, 2, 10, 12, 3, 1, 0)},
          {"5x5 s2 p2 wide", dw(1, 3, 21, 37, 5, 2, 2)},    {"7x7 s1 p3 (ConvNeXt)", dw(2, 3, 14, 19, 7, 1, 3)},
          {"3x3 s3 p1", dw(1, 2, 13, 17, 3, 3, 1)},      {"3x3 s2 no pad", dw(1, 2, 11, 20, 3, 2, 0)},
          {"5x5 s2 p1", dw(1, 2, 12, 19, 5, 2, 1)},
          // A row too wide for the vector path's band (the plain loops).
          {"7x7 s1 p3 band too wide", dw(1, 2, 5, 1700, 7, 1, 3)}};
}

}  // namespace

TEST_CASE("depthwise forward: the order contract bit for bit, the generic grouped path within rounding") {
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    const Conv2dParams& p = c.p;
    REQUIRE(kc::depthwise_supported(p));
    const auto x = randn(size_t(p.N) * p.C * p.H * p.W, 1);
    const auto w = randn(size_t(p.C) * p.R * p.S, 2, 0.5f);
    const auto b = randn(size_t(p.C), 3);
    std::vector<float> y(size_t(p.N) * p.C * p.P * p.Q, NAN), gap(size_t(p.N) * p.C, NAN);
    kc::ConvEpilogue epi;
    epi.bias = b.data();
    epi.gap = gap.data();
    kc::depthwise_forward(p, x.data(), w.data(), epi, y.data());
    CHECK(same_bits(y, forward_ref(p, x, w, b.data())));
    // The GAP of the raw output (no BatchNorm here: y itself).
    for (int n = 0; n < p.N; ++n)
      for (int k = 0; k < p.C; ++k) {
        double s = 0;
        for (int i = 0; i < p.P * p.Q; ++i) s += std::max(0.f, y[(size_t(n) * p.C + k) * p.P * p.Q + i]);
        CHECK(gap[size_t(n) * p.C + k] == doctest::Approx(s / (p.P * p.Q)).epsilon(1e-6));
      }
    // The generic grouped path (im2col + GEMM per group) computes the same convolution.
    std::vector<float> y2(y.size()), ws(kc::conv2d_workspace_floats(p, 4));
    kc::ConvEpilogue bias_only;
    bias_only.bias = b.data();
    kc::conv2d_forward(p, x.data(), w.data(), bias_only, y2.data(), ws.data());
    for (size_t i = 0; i < y.size(); ++i) CHECK(std::fabs(y[i] - y2[i]) <= 1e-5f);  // terms O(1)
  }
}

TEST_CASE("depthwise forward: equal receptive fields give equal bits, one sample's bits do not depend on the batch") {
  // A flat image (every pixel equal): every interior output of a channel is the same bits.
  const Conv2dParams p = dw(3, 4, 12, 12, 3, 1, 1);
  std::vector<float> x(size_t(p.N) * p.C * p.H * p.W, 0.37f);
  const auto w = randn(size_t(p.C) * p.R * p.S, 5);
  std::vector<float> y(size_t(p.N) * p.C * p.P * p.Q);
  kc::depthwise_forward(p, x.data(), w.data(), {}, y.data());
  for (int c = 0; c < p.C; ++c) {
    const float* yc = y.data() + size_t(c) * p.P * p.Q;
    const float v = yc[p.Q + 1];
    for (int oh = 1; oh < p.P - 1; ++oh)
      for (int ow = 1; ow < p.Q - 1; ++ow) CHECK(std::memcmp(&yc[oh * p.Q + ow], &v, 4) == 0);
  }
  // Sample 1 of a batch of 3 equals the same input run alone.
  const auto xr = randn(size_t(p.N) * p.C * p.H * p.W, 6);
  kc::depthwise_forward(p, xr.data(), w.data(), {}, y.data());
  Conv2dParams one = p;
  one.N = 1;
  std::vector<float> y1(size_t(p.C) * p.P * p.Q);
  kc::depthwise_forward(one, xr.data() + size_t(p.C) * p.H * p.W, w.data(), {}, y1.data());
  CHECK(std::memcmp(y1.data(), y.data() + y1.size(), y1.size() * 4) == 0);
}

TEST_CASE("depthwise dgrad: the order contract bit for bit, the fused scale, zero channels, finite differences") {
  for (const Case& c : cases()) {
    CAPTURE(c.name);
    const Conv2dParams& p = c.p;
    auto x = randn(size_t(p.N) * p.C * p.H * p.W, 11);
    const auto w = randn(size_t(p.C) * p.R * p.S, 12, 0.5f);
    const auto dy = randn(size_t(p.N) * p.C * p.P * p.Q, 13);
    std::vector<float> dx(x.size(), NAN);
    kc::depthwise_dgrad(p, dy.data(), w.data(), nullptr, dx.data());
    CHECK(same_bits(dx, dgrad_ref(p, dy, w, nullptr)));
    // The generic path's adjoint agrees within rounding.
    std::vector<float> dx2(x.size()), ws(kc::conv2d_workspace_floats(p, 4));
    kc::conv2d_dgrad(p, dy.data(), w.data(), nullptr, dx2.data(), ws.data());
    for (size_t i = 0; i < dx.size(); ++i) CHECK(std::fabs(dx[i] - dx2[i]) <= 1e-5f);  // terms O(1)

    // Scales, some zero, and one sample entirely zero (a NaN in dy there must not leak).
    std::vector<float> scale = randn(size_t(p.N) * p.C, 14);
    for (size_t i = 0; i < scale.size(); i += 3) scale[i] = 0.f;
    for (int k = 0; k < p.C; ++k) scale[k] = 0.f;
    std::vector<float> dyn = dy;
    dyn[0] = NAN;
    std::fill(dx.begin(), dx.end(), 7.f);
    kc::depthwise_dgrad(p, dyn.data(), w.data(), scale.data(), dx.data());
    CHECK(same_bits(dx, dgrad_ref(p, dyn, w, scale.data())));
    bool zero = true;
    for (int64_t i = 0; i < int64_t(p.C) * p.H * p.W; ++i) zero = zero && dx[size_t(i)] == 0.f;
    CHECK(zero);

    // Central differences of L(x) = sum(dy * conv(x)) at a few coordinates.
    kc::depthwise_dgrad(p, dy.data(), w.data(), nullptr, dx.data());
    std::vector<float> y(dy.size());
    auto loss = [&]() {
      kc::depthwise_forward(p, x.data(), w.data(), {}, y.data());
      double s = 0;
      for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * dy[i];
      return s;
    };
    std::mt19937 rng(3);
    for (int t = 0; t < 16; ++t) {
      const size_t i = rng() % x.size();
      const float h = 1e-2f, keep = x[i];
      x[i] = keep + h;
      const double lp = loss();
      x[i] = keep - h;
      const double lm = loss();
      x[i] = keep;
      const double fd = (lp - lm) / (2.0 * h);
      CHECK(std::fabs(fd - dx[i]) <= 2e-3 * (1.0 + std::fabs(fd)));
    }
  }
}

TEST_CASE("relu6: clamps to [0, 6], the gradient passes where 0 < x < 6 (PyTorch's hardtanh_backward)") {
  const int64_t n = 203;  // not a multiple of 64
  auto x = randn(size_t(n), 41, 4.f);
  x[0] = 0.f;   // hardtanh_backward: x <= 0 -> 0
  x[1] = 6.f;   // x >= 6 -> 0
  x[2] = -0.f;
  x[3] = std::nextafter(6.f, 0.f);
  x[4] = std::nextafter(0.f, 1.f);
  x[5] = 9.f;
  x[6] = NAN;
  const auto orig = x;
  std::vector<uint64_t> mask(size_t(kc::relu_mask_words(n)), ~uint64_t(0));
  kc::relu6_forward(x.data(), n, mask.data());
  auto g = randn(size_t(n), 42);
  const auto g0 = g;
  kc::relu_backward(g.data(), n, mask.data());
  int passed = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = orig[size_t(i)];
    const bool pass = v > 0.f && v < 6.f;
    passed += pass;
    CHECK(x[size_t(i)] == (v > 0.f ? std::min(v, 6.f) : 0.f));
    CHECK(g[size_t(i)] == (pass ? g0[size_t(i)] : 0.f));
  }
  CHECK(passed > 20);
  CHECK(passed < n - 20);  // both ends are exercised
  CHECK(g[0] == 0.f);
  CHECK(g[1] == 0.f);
  CHECK(g[3] == g0[3]);
  CHECK(g[4] == g0[4]);
  // Finite differences away from the kinks: d relu6(x) / dx is 1 inside (0, 6), 0 outside.
  for (float v : {-1.5f, 0.5f, 3.f, 5.5f, 7.f}) {
    float a = v + 1e-3f, b = v - 1e-3f;
    kc::relu6_forward(&a, 1, nullptr);
    kc::relu6_forward(&b, 1, nullptr);
    const double fd = (double(a) - double(b)) / 2e-3;
    CHECK(fd == doctest::Approx(v > 0.f && v < 6.f ? 1.0 : 0.0).epsilon(1e-3));
  }
}
