// Per-op tests of the CPU kernels: forward against plain loops (in double), input
// gradients against the loops' adjoint and against central finite differences.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/relu.h"
#include "tests/unit/support.h"

namespace kc = pg::kernels::cpu;
using pg::kernels::Conv2dParams;
using pg::kernels::Pool2dParams;

using pg::test::randn;

namespace {

double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Plain-loop convolution in double: y = conv(x, w) + b.
std::vector<double> conv_ref(const Conv2dParams& p, const std::vector<float>& x, const std::vector<float>& w,
                             const float* b) {
  std::vector<double> y(size_t(p.N) * p.K * p.P * p.Q, 0.0);
  for (int n = 0; n < p.N; ++n)
    for (int k = 0; k < p.K; ++k) {
      const int g = k / p.Kg();
      for (int oh = 0; oh < p.P; ++oh)
        for (int ow = 0; ow < p.Q; ++ow) {
          double s = b ? b[k] : 0.0;
          for (int c = 0; c < p.Cg(); ++c)
            for (int r = 0; r < p.R; ++r)
              for (int q = 0; q < p.S; ++q) {
                const int ih = oh * p.stride_h - p.pad_h + r * p.dil_h, iw = ow * p.stride_w - p.pad_w + q * p.dil_w;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                s += double(x[((size_t(n) * p.C + g * p.Cg() + c) * p.H + ih) * p.W + iw]) *
                     w[((size_t(k) * p.Cg() + c) * p.R + r) * p.S + q];
              }
          y[((size_t(n) * p.K + k) * p.P + oh) * p.Q + ow] = s;
        }
    }
  return y;
}

// Adjoint of conv_ref (no bias): dx = conv_transpose(dy, w).
std::vector<double> dgrad_ref(const Conv2dParams& p, const std::vector<float>& dy, const std::vector<float>& w) {
  std::vector<double> dx(size_t(p.N) * p.C * p.H * p.W, 0.0);
  for (int n = 0; n < p.N; ++n)
    for (int k = 0; k < p.K; ++k) {
      const int g = k / p.Kg();
      for (int oh = 0; oh < p.P; ++oh)
        for (int ow = 0; ow < p.Q; ++ow) {
          const double gy = dy[((size_t(n) * p.K + k) * p.P + oh) * p.Q + ow];
          for (int c = 0; c < p.Cg(); ++c)
            for (int r = 0; r < p.R; ++r)
              for (int q = 0; q < p.S; ++q) {
                const int ih = oh * p.stride_h - p.pad_h + r * p.dil_h, iw = ow * p.stride_w - p.pad_w + q * p.dil_w;
                if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                dx[((size_t(n) * p.C + g * p.Cg() + c) * p.H + ih) * p.W + iw] +=
                    gy * w[((size_t(k) * p.Cg() + c) * p.R + r) * p.S + q];
              }
        }
    }
  return dx;
}

Conv2dParams make(int N, int C, int H, int W, int K, int R, int S, int stride, int pad, int dil, int groups) {
  Conv2dParams p;
  p.N = N; p.C = C; p.H = H; p.W = W; p.K = K; p.R = R; p.S = S;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dil_h = p.dil_w = dil;
  p.groups = groups;
  REQUIRE(pg::kernels::conv2d_output_size(p));
  return p;
}

struct ConvCase {
  const char* name;
  Conv2dParams p;
};

std::vector<ConvCase> conv_cases() {
  return {
      {"3x3 s1 p1", make(2, 5, 9, 11, 7, 3, 3, 1, 1, 1, 1)},
      {"3x3 s2 p1 odd", make(3, 6, 13, 9, 10, 3, 3, 2, 1, 1, 1)},
      {"1x1 s1", make(2, 12, 7, 5, 9, 1, 1, 1, 0, 1, 1)},
      {"1x1 s2 odd", make(2, 12, 7, 9, 9, 1, 1, 2, 0, 1, 1)},
      {"7x7 s2 p3 (stem)", make(2, 3, 23, 17, 13, 7, 7, 2, 3, 1, 1)},
      {"3x3 dilation 2", make(1, 4, 12, 10, 6, 3, 3, 1, 2, 2, 1)},
      {"3x3 groups 3", make(2, 9, 8, 8, 6, 3, 3, 1, 1, 1, 3)},
      {"5x3 kernel s3", make(2, 5, 16, 14, 11, 5, 3, 3, 2, 1, 1)},
      {"single sample", make(1, 13, 6, 6, 17, 3, 3, 1, 1, 1, 1)},
  };
}

}  // namespace

TEST_CASE("conv2d forward matches the plain loop, with bias and the GAP epilogue") {
  for (const auto& c : conv_cases()) {
    CAPTURE(c.name);
    const Conv2dParams& p = c.p;
    auto x = randn(size_t(p.N) * p.C * p.H * p.W, 1);
    auto w = randn(size_t(p.K) * p.Cg() * p.R * p.S, 2, 0.3f);
    auto b = randn(p.K, 3);
    auto scale = randn(p.K, 4);
    for (auto& s : scale) s = 0.5f + std::fabs(s);
    auto shift = randn(p.K, 5, 0.2f);
    std::vector<float> y(size_t(p.N) * p.K * p.P * p.Q), gap(size_t(p.N) * p.K);
    std::vector<float> ws(kc::conv2d_workspace_floats(p, 4));
    kc::ConvEpilogue e;
    e.bias = b.data();
    e.gap = gap.data();
    e.raw_scale = scale.data();
    e.raw_shift = shift.data();
    kc::conv2d_forward(p, x.data(), w.data(), e, y.data(), ws.data());
    auto ref = conv_ref(p, x, w, b.data());
    CHECK(rel_err(y, ref) < 1e-6);
    std::vector<double> gap_ref(gap.size(), 0.0);
    const int PQ = p.P * p.Q;
    for (int n = 0; n < p.N; ++n)
      for (int k = 0; k < p.K; ++k) {
        for (int i = 0; i < PQ; ++i) {
          const double raw = (ref[(size_t(n) * p.K + k) * PQ + i] - shift[k]) / scale[k];
          gap_ref[size_t(n) * p.K + k] += raw > 0 ? raw : 0;
        }
        gap_ref[size_t(n) * p.K + k] /= PQ;
      }
    CHECK(rel_err(gap, gap_ref) < 1e-5);
  }
}

TEST_CASE("conv2d dgrad matches the adjoint loop and central finite differences") {
  for (const auto& c : conv_cases()) {
    CAPTURE(c.name);
    const Conv2dParams& p = c.p;
    auto x = randn(size_t(p.N) * p.C * p.H * p.W, 11);
    auto w = randn(size_t(p.K) * p.Cg() * p.R * p.S, 12, 0.3f);
    auto dy = randn(size_t(p.N) * p.K * p.P * p.Q, 13);
    std::vector<float> dx(x.size()), ws(kc::conv2d_workspace_floats(p, 4));
    kc::conv2d_dgrad(p, dy.data(), w.data(), nullptr, dx.data(), ws.data());
    CHECK(rel_err(dx, dgrad_ref(p, dy, w)) < 1e-6);

    // Central differences of L(x) = sum(dy * conv(x)) at a few coordinates.
    std::vector<float> y(dy.size());
    auto loss = [&](std::vector<float>& xx) {
      kc::conv2d_forward(p, xx.data(), w.data(), kc::ConvEpilogue{}, y.data(), ws.data());
      double s = 0;
      for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * dy[i];
      return s;
    };
    std::mt19937 rng(3);
    for (int t = 0; t < 12; ++t) {
      const size_t i = rng() % x.size();
      const float h = 1e-2f, keep = x[i];
      x[i] = keep + h;
      const double lp = loss(x);
      x[i] = keep - h;
      const double lm = loss(x);
      x[i] = keep;
      const double fd = (lp - lm) / (2.0 * h);
      CHECK(std::fabs(fd - dx[i]) <= 2e-3 * (1.0 + std::fabs(fd)));
    }
  }
}

TEST_CASE("conv2d dgrad applies a per-(sample, channel) scale and skips zero channels") {
  for (const auto& c : conv_cases()) {
    CAPTURE(c.name);
    const Conv2dParams& p = c.p;
    auto w = randn(size_t(p.K) * p.Cg() * p.R * p.S, 21, 0.3f);
    auto dy = randn(size_t(p.N) * p.K * p.P * p.Q, 22);
    for (int pattern = 0; pattern < 3; ++pattern) {
      CAPTURE(pattern);
      // 0: finite scales everywhere; 1: some channels zero; 2: a sample with all zero.
      std::vector<float> scale = randn(size_t(p.N) * p.K, 23 + pattern);
      if (pattern >= 1)
        for (size_t i = 0; i < scale.size(); i += 3) scale[i] = 0.f;
      if (pattern == 2)
        for (int k = 0; k < p.K; ++k) scale[k] = 0.f;
      std::vector<float> scaled(dy.size());
      const int PQ = p.P * p.Q;
      for (size_t i = 0; i < dy.size(); ++i) scaled[i] = dy[i] * scale[i / PQ];
      std::vector<float> dx(size_t(p.N) * p.C * p.H * p.W, 7.f), ws(kc::conv2d_workspace_floats(p, 4));
      kc::conv2d_dgrad(p, dy.data(), w.data(), scale.data(), dx.data(), ws.data());
      CHECK(rel_err(dx, dgrad_ref(p, scaled, w)) < 1e-6);
      if (pattern == 2) {
        bool zero = true;
        for (int64_t i = 0; i < int64_t(p.C) * p.H * p.W; ++i) zero = zero && dx[i] == 0.f;
        CHECK(zero);
      }
    }
  }
}

TEST_CASE("conv2d tiled over output rows gives the untiled result") {
  kc::conv2d_set_block_bytes(1);  // one output row per im2col block
  for (const auto& c : conv_cases()) {
    CAPTURE(c.name);
    const Conv2dParams& p = c.p;
    auto x = randn(size_t(p.N) * p.C * p.H * p.W, 71);
    auto w = randn(size_t(p.K) * p.Cg() * p.R * p.S, 72, 0.3f);
    auto dy = randn(size_t(p.N) * p.K * p.P * p.Q, 73);
    std::vector<float> scale = randn(size_t(p.N) * p.K, 74);
    for (size_t i = 0; i < scale.size(); i += 4) scale[i] = 0.f;
    std::vector<float> y(dy.size()), dx(x.size()), ws(kc::conv2d_workspace_floats(p, 4));
    kc::conv2d_forward(p, x.data(), w.data(), kc::ConvEpilogue{}, y.data(), ws.data());
    CHECK(rel_err(y, conv_ref(p, x, w, nullptr)) < 1e-6);
    std::vector<float> scaled(dy.size());
    for (size_t i = 0; i < dy.size(); ++i) scaled[i] = dy[i] * scale[i / (size_t(p.P) * p.Q)];
    kc::conv2d_dgrad(p, dy.data(), w.data(), scale.data(), dx.data(), ws.data());
    CHECK(rel_err(dx, dgrad_ref(p, scaled, w)) < 1e-6);
  }
  kc::conv2d_set_block_bytes(0);
}

TEST_CASE("gemm_ordered: every element is one fixed sum of fma chains, the same bits in every instruction set") {
  struct Shape {
    int M, N, K, pad;  // pad: extra leading-dimension elements
  };
  // Edges in both dimensions, several reduction slices (KC = 256), several column blocks
  // (NC = 1536), K = 0, and leading dimensions larger than the rows.
  const Shape shapes[] = {{1, 1, 1, 0}, {7, 13, 5, 3}, {6, 16, 256, 0}, {8, 48, 257, 1}, {100, 333, 300, 0},
                          {97, 1601, 513, 2}, {5, 3, 0, 0}, {64, 49, 4608, 0}};
  std::vector<float> ws(kc::gemm_ordered_workspace_floats());
  int isas_run = 0;
  for (kc::GemmIsa isa : {kc::GemmIsa::kAuto, kc::GemmIsa::kScalar, kc::GemmIsa::kAvx2, kc::GemmIsa::kAvx512}) {
    if (!kc::gemm_isa_supported(isa)) {
      CHECK_THROWS(kc::gemm_ordered(1, 1, 1, ws.data(), 1, ws.data(), 1, ws.data() + 1, 1, ws.data() + 2, isa));
      continue;
    }
    ++isas_run;
    for (const Shape& sh : shapes) {
      CAPTURE(int(isa));
      CAPTURE(sh.M);
      CAPTURE(sh.N);
      CAPTURE(sh.K);
      const int lda = sh.K + sh.pad, ldb = sh.N + sh.pad, ldc = sh.N + 2 * sh.pad;
      auto A = randn(size_t(sh.M) * lda + 1, 81);
      auto B = randn(size_t(std::max(sh.K, 1)) * ldb, 82);
      std::vector<float> C(size_t(sh.M) * ldc, -7.f);
      kc::gemm_ordered(sh.M, sh.N, sh.K, A.data(), lda, B.data(), ldb, C.data(), ldc, ws.data(), isa);
      int64_t differ = 0, outside = 0;
      for (int i = 0; i < sh.M; ++i)
        for (int j = 0; j < ldc; ++j) {
          if (j >= sh.N) {  // untouched past N
            outside += C[size_t(i) * ldc + j] != -7.f;
            continue;
          }
          float c = 0.f;  // slices of 256, each one fma chain from zero, summed in order
          for (int k0 = 0; k0 < sh.K; k0 += 256) {
            float s = 0.f;
            for (int k = k0; k < std::min(sh.K, k0 + 256); ++k)
              s = std::fma(A[size_t(i) * lda + k], B[size_t(k) * ldb + j], s);
            c = k0 == 0 ? s : c + s;
          }
          differ += std::memcmp(&c, &C[size_t(i) * ldc + j], sizeof(float)) != 0;
        }
      CHECK(differ == 0);
      CHECK(outside == 0);
    }
  }
  CHECK(isas_run >= 2);  // the CPU's own family and the scalar one, at least
  MESSAGE("gemm_ordered runs the " << std::string(kc::gemm_ordered_isa()) << " micro-kernels here");
}

TEST_CASE("conv2d forward: equal receptive fields give equal bits (max-pool ties in flat regions)") {
  // A ResNet stem on an image that is constant, and one that is periodic with the stride's
  // period: every output pixel whose receptive field lies inside the image sees the same
  // values, so its channel's value must be the same bits at every such position, whatever
  // the tile, block or thread that computed it.
  Conv2dParams p;
  p.N = 2, p.C = 3, p.H = 70, p.W = 90, p.K = 13, p.R = 7, p.S = 7, p.stride_h = 2, p.stride_w = 2, p.pad_h = 3,
  p.pad_w = 3;
  REQUIRE(pg::kernels::conv2d_output_size(p));
  auto w = randn(size_t(p.K) * p.C * p.R * p.S, 91, 0.3f);
  auto bias = randn(p.K, 92);
  for (int pattern = 0; pattern < 2; ++pattern) {
    for (int64_t block : {int64_t(0), int64_t(1)}) {  // default blocks; one output row per block
      CAPTURE(pattern);
      CAPTURE(block);
      kc::conv2d_set_block_bytes(block);
      std::vector<float> x(size_t(p.N) * p.C * p.H * p.W);
      const auto cell = randn(size_t(p.N) * p.C * 4, 93);
      for (int n = 0; n < p.N; ++n)
        for (int c = 0; c < p.C; ++c)
          for (int h = 0; h < p.H; ++h)
            for (int v = 0; v < p.W; ++v)
              x[((size_t(n) * p.C + c) * p.H + h) * p.W + v] =
                  pattern == 0 ? cell[size_t(n) * p.C + c] : cell[(size_t(n) * p.C + c) * 4 + (h % 2) * 2 + v % 2];
      std::vector<float> y(size_t(p.N) * p.K * p.P * p.Q), ws(kc::conv2d_workspace_floats(p, 4));
      kc::ConvEpilogue e;
      e.bias = bias.data();
      kc::conv2d_forward(p, x.data(), w.data(), e, y.data(), ws.data());
      int64_t interior = 0, differ = 0;
      for (int n = 0; n < p.N; ++n)
        for (int k = 0; k < p.K; ++k) {
          const float* yk = y.data() + (size_t(n) * p.K + k) * p.P * p.Q;
          const float first = yk[2 * p.Q + 2];  // (2, 2): the first interior position
          for (int oh = 2; oh + 2 < p.P; ++oh)
            for (int ow = 2; ow + 2 < p.Q; ++ow) {
              ++interior;
              differ += std::memcmp(&first, &yk[oh * p.Q + ow], sizeof(float)) != 0;
            }
        }
      CHECK(interior > 1000);
      CHECK(differ == 0);
    }
  }
  kc::conv2d_set_block_bytes(0);
}

TEST_CASE("relu keeps a 1-bit mask and its backward zeroes the right elements") {
  const int64_t n = 200;  // not a multiple of 64
  auto x = randn(n, 31);
  auto orig = x;
  std::vector<uint64_t> mask(kc::relu_mask_words(n));
  kc::relu_forward(x.data(), n, mask.data());
  auto g = randn(n, 32);
  auto g0 = g;
  kc::relu_backward(g.data(), n, mask.data());
  for (int64_t i = 0; i < n; ++i) {
    CHECK(x[i] == (orig[i] > 0 ? orig[i] : 0.f));
    CHECK(g[i] == (orig[i] > 0 ? g0[i] : 0.f));
  }
}

namespace {
Pool2dParams pool(int N, int C, int H, int W, int k, int s, int pad, bool ceil) {
  Pool2dParams p;
  p.N = N; p.C = C; p.H = H; p.W = W;
  p.kh = p.kw = k;
  p.stride_h = p.stride_w = s;
  p.pad_h = p.pad_w = pad;
  p.ceil_mode = ceil;
  REQUIRE(pg::kernels::pool2d_output_size(p));
  return p;
}

// Distinct values spaced well apart, so max-pool has no ties and no kink within +-h.
std::vector<float> spaced(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.1f * float(i);
  std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
  return v;
}
}  // namespace

TEST_CASE("max-pool forward, argmax and backward against loops and finite differences") {
  for (auto p : {pool(2, 3, 9, 11, 3, 2, 1, false), pool(1, 2, 8, 8, 2, 2, 0, false), pool(2, 2, 7, 9, 2, 2, 0, true),
                 pool(1, 3, 13, 13, 3, 2, 0, true)}) {
    auto x = spaced(size_t(p.N) * p.C * p.H * p.W, 41);
    std::vector<float> y(size_t(p.N) * p.C * p.P * p.Q);
    std::vector<int32_t> arg(y.size());
    kc::maxpool2d_forward(p, x.data(), y.data(), arg.data());
    for (int pl = 0; pl < p.N * p.C; ++pl)
      for (int oh = 0; oh < p.P; ++oh)
        for (int ow = 0; ow < p.Q; ++ow) {
          float best = -1e30f;
          for (int ih = oh * p.stride_h - p.pad_h; ih < oh * p.stride_h - p.pad_h + p.kh; ++ih)
            for (int iw = ow * p.stride_w - p.pad_w; iw < ow * p.stride_w - p.pad_w + p.kw; ++iw)
              if (ih >= 0 && ih < p.H && iw >= 0 && iw < p.W) best = std::max(best, x[(size_t(pl) * p.H + ih) * p.W + iw]);
          const size_t o = (size_t(pl) * p.P + oh) * p.Q + ow;
          CHECK(y[o] == best);
          CHECK(x[size_t(pl) * p.H * p.W + arg[o]] == best);
        }
    auto dy = randn(y.size(), 42);
    std::vector<float> dx(x.size());
    kc::maxpool2d_backward(p, dy.data(), arg.data(), dx.data());
    for (size_t i = 0; i < x.size(); i += 7) {
      const float h = 0.04f, keep = x[i];  // below half the 0.1 spacing: no kink crossed
      auto loss = [&]() {
        kc::maxpool2d_forward(p, x.data(), y.data(), nullptr);
        double s = 0;
        for (size_t j = 0; j < y.size(); ++j) s += double(y[j]) * dy[j];
        return s;
      };
      x[i] = keep + h;
      const double lp = loss();
      x[i] = keep - h;
      const double lm = loss();
      x[i] = keep;
      CHECK(std::fabs((lp - lm) / (2 * h) - dx[i]) < 1e-3 * (1 + std::fabs(dx[i])));
    }
  }
}

TEST_CASE("average and adaptive average pools against loops and finite differences") {
  // Adaptive pooling with windows that overlap and differ in size (PyTorch's rule).
  const int NC = 3, H = 10, W = 7, P = 4, Q = 3;
  auto x = randn(size_t(NC) * H * W, 51);
  std::vector<float> y(size_t(NC) * P * Q);
  kc::adaptive_avgpool2d_forward(NC, H, W, P, Q, x.data(), y.data());
  for (int pl = 0; pl < NC; ++pl)
    for (int i = 0; i < P; ++i)
      for (int j = 0; j < Q; ++j) {
        const int h0 = i * H / P, h1 = ((i + 1) * H + P - 1) / P, w0 = j * W / Q, w1 = ((j + 1) * W + Q - 1) / Q;
        double s = 0;
        for (int a = h0; a < h1; ++a)
          for (int b = w0; b < w1; ++b) s += x[(size_t(pl) * H + a) * W + b];
        CHECK(y[(size_t(pl) * P + i) * Q + j] == doctest::Approx(s / ((h1 - h0) * (w1 - w0))).epsilon(1e-6));
      }
  auto dy = randn(y.size(), 52);
  std::vector<float> dx(x.size());
  kc::adaptive_avgpool2d_backward(NC, H, W, P, Q, dy.data(), dx.data());
  for (size_t i = 0; i < x.size(); i += 5) {
    const float h = 0.01f, keep = x[i];
    auto loss = [&]() {
      kc::adaptive_avgpool2d_forward(NC, H, W, P, Q, x.data(), y.data());
      double s = 0;
      for (size_t j = 0; j < y.size(); ++j) s += double(y[j]) * dy[j];
      return s;
    };
    x[i] = keep + h;
    const double lp = loss();
    x[i] = keep - h;
    const double lm = loss();
    x[i] = keep;
    CHECK(std::fabs((lp - lm) / (2 * h) - dx[i]) < 1e-3);
  }

  Pool2dParams p = pool(2, 2, 9, 8, 3, 2, 1, true);
  for (bool include_pad : {true, false}) {
    p.count_include_pad = include_pad;
    auto xa = randn(size_t(p.N) * p.C * p.H * p.W, 53);
    std::vector<float> ya(size_t(p.N) * p.C * p.P * p.Q), dya = randn(ya.size(), 54), dxa(xa.size());
    kc::avgpool2d_forward(p, xa.data(), ya.data());
    kc::avgpool2d_backward(p, dya.data(), dxa.data());
    // Adjoint identity: <avgpool(x), dy> == <x, avgpool_backward(dy)>.
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < ya.size(); ++i) lhs += double(ya[i]) * dya[i];
    for (size_t i = 0; i < xa.size(); ++i) rhs += double(xa[i]) * dxa[i];
    CHECK(lhs == doctest::Approx(rhs).epsilon(1e-5));
  }
}

TEST_CASE("linear forward and input gradient against loops") {
  const int N = 3, in = 37, out = 11;
  auto x = randn(size_t(N) * in, 61), w = randn(size_t(out) * in, 62), b = randn(out, 63), dy = randn(size_t(N) * out, 64);
  std::vector<float> y(size_t(N) * out), dx(size_t(N) * in);
  kc::linear_forward(N, in, out, x.data(), w.data(), b.data(), y.data());
  kc::linear_backward(N, in, out, dy.data(), w.data(), dx.data());
  std::vector<double> yr(y.size()), dxr(dx.size());
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < out; ++o) {
      double s = b[o];
      for (int i = 0; i < in; ++i) s += double(x[n * in + i]) * w[o * in + i];
      yr[n * out + o] = s;
      for (int i = 0; i < in; ++i) dxr[n * in + i] += double(dy[n * out + o]) * w[o * in + i];
    }
  CHECK(rel_err(y, yr) < 1e-6);
  CHECK(rel_err(dx, dxr) < 1e-6);
}
