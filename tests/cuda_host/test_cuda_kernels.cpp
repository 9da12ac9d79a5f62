// The CUDA kernels of kernels/cuda, compiled as C++ and run on the host SIMT runtime
// (kernels/simt), against their CPU twins, on small odd shapes and several scheduler seeds.
//
// Error measure for float32 results: for each element, |gpu - twin| / bound, where bound is
// the same computation on absolute values (sum |a_i * b_i| of the terms; for a mean of
// non-negative terms it is the value itself), floored at 1e-30; the test reports and
// checks the maximum over all elements. This is the relative error that floating point
// promises for a sum (it stays meaningful where cancellation makes the result near 0).
// Exact kernels (ReLU, max-pool, gathers in the twin's order) are compared bit for bit.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/common/error_measures.h"
#include "kernels/cpu/channel_stats.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/maps.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/preprocess.h"
#include "kernels/cpu/relu.h"
#include "kernels/cpu/seed.h"
#include "kernels/cuda/avgpool.h"
#include "kernels/cuda/channel_stats.h"
#include "kernels/cuda/conv_dgrad.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/maps.h"
#include "kernels/cuda/maxpool.h"
#include "kernels/cuda/preprocess.h"
#include "kernels/cuda/relu.h"
#include "kernels/cuda/seed.h"
#include "kernels/simt/simt.h"
#include "nn/error.h"

namespace kc = pg::kernels::cuda;
namespace kcpu = pg::kernels::cpu;
using pg::kernels::Conv2dParams;
using pg::kernels::Pool2dParams;

namespace {

const uint64_t kSeeds[] = {1, 7, 12345};

std::vector<float> randn(size_t n, uint32_t seed, float mean = 0.f, float sd = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

using pg::testing::bf16_round;  // tests/common/error_measures.h
using pg::testing::max_rel;
using pg::testing::tf32_round;

// Worst errors seen, printed at the end of each test case for the report.
struct Worst {
  const char* what;
  double v = 0;
  explicit Worst(const char* w) : what(w) {}
  void add(double e) { v = std::max(v, e); }
  ~Worst() { std::printf("worst relative error, %s: %.3g\n", what, v); }
};

}  // namespace

// ---- ReLU -------------------------------------------------------------------------------------

TEST_CASE("relu forward/backward: mask bits identical to the CPU backend's uint64 words") {
  for (int64_t n : {int64_t(1), int64_t(31), int64_t(32), int64_t(63), int64_t(64), int64_t(65), int64_t(1000),
                    int64_t(2 * 3 * 7 * 9), int64_t(5 * 13 * 11 + 3)}) {
    for (uint64_t seed : kSeeds) {
      pg::simt::ScopedSeed ss(seed);
      CAPTURE(n);
      std::vector<float> x = randn(size_t(n), uint32_t(n + seed));
      if (n > 5) {  // the edge values: zero, -0, NaN, inf
        x[1] = 0.f;
        x[2] = -0.f;
        x[3] = std::numeric_limits<float>::quiet_NaN();
        x[4] = INFINITY;
        x[5] = -INFINITY;
      }
      const int64_t w32 = kc::relu_mask_words32(n);
      REQUIRE(w32 == 2 * kcpu::relu_mask_words(n));
      std::vector<float> y(size_t(n), 42.f), ref = x;
      std::vector<uint32_t> mask(size_t(w32), 0xDEADBEEFu);
      std::vector<uint64_t> ref_mask(size_t(kcpu::relu_mask_words(n)));
      kc::launch_relu_forward({n}, x.data(), y.data(), mask.data(), nullptr);
      kcpu::relu_forward(ref.data(), n, ref_mask.data());
      CHECK(same_bits(y, ref));
      CHECK(std::memcmp(mask.data(), ref_mask.data(), size_t(w32) * 4) == 0);

      // In place, and without a mask.
      std::vector<float> z = x;
      kc::launch_relu_forward({n}, z.data(), z.data(), nullptr, nullptr);
      CHECK(same_bits(z, ref));

      // Backward, out of place and in place, against the CPU backward on the CPU's mask.
      std::vector<float> g = randn(size_t(n), uint32_t(3 * n + seed)), dx(size_t(n), 7.f), gref = g;
      kc::launch_relu_backward({n}, g.data(), mask.data(), dx.data(), nullptr);
      kcpu::relu_backward(gref.data(), n, ref_mask.data());
      CHECK(same_bits(dx, gref));
      kc::launch_relu_backward({n}, g.data(), reinterpret_cast<const uint32_t*>(ref_mask.data()), g.data(), nullptr);
      CHECK(same_bits(g, gref));
    }
  }
}

// ---- max-pool ----------------------------------------------------------------------------------

namespace {
Pool2dParams pool(int N, int C, int H, int W, int k, int s, int pad, bool ceil_mode) {
  Pool2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W;
  p.kh = p.kw = k;
  p.stride_h = p.stride_w = s;
  p.pad_h = p.pad_w = pad;
  p.ceil_mode = ceil_mode;
  REQUIRE(pg::kernels::pool2d_output_size(p));
  return p;
}
}  // namespace

TEST_CASE("maxpool forward (argmax, ties, NaN, -inf) and gather backward match the CPU bit for bit") {
  const Pool2dParams shapes[] = {
      pool(2, 3, 7, 9, 3, 2, 1, false),  pool(3, 5, 13, 11, 3, 2, 1, false), pool(2, 3, 13, 11, 3, 2, 0, true),
      pool(1, 17, 7, 9, 2, 2, 0, true),  pool(2, 3, 7, 9, 3, 1, 1, false),  pool(2, 5, 8, 8, 2, 2, 0, false),
      pool(1, 3, 5, 7, 5, 3, 2, true)};
  for (const Pool2dParams& p : shapes) {
    for (int variant = 0; variant < 3; ++variant) {
      for (uint64_t seed : kSeeds) {
        pg::simt::ScopedSeed ss(seed);
        CAPTURE(p.H);
        CAPTURE(p.W);
        CAPTURE(p.kh);
        CAPTURE(p.stride_h);
        CAPTURE(p.pad_h);
        CAPTURE(p.ceil_mode);
        CAPTURE(variant);
        const size_t in = size_t(p.N) * p.C * p.H * p.W, out = size_t(p.N) * p.C * p.P * p.Q;
        std::vector<float> x = randn(in, uint32_t(in + seed + 100 * variant));
        if (variant == 1) {  // few distinct values: many ties
          for (auto& v : x) v = std::round(v);
        } else if (variant == 2) {  // NaNs, infinities, constant -inf planes
          for (size_t i = 0; i < in; i += 7) x[i] = std::numeric_limits<float>::quiet_NaN();
          for (size_t i = 3; i < in; i += 11) x[i] = INFINITY;
          std::fill(x.begin(), x.begin() + p.H * p.W, -INFINITY);
        }
        std::vector<float> y(out, 1.f), yr(out);
        std::vector<int32_t> am(out, -5), amr(out);
        kc::launch_maxpool_forward(p, x.data(), y.data(), am.data(), nullptr);
        kcpu::maxpool2d_forward(p, x.data(), yr.data(), amr.data());
        CHECK(same_bits(y, yr));
        CHECK(am == amr);

        std::vector<float> dy = randn(out, uint32_t(out + 5 * seed)), dx(in, 9.f), dxr(in);
        kc::launch_maxpool_backward(p, dy.data(), am.data(), dx.data(), nullptr);
        kcpu::maxpool2d_backward(p, dy.data(), amr.data(), dxr.data());
        CHECK(same_bits(dx, dxr));
      }
    }
  }
}

// ---- channel statistics --------------------------------------------------------------------------

TEST_CASE("channel gap with and without the folded BatchNorm") {
  Worst worst("channel gap (relative to the value)");
  struct Shape { int N, C, H, W; };
  for (Shape s : {Shape{2, 3, 7, 9}, Shape{3, 17, 13, 11}, Shape{2, 5, 1, 1}, Shape{1, 3, 23, 19}}) {
    for (bool bn : {false, true}) {
      for (uint64_t seed : kSeeds) {
        pg::simt::ScopedSeed ss(seed);
        const int64_t HW = int64_t(s.H) * s.W;
        const size_t total = size_t(s.N) * s.C * size_t(HW);
        std::vector<float> y = randn(total, uint32_t(total + seed), 0.2f);
        std::fill(y.begin(), y.begin() + HW, -1.f);  // plane (0, 0): relu is 0 everywhere
        std::vector<float> scale = randn(size_t(s.C), 3, 1.f, 0.3f), shift = randn(size_t(s.C), 4);
        for (auto& v : scale) v = std::fabs(v) + 0.1f;
        const float* sc = bn ? scale.data() : nullptr;
        const float* sh = bn ? shift.data() : nullptr;
        std::vector<float> gap(size_t(s.N) * s.C, -1.f), ref(gap.size());
        const kc::ChannelGapParams p{s.N, s.C, HW};
        kc::launch_channel_gap(p, y.data(), sc, sh, gap.data(), nullptr);
        kcpu::channel_gap(p, y.data(), sc, sh, ref.data());
        if (!bn) CHECK(gap[0] == 0.f);
        const double e = max_rel(gap, ref, ref);  // terms >= 0: the value bounds the error
        worst.add(e);
        CHECK(e <= 1e-6);
      }
    }
  }
}

TEST_CASE("spatial variances M, N: one pass over g, masks with empty H or L, BatchNorm scale") {
  Worst worst("spatial variances M, N (relative)");
  struct Shape { int N, C, H, W; };
  for (Shape s : {Shape{2, 3, 7, 9}, Shape{3, 17, 13, 11}, Shape{2, 5, 1, 1}, Shape{2, 5, 1, 2},
                  Shape{2, 17, 23, 19}}) {
    for (bool bn : {false, true}) {
      for (uint64_t seed : kSeeds) {
        pg::simt::ScopedSeed ss(seed);
        CAPTURE(s.C);
        CAPTURE(s.H);
        const int64_t HW = int64_t(s.H) * s.W;
        const size_t total = size_t(s.N) * s.C * size_t(HW);
        std::vector<float> g = randn(total, uint32_t(total + seed), 0.5f);
        std::vector<float> scale = randn(size_t(s.C), 5, 1.f, 0.5f);
        std::mt19937 rng{uint32_t(seed)};
        std::vector<uint8_t> sel(size_t(s.N) * s.C);
        for (auto& b : sel) b = uint8_t(rng() % 3 == 0 ? 1 + rng() % 255 : 0);  // any non-zero byte selects
        // Sample 0: H empty; sample 1: L empty (all selected).
        std::fill(sel.begin(), sel.begin() + s.C, uint8_t(0));
        std::fill(sel.begin() + s.C, sel.begin() + 2 * s.C, uint8_t(1));
        const kc::SpatialVarianceParams p{s.N, s.C, HW};
        std::vector<unsigned char> ws(kc::spatial_variance_workspace_bytes(p) + 1);
        std::vector<double> M(size_t(s.N), -1), Nv(size_t(s.N), -1), Mr(size_t(s.N)), Nr(size_t(s.N));
        const float* gs = bn ? scale.data() : nullptr;
        kc::launch_spatial_variances(p, g.data(), gs, sel.data(), M.data(), Nv.data(), ws.data(), nullptr);
        kcpu::spatial_variances(p, g.data(), gs, sel.data(), Mr.data(), Nr.data());
        CHECK(M[0] == 1e-7);   // H empty: var of zeros
        CHECK(Nv[1] == 1e-7);  // L empty
        for (int n = 0; n < s.N; ++n) {
          const double em = std::fabs(M[size_t(n)] - Mr[size_t(n)]) / Mr[size_t(n)];
          const double en = std::fabs(Nv[size_t(n)] - Nr[size_t(n)]) / Nr[size_t(n)];
          worst.add(std::max(em, en));
          CHECK(em <= 1e-12);
          CHECK(en <= 1e-12);
          if (HW < 2) {
            CHECK(M[size_t(n)] == 1e-7);
            CHECK(Nv[size_t(n)] == 1e-7);
          }
        }
      }
    }
  }
}

TEST_CASE("class moments: batches merged into running count/mean/M2") {
  Worst worst("class moments mean, M2 (relative)");
  const kc::ClassMomentsParams p{7, 17, 4};  // 7 samples, 17 channels, 4 classes
  for (uint64_t seed : kSeeds) {
    pg::simt::ScopedSeed ss(seed);
    std::vector<kc::ClassMoment> acc(size_t(p.classes) * p.C), ref = acc;
    std::mt19937 rng{uint32_t(seed)};
    for (int batch = 0; batch < 5; ++batch) {
      std::vector<float> gap = randn(size_t(p.N) * p.C, uint32_t(seed * 10 + batch), 3.f);
      std::vector<int32_t> labels(size_t(p.N));
      for (auto& l : labels) l = int32_t(rng() % 3);  // class 3 never appears
      labels[0] = -1;                                  // ignored
      labels[1] = p.classes;                           // ignored
      kc::launch_class_moments_update(p, gap.data(), labels.data(), acc.data(), nullptr);
      kcpu::class_moments_update(p, gap.data(), labels.data(), ref.data());
    }
    for (size_t i = 0; i < acc.size(); ++i) {
      CHECK(acc[i].count == ref[i].count);
      if (ref[i].count == 0) {
        CHECK(acc[i].mean == 0);
        CHECK(acc[i].m2 == 0);
        continue;
      }
      const double em = std::fabs(acc[i].mean - ref[i].mean) / std::max(std::fabs(ref[i].mean), 1e-300);
      const double e2 = std::fabs(acc[i].m2 - ref[i].m2) / std::max(ref[i].m2, 1e-300);
      worst.add(std::max(em, e2));
      CHECK(em <= 1e-12);
      CHECK(e2 <= 1e-12);
    }
  }
}

// ---- convolution data-gradient -------------------------------------------------------------------

namespace {
Conv2dParams conv(int N, int C, int H, int W, int K, int R, int stride, int pad) {
  Conv2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W, p.K = K, p.R = R, p.S = R;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  REQUIRE(pg::kernels::conv2d_output_size(p));
  return p;
}

void cpu_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale, float* dx) {
  std::vector<float> ws(kcpu::conv2d_workspace_floats(p, omp_get_max_threads()) + 1);
  kcpu::conv2d_dgrad(p, dy, w, scale, dx, ws.data());
}

std::vector<float> absv(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}
}  // namespace

TEST_CASE("conv dgrad (implicit GEMM, float32) against cpu::conv2d_dgrad") {
  Worst worst("conv dgrad float32 (relative to sum |terms|)");
  const Conv2dParams shapes[] = {
      conv(2, 3, 7, 9, 5, 3, 1, 1),     conv(3, 17, 13, 11, 5, 3, 2, 1), conv(2, 5, 13, 11, 17, 1, 1, 0),
      conv(2, 5, 13, 11, 17, 1, 2, 0),  conv(2, 3, 13, 11, 5, 7, 2, 3),  conv(3, 5, 7, 9, 3, 7, 1, 3),
      conv(2, 70, 9, 7, 40, 3, 1, 1),   conv(1, 3, 17, 19, 67, 3, 2, 0), conv(2, 65, 1, 1, 9, 1, 1, 0)};
  for (const Conv2dParams& p : shapes) {
    // Scale: none; random with zeros (one sample all zeros, one all kept); all zeros.
    for (int mode = 0; mode < 3; ++mode) {
      for (uint64_t seed : {kSeeds[0], kSeeds[2]}) {
        pg::simt::ScopedSeed ss(seed);
        CAPTURE(p.C);
        CAPTURE(p.K);
        CAPTURE(p.H);
        CAPTURE(p.W);
        CAPTURE(p.R);
        CAPTURE(p.stride_h);
        CAPTURE(mode);
        const size_t nx = size_t(p.N) * p.C * p.H * p.W, ny = size_t(p.N) * p.K * p.P * p.Q;
        std::vector<float> dy = randn(ny, uint32_t(ny + seed)), w = randn(size_t(p.K) * p.C * p.R * p.S, 11);
        std::vector<float> scale(size_t(p.N) * p.K, 0.f);
        if (mode == 1) {
          std::mt19937 rng{uint32_t(seed)};
          for (auto& s : scale) s = rng() % 3 == 0 ? 0.f : 0.25f + float(rng() % 100) / 50.f;
          std::fill(scale.begin(), scale.begin() + p.K, 0.f);  // sample 0: every channel skipped
          if (p.N > 2) std::fill(scale.begin() + p.K, scale.begin() + 2 * p.K, 1.5f);
        }
        const float* sc = mode == 0 ? nullptr : scale.data();
        std::vector<unsigned char> ws(kc::conv_dgrad_workspace_bytes(p));
        std::vector<float> dx(nx, 123.f), ref(nx), bound(nx);
        kc::launch_conv_dgrad(p, dy.data(), w.data(), sc, dx.data(), ws.data(), nullptr);
        cpu_dgrad(p, dy.data(), w.data(), sc, ref.data());
        const std::vector<float> as = absv(scale);
        cpu_dgrad(p, absv(dy).data(), absv(w).data(), sc ? as.data() : nullptr, bound.data());
        if (mode == 2) CHECK(std::all_of(dx.begin(), dx.end(), [](float v) { return v == 0.f; }));
        if (mode == 1) {
          const size_t plane = size_t(p.C) * p.H * p.W;
          CHECK(std::all_of(dx.begin(), dx.begin() + plane, [](float v) { return v == 0.f; }));
        }
        const double e = max_rel(dx, ref, bound);
        worst.add(e);
        CHECK(e <= 1e-5);
      }
    }
  }
}


TEST_CASE("conv dgrad TF32 (mma.sync m16n8k8 model) against cpu::conv2d_dgrad") {
  Worst worst("conv dgrad TF32, random inputs (relative to sum |terms|)");
  Worst exact("conv dgrad TF32, TF32-exact inputs (relative to sum |terms|)");
  const Conv2dParams shapes[] = {
      conv(2, 3, 7, 9, 5, 3, 1, 1),     conv(3, 17, 13, 11, 5, 3, 2, 1), conv(2, 5, 13, 11, 17, 1, 1, 0),
      conv(2, 5, 13, 11, 17, 1, 2, 0),  conv(2, 3, 13, 11, 5, 7, 2, 3),  conv(2, 70, 9, 7, 40, 3, 1, 1),
      conv(1, 3, 17, 19, 67, 3, 2, 0)};
  for (const Conv2dParams& p : shapes) {
    for (int mode = 0; mode < 3; ++mode) {  // no scale; scale with zeros; TF32-exact inputs
      pg::simt::ScopedSeed ss(uint64_t(7 + mode));
      CAPTURE(p.C);
      CAPTURE(p.K);
      CAPTURE(p.H);
      CAPTURE(p.R);
      CAPTURE(p.stride_h);
      CAPTURE(mode);
      const size_t nx = size_t(p.N) * p.C * p.H * p.W, ny = size_t(p.N) * p.K * p.P * p.Q;
      std::vector<float> dy = randn(ny, uint32_t(ny + mode)), w = randn(size_t(p.K) * p.C * p.R * p.S, 13);
      std::vector<float> scale(size_t(p.N) * p.K);
      std::mt19937 rng{uint32_t(mode)};
      for (auto& s : scale) s = rng() % 3 == 0 ? 0.f : (mode == 2 ? 0.5f * float(1 + rng() % 4) : 0.3f + float(rng() % 100) / 40.f);
      std::fill(scale.begin(), scale.begin() + p.K, 0.f);  // sample 0 skipped entirely
      if (mode == 2) {  // operands exactly representable: only the accumulation rounds
        for (auto& v : dy) v = tf32_round(v);
        for (auto& v : w) v = tf32_round(v);
        for (auto& v : scale) v = v == 1.5f ? 2.f : v;  // 0.5, 1, 2: scale * dy stays exact
      }
      const float* sc = mode == 0 ? nullptr : scale.data();
      std::vector<unsigned char> ws(kc::conv_dgrad_workspace_bytes(p));
      std::vector<float> dx(nx, 123.f), ref(nx), bound(nx);
      kc::launch_conv_dgrad_tf32(p, dy.data(), w.data(), sc, dx.data(), ws.data(), nullptr);
      cpu_dgrad(p, dy.data(), w.data(), sc, ref.data());
      const std::vector<float> as = absv(scale);
      cpu_dgrad(p, absv(dy).data(), absv(w).data(), sc ? as.data() : nullptr, bound.data());
      if (mode > 0) {
        const size_t plane = size_t(p.C) * p.H * p.W;
        CHECK(std::all_of(dx.begin(), dx.begin() + plane, [](float v) { return v == 0.f; }));
      }
      const double e = max_rel(dx, ref, bound);
      if (mode == 2) {
        exact.add(e);
        CHECK(e <= 1e-5);
      } else {
        worst.add(e);
        CHECK(e <= 1.5e-3);  // two TF32 roundings (2 x 2^-11) per product, plus float sums
      }
    }
  }
}

namespace {
// Bound on |bf16 kernel - float32 twin| / sum |terms| for a reduction of at most L terms.
// Each product scale*dy*w reaches the tensor core as bf16(fl32(scale*dy)) * bf16(w): the
// float32 product rounds once (2^-24) and each operand rounds once to BF16, whose unit
// roundoff is u = 2^-8 (8 significant bits, nearest even), so the product the hardware
// multiplies exactly is off by at most (1+u)^2 (1+2^-24) - 1 <= 2u + u^2 + 2^-23 of
// |scale*dy*w|. The kernel sums the L products in float32 (the host model rounds once per
// m16n8k16, the hardware perhaps more often, never worse than one rounding per term), and
// so does the twin: each sum is within L * 2^-24 (first order) of the exact sum of its
// terms, relative to sum |terms|. Adding the three: 2u + u^2 + 2^-23 + 2 L 2^-24 (about
// 7.9e-3 for L of a few hundred; a sum of n independent roundings is typically sqrt(n)
// smaller, so the measured worst error sits well inside).
double bf16_bound(int64_t L) {
  const double u = std::ldexp(1.0, -8), f = std::ldexp(1.0, -24);
  return 2 * u + u * u + 2 * f + 2 * double(L) * f;
}

// One data-gradient run of the given precision against the float32 twin; returns the
// maximum error relative to sum |terms|. scale_mode: 0 none, 1 random with zeros (sample 0
// all zeros, so its dx must be exactly 0), 2 like 1 with values 0.5, 1, 2 only (with
// `exact`, scale * dy stays representable). exact: dy and w rounded to the precision first,
// so that only the accumulation rounds.
double run_dgrad(const Conv2dParams& p, kc::ConvPrecision prec, int scale_mode, bool exact, uint32_t seed) {
  const size_t nx = size_t(p.N) * p.C * p.H * p.W, ny = size_t(p.N) * p.K * p.P * p.Q;
  std::vector<float> dy = randn(ny, uint32_t(ny + seed)), w = randn(size_t(p.K) * p.C * p.R * p.S, 13 + seed);
  std::vector<float> scale(size_t(p.N) * p.K);
  std::mt19937 rng{seed};
  for (auto& s : scale)
    s = rng() % 3 == 0 ? 0.f : (scale_mode == 2 ? std::ldexp(1.f, int(rng() % 3) - 1) : 0.3f + float(rng() % 100) / 40.f);
  std::fill(scale.begin(), scale.begin() + p.K, 0.f);  // sample 0 skipped entirely
  if (exact) {
    for (auto& v : dy) v = prec == kc::ConvPrecision::bf16 ? bf16_round(v) : tf32_round(v);
    for (auto& v : w) v = prec == kc::ConvPrecision::bf16 ? bf16_round(v) : tf32_round(v);
  }
  const float* sc = scale_mode == 0 ? nullptr : scale.data();
  std::vector<unsigned char> ws(kc::conv_dgrad_workspace_bytes(p));
  std::vector<float> dx(nx, 123.f), ref(nx), bound(nx);
  kc::launch_conv_dgrad(p, prec, dy.data(), w.data(), sc, dx.data(), ws.data(), nullptr);
  cpu_dgrad(p, dy.data(), w.data(), sc, ref.data());
  const std::vector<float> as = absv(scale);
  cpu_dgrad(p, absv(dy).data(), absv(w).data(), sc ? as.data() : nullptr, bound.data());
  if (scale_mode > 0) {
    const size_t plane = size_t(p.C) * p.H * p.W;
    CHECK(std::all_of(dx.begin(), dx.begin() + plane, [](float v) { return v == 0.f; }));
  }
  return max_rel(dx, ref, bound);
}

// Tolerances per precision (relative to sum |terms|) for random inputs, L = reduction length.
double dgrad_tolerance(kc::ConvPrecision prec, const Conv2dParams& p) {
  const int64_t L = int64_t(p.K) * p.R * p.S;
  switch (prec) {
    case kc::ConvPrecision::fp32: return 1e-5;
    case kc::ConvPrecision::tf32: return 1.5e-3;  // two TF32 roundings (2 x 2^-11) per product, plus float sums
    case kc::ConvPrecision::bf16: return bf16_bound(L);
  }
  return 0;
}

Conv2dParams conv2(int N, int C, int H, int W, int K, int R, int S, int sh, int sw, int ph, int pw) {
  Conv2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W, p.K = K, p.R = R, p.S = S;
  p.stride_h = sh, p.stride_w = sw;
  p.pad_h = ph, p.pad_w = pw;
  REQUIRE(pg::kernels::conv2d_output_size(p));
  return p;
}
}  // namespace

TEST_CASE("conv dgrad BF16 (mma.sync m16n8k16 + ldmatrix models) against cpu::conv2d_dgrad") {
  Worst worst("conv dgrad BF16, random inputs (relative to sum |terms|)");
  Worst exact("conv dgrad BF16, BF16-exact inputs (relative to sum |terms|)");
  const Conv2dParams shapes[] = {
      conv(2, 3, 7, 9, 5, 3, 1, 1),     conv(3, 17, 13, 11, 5, 3, 2, 1), conv(2, 5, 13, 11, 17, 1, 1, 0),
      conv(2, 5, 13, 11, 17, 1, 2, 0),  conv(2, 3, 13, 11, 5, 7, 2, 3),  conv(2, 70, 9, 7, 40, 3, 1, 1),
      conv(1, 3, 17, 19, 67, 3, 2, 0),  conv(2, 65, 1, 1, 9, 1, 1, 0),   conv(2, 33, 12, 10, 24, 3, 1, 1)};
  for (const Conv2dParams& p : shapes) {
    for (int mode = 0; mode < 3; ++mode) {  // no scale; scale with zeros; BF16-exact inputs
      pg::simt::ScopedSeed ss(uint64_t(3 + mode));
      CAPTURE(p.C);
      CAPTURE(p.K);
      CAPTURE(p.H);
      CAPTURE(p.R);
      CAPTURE(p.stride_h);
      CAPTURE(mode);
      const double e = run_dgrad(p, kc::ConvPrecision::bf16, mode, mode == 2, uint32_t(mode));
      if (mode == 2) {
        exact.add(e);
        CHECK(e <= 1e-5);  // exact products, float32 sums: a fragment layout error is O(1)
      } else {
        worst.add(e);
        CHECK(e <= bf16_bound(int64_t(p.K) * p.R * p.S));
        if (mode == 0 || p.N > 1) CHECK(e >= 1e-4);  // the BF16 rounding is there (N = 1 with a scale: dx = 0)
      }
    }
  }
}

TEST_CASE("conv dgrad, strided convolutions by output phase: fp32, TF32, BF16 against cpu::conv2d_dgrad") {
  Worst wf("conv dgrad strided fp32 (relative to sum |terms|)");
  Worst wt("conv dgrad strided TF32, random inputs");
  Worst wb("conv dgrad strided BF16, random inputs");
  Worst xt("conv dgrad strided TF32, exact inputs");
  Worst xb("conv dgrad strided BF16, exact inputs");
  const Conv2dParams shapes[] = {
      conv(2, 5, 13, 11, 17, 1, 2, 0),    // 1x1 stride 2 (ResNet downsample): odd phases get 0
      conv(2, 6, 14, 12, 9, 1, 2, 0),     // the same, even sizes
      conv(2, 6, 15, 13, 9, 3, 2, 1),     // 3x3 stride 2 pad 1, odd sizes
      conv(2, 7, 16, 10, 11, 3, 2, 0),    // 3x3 stride 2 no padding, even sizes
      conv(1, 3, 23, 21, 16, 7, 2, 3),    // the ResNet stem: 7x7 stride 2 pad 3, C = 3
      conv(1, 3, 32, 32, 64, 7, 2, 3),    // the stem with K = 64 (every kept channel x 16 taps)
      conv(2, 5, 11, 13, 6, 7, 2, 2),     // 7x7 stride 2 with a pad that is not R/2
      conv(2, 4, 17, 14, 5, 3, 4, 1),     // stride 4 > kernel: phases without taps give 0
      conv2(2, 5, 11, 14, 7, 3, 5, 2, 3, 1, 2),  // non-square kernel and strides
      conv2(1, 66, 9, 12, 20, 2, 2, 2, 2, 0, 0),  // 2x2 stride 2: one tap per phase, C > 64
      conv(1, 3, 1, 1, 5, 3, 2, 1)};      // 1x1 input: phases other than (0, 0) are empty
  for (const Conv2dParams& p : shapes) {
    for (kc::ConvPrecision prec : {kc::ConvPrecision::fp32, kc::ConvPrecision::tf32, kc::ConvPrecision::bf16}) {
      for (int mode = 0; mode < 3; ++mode) {  // no scale; scale with zeros; exact inputs (tensor cores)
        if (mode == 2 && prec == kc::ConvPrecision::fp32) continue;
        pg::simt::ScopedSeed ss(uint64_t(11 + mode));
        CAPTURE(p.C);
        CAPTURE(p.K);
        CAPTURE(p.H);
        CAPTURE(p.W);
        CAPTURE(p.R);
        CAPTURE(p.S);
        CAPTURE(p.stride_h);
        CAPTURE(p.stride_w);
        CAPTURE(kc::conv_precision_name(prec));
        CAPTURE(mode);
        const double e = run_dgrad(p, prec, mode, mode == 2, uint32_t(5 + mode));
        if (mode == 2) {
          (prec == kc::ConvPrecision::tf32 ? xt : xb).add(e);
          CHECK(e <= 1e-5);
        } else {
          (prec == kc::ConvPrecision::fp32 ? wf : prec == kc::ConvPrecision::tf32 ? wt : wb).add(e);
          CHECK(e <= dgrad_tolerance(prec, p));
        }
      }
    }
  }
}

TEST_CASE("conv dgrad precision names") {
  kc::ConvPrecision prec = kc::ConvPrecision::fp32;
  CHECK(kc::parse_conv_precision("bf16", &prec));
  CHECK(prec == kc::ConvPrecision::bf16);
  CHECK(kc::parse_conv_precision("tf32", &prec));
  CHECK(prec == kc::ConvPrecision::tf32);
  CHECK_FALSE(kc::parse_conv_precision("fp16", &prec));
  CHECK(prec == kc::ConvPrecision::tf32);
  CHECK(std::string(kc::conv_precision_name(kc::ConvPrecision::fp32)) == "fp32");
}

TEST_CASE("conv dgrad: deterministic across scheduler seeds and host threads; unsupported shapes refused") {
  const Conv2dParams p = conv(2, 17, 13, 11, 40, 3, 2, 1);
  const size_t nx = size_t(p.N) * p.C * p.H * p.W, ny = size_t(p.N) * p.K * p.P * p.Q;
  std::vector<float> dy = randn(ny, 1), w = randn(size_t(p.K) * p.C * 9, 2), scale = randn(size_t(p.N) * p.K, 3);
  for (size_t i = 0; i < scale.size(); i += 3) scale[i] = 0.f;
  std::vector<unsigned char> ws(kc::conv_dgrad_workspace_bytes(p));
  std::vector<float> first(nx);
  {
    pg::simt::ScopedSeed ss(1);
    kc::launch_conv_dgrad(p, dy.data(), w.data(), scale.data(), first.data(), ws.data(), nullptr);
  }
  const int old_threads = pg::simt::host_threads();
  for (int threads : {1, 2}) {
    pg::simt::set_host_threads(threads);
    for (uint64_t seed : {uint64_t(99), uint64_t(4242)}) {
      pg::simt::ScopedSeed ss(seed);
      std::vector<float> dx(nx);
      kc::launch_conv_dgrad(p, dy.data(), w.data(), scale.data(), dx.data(), ws.data(), nullptr);
      CHECK(same_bits(dx, first));
    }
  }
  // The tensor-core variants, stride 1 and 2 (stride 2: four phases in one grid).
  for (kc::ConvPrecision prec : {kc::ConvPrecision::tf32, kc::ConvPrecision::bf16}) {
    for (int stride : {1, 2}) {
      Conv2dParams q = p;
      q.stride_h = q.stride_w = stride;
      REQUIRE(pg::kernels::conv2d_output_size(q));
      const size_t nq = size_t(q.N) * q.K * q.P * q.Q;
      const std::vector<float> dyq = randn(nq, uint32_t(5 + stride));
      std::vector<float> ref(nx);
      pg::simt::set_host_threads(1);
      {
        pg::simt::ScopedSeed ss(1);
        kc::launch_conv_dgrad(q, prec, dyq.data(), w.data(), scale.data(), ref.data(), ws.data(), nullptr);
      }
      for (int threads : {1, 2}) {
        pg::simt::set_host_threads(threads);
        for (uint64_t seed : {uint64_t(99), uint64_t(4242)}) {
          CAPTURE(kc::conv_precision_name(prec));
          CAPTURE(stride);
          CAPTURE(threads);
          pg::simt::ScopedSeed ss(seed);
          std::vector<float> dx(nx);
          kc::launch_conv_dgrad(q, prec, dyq.data(), w.data(), scale.data(), dx.data(), ws.data(), nullptr);
          CHECK(same_bits(dx, ref));
        }
      }
    }
  }
  pg::simt::set_host_threads(old_threads);

  Conv2dParams g = p;
  g.groups = 17;
  g.K = 17;
  CHECK_FALSE(kc::conv_dgrad_supported(g));
  CHECK_THROWS_AS(kc::launch_conv_dgrad(g, dy.data(), w.data(), nullptr, first.data(), ws.data(), nullptr), pg::Error);
  Conv2dParams d = p;
  d.dil_h = 2;
  CHECK_FALSE(kc::conv_dgrad_supported(d));
  CHECK_THROWS_AS(kc::launch_conv_dgrad_bf16(d, dy.data(), w.data(), nullptr, first.data(), ws.data(), nullptr),
                  pg::Error);
}

// ---- average pools -------------------------------------------------------------------------------
//
// Outputs start as NaN, so an element a kernel does not write fails the bitwise comparison.
// Each bitwise comparison is shown to be able to fail where the data could hide a
// difference: the two divisor rules give different outputs on the padded shapes, ceil mode
// changes P or Q on the ceil shapes, and a different summation order changes the global pool.

namespace {
std::vector<float> nans(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }
size_t count_bit_diffs(const std::vector<float>& a, const std::vector<float>& b) {
  size_t d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d += std::memcmp(&a[i], &b[i], 4) != 0;
  return d;
}
}  // namespace

TEST_CASE("avgpool forward and gather backward match the CPU bit for bit (count_include_pad, ceil mode)") {
  struct Shape { int N, C, H, W, k, s, pad; bool ceil; };
  const Shape shapes[] = {{3, 5, 7, 9, 3, 2, 1, false}, {3, 5, 8, 10, 3, 2, 1, true}, {3, 5, 8, 10, 3, 2, 0, true},
                          {2, 3, 7, 9, 2, 2, 0, false}, {2, 3, 7, 9, 2, 2, 0, true},  {2, 3, 7, 9, 3, 1, 1, false},
                          {1, 4, 13, 11, 3, 2, 1, true}, {2, 3, 8, 8, 2, 2, 1, true}, {1, 2, 5, 7, 5, 3, 2, true},
                          {2, 3, 1, 1, 1, 1, 0, false},  {1, 3, 6, 6, 2, 1, 1, false}};
  int divisor_rules_differ = 0, ceil_changes_shape = 0;
  for (const Shape& s : shapes) {
    Pool2dParams floor_p = pool(s.N, s.C, s.H, s.W, s.k, s.s, s.pad, false);
    Pool2dParams base = pool(s.N, s.C, s.H, s.W, s.k, s.s, s.pad, s.ceil);
    if (s.ceil && (floor_p.P != base.P || floor_p.Q != base.Q)) ++ceil_changes_shape;
    std::vector<float> with_pad;  // the twin's forward with count_include_pad, for the check below
    for (bool cip : {true, false}) {
      Pool2dParams p = base;
      p.count_include_pad = cip;
      const size_t in = size_t(p.N) * p.C * p.H * p.W, out = size_t(p.N) * p.C * p.P * p.Q;
      for (uint64_t seed : kSeeds) {
        pg::simt::ScopedSeed ss(seed);
        CAPTURE(p.H);
        CAPTURE(p.W);
        CAPTURE(p.kh);
        CAPTURE(p.stride_h);
        CAPTURE(p.pad_h);
        CAPTURE(p.ceil_mode);
        CAPTURE(cip);
        const std::vector<float> x = randn(in, uint32_t(in + seed)), dy = randn(out, uint32_t(out + 3 * seed));
        std::vector<float> y = nans(out), yr(out), dx = nans(in), dxr(in);
        kc::launch_avgpool_forward(p, x.data(), y.data(), nullptr);
        kcpu::avgpool2d_forward(p, x.data(), yr.data());
        CHECK(same_bits(y, yr));
        kc::launch_avgpool_backward(p, dy.data(), dx.data(), nullptr);
        kcpu::avgpool2d_backward(p, dy.data(), dxr.data());
        CHECK(same_bits(dx, dxr));
        if (seed == kSeeds[0]) {
          if (cip) with_pad = yr;
          else if (!same_bits(with_pad, yr)) ++divisor_rules_differ;
        }
      }
    }
  }
  CHECK(divisor_rules_differ >= 6);  // every shape with padding or a ceil-mode overhang
  CHECK(ceil_changes_shape >= 4);
}

TEST_CASE("adaptive avgpool (windows that overlap, upsampling, global 7x7 -> 1x1) bit for bit") {
  struct Shape { int NC, H, W, P, Q; };
  const Shape shapes[] = {{15, 7, 9, 3, 4},  {15, 7, 7, 1, 1},   {6, 5, 7, 7, 3},  {15, 13, 11, 5, 7},
                          {4, 7, 7, 7, 7},   {1, 1, 1, 1, 1},    {3, 1, 1, 2, 3},  {300, 7, 7, 1, 1},
                          {130, 3, 3, 1, 1}, {5, 64, 65, 1, 1},  {3, 64, 64, 1, 1}, {4, 32, 64, 1, 1},
                          {15, 10, 10, 3, 3}, {2, 1, 9, 1, 1}};
  int order_matters = 0;
  for (const Shape& s : shapes) {
    const kc::AdaptivePoolParams p{s.NC, s.H, s.W, s.P, s.Q};
    const size_t in = size_t(s.NC) * s.H * s.W, out = size_t(s.NC) * s.P * s.Q;
    for (uint64_t seed : kSeeds) {
      pg::simt::ScopedSeed ss(seed);
      CAPTURE(s.NC);
      CAPTURE(s.H);
      CAPTURE(s.W);
      CAPTURE(s.P);
      CAPTURE(s.Q);
      const std::vector<float> x = randn(in, uint32_t(in + seed), 0.3f), dy = randn(out, uint32_t(out + 7 * seed));
      std::vector<float> y = nans(out), yr(out), dx = nans(in), dxr(in);
      kc::launch_adaptive_avgpool_forward(p, x.data(), y.data(), nullptr);
      kcpu::adaptive_avgpool2d_forward(s.NC, s.H, s.W, s.P, s.Q, x.data(), yr.data());
      CHECK(same_bits(y, yr));
      kc::launch_adaptive_avgpool_backward(p, dy.data(), dx.data(), nullptr);
      kcpu::adaptive_avgpool2d_backward(s.NC, s.H, s.W, s.P, s.Q, dy.data(), dxr.data());
      CHECK(same_bits(dx, dxr));
      if (s.P == 1 && s.Q == 1 && s.H * s.W > 1 && seed == kSeeds[0]) {
        // The same means summed backwards: the bitwise check above would see that order.
        const int64_t HW = int64_t(s.H) * s.W;
        for (int pl = 0; pl < s.NC; ++pl) {
          float r = 0.f;
          for (int64_t i = HW - 1; i >= 0; --i) r += x[size_t(pl * HW + i)];
          if (r / float(HW) != yr[size_t(pl)]) {
            ++order_matters;
            break;
          }
        }
      }
    }
  }
  CHECK(order_matters >= 5);
  // The global pool on two host threads (its static shared memory per OS thread).
  const kc::AdaptivePoolParams p{300, 7, 7, 1, 1};
  const std::vector<float> x = randn(300 * 49, 5);
  std::vector<float> y1 = nans(300), y2 = nans(300);
  kc::launch_adaptive_avgpool_forward(p, x.data(), y1.data(), nullptr);
  const int old_threads = pg::simt::host_threads();
  pg::simt::set_host_threads(2);
  kc::launch_adaptive_avgpool_forward(p, x.data(), y2.data(), nullptr);
  pg::simt::set_host_threads(old_threads);
  CHECK(same_bits(y1, y2));
}

// ---- elementwise -----------------------------------------------------------------------------------

TEST_CASE("add, scale, sample_channel_scale: bit for bit, in place and out of place") {
  for (int64_t n : {int64_t(1), int64_t(31), int64_t(1000), int64_t(3 * 5 * 7 * 9)}) {
    CAPTURE(n);
    const std::vector<float> a = randn(size_t(n), uint32_t(n)), b = randn(size_t(n), uint32_t(n + 1));
    std::vector<float> out = nans(size_t(n)), ref(static_cast<size_t>(n));
    kc::launch_add(n, a.data(), b.data(), out.data(), nullptr);
    kcpu::add(n, a.data(), b.data(), ref.data());
    CHECK(same_bits(out, ref));
    std::vector<float> a2 = a, b2 = b;
    kc::launch_add(n, a2.data(), b.data(), a2.data(), nullptr);  // out == a
    kc::launch_add(n, a.data(), b2.data(), b2.data(), nullptr);  // out == b
    CHECK(same_bits(a2, ref));
    CHECK(same_bits(b2, ref));

    const float alpha = 0.37f;
    std::vector<float> sc = nans(size_t(n)), scr(static_cast<size_t>(n)), x2 = a;
    kc::launch_scale(n, alpha, a.data(), sc.data(), nullptr);
    kcpu::scale(n, alpha, a.data(), scr.data());
    CHECK(same_bits(sc, scr));
    kc::launch_scale(n, alpha, x2.data(), x2.data(), nullptr);
    CHECK(same_bits(x2, scr));
  }
  struct Shape { int N, K; int64_t HW; };
  for (Shape s : {Shape{3, 5, 63}, Shape{3, 5, 1}, Shape{2, 7, 49}}) {
    CAPTURE(s.K);
    CAPTURE(s.HW);
    const kc::SampleChannelScaleParams p{s.N, s.K, s.HW};
    const size_t total = size_t(s.N) * s.K * size_t(s.HW);
    const std::vector<float> dy = randn(total, uint32_t(total));
    std::vector<float> scale = randn(size_t(s.N) * s.K, 9, 1.f, 0.7f);
    scale[1] = 0.f;  // a dropped channel
    std::vector<float> out = nans(total), ref(total), in_place = dy;
    kc::launch_sample_channel_scale(p, dy.data(), scale.data(), out.data(), nullptr);
    kcpu::sample_channel_scale(p, dy.data(), scale.data(), ref.data());
    CHECK(same_bits(out, ref));
    kc::launch_sample_channel_scale(p, in_place.data(), scale.data(), in_place.data(), nullptr);
    CHECK(same_bits(in_place, ref));
    CHECK(std::all_of(out.begin() + s.HW, out.begin() + 2 * s.HW, [](float v) { return v == 0.f; }));
  }
}

TEST_CASE("channel_affine: fl(fl(y * scale) + shift), never an FMA, bit for bit") {
  struct Shape { int N, C; int64_t HW; };
  size_t fma_would_differ = 0;
  for (Shape s : {Shape{3, 5, 63}, Shape{3, 5, 1}, Shape{1, 17, 49}}) {
    const kc::ChannelAffineParams p{s.N, s.C, s.HW};
    const size_t total = size_t(s.N) * s.C * size_t(s.HW);
    const std::vector<float> y0 = randn(total, uint32_t(total + 1)), scale = randn(size_t(s.C), 2, 0.f, 2.f),
                             shift = randn(size_t(s.C), 3);
    for (int mode = 0; mode < 4; ++mode) {  // scale and shift; scale only; shift only; neither
      CAPTURE(s.C);
      CAPTURE(s.HW);
      CAPTURE(mode);
      const float* sc = mode == 0 || mode == 1 ? scale.data() : nullptr;
      const float* sh = mode == 0 || mode == 2 ? shift.data() : nullptr;
      std::vector<float> y = y0, yr = y0;
      kc::launch_channel_affine(p, y.data(), sc, sh, nullptr);
      kcpu::channel_affine(p, yr.data(), sc, sh);
      CHECK(same_bits(y, yr));
      if (mode == 3) CHECK(same_bits(y, y0));
      if (mode == 0) {  // a fused multiply-add would round once: the data tells the two apart
        for (size_t i = 0; i < total; ++i) {
          const int c = int((i / size_t(s.HW)) % size_t(s.C));
          const float fused = std::fma(y0[i], scale[size_t(c)], shift[size_t(c)]);
          fma_would_differ += std::memcmp(&fused, &yr[i], 4) != 0;
        }
      }
    }
  }
  CHECK(fma_would_differ >= 10);
}

// ---- probability seed --------------------------------------------------------------------------------

TEST_CASE("probability seed: attribution.cpp's double softmax, one block per row, within 1e-7") {
  Worst worst("probability seed, probabilities (relative)");
  size_t compared = 0, differing = 0;
  for (int K : {1, 2, 5, 257, 1000, 1001}) {
    const int N = 3;
    for (uint64_t seed : kSeeds) {
      pg::simt::ScopedSeed ss(seed);
      CAPTURE(K);
      const size_t total = size_t(N) * K;
      std::vector<float> logits = randn(total, uint32_t(total + seed), 0.f, 3.f);
      std::fill(logits.begin() + K, logits.begin() + 2 * K, 2.5f);  // row 1: all equal, p = 1/K
      if (K > 3) logits[size_t(2 * K + 1)] = -INFINITY;             // row 2: one class impossible
      std::mt19937 rng{uint32_t(seed + K)};
      std::vector<int32_t> targets(static_cast<size_t>(N));
      for (auto& t : targets) t = int32_t(rng() % uint32_t(K));
      targets[2] = K > 3 ? 1 : targets[2];  // the -inf class: seed 0 at the target
      const kc::SeedParams p{N, K};
      std::vector<float> probs = nans(total), sd = nans(total), pr(total), sr(total);
      kc::launch_probability_seed(p, logits.data(), targets.data(), probs.data(), sd.data(), nullptr);
      kcpu::probability_seed(p, logits.data(), targets.data(), pr.data(), sr.data());
      const double e = std::max(max_rel(probs, pr, pr), max_rel(sd, sr, sr));
      worst.add(e);
      CHECK(e <= 1e-7);
      compared += total;
      differing += count_bit_diffs(probs, pr);
      // The seed is the probability at the target and 0 elsewhere, bit for bit.
      for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) {
          const size_t i = size_t(n) * K + k;
          const float want = k == targets[size_t(n)] ? probs[i] : 0.f;
          CHECK(std::memcmp(&sd[i], &want, 4) == 0);
        }
      if (K > 3) CHECK(probs[size_t(2 * K + 1)] == 0.f);
      // Without probs: the same seed.
      std::vector<float> sd2 = nans(total);
      kc::launch_probability_seed(p, logits.data(), targets.data(), nullptr, sd2.data(), nullptr);
      CHECK(same_bits(sd2, sd));
      // The tolerance check can fail: two ulps off in one element exceed 1e-7.
      std::vector<float> off = pr;
      const size_t mid = total / 2;
      off[mid] = std::nextafter(std::nextafter(off[mid], INFINITY), INFINITY);
      CHECK(max_rel(off, pr, pr) > 1e-7);
    }
  }
  std::printf("probability seed: %zu of %zu probabilities differ bitwise from the twin\n", differing, compared);
  // Row 1 (all equal) gives exactly 1/K as the host computes it.
  {
    const kc::SeedParams p{1, 1000};
    const std::vector<float> l(1000, -4.f);
    const std::vector<int32_t> t{999};
    std::vector<float> probs = nans(1000), sd = nans(1000);
    kc::launch_probability_seed(p, l.data(), t.data(), probs.data(), sd.data(), nullptr);
    CHECK(probs[0] == float(1.0 / 1000.0));
    CHECK(sd[999] == float(1.0 / 1000.0));
    CHECK(sd[0] == 0.f);
  }
  // A NaN logit (first or later) makes the row's sum NaN: every probability is NaN, as on the host.
  {
    const kc::SeedParams p{2, 7};
    std::vector<float> l = randn(14, 3);
    l[3] = std::numeric_limits<float>::quiet_NaN();
    l[7] = std::numeric_limits<float>::quiet_NaN();
    const std::vector<int32_t> t{2, 0};
    std::vector<float> probs(14, 1.f), sd(14, 1.f), pr(14), sr(14);
    kc::launch_probability_seed(p, l.data(), t.data(), probs.data(), sd.data(), nullptr);
    kcpu::probability_seed(p, l.data(), t.data(), pr.data(), sr.data());
    for (size_t i = 0; i < 14; ++i) {
      CHECK(std::isnan(probs[i]) == std::isnan(pr[i]));
      CHECK(std::isnan(pr[i]));
    }
  }
}

// ---- saliency maps -------------------------------------------------------------------------------------

TEST_CASE("channel maps (grad, input x grad, IG): bit for bit, products rounded, no FMA") {
  struct Shape { int N, C; int64_t HW; };
  size_t fma_would_differ = 0, order_would_differ = 0;
  for (Shape s : {Shape{3, 5, 63}, Shape{3, 3, 49}, Shape{2, 1, 17}, Shape{3, 5, 1}, Shape{1, 64, 9}}) {
    const size_t total = size_t(s.N) * s.C * size_t(s.HW), out = size_t(s.N) * size_t(s.HW);
    for (kc::MapKind kind : {kc::MapKind::abs_grad, kc::MapKind::abs_input_x_grad, kc::MapKind::abs_mean_input_x_grad}) {
      for (uint64_t seed : kSeeds) {
        pg::simt::ScopedSeed ss(seed);
        CAPTURE(s.C);
        CAPTURE(s.HW);
        CAPTURE(int(kind));
        const std::vector<float> g = randn(total, uint32_t(total + seed)), x = randn(total, uint32_t(total + 2 * seed));
        const kc::ChannelMapParams p{s.N, s.C, s.HW, kind};
        const float* xp = kind == kc::MapKind::abs_grad ? nullptr : x.data();
        std::vector<float> m = nans(out), mr(out);
        kc::launch_channel_map(p, g.data(), xp, m.data(), nullptr);
        kcpu::channel_map(p, g.data(), xp, mr.data());
        CHECK(same_bits(m, mr));
        if (seed != kSeeds[0]) continue;
        for (size_t o = 0; o < out; ++o) {  // what the bitwise check would see
          const size_t n = o / size_t(s.HW), i = o % size_t(s.HW);
          float fused = 0.f, reversed = 0.f;
          for (int c = 0; c < s.C; ++c) {
            const size_t j = (n * size_t(s.C) + size_t(c)) * size_t(s.HW) + i;
            const size_t jr = (n * size_t(s.C) + size_t(s.C - 1 - c)) * size_t(s.HW) + i;
            fused = std::fma(x[j], g[j], fused);
            reversed += std::fabs(g[jr]);
          }
          if (kind == kc::MapKind::abs_mean_input_x_grad && std::fabs(fused / float(s.C)) != mr[o]) ++fma_would_differ;
          if (kind == kc::MapKind::abs_grad && reversed / float(s.C) != mr[o]) ++order_would_differ;
        }
      }
    }
  }
  CHECK(fma_would_differ >= 10);
  CHECK(order_would_differ >= 10);
}

// ---- input normalisation ---------------------------------------------------------------------------------

TEST_CASE("normalize_u8: uint8 HWC -> (u8 / 255 - mean) / std CHW, bit for bit") {
  struct Shape { int N, H, W; };
  kc::NormalizeParams custom;
  custom.mean[0] = 0.5f, custom.mean[1] = 0.25f, custom.mean[2] = 0.1f;
  custom.std[0] = 0.5f, custom.std[1] = 0.3f, custom.std[2] = 1.7f;
  for (Shape s : {Shape{2, 7, 9}, Shape{1, 1, 1}, Shape{3, 5, 13}, Shape{1, 16, 16}}) {
    for (int which = 0; which < 2; ++which) {
      CAPTURE(s.N);
      CAPTURE(s.H);
      CAPTURE(s.W);
      CAPTURE(which);
      kc::NormalizeParams p = which == 0 ? kc::NormalizeParams{} : custom;
      p.N = s.N, p.H = s.H, p.W = s.W;
      const size_t px = size_t(s.N) * s.H * s.W;
      std::vector<uint8_t> rgb(px * 3);
      std::mt19937 rng{uint32_t(px)};
      for (auto& b : rgb) b = uint8_t(rng());
      if (s.H == 16)  // every byte value in every channel
        for (size_t i = 0; i < px; ++i)
          for (int c = 0; c < 3; ++c) rgb[i * 3 + size_t(c)] = uint8_t(i);
      std::vector<float> out = nans(px * 3), ref(px * 3);
      kc::launch_normalize_u8(p, rgb.data(), out.data(), nullptr);
      kcpu::normalize_u8(p, rgb.data(), ref.data());
      CHECK(same_bits(out, ref));
      if (which == 0 && s.H == 16) {
        // The twin is tools/lib/image_io.cpp's expression with torchvision's constants.
        const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
        int by_reciprocal_differs = 0;
        for (int u = 0; u < 256; ++u)
          for (int c = 0; c < 3; ++c) {
            const float v = static_cast<float>(uint8_t(u)) / 255.0f;
            const float want = (v - mean[c]) / sd[c];
            CHECK(std::memcmp(&want, &ref[size_t(c) * px + size_t(u)], 4) == 0);
            const float r = (float(u) * (1.0f / 255.0f) - mean[c]) / sd[c];  // what a fast-math build might do
            by_reciprocal_differs += std::memcmp(&r, &want, 4) != 0;
          }
        CHECK(by_reciprocal_differs > 0);
      }
    }
  }
}
