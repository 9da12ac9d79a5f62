// The activations and the squeeze-and-excitation product of EfficientNet and MobileNetV3
// (kernels/cpu/activations.h, squeeze_excite.h): values against the formulas in double,
// PyTorch's conventions at the kinks, input gradients against central finite differences (in
// double, of the float forward), the fixed-order sum of the SE product's scale gradient (bit
// for bit, batch invariant), and the whole layers on the tape (nn::activation, nn::se_scale,
// nn::SqueezeExcitation) against finite differences.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "kernels/cpu/activations.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/squeeze_excite.h"
#include "nn/layers.h"
#include "tests/unit/support.h"

namespace kc = pg::kernels::cpu;
using pg::kernels::Activation;
using pg::test::randn;

namespace {

double ref_forward(Activation a, double x) {
  switch (a) {
    case Activation::silu: return x / (1.0 + std::exp(-x));
    case Activation::sigmoid: return 1.0 / (1.0 + std::exp(-x));
    case Activation::hardswish: return x * std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
    case Activation::hardsigmoid: return std::min(std::max(x + 3.0, 0.0), 6.0) / 6.0;
  }
  return 0;
}

const char* name_of(Activation a) {
  switch (a) {
    case Activation::silu: return "silu";
    case Activation::sigmoid: return "sigmoid";
    case Activation::hardswish: return "hardswish";
    case Activation::hardsigmoid: return "hardsigmoid";
  }
  return "";
}

// The gradient of activation a at x times g, through the kernels (saved = x or y).
float kernel_grad(Activation a, float x, float g) {
  float y = 0.f, dx = 0.f;
  kc::activation_forward(a, &x, &y, 1);
  kc::activation_backward(a, pg::kernels::activation_saves_output(a) ? &y : &x, &g, &dx, 1);
  return dx;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("activations: values within a few float ulp of the formulas in double") {
  const auto x = randn(4001, 51, 4.f);
  for (Activation a : {Activation::silu, Activation::sigmoid, Activation::hardswish, Activation::hardsigmoid}) {
    CAPTURE(name_of(a));
    std::vector<float> y(x.size());
    kc::activation_forward(a, x.data(), y.data(), int64_t(x.size()));
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double r = ref_forward(a, double(x[i]));
      worst = std::max(worst, std::fabs(double(y[i]) - r) / std::max(std::fabs(r), 1e-30));
    }
    CHECK(worst < 4e-7);
    // In place gives the same bits.
    std::vector<float> z = x;
    kc::activation_forward(a, z.data(), z.data(), int64_t(z.size()));
    CHECK(same_bits(z, y));
  }
}

TEST_CASE("activations: input gradients against central finite differences, away from the kinks") {
  const auto x = randn(300, 52, 3.f);
  for (Activation a : {Activation::silu, Activation::sigmoid, Activation::hardswish, Activation::hardsigmoid}) {
    CAPTURE(name_of(a));
    int checked = 0;
    for (float v : x) {
      if (std::fabs(std::fabs(v) - 3.f) < 2e-2f) continue;  // the hard functions' kinks
      const double h = 1e-2;
      const double fd = (ref_forward(a, double(v) + h) - ref_forward(a, double(v) - h)) / (2 * h);
      // The float forward itself, differenced with a float-sized step.
      float p = v + 1e-2f, m = v - 1e-2f, yp = 0, ym = 0;
      kc::activation_forward(a, &p, &yp, 1);
      kc::activation_forward(a, &m, &ym, 1);
      const double fd_f = (double(yp) - double(ym)) / (double(p) - double(m));
      const double g = kernel_grad(a, v, 1.f);
      CHECK(std::fabs(g - fd) <= 1e-4 * (1.0 + std::fabs(fd)));
      CHECK(std::fabs(g - fd_f) <= 1e-3 * (1.0 + std::fabs(fd)));
      ++checked;
    }
    CHECK(checked > 250);
    // The gradient scales with g.
    CHECK(kernel_grad(a, 0.7f, 2.f) == 2.f * kernel_grad(a, 0.7f, 1.f));
  }
}

TEST_CASE("activations: PyTorch's conventions at the kinks (hardswish_backward, hardsigmoid_backward)") {
  // hardswish: 0 below -3; g * (x / 3 + 0.5) on [-3, 3], both ends included; g above 3.
  CHECK(kernel_grad(Activation::hardswish, -3.f, 1.f) == -0.5f);
  CHECK(kernel_grad(Activation::hardswish, std::nextafter(-3.f, -4.f), 1.f) == 0.f);
  CHECK(kernel_grad(Activation::hardswish, 3.f, 1.f) == 1.5f);
  CHECK(kernel_grad(Activation::hardswish, std::nextafter(3.f, 4.f), 1.f) == 1.f);
  CHECK(kernel_grad(Activation::hardswish, 0.f, 1.f) == 0.5f);
  // hardsigmoid: g / 6 strictly inside (-3, 3), 0 at and beyond both ends.
  CHECK(kernel_grad(Activation::hardsigmoid, -3.f, 1.f) == 0.f);
  CHECK(kernel_grad(Activation::hardsigmoid, 3.f, 1.f) == 0.f);
  CHECK(kernel_grad(Activation::hardsigmoid, std::nextafter(3.f, 0.f), 6.f) == 6.f * (1.f / 6.f));
  CHECK(kernel_grad(Activation::hardsigmoid, std::nextafter(-3.f, 0.f), 1.f) == 1.f / 6.f);
  // Values at the kinks.
  float x[4] = {-3.f, 3.f, -5.f, 5.f}, y[4];
  kc::activation_forward(Activation::hardswish, x, y, 4);
  CHECK(y[0] == 0.f);
  CHECK(y[1] == 3.f);
  CHECK(y[2] == 0.f);
  CHECK(y[3] == 5.f);
  kc::activation_forward(Activation::hardsigmoid, x, y, 4);
  CHECK(y[0] == 0.f);
  CHECK(y[1] == 1.f);
  // SiLU and sigmoid at large |x|: finite, the right limits.
  float big[4] = {-100.f, 100.f, -88.f, 30.f}, out[4];
  kc::activation_forward(Activation::silu, big, out, 4);
  CHECK(out[0] == doctest::Approx(0.0).epsilon(1e-30));
  CHECK(out[1] == 100.f);
  kc::activation_forward(Activation::sigmoid, big, out, 4);
  CHECK(out[1] == 1.f);
  CHECK(out[0] >= 0.f);
  CHECK(std::isfinite(kernel_grad(Activation::silu, -100.f, 1.f)));
}

namespace {

// The float spacing at ref (2^-149 below the normal range).
long double ulp_at(long double ref) {
  int e = 0;
  std::frexp(std::fabs(ref), &e);  // |ref| in [2^(e-1), 2^e)
  return std::ldexp(1.0L, std::max(e - 24, -149));
}
// Distance of got from ref in units of ulp_at(ref).
double ulp_error(float got, long double ref) {
  return double(std::fabs(static_cast<long double>(got) - ref) / ulp_at(ref));
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The sweep: every 4099th float bit pattern of either sign (normal, subnormal, the tails up to
// +-FLT_MAX; ~2.1 million), and [-16, 16] in steps of 2^-12 (~131 thousand).
std::vector<float> sweep_inputs() {
  std::vector<float> xs;
  for (uint64_t u = 0; u < 0x7f800000ull; u += 4099) {
    xs.push_back(bits_float(uint32_t(u)));
    xs.push_back(bits_float(uint32_t(u) | 0x80000000u));
  }
  for (int i = -65536; i <= 65536; ++i) xs.push_back(float(i) / 4096.f);
  return xs;
}

constexpr float kExpOverflow = -88.72283935546875f;  // at and below: float exp(-x) = inf

}  // namespace

TEST_CASE("silu, sigmoid, gelu and their gradients: correctly rounded over a dense sweep, the tails, inf and NaN") {
  // Against long double references; the engine evaluates in double and rounds once
  // (kernels/cpu/smooth_math.h), so its error is the float rounding, 0.5 ulp, plus ~1e-13
  // relative. The float formulas with std::exp it replaced reached 2.4 ulp.
  const std::vector<float> x = sweep_inputs();
  const int64_t n = int64_t(x.size());
  const std::vector<float> ones(x.size(), 1.f);
  std::vector<float> silu(x.size()), sig(x.size()), silu_g(x.size()), gelu(x.size()), gelu_g(x.size());
  kc::activation_forward(Activation::silu, x.data(), silu.data(), n);
  kc::activation_forward(Activation::sigmoid, x.data(), sig.data(), n);
  kc::activation_backward(Activation::silu, x.data(), ones.data(), silu_g.data(), n);
  kc::gelu_forward(x.data(), n, gelu.data());
  kc::gelu_backward(x.data(), ones.data(), n, gelu_g.data());
  const long double inv_sqrt2 = 0.7071067811865475244008443621048490393L;
  const long double inv_sqrt2pi = 0.3989422804014326779399460599343818685L;
  const long double gelu_grad_zero = -0.7517915241764046L;  // Phi(x) + x phi(x) = 0
  double w_silu = 0, w_sig = 0, w_silu_g = 0, w_gelu = 0, w_gelu_g = 0, w_root = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const long double v = x[i];
    const bool cut = x[i] <= kExpOverflow;  // the float formulas' convention: exp(-x) = inf
    const long double e = std::exp(-v), s = 1 / (1 + e);
    w_silu = std::max(w_silu, cut ? (silu[i] == 0.f ? 0.0 : 1e9) : ulp_error(silu[i], v * s));
    w_sig = std::max(w_sig, cut ? (sig[i] == 0.f ? 0.0 : 1e9) : ulp_error(sig[i], s));
    w_silu_g = std::max(w_silu_g, cut ? (silu_g[i] == 0.f ? 0.0 : 1e9) : ulp_error(silu_g[i], s * (1 + v * (1 - s))));
    const long double phi = std::erfc(-v * inv_sqrt2) / 2, pdf = std::exp(-v * v / 2) * inv_sqrt2pi;
    w_gelu = std::max(w_gelu, ulp_error(gelu[i], v * phi));
    const long double d = phi + v * pdf;
    if (std::fabs(v - gelu_grad_zero) > 1e-3L) {
      w_gelu_g = std::max(w_gelu_g, ulp_error(gelu_g[i], d));
    } else {  // near the zero, Phi + x phi cancels: the float rounding plus ~1e-14 absolute
      w_root = std::max(w_root, double(std::fabs(static_cast<long double>(gelu_g[i]) - d) - ulp_at(d) / 2));
    }
  }
  MESSAGE("max ulp over " << x.size() << " inputs: silu " << w_silu << ", sigmoid " << w_sig << ", silu grad "
                          << w_silu_g << ", gelu " << w_gelu << ", gelu grad " << w_gelu_g
                          << " (|x + 0.7518| > 1e-3); gelu grad near its zero: excess " << w_root);
  CHECK(w_silu <= 0.51);
  CHECK(w_sig <= 0.51);
  CHECK(w_silu_g <= 0.51);
  CHECK(w_gelu <= 0.51);
  CHECK(w_gelu_g <= 0.51);
  CHECK(w_root <= 1e-13);

  // Position invariance: every element alone, and the whole sweep shifted by one (another
  // alignment, another split into vector body and tail), give the same bits.
  std::vector<float> shifted(x.size() + 1), out(x.size() + 1);
  std::copy(x.begin(), x.end(), shifted.begin() + 1);
  kc::gelu_backward(shifted.data() + 1, ones.data(), n, out.data() + 1);
  CHECK(std::memcmp(out.data() + 1, gelu_g.data(), x.size() * 4) == 0);
  kc::activation_forward(Activation::silu, shifted.data() + 1, out.data() + 1, n);
  CHECK(std::memcmp(out.data() + 1, silu.data(), x.size() * 4) == 0);
  bool alone = true;
  for (size_t i = 0; i < x.size(); i += 97) {
    float y[5];
    kc::activation_forward(Activation::silu, &x[i], &y[0], 1);
    kc::activation_forward(Activation::sigmoid, &x[i], &y[1], 1);
    kc::activation_backward(Activation::silu, &x[i], &ones[i], &y[2], 1);
    kc::gelu_forward(&x[i], 1, &y[3]);
    kc::gelu_backward(&x[i], &ones[i], 1, &y[4]);
    const float want[5] = {silu[i], sig[i], silu_g[i], gelu[i], gelu_g[i]};
    alone = alone && std::memcmp(y, want, sizeof y) == 0;
  }
  CHECK(alone);

  // The limits and the non-finite inputs (the float formulas' conventions, PyTorch's).
  const float nan = std::numeric_limits<float>::quiet_NaN();
  float sp[] = {INFINITY, -INFINITY, nan, 0.f, -0.f, 100.f, -100.f, std::nextafter(kExpOverflow, 0.f), -15.f};
  const size_t ms = sizeof sp / sizeof sp[0];
  const int m = int(ms);
  std::vector<float> one(ms, 1.f), ys(ms), ysig(ms), ysg(ms), yg(ms), ygg(ms);
  kc::activation_forward(Activation::silu, sp, ys.data(), m);
  kc::activation_forward(Activation::sigmoid, sp, ysig.data(), m);
  kc::activation_backward(Activation::silu, sp, one.data(), ysg.data(), m);
  kc::gelu_forward(sp, m, yg.data());
  kc::gelu_backward(sp, one.data(), m, ygg.data());
  CHECK(ys[0] == INFINITY);  // silu(inf) = inf, silu(-inf) = -inf / inf = NaN
  CHECK(std::isnan(ys[1]));
  CHECK(ysig[0] == 1.f);
  CHECK(ysig[1] == 0.f);
  CHECK(std::isnan(ysg[0]));  // inf * (1 - 1): NaN, as the float formula
  CHECK(yg[0] == INFINITY);
  CHECK(std::isnan(yg[1]));  // -inf * Phi(-inf) = -inf * 0
  CHECK(std::isnan(ygg[0]));  // inf * phi(inf) = inf * 0
  CHECK(std::isnan(ygg[1]));
  for (const std::vector<float>* v : {&ys, &ysig, &ysg, &yg, &ygg}) CHECK(std::isnan((*v)[2]));
  CHECK((ys[3] == 0.f && !std::signbit(ys[3]) && std::signbit(ys[4])));  // signed zeros kept
  CHECK((yg[3] == 0.f && !std::signbit(yg[3]) && std::signbit(yg[4])));
  CHECK(ys[5] == 100.f);
  CHECK(yg[5] == 100.f);
  CHECK(ygg[5] == 1.f);
  CHECK((ys[6] == 0.f && std::signbit(ys[6])));  // below the cut: -0
  CHECK(ysig[6] == 0.f);
  CHECK(ys[7] < 0.f);  // just above it: the tiny true value
  CHECK(ysig[7] > 0.f);
  CHECK((yg[8] == 0.f && std::signbit(yg[8])));  // -15 Phi(-15) underflows
}

TEST_CASE("se_scale: forward, dx = g * s, ds = the fixed-order double sum, batch invariant, finite differences") {
  pg::kernels::SampleChannelScaleParams p;
  p.N = 3, p.K = 5, p.HW = 37;
  const size_t n = size_t(p.N) * p.K * size_t(p.HW);
  const auto x = randn(n, 61), g = randn(n, 62), s = randn(size_t(p.N) * p.K, 63);
  std::vector<float> y(n), dx(n), ds(size_t(p.N) * p.K);
  kc::se_scale_forward(p, x.data(), s.data(), y.data());
  for (size_t i = 0; i < n; ++i) CHECK(y[i] == x[i] * s[i / size_t(p.HW)]);
  kc::se_scale_backward(p, g.data(), x.data(), s.data(), dx.data(), ds.data());
  for (size_t i = 0; i < n; ++i) CHECK(dx[i] == g[i] * s[i / size_t(p.HW)]);
  for (int64_t nc = 0; nc < int64_t(p.N) * p.K; ++nc) {
    double acc = 0;
    for (int64_t i = 0; i < p.HW; ++i) acc += double(g[size_t(nc * p.HW + i)]) * double(x[size_t(nc * p.HW + i)]);
    CHECK(ds[size_t(nc)] == float(acc));  // the order contract, bit for bit
  }
  // One sample alone gives the same bits as within the batch.
  pg::kernels::SampleChannelScaleParams one = p;
  one.N = 1;
  std::vector<float> dx1(size_t(p.K * p.HW)), ds1(size_t(p.K));
  kc::se_scale_backward(one, g.data() + p.K * p.HW, x.data() + p.K * p.HW, s.data() + p.K, dx1.data(), ds1.data());
  CHECK(same_bits(ds1, std::vector<float>(ds.begin() + p.K, ds.begin() + 2 * p.K)));
  CHECK(same_bits(dx1, std::vector<float>(dx.begin() + p.K * p.HW, dx.begin() + 2 * p.K * p.HW)));
  // dx in place over g; either output may be left out.
  std::vector<float> gi = g, ds2(ds.size());
  kc::se_scale_backward(p, gi.data(), x.data(), s.data(), gi.data(), ds2.data());
  CHECK(same_bits(gi, dx));
  CHECK(same_bits(ds2, ds));
  kc::se_scale_backward(p, g.data(), x.data(), s.data(), nullptr, ds2.data());
  CHECK(same_bits(ds2, ds));
  // Finite differences of L = sum(g * x * s) in s (linear: exact up to rounding).
  for (int t = 0; t < 5; ++t) {
    const size_t k = size_t(t * 3);
    auto loss = [&](float sk) {
      double L = 0;
      for (int64_t i = 0; i < p.HW; ++i) L += double(g[k * size_t(p.HW) + size_t(i)]) * x[k * size_t(p.HW) + size_t(i)] * sk;
      return L;
    };
    const double fd = (loss(s[k] + 0.5f) - loss(s[k] - 0.5f)) / 1.0;
    CHECK(ds[k] == doctest::Approx(fd).epsilon(1e-6));
  }
}

namespace {

// Sum over the output of w * f(x), and its gradient in x by the tape.
struct Pass {
  double loss = 0;
  std::vector<float> grad;
};

template <class F>
Pass run(F f, const pg::Tensor& x, const std::vector<float>& w, bool backward) {
  pg::nn::Context ctx;
  pg::ag::Tape tape(pg::nn::add_gradients);
  if (backward) ctx.tape = &tape;
  pg::ag::Var in{x.clone(), backward ? tape.new_value() : -1};
  pg::ag::Var out = f(ctx, in);
  Pass p;
  for (int64_t i = 0; i < out.value.numel(); ++i) p.loss += double(w[size_t(i)]) * out.value[i];
  if (backward) {
    pg::Tensor seed(out.value.shape());
    for (int64_t i = 0; i < seed.numel(); ++i) seed[i] = w[size_t(i)];
    pg::Tensor gx = tape.backward(out.id, seed, in.id, x.shape());
    p.grad.assign(gx.data(), gx.data() + gx.numel());
  }
  return p;
}

template <class F>
void check_fd(F f, const pg::Tensor& x, size_t out_numel, double tol) {
  const auto w = randn(out_numel, 71);
  const Pass base = run(f, x, w, true);
  std::mt19937 rng(5);
  for (int t = 0; t < 12; ++t) {
    const int64_t i = int64_t(rng() % uint32_t(x.numel()));
    const float h = 1e-2f;
    pg::Tensor xp = x.clone(), xm = x.clone();
    xp[i] += h;
    xm[i] -= h;
    const double fd = (run(f, xp, w, false).loss - run(f, xm, w, false).loss) / double(xp[i] - xm[i]);
    CHECK(std::fabs(fd - base.grad[size_t(i)]) <= tol * (1.0 + std::fabs(fd)));
  }
}

pg::nn::Conv2d conv1x1(int in, int out, uint64_t seed) {
  pg::nn::Conv2d c;
  c.site.name = "fc";
  c.in_channels = in;
  c.out_channels = out;
  c.weight = pg::Tensor({out, in, 1, 1});
  c.bias = pg::Tensor({out});
  const auto w = randn(size_t(out * in), seed, 0.5f), b = randn(size_t(out), seed + 1, 0.2f);
  for (int64_t i = 0; i < c.weight.numel(); ++i) c.weight[i] = w[size_t(i)];
  for (int64_t i = 0; i < c.bias.numel(); ++i) c.bias[i] = b[size_t(i)];
  c.bind_site();
  return c;
}

pg::Tensor tensor(std::vector<int64_t> shape, uint64_t seed, float scale) {
  pg::Tensor t(shape);
  const auto v = randn(size_t(t.numel()), seed, scale);
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = v[size_t(i)];
  return t;
}

}  // namespace

TEST_CASE("layers on the tape: activation, se_scale with both inputs, SqueezeExcitation, finite differences") {
  const pg::Tensor x = tensor({2, 6, 5, 4}, 81, 2.f);
  for (Activation a : {Activation::silu, Activation::sigmoid, Activation::hardswish, Activation::hardsigmoid}) {
    CAPTURE(name_of(a));
    check_fd([a](pg::nn::Context& ctx, const pg::ag::Var& v) { return pg::nn::activation(ctx, a, v); }, x,
             size_t(x.numel()), 2e-3);
  }
  // x * s where s is computed from x: the gradient reaches x along both paths.
  check_fd(
      [](pg::nn::Context& ctx, const pg::ag::Var& v) {
        pg::ag::Var s = pg::nn::adaptive_avgpool(ctx, v, 1, 1);
        s = pg::nn::activation(ctx, Activation::sigmoid, s);
        return pg::nn::se_scale(ctx, v, s);
      },
      x, size_t(x.numel()), 2e-3);
  for (bool hard : {false, true}) {
    CAPTURE(hard);
    pg::nn::SqueezeExcitation se;
    se.hard = hard;
    se.fc1 = conv1x1(6, 3, 91);
    se.fc2 = conv1x1(3, 6, 93);
    check_fd([&se](pg::nn::Context& ctx, const pg::ag::Var& v) { return se.forward(ctx, v); }, x,
             size_t(x.numel()), 2e-3);
  }
  // A scale of the wrong shape is refused in one line.
  pg::nn::Context ctx;
  const std::string e = pg::test::error_of([&] {
    pg::nn::se_scale(ctx, {x, -1}, {pg::Tensor({2, 5, 1, 1}), -1});
  });
  CHECK(e.find("se_scale") != std::string::npos);
}
