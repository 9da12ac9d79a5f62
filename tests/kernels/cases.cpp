// Every kernel of kernels/cuda against its CPU twin (kernels/cpu): the tables of cases and the
// function that runs each table (tests/kernels/harness.h says who runs them and how).
//
// Error measure for float32 results: for each element, |device - twin| / bound, where bound
// is the same computation on absolute values (sum |a_i * b_i| of the terms; for a mean of
// non-negative terms it is the value itself), floored at 1e-30; the maximum over all elements
// is checked. This is the relative error that floating point promises for a sum (it stays
// meaningful where cancellation makes the result near 0). Tolerances, one per op, beside its
// table:
//   * ReLU (values and mask bytes), max-pool (values, argmax, backward), average and adaptive
//     average pools, add, scale, sample_channel_scale, channel_affine, channel maps,
//     normalize_u8: bit for bit;
//   * channel gap: <= 1e-6 of the value;  M, N and class moments: <= 1e-12 (doubles);
//   * conv dgrad: kDgradFp32Tol, kDgradTf32Tol, dgrad_bf16_tol (below, with their reasons);
//     1e-5 where the inputs are exact in the operand format (only the sums round);
//   * probability seed: within one float ulp of the twin (the device's double exp may differ
//     from glibc's in the last bit of a double).
// Every output buffer is poisoned (0xFF bytes: NaN, -1) before each launch. Where data could
// hide a difference (ties, FMA contraction, summation order, the divisor rule), a check on
// the twin alone shows that the comparison can fail on that data.
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/channel_stats.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/depthwise.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/maps.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/preprocess.h"
#include "kernels/cpu/relu.h"
#include "kernels/cpu/seed.h"
#include "kernels/cuda/avgpool.h"
#include "kernels/cuda/channel_stats.h"
#include "kernels/cuda/conv_dgrad.h"
#include "kernels/cuda/depthwise_dgrad.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/maps.h"
#include "kernels/cuda/maxpool.h"
#include "kernels/cuda/preprocess.h"
#include "kernels/cuda/relu.h"
#include "kernels/cuda/seed.h"
#include "kernels/params.h"
#include "tests/common/error_measures.h"
#include "tests/kernels/harness.h"

namespace pg::kernel_tests {
namespace {

namespace kc = pg::kernels::cuda;
namespace kcpu = pg::kernels::cpu;
namespace pk = pg::kernels;
using pg::testing::bf16_round;
using pg::testing::max_rel;
using pg::testing::tf32_round;
using pk::Conv2dParams;
using pk::Pool2dParams;

// Which runs a case belongs to: small (every runner, every mode), large (the GPU's full run),
// timed (large, and timed when timings are on).
enum class Size { small, large, timed };

bool wanted(const Ctx& ctx, Size s) { return s == Size::small || ctx.opt.large; }
bool timed(const Ctx& ctx, Size s) { return s == Size::timed && ctx.opt.timing; }
// Small cases listed with several data seeds run with their first (seed 1) only unless
// Options::all_seeds.
bool seed_wanted(const Ctx& ctx, Size s, uint32_t seed) { return s != Size::small || ctx.opt.all_seeds || seed == 1; }

// ---- reporting, data, comparisons ---------------------------------------------------------------

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}
std::string with_label(const std::string& tag, const char* label) {
  return label && *label ? tag + " " + label : tag;
}

void time_bytes(Ctx& ctx, const std::string& name, double bytes, const std::function<void()>& launch) {
  const double us = ctx.dev.time_us(launch);
  ctx.report.info(fmt("TIME %-58s %10.1f us %9.1f GB/s", name.c_str(), us, bytes / us / 1e3));
}
void time_flops(Ctx& ctx, const std::string& name, double flops, const std::function<void()>& launch) {
  const double us = ctx.dev.time_us(launch);
  ctx.report.info(fmt("TIME %-58s %10.1f us %9.1f GFLOP/s", name.c_str(), us, flops / us / 1e3));
}

// Worst error of a group, reported as an information line when the group ends.
struct Worst {
  Ctx& ctx;
  std::string what;
  double v = 0;
  int n = 0;
  Worst(Ctx& c, std::string w) : ctx(c), what(std::move(w)) {}
  void add(double e) {
    v = std::max(v, e);
    ++n;
  }
  ~Worst() {
    if (n) ctx.report.info(fmt("INFO worst relative error, %s: %.3g over %d cases", what.c_str(), v, n));
  }
};

std::vector<float> randn(size_t n, uint32_t seed, float mean = 0.f, float sd = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
std::vector<float> absv(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}
// "bit-exact", or where a and b first differ.
std::string bits_detail(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return fmt("sizes %zu vs %zu", a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0) return fmt("first difference at %zu: %.9g vs %.9g", i, a[i], b[i]);
  return "bit-exact";
}
template <class T>
std::string int_detail(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return fmt("sizes %zu vs %zu", a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return fmt("first difference at %zu: %lld vs %lld", i, (long long)a[i], (long long)b[i]);
  return "equal";
}
size_t count_bit_diffs(const std::vector<float>& a, const std::vector<float>& b) {
  size_t d = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) d += std::memcmp(&a[i], &b[i], 4) != 0;
  return d;
}
double rel(double a, double b, double floor_) {
  const double e = std::fabs(a - b) / std::max(std::fabs(b), floor_);
  return std::isnan(e) ? INFINITY : e;
}
// The determinism check of one case: a second launch gave `same`.
void check_repeat(Ctx& ctx, bool same, const std::string& name) {
  ctx.check(same, name + " determinism", same ? "second run bitwise equal" : "second run differs");
}

// The data seeds a case runs with under the options.
std::vector<uint32_t> seeds_of(const Ctx& ctx, std::initializer_list<uint32_t> seeds) {
  std::vector<uint32_t> v(seeds);
  if (!ctx.opt.all_seeds && v.size() > 1) v.resize(1);
  return v;
}

Pool2dParams pool(int N, int C, int H, int W, int k, int s, int pad, bool ceil_mode) {
  Pool2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W;
  p.kh = p.kw = k;
  p.stride_h = p.stride_w = s;
  p.pad_h = p.pad_w = pad;
  p.ceil_mode = ceil_mode;
  if (!pk::pool2d_output_size(p)) throw Error("kernel tests: empty pool output in a case");
  return p;
}
Conv2dParams conv2(int N, int C, int H, int W, int K, int R, int S, int sh, int sw, int ph, int pw) {
  Conv2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W, p.K = K, p.R = R, p.S = S;
  p.stride_h = sh, p.stride_w = sw;
  p.pad_h = ph, p.pad_w = pw;
  if (!pk::conv2d_output_size(p)) throw Error("kernel tests: empty conv output in a case");
  return p;
}
Conv2dParams conv(int N, int C, int H, int W, int K, int R, int stride, int pad) {
  return conv2(N, C, H, W, K, R, R, stride, stride, pad, pad);
}

// =================================================================================================
// ReLU: values and mask bytes bit for bit (the mask is the same bytes as cpu::relu's words)
// =================================================================================================

struct ReluCase {
  int64_t n;
  uint32_t seed;
  Size size;
  const char* label;
};
const ReluCase kRelu[] = {
    {1, 1, Size::small, ""},     {31, 1, Size::small, ""},  {32, 1, Size::small, ""},
    {63, 1, Size::small, ""},    {64, 1, Size::small, ""},  {65, 1, Size::small, ""},
    {1000, 7, Size::small, ""},  {2 * 3 * 7 * 9, 12345, Size::small, ""},
    {5 * 13 * 11 + 3, 1, Size::small, ""},
    {int64_t(8) * 64 * 112 * 112, 2, Size::timed, "(resnet50 b8 conv1 output)"},
    {int64_t(8) * 2048 * 7 * 7, 3, Size::timed, "(resnet50 b8 layer4 output)"},
    {int64_t(8) * 256 * 56 * 56 + 17, 4, Size::timed, "(resnet50 b8 layer1 output + 17)"}};

void relu_case(Ctx& ctx, const ReluCase& c) {
  Device& d = ctx.dev;
  const int64_t n = c.n;
  const std::string tag = with_label(fmt("n=%lld", (long long)n), c.label);
  std::vector<float> x = randn(size_t(n), uint32_t(n + c.seed));
  if (n > 5) {  // the edge values: zero, -0, NaN, inf, -inf
    x[1] = 0.f;
    x[2] = -0.f;
    x[3] = std::numeric_limits<float>::quiet_NaN();
    x[4] = INFINITY;
    x[5] = -INFINITY;
  }
  const int64_t w32 = kc::relu_mask_words32(n);
  ctx.check(w32 == 2 * kcpu::relu_mask_words(n), "relu mask words " + tag, "twice the CPU's uint64 words");
  std::vector<float> ref = x;
  std::vector<uint64_t> ref_mask(size_t(kcpu::relu_mask_words(n)));
  kcpu::relu_forward(ref.data(), n, ref_mask.data());
  std::vector<uint32_t> ref_mask32(static_cast<size_t>(w32));
  std::memcpy(ref_mask32.data(), ref_mask.data(), ref_mask32.size() * 4);  // little-endian words

  Buf<float> dx_in(d, x), dy_out(d, size_t(n));
  Buf<uint32_t> dmask(d, size_t(w32));
  dy_out.poison();
  dmask.poison();
  kc::launch_relu_forward({n}, dx_in.get(), dy_out.get(), dmask.get(), d.stream());
  d.sync();
  const std::vector<float> y = dy_out.download();
  const std::vector<uint32_t> mask = dmask.download();
  ctx.check(same_bits(y, ref) && mask == ref_mask32, "relu_forward " + tag,
            !same_bits(y, ref) ? "values: " + bits_detail(y, ref) : "mask: " + int_detail(mask, ref_mask32));

  // In place, without a mask.
  Buf<float> dz(d, x);
  kc::launch_relu_forward({n}, dz.get(), dz.get(), nullptr, d.stream());
  d.sync();
  const std::vector<float> z = dz.download();
  ctx.check(same_bits(z, ref), "relu_forward in-place no-mask " + tag, bits_detail(z, ref));

  // Backward through the device's mask (out of place) and through the CPU's mask (in place).
  const std::vector<float> g = randn(size_t(n), uint32_t(3 * n + c.seed));
  std::vector<float> gref = g;
  kcpu::relu_backward(gref.data(), n, ref_mask.data());
  Buf<float> dg(d, g), ddx(d, size_t(n));
  ddx.poison();
  kc::launch_relu_backward({n}, dg.get(), dmask.get(), ddx.get(), d.stream());
  d.sync();
  const std::vector<float> dx = ddx.download();
  Buf<uint32_t> dcpu_mask(d, ref_mask32);
  kc::launch_relu_backward({n}, dg.get(), dcpu_mask.get(), dg.get(), d.stream());
  d.sync();
  const std::vector<float> gin = dg.download();
  ctx.check(same_bits(dx, gref) && same_bits(gin, gref), "relu_backward " + tag,
            !same_bits(dx, gref) ? "out of place: " + bits_detail(dx, gref) : "in place (CPU mask): " + bits_detail(gin, gref));

  if (ctx.opt.repeat) {
    Buf<float> y2(d, size_t(n)), dx2(d, size_t(n));
    Buf<uint32_t> m2(d, size_t(w32));
    y2.poison();
    m2.poison();
    dx2.poison();
    kc::launch_relu_forward({n}, dx_in.get(), y2.get(), m2.get(), d.stream());
    Buf<float> dg2(d, g);
    kc::launch_relu_backward({n}, dg2.get(), m2.get(), dx2.get(), d.stream());
    d.sync();
    check_repeat(ctx, same_bits(y2.download(), y) && m2.download() == mask && same_bits(dx2.download(), dx), "relu " + tag);
  }
  if (timed(ctx, c.size)) {
    const double bytes = double(n) * 8 + double(w32) * 4;
    time_bytes(ctx, "relu_forward " + tag, bytes,
               [&] { kc::launch_relu_forward({n}, dx_in.get(), dy_out.get(), dmask.get(), d.stream()); });
    time_bytes(ctx, "relu_backward " + tag, bytes,
               [&] { kc::launch_relu_backward({n}, dg.get(), dmask.get(), ddx.get(), d.stream()); });
  }
}

void run_relu(Ctx& ctx) {
  for (const ReluCase& c : kRelu)
    if (wanted(ctx, c.size)) relu_case(ctx, c);
}

// =================================================================================================
// ReLU6: values and mask bytes bit for bit against cpu::relu6_forward (the kinks 0 and 6, NaN)
// =================================================================================================

void run_relu6(Ctx& ctx) {
  Device& d = ctx.dev;
  for (int64_t n : {int64_t(1), int64_t(64), int64_t(1000), int64_t(5 * 13 * 11 + 3)}) {
    const std::string tag = fmt("n=%lld", (long long)n);
    std::vector<float> x = randn(size_t(n), uint32_t(n + 5), 2.f, 3.f);
    if (n > 7) {  // the kinks and the edge values
      x[0] = 0.f, x[1] = 6.f, x[2] = -0.f, x[3] = std::nextafter(6.f, 0.f), x[4] = 9.f;
      x[5] = std::numeric_limits<float>::quiet_NaN(), x[6] = INFINITY, x[7] = -INFINITY;
    }
    const int64_t w32 = kc::relu_mask_words32(n);
    std::vector<float> ref = x;
    std::vector<uint64_t> ref_mask(size_t(kcpu::relu_mask_words(n)));
    kcpu::relu6_forward(ref.data(), n, ref_mask.data());
    std::vector<uint32_t> ref_mask32(static_cast<size_t>(w32));
    std::memcpy(ref_mask32.data(), ref_mask.data(), ref_mask32.size() * 4);
    Buf<float> dx_in(d, x), dy_out(d, size_t(n));
    Buf<uint32_t> dmask(d, size_t(w32));
    dy_out.poison();
    dmask.poison();
    kc::launch_relu6_forward({n}, dx_in.get(), dy_out.get(), dmask.get(), d.stream());
    d.sync();
    const std::vector<float> y = dy_out.download();
    const std::vector<uint32_t> mask = dmask.download();
    ctx.check(same_bits(y, ref) && mask == ref_mask32, "relu6_forward " + tag,
              !same_bits(y, ref) ? "values: " + bits_detail(y, ref) : "mask: " + int_detail(mask, ref_mask32));
    if (n > 7) {  // the twin itself: no gradient at either kink, one just inside 6
      const bool kinks = !(ref_mask[0] & 1u) && !((ref_mask[0] >> 1) & 1u) && ((ref_mask[0] >> 3) & 1u) &&
                         ref[1] == 6.f && ref[4] == 6.f && ref[5] == 0.f;
      ctx.check(kinks, "relu6 twin kinks " + tag, "mask 0 at x = 0 and x = 6, 1 just below 6");
    }
    if (ctx.opt.repeat) {
      Buf<float> y2(d, x);
      kc::launch_relu6_forward({n}, y2.get(), y2.get(), nullptr, d.stream());
      d.sync();
      check_repeat(ctx, same_bits(y2.download(), y), "relu6 in place " + tag);
    }
  }
}

// =================================================================================================
// depthwise dgrad: bit for bit against cpu::depthwise_dgrad (same taps, same order, no FMA), with
// ParchGrad scales (none, mixed with zeros, a whole zero sample over a NaN in dy)
// =================================================================================================

Conv2dParams depthwise(int N, int C, int H, int W, int R, int stride, int pad, int dil) {
  Conv2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W, p.K = C, p.R = R, p.S = R;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dil_h = p.dil_w = dil;
  p.groups = C;
  if (!pk::conv2d_output_size(p)) throw Error("kernel tests: empty conv output in a case");
  return p;
}

void run_depthwise(Ctx& ctx) {
  Device& d = ctx.dev;
  struct DwCase {
    Conv2dParams p;
    const char* label;
  };
  const DwCase cases[] = {{depthwise(2, 5, 9, 11, 3, 1, 1, 1), "3x3 s1"},
                          {depthwise(2, 6, 13, 10, 3, 2, 1, 1), "3x3 s2 odd/even"},
                          {depthwise(1, 3, 12, 11, 5, 2, 2, 1), "5x5 s2"},
                          {depthwise(2, 4, 10, 9, 3, 1, 2, 2), "3x3 dilation 2"},
                          {depthwise(2, 3, 2, 2, 3, 1, 1, 1), "2x2 input"}};
  // Not depthwise: refused with an error.
  {
    Conv2dParams q = conv(1, 4, 6, 6, 4, 3, 1, 1);
    bool threw = false;
    try {
      kc::launch_depthwise_dgrad(q, nullptr, nullptr, nullptr, nullptr, d.stream());
    } catch (const Error&) {
      threw = true;
    }
    ctx.check(threw && !kc::depthwise_dgrad_supported(q), "depthwise_dgrad refuses groups 1", "pg::Error");
  }
  for (const DwCase& c : cases) {
    const Conv2dParams& p = c.p;
    const std::string tag = with_label(fmt("N%d C%d %dx%d", p.N, p.C, p.H, p.W), c.label);
    const size_t ny = size_t(p.N) * p.C * p.P * p.Q, nx = size_t(p.N) * p.C * p.H * p.W;
    std::vector<float> dy = randn(ny, 41), w = randn(size_t(p.C) * p.R * p.S, 42, 0.f, 0.5f);
    for (int mode = 0; mode < 3; ++mode) {
      std::vector<float> scale;
      if (mode >= 1) {
        scale = randn(size_t(p.N) * p.C, 43 + mode);
        for (size_t i = 0; i < scale.size(); i += 3) scale[i] = 0.f;
      }
      std::vector<float> g = dy;
      if (mode == 2) {  // sample 0 all zero, a NaN in its dy that must not reach dx
        for (int k = 0; k < p.C; ++k) scale[size_t(k)] = 0.f;
        g[0] = std::numeric_limits<float>::quiet_NaN();
      }
      const float* sp = scale.empty() ? nullptr : scale.data();
      std::vector<float> ref(nx);
      kcpu::depthwise_dgrad(p, g.data(), w.data(), sp, ref.data());
      Buf<float> dg(d, g), dw(d, w), dx(d, nx);
      Buf<float> ds(d, scale.empty() ? std::vector<float>(1) : scale);
      dx.poison();
      kc::launch_depthwise_dgrad(p, dg.get(), dw.get(), sp ? ds.get() : nullptr, dx.get(), d.stream());
      d.sync();
      const std::vector<float> got = dx.download();
      const char* mname[] = {"no scale", "mixed scale", "zero sample"};
      ctx.check(same_bits(got, ref), "depthwise_dgrad " + tag + " " + mname[mode], bits_detail(got, ref));
      if (ctx.opt.repeat) {
        Buf<float> dx2(d, nx);
        dx2.poison();
        kc::launch_depthwise_dgrad(p, dg.get(), dw.get(), sp ? ds.get() : nullptr, dx2.get(), d.stream());
        d.sync();
        check_repeat(ctx, same_bits(dx2.download(), got), "depthwise_dgrad " + tag + " " + mname[mode]);
      }
    }
  }
}

// =================================================================================================
// max-pool: values, argmax and the gather backward bit for bit, with ties, NaN and -inf planes
// =================================================================================================

struct MaxPoolCase {
  Pool2dParams p;
  int variant;  // 0 random, 1 few distinct values (ties), 2 NaN, infinities and a -inf plane
  uint32_t seed;
  Size size;
  const char* label;
};
std::vector<MaxPoolCase> maxpool_cases() {
  std::vector<MaxPoolCase> v;
  for (const Pool2dParams& p :
       {pool(2, 3, 7, 9, 3, 2, 1, false), pool(3, 5, 13, 11, 3, 2, 1, false), pool(2, 3, 13, 11, 3, 2, 0, true),
        pool(1, 17, 7, 9, 2, 2, 0, true), pool(2, 3, 7, 9, 3, 1, 1, false), pool(2, 5, 8, 8, 2, 2, 0, false),
        pool(1, 3, 5, 7, 5, 3, 2, true)})
    for (int variant = 0; variant < 3; ++variant) v.push_back({p, variant, 1, Size::small, ""});
  const Pool2dParams stem = pool(8, 64, 112, 112, 3, 2, 1, false);
  const Pool2dParams vgg = pool(8, 64, 224, 224, 2, 2, 0, false);
  v.push_back({stem, 0, 2, Size::timed, "(resnet50 b8 stem)"});
  v.push_back({stem, 2, 3, Size::large, "(resnet50 b8 stem)"});
  v.push_back({vgg, 0, 4, Size::timed, "(vgg16 b8 pool1)"});
  v.push_back({vgg, 1, 5, Size::large, "(vgg16 b8 pool1)"});
  return v;
}

void maxpool_case(Ctx& ctx, const MaxPoolCase& c) {
  Device& d = ctx.dev;
  const Pool2dParams& p = c.p;
  const char* vname[] = {"random", "ties", "nan-inf"};
  const std::string tag = with_label(fmt("%dx%dx%dx%d k%d s%d p%d%s %s", p.N, p.C, p.H, p.W, p.kh, p.stride_h, p.pad_h,
                                         p.ceil_mode ? " ceil" : "", vname[c.variant]),
                                     c.label);
  const size_t in = size_t(p.N) * p.C * p.H * p.W, out = size_t(p.N) * p.C * p.P * p.Q;
  std::vector<float> x = randn(in, uint32_t(in + c.seed + 100 * c.variant));
  if (c.variant == 1) {
    for (auto& v : x) v = std::round(v);
  } else if (c.variant == 2) {
    for (size_t i = 0; i < in; i += 7) x[i] = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = 3; i < in; i += 11) x[i] = INFINITY;
    std::fill(x.begin(), x.begin() + size_t(p.H) * p.W, -INFINITY);
  }
  std::vector<float> yr(out);
  std::vector<int32_t> amr(out);
  kcpu::maxpool2d_forward(p, x.data(), yr.data(), amr.data());

  Buf<float> dx_in(d, x), dy(d, out);
  Buf<int32_t> dam(d, out);
  dy.poison();
  dam.poison();
  kc::launch_maxpool_forward(p, dx_in.get(), dy.get(), dam.get(), d.stream());
  d.sync();
  const std::vector<float> y = dy.download();
  const std::vector<int32_t> am = dam.download();
  ctx.check(same_bits(y, yr) && am == amr, "maxpool_forward " + tag,
            !same_bits(y, yr) ? "values: " + bits_detail(y, yr) : "argmax: " + int_detail(am, amr));

  const std::vector<float> g = randn(out, uint32_t(out + 5 * c.seed));
  std::vector<float> dxr(in);
  kcpu::maxpool2d_backward(p, g.data(), amr.data(), dxr.data());
  Buf<float> dg(d, g), ddx(d, in);
  ddx.poison();
  kc::launch_maxpool_backward(p, dg.get(), dam.get(), ddx.get(), d.stream());
  d.sync();
  const std::vector<float> dx = ddx.download();
  ctx.check(same_bits(dx, dxr), "maxpool_backward " + tag, bits_detail(dx, dxr));

  if (ctx.opt.repeat) {
    Buf<float> y2(d, out), dx2(d, in);
    Buf<int32_t> am2(d, out);
    y2.poison();
    am2.poison();
    dx2.poison();
    kc::launch_maxpool_forward(p, dx_in.get(), y2.get(), am2.get(), d.stream());
    kc::launch_maxpool_backward(p, dg.get(), am2.get(), dx2.get(), d.stream());
    d.sync();
    check_repeat(ctx, same_bits(y2.download(), y) && am2.download() == am && same_bits(dx2.download(), dx),
                 "maxpool " + tag);
  }
  if (timed(ctx, c.size)) {
    time_bytes(ctx, "maxpool_forward " + tag, double(in) * 4 + double(out) * 8,
               [&] { kc::launch_maxpool_forward(p, dx_in.get(), dy.get(), dam.get(), d.stream()); });
    time_bytes(ctx, "maxpool_backward " + tag, double(out) * 8 + double(in) * 4,
               [&] { kc::launch_maxpool_backward(p, dg.get(), dam.get(), ddx.get(), d.stream()); });
  }
}

void run_maxpool(Ctx& ctx) {
  for (const MaxPoolCase& c : maxpool_cases())
    if (wanted(ctx, c.size)) maxpool_case(ctx, c);
}

// =================================================================================================
// channel statistics: GAP (float, fixed-order double sums), M and N, class moments (doubles)
// =================================================================================================

constexpr double kGapTol = 1e-6;       // relative to the value (the terms are >= 0)
constexpr double kVarianceTol = 1e-12;  // M, N: relative
constexpr double kMomentsTol = 1e-12;   // mean, M2: relative; counts exact

struct StatsCase {
  int N, C, H, W;
  bool bn;  // the folded BatchNorm's scale (and shift for the GAP)
  uint32_t seed;
  Size size;
  const char* label;
};
std::vector<StatsCase> small_stats_cases(std::initializer_list<std::array<int, 4>> shapes) {
  std::vector<StatsCase> v;
  for (const auto& s : shapes)
    for (bool bn : {false, true})
      for (uint32_t seed : {1u, 7u, 12345u}) v.push_back({s[0], s[1], s[2], s[3], bn, seed, Size::small, ""});
  return v;
}
std::vector<StatsCase> gap_cases() {
  std::vector<StatsCase> v = small_stats_cases({{2, 3, 7, 9}, {3, 17, 13, 11}, {2, 5, 1, 1}, {1, 3, 23, 19}});
  v.push_back({8, 64, 112, 112, true, 2, Size::timed, "(resnet50 b8 conv1)"});
  v.push_back({8, 256, 56, 56, true, 3, Size::timed, "(resnet50 b8 layer1)"});
  v.push_back({8, 2048, 7, 7, true, 4, Size::timed, "(resnet50 b8 layer4)"});
  v.push_back({8, 2048, 7, 7, false, 5, Size::large, "(resnet50 b8 layer4)"});
  return v;
}
std::string stats_tag(const StatsCase& c) {
  return with_label(fmt("%dx%dx%dx%d%s seed %u", c.N, c.C, c.H, c.W, c.bn ? " bn" : "", c.seed), c.label);
}

void gap_case(Ctx& ctx, const StatsCase& c, Worst& worst) {
  Device& d = ctx.dev;
  const std::string tag = stats_tag(c);
  const int64_t HW = int64_t(c.H) * c.W;
  const size_t total = size_t(c.N) * c.C * size_t(HW);
  std::vector<float> y = randn(total, uint32_t(total + c.seed), 0.2f);
  std::fill(y.begin(), y.begin() + HW, -1.f);  // plane (0, 0): relu is 0 everywhere
  std::vector<float> scale = randn(size_t(c.C), 3, 1.f, 0.3f), shift = randn(size_t(c.C), 4);
  for (auto& v : scale) v = std::fabs(v) + 0.1f;
  const pk::ChannelGapParams p{c.N, c.C, HW};
  std::vector<float> ref(size_t(c.N) * c.C);
  kcpu::channel_gap(p, y.data(), c.bn ? scale.data() : nullptr, c.bn ? shift.data() : nullptr, ref.data());

  Buf<float> dy(d, y), dscale(d, scale), dshift(d, shift), dgap(d, ref.size());
  const float* sc = c.bn ? dscale.get() : nullptr;
  const float* sh = c.bn ? dshift.get() : nullptr;
  dgap.poison();
  kc::launch_channel_gap(p, dy.get(), sc, sh, dgap.get(), d.stream());
  d.sync();
  const std::vector<float> gap = dgap.download();
  const double e = max_rel(gap, ref, ref);
  worst.add(e);
  const bool zero_ok = c.bn || gap[0] == 0.f;
  ctx.check(e <= kGapTol && zero_ok, "channel_gap " + tag,
            fmt("max rel err %.3g (tol %g)%s", e, kGapTol, zero_ok ? "" : ", all-negative plane not 0"));
  if (ctx.opt.repeat) {
    Buf<float> g2(d, ref.size());
    g2.poison();
    kc::launch_channel_gap(p, dy.get(), sc, sh, g2.get(), d.stream());
    d.sync();
    check_repeat(ctx, same_bits(g2.download(), gap), "channel_gap " + tag);
  }
  if (timed(ctx, c.size))
    time_bytes(ctx, "channel_gap " + tag, double(total) * 4,
               [&] { kc::launch_channel_gap(p, dy.get(), sc, sh, dgap.get(), d.stream()); });
}

void run_gap(Ctx& ctx) {
  Worst worst(ctx, "channel gap (relative to the value)");
  for (const StatsCase& c : gap_cases())
    if (wanted(ctx, c.size) && seed_wanted(ctx, c.size, c.seed)) gap_case(ctx, c, worst);
}

std::vector<StatsCase> variance_cases() {
  std::vector<StatsCase> v =
      small_stats_cases({{2, 3, 7, 9}, {3, 17, 13, 11}, {2, 5, 1, 1}, {2, 5, 1, 2}, {2, 17, 23, 19}});
  v.push_back({8, 64, 112, 112, true, 2, Size::timed, "(resnet50 b8 conv1)"});
  v.push_back({8, 256, 56, 56, true, 3, Size::timed, "(resnet50 b8 layer1)"});
  v.push_back({8, 2048, 7, 7, true, 4, Size::timed, "(resnet50 b8 layer4)"});
  return v;
}

void variances_case(Ctx& ctx, const StatsCase& c, Worst& worst) {
  Device& d = ctx.dev;
  const std::string tag = stats_tag(c);
  const int64_t HW = int64_t(c.H) * c.W;
  const size_t total = size_t(c.N) * c.C * size_t(HW);
  const std::vector<float> g = randn(total, uint32_t(total + c.seed), 0.5f);
  const std::vector<float> scale = randn(size_t(c.C), 5, 1.f, 0.5f);
  std::mt19937 rng{c.seed};
  std::vector<uint8_t> sel(size_t(c.N) * c.C);
  for (auto& b : sel) b = uint8_t(rng() % 3 == 0 ? 1 + rng() % 255 : 0);  // any non-zero byte selects
  std::fill(sel.begin(), sel.begin() + c.C, uint8_t(0));               // sample 0: H empty
  std::fill(sel.begin() + c.C, sel.begin() + 2 * c.C, uint8_t(1));     // sample 1: L empty
  const pk::SpatialVarianceParams p{c.N, c.C, HW};
  std::vector<double> Mr(size_t(c.N)), Nr(size_t(c.N));
  kcpu::spatial_variances(p, g.data(), c.bn ? scale.data() : nullptr, sel.data(), Mr.data(), Nr.data());

  Buf<float> dg(d, g), dscale(d, scale);
  Buf<uint8_t> dsel(d, sel);
  Buf<unsigned char> ws(d, kc::spatial_variance_workspace_bytes(p) + 1);
  Buf<double> dM(d, size_t(c.N)), dN(d, size_t(c.N));
  const float* gs = c.bn ? dscale.get() : nullptr;
  auto run = [&](Buf<double>& M, Buf<double>& Nv) {
    M.poison();
    Nv.poison();
    ws.poison();
    kc::launch_spatial_variances(p, dg.get(), gs, dsel.get(), M.get(), Nv.get(), ws.get(), d.stream());
    d.sync();
  };
  run(dM, dN);
  const std::vector<double> M = dM.download(), Nv = dN.download();
  double e = 0;
  bool exact_ok = M[0] == 1e-7 && Nv[1] == 1e-7;  // empty H / empty L: the variance of zeros
  for (int n = 0; n < c.N; ++n) {
    e = std::max({e, rel(M[size_t(n)], Mr[size_t(n)], 1e-300), rel(Nv[size_t(n)], Nr[size_t(n)], 1e-300)});
    if (HW < 2) exact_ok = exact_ok && M[size_t(n)] == 1e-7 && Nv[size_t(n)] == 1e-7;
  }
  worst.add(e);
  ctx.check(e <= kVarianceTol && exact_ok, "spatial_variances " + tag,
            fmt("max rel err %.3g (tol %g)%s", e, kVarianceTol, exact_ok ? "" : ", empty H/L or HW<2 not exactly 1e-7"));
  if (ctx.opt.repeat) {
    Buf<double> M2(d, size_t(c.N)), N2(d, size_t(c.N));
    run(M2, N2);
    check_repeat(ctx, same_bits(M2.download(), M) && same_bits(N2.download(), Nv), "spatial_variances " + tag);
  }
  if (timed(ctx, c.size))
    time_bytes(ctx, "spatial_variances " + tag, double(total) * 4, [&] {
      kc::launch_spatial_variances(p, dg.get(), gs, dsel.get(), dM.get(), dN.get(), ws.get(), d.stream());
    });
}

void run_variances(Ctx& ctx) {
  Worst worst(ctx, "spatial variances M, N (relative)");
  for (const StatsCase& c : variance_cases())
    if (wanted(ctx, c.size) && seed_wanted(ctx, c.size, c.seed)) variances_case(ctx, c, worst);
}

struct MomentsCase {
  pk::ClassMomentsParams p;
  int batches, used_classes;  // the classes from used_classes on never appear
  uint32_t seed;
  Size size;
  const char* label;
};
const MomentsCase kMoments[] = {
    {{7, 17, 4}, 5, 3, 1, Size::small, ""},
    {{7, 17, 4}, 5, 3, 12345, Size::small, ""},
    {{256, 2048, 1000}, 3, 900, 2, Size::timed, "(imagenet-sized: 256 images, 2048 channels)"}};

void moments_case(Ctx& ctx, const MomentsCase& c, Worst& worst) {
  Device& d = ctx.dev;
  const pk::ClassMomentsParams& p = c.p;
  const std::string tag = with_label(fmt("N%d C%d classes%d x%d batches seed %u", p.N, p.C, p.classes, c.batches, c.seed),
                                     c.label);
  std::vector<std::vector<float>> gaps;
  std::vector<std::vector<int32_t>> labels;
  std::mt19937 rng{c.seed};
  for (int b = 0; b < c.batches; ++b) {
    gaps.push_back(randn(size_t(p.N) * p.C, c.seed * 10 + uint32_t(b), 3.f));
    std::vector<int32_t> l(size_t(p.N));
    for (auto& v : l) v = int32_t(rng() % uint32_t(c.used_classes));
    l[0] = -1;         // ignored
    l[1] = p.classes;  // ignored
    labels.push_back(l);
  }
  std::vector<pk::ClassMoment> ref(size_t(p.classes) * p.C);
  for (int b = 0; b < c.batches; ++b)
    kcpu::class_moments_update(p, gaps[size_t(b)].data(), labels[size_t(b)].data(), ref.data());

  // The whole sequence of updates on the device, from zeroed moments.
  auto run = [&](Buf<pk::ClassMoment>& acc) {
    acc.zero();
    for (int b = 0; b < c.batches; ++b) {
      Buf<float> dg(d, gaps[size_t(b)]);
      Buf<int32_t> dl(d, labels[size_t(b)]);
      kc::launch_class_moments_update(p, dg.get(), dl.get(), acc.get(), d.stream());
      d.sync();
    }
    return acc.download();
  };
  Buf<pk::ClassMoment> dacc(d, ref.size());
  const std::vector<pk::ClassMoment> acc = run(dacc);
  double e = 0;
  bool counts_ok = true;
  for (size_t i = 0; i < acc.size(); ++i) {
    counts_ok = counts_ok && acc[i].count == ref[i].count;
    if (ref[i].count == 0) {
      counts_ok = counts_ok && acc[i].mean == 0 && acc[i].m2 == 0;
      continue;
    }
    e = std::max({e, rel(acc[i].mean, ref[i].mean, 1e-300), rel(acc[i].m2, ref[i].m2, 1e-300)});
  }
  worst.add(e);
  ctx.check(e <= kMomentsTol && counts_ok, "class_moments_update " + tag,
            fmt("max rel err %.3g (tol %g)%s", e, kMomentsTol, counts_ok ? ", counts exact" : ", counts or empty classes differ"));
  if (ctx.opt.repeat) {
    Buf<pk::ClassMoment> dacc2(d, ref.size());
    check_repeat(ctx, same_bits(run(dacc2), acc), "class_moments " + tag);
  }
  if (timed(ctx, c.size)) {
    Buf<float> dg(d, gaps[0]);
    Buf<int32_t> dl(d, labels[0]);
    time_bytes(ctx, "class_moments_update " + tag + " (one batch)",
               double(p.classes) * p.C * sizeof(pk::ClassMoment) * 2 + double(p.N) * p.C * 4,
               [&] { kc::launch_class_moments_update(p, dg.get(), dl.get(), dacc.get(), d.stream()); });
  }
}

void run_moments(Ctx& ctx) {
  Worst worst(ctx, "class moments mean, M2 (relative)");
  for (const MomentsCase& c : kMoments)
    if (wanted(ctx, c.size) && seed_wanted(ctx, c.size, c.seed)) moments_case(ctx, c, worst);
}

// =================================================================================================
// convolution data-gradient: fp32, TF32 and BF16 against cpu::conv2d_dgrad
// =================================================================================================

// Tolerances relative to sum |terms|, random operands. fp32: float32 sums in another order.
// TF32: two TF32 roundings (2 x 2^-11) per product, plus the float sums. BF16: each product
// scale*dy*w reaches the tensor core as bf16(fl32(scale*dy)) * bf16(w): the float32 product
// rounds once (2^-24) and each operand once to BF16 (unit roundoff u = 2^-8), so the product
// multiplied exactly is off by at most (1+u)^2 (1+2^-24) - 1 <= 2u + u^2 + 2^-23; the kernel
// and the twin each sum L = K*R*S products in float32, each within L 2^-24 (first order) of
// the exact sum relative to sum |terms|. Hence 2u + u^2 + 2^-23 + 2 L 2^-24 (about 7.9e-3
// for L of a few hundred; the measured worst sits well inside).
constexpr double kDgradFp32Tol = 1e-5;
constexpr double kDgradTf32Tol = 1.5e-3;
constexpr double kDgradExactTol = 1e-5;  // inputs exact in the operand format: only sums round
double dgrad_bf16_tol(const Conv2dParams& p) {
  const double u = std::ldexp(1.0, -8), f = std::ldexp(1.0, -24), L = double(p.K) * p.R * p.S;
  return 2 * u + u * u + 2 * f + 2 * L * f;
}
double dgrad_tolerance(pk::ConvPrecision q, const Conv2dParams& p) {
  switch (q) {
    case pk::ConvPrecision::fp32: return kDgradFp32Tol;
    case pk::ConvPrecision::tf32: return kDgradTf32Tol;
    case pk::ConvPrecision::bf16: return dgrad_bf16_tol(p);
  }
  return 0;
}
const pk::ConvPrecision kPrecisions[] = {pk::ConvPrecision::fp32, pk::ConvPrecision::tf32, pk::ConvPrecision::bf16};
const char* prec_kernel(pk::ConvPrecision q) {
  return q == pk::ConvPrecision::fp32 ? "conv_dgrad" : q == pk::ConvPrecision::tf32 ? "conv_dgrad_tf32" : "conv_dgrad_bf16";
}

// The data of a case. *_exact: dy and w rounded to that format, scale in {0, 0.5, 1, 2}, so
// every product is exact and only the accumulation rounds (for the kernels whose operand
// format holds the inputs exactly: TF32 holds BF16 values too).
enum class ScaleMode { none, mixed, all_zero, tf32_exact, bf16_exact };
const char* mode_name(ScaleMode m) {
  switch (m) {
    case ScaleMode::none: return "scale=none";
    case ScaleMode::mixed: return "scale=mixed-zeros";
    case ScaleMode::all_zero: return "scale=all-zero";
    case ScaleMode::tf32_exact: return "tf32-exact-inputs";
    case ScaleMode::bf16_exact: return "bf16-exact-inputs";
  }
  return "?";
}
bool exact_for(pk::ConvPrecision q, ScaleMode m) {
  return (m == ScaleMode::tf32_exact && q == pk::ConvPrecision::tf32) ||
         (m == ScaleMode::bf16_exact && q != pk::ConvPrecision::fp32);
}

struct DgradCase {
  Conv2dParams p;
  Size size;
  const char* label;
  bool exact;  // large cases: also the TF32- and BF16-exact inputs
};
std::vector<DgradCase> dgrad_cases() {
  std::vector<DgradCase> v;
  for (const Conv2dParams& p : {
           conv(2, 3, 7, 9, 5, 3, 1, 1),    conv(3, 17, 13, 11, 5, 3, 2, 1), conv(2, 5, 13, 11, 17, 1, 1, 0),
           conv(2, 5, 13, 11, 17, 1, 2, 0), conv(2, 3, 13, 11, 5, 7, 2, 3),  conv(3, 5, 7, 9, 3, 7, 1, 3),
           conv(2, 70, 9, 7, 40, 3, 1, 1),  conv(1, 3, 17, 19, 67, 3, 2, 0), conv(2, 65, 1, 1, 9, 1, 1, 0),
           conv(2, 33, 12, 10, 24, 3, 1, 1),
           // strided convolutions, one GEMM per output phase
           conv(2, 6, 14, 12, 9, 1, 2, 0),    // 1x1 stride 2 (ResNet downsample), even sizes
           conv(2, 6, 15, 13, 9, 3, 2, 1),    // 3x3 stride 2 pad 1, odd sizes
           conv(2, 7, 16, 10, 11, 3, 2, 0),   // 3x3 stride 2 no padding, even sizes
           conv(1, 3, 23, 21, 16, 7, 2, 3),   // the ResNet stem: 7x7 stride 2 pad 3, C = 3
           conv(1, 3, 32, 32, 64, 7, 2, 3),   // the stem with K = 64
           conv(2, 5, 11, 13, 6, 7, 2, 2),    // 7x7 stride 2 with a pad that is not R/2
           conv(2, 4, 17, 14, 5, 3, 4, 1),    // stride 4 > kernel: phases without taps give 0
           conv2(2, 5, 11, 14, 7, 3, 5, 2, 3, 1, 2),   // non-square kernel and strides
           conv2(1, 66, 9, 12, 20, 2, 2, 2, 2, 0, 0),  // 2x2 stride 2: one tap per phase, C > 64
           conv(1, 3, 1, 1, 5, 3, 2, 1)})     // 1x1 input: phases other than (0, 0) are empty
    v.push_back({p, Size::small, "", false});
  // ResNet-50 (torchvision, stride on the 3x3) at batch 8: one conv of each kind.
  v.push_back({conv(8, 3, 224, 224, 64, 7, 2, 3), Size::timed, "(resnet50 b8 conv1)", false});
  v.push_back({conv(8, 64, 56, 56, 64, 3, 1, 1), Size::timed, "(resnet50 b8 layer1 3x3)", false});
  v.push_back({conv(8, 64, 56, 56, 256, 1, 1, 0), Size::timed, "(resnet50 b8 layer1 1x1 expand)", false});
  v.push_back({conv(8, 128, 56, 56, 128, 3, 2, 1), Size::timed, "(resnet50 b8 layer2 3x3 stride 2)", false});
  v.push_back({conv(8, 256, 14, 14, 256, 3, 1, 1), Size::timed, "(resnet50 b8 layer3 3x3)", true});
  v.push_back({conv(8, 1024, 14, 14, 256, 1, 1, 0), Size::timed, "(resnet50 b8 layer3 1x1 reduce)", false});
  v.push_back({conv(8, 1024, 14, 14, 2048, 1, 2, 0), Size::timed, "(resnet50 b8 layer4 downsample)", true});
  v.push_back({conv(8, 512, 7, 7, 512, 3, 1, 1), Size::timed, "(resnet50 b8 layer4 3x3)", false});
  return v;
}

void cpu_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale, float* dx) {
  std::vector<float> ws(kcpu::conv2d_workspace_floats(p, omp_get_max_threads()) + 1);
  kcpu::conv2d_dgrad(p, dy, w, scale, dx, ws.data());
}

// Plain loops in double: val = dgrad(scale * dy, w), bound = dgrad(|scale * dy|, |w|). The
// reference when OpenBLAS is missing, and a check of the twin on the small shapes.
void naive_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale, float* val,
                 float* bound) {
  const int64_t HW = p.in_plane(), PQ = p.out_plane();
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int n = 0; n < p.N; ++n) {
    for (int c = 0; c < p.C; ++c) {
      for (int h = 0; h < p.H; ++h) {
        for (int x = 0; x < p.W; ++x) {
          double s = 0, a = 0;
          for (int k = 0; k < p.K; ++k) {
            const double sc = scale ? double(scale[int64_t(n) * p.K + k]) : 1.0;
            if (sc == 0) continue;
            const float* dyk = dy + (int64_t(n) * p.K + k) * PQ;
            const float* wk = w + (int64_t(k) * p.C + c) * p.R * p.S;
            for (int r = 0; r < p.R; ++r) {
              const int th = h + p.pad_h - r;
              if (th < 0 || th % p.stride_h) continue;
              const int oh = th / p.stride_h;
              if (oh >= p.P) continue;
              for (int q = 0; q < p.S; ++q) {
                const int tw = x + p.pad_w - q;
                if (tw < 0 || tw % p.stride_w) continue;
                const int ow = tw / p.stride_w;
                if (ow >= p.Q) continue;
                const double t = sc * double(dyk[int64_t(oh) * p.Q + ow]) * double(wk[r * p.S + q]);
                s += t;
                a += std::fabs(t);
              }
            }
          }
          const int64_t i = (int64_t(n) * p.C + c) * HW + int64_t(h) * p.W + x;
          val[i] = float(s);
          bound[i] = float(a);
        }
      }
    }
  }
}

struct DgradState {
  Ctx& ctx;
  bool twin_ok = true;  // OpenBLAS loaded: the twin is the reference, else the double loops
  Worst fp32{ctx, "conv dgrad float32 (relative to sum |terms|)"};
  Worst tf32{ctx, "conv dgrad TF32, random inputs (relative to sum |terms|)"};
  Worst bf16{ctx, "conv dgrad BF16, random inputs (relative to sum |terms|)"};
  Worst exact{ctx, "conv dgrad TF32/BF16, inputs exact in the operand format (relative to sum |terms|)"};
  Worst twin{ctx, "cpu twin conv2d_dgrad vs double loops (relative to sum |terms|)"};
  explicit DgradState(Ctx& c) : ctx(c) {}
  Worst& of(pk::ConvPrecision q, ScaleMode m) {
    if (exact_for(q, m)) return exact;
    return q == pk::ConvPrecision::fp32 ? fp32 : q == pk::ConvPrecision::tf32 ? tf32 : bf16;
  }
};

void dgrad_case(DgradState& st, const DgradCase& c, ScaleMode mode, uint32_t seed) {
  Ctx& ctx = st.ctx;
  Device& d = ctx.dev;
  const Conv2dParams& p = c.p;
  const std::string tag = with_label(fmt("N%d C%d %dx%d K%d %dx%d s%dx%d p%dx%d %s seed %u", p.N, p.C, p.H, p.W, p.K,
                                         p.R, p.S, p.stride_h, p.stride_w, p.pad_h, p.pad_w, mode_name(mode), seed),
                                     c.label);
  const size_t nx = size_t(p.N) * p.C * p.H * p.W, ny = size_t(p.N) * p.K * p.P * p.Q;
  std::vector<float> dy = randn(ny, uint32_t(ny + seed)), w = randn(size_t(p.K) * p.C * p.R * p.S, 11 + seed);
  std::vector<float> scale(size_t(p.N) * p.K, 0.f);
  std::mt19937 rng{seed};
  const bool exact_mode = mode == ScaleMode::tf32_exact || mode == ScaleMode::bf16_exact;
  if (mode == ScaleMode::mixed) {  // about a third dropped; sample 0 all dropped, sample 1 all kept
    for (auto& s : scale) s = rng() % 3 == 0 ? 0.f : 0.25f + float(rng() % 100) / 50.f;
    std::fill(scale.begin(), scale.begin() + p.K, 0.f);
    if (p.N > 2) std::fill(scale.begin() + p.K, scale.begin() + 2 * p.K, 1.5f);
  } else if (exact_mode) {  // scale in {0, 0.5, 1, 2}: scale * dy stays exact; sample 0 dropped
    for (auto& s : scale) s = rng() % 3 == 0 ? 0.f : std::ldexp(1.f, int(rng() % 3) - 1);
    std::fill(scale.begin(), scale.begin() + p.K, 0.f);
    float (*to_format)(float) = mode == ScaleMode::tf32_exact ? tf32_round : bf16_round;
    for (auto& v : dy) v = to_format(v);
    for (auto& v : w) v = to_format(v);
  }
  const bool has_scale = mode != ScaleMode::none;
  int64_t kept = 0;
  for (float s : scale) kept += s != 0.f;
  const double kept_frac = has_scale ? double(kept) / double(scale.size()) : 1.0;

  // Reference value and error bound: the CPU twin, or the double loops without OpenBLAS.
  std::vector<float> ref(nx), bound(nx);
  const float* sc_h = has_scale ? scale.data() : nullptr;
  if (st.twin_ok) {
    cpu_dgrad(p, dy.data(), w.data(), sc_h, ref.data());
    const std::vector<float> as = absv(scale);
    cpu_dgrad(p, absv(dy).data(), absv(w).data(), has_scale ? as.data() : nullptr, bound.data());
    if (c.size == Size::small) {  // the twin itself against the double loops (and the OpenBLAS it loaded)
      std::vector<float> nv(nx), nb(nx);
      naive_dgrad(p, dy.data(), w.data(), sc_h, nv.data(), nb.data());
      const double e = max_rel(ref, nv, nb);
      st.twin.add(e);
      ctx.check(e <= kDgradFp32Tol, "cpu_twin conv2d_dgrad vs double loops " + tag,
                fmt("max rel err %.3g (tol %g)", e, kDgradFp32Tol));
    }
  } else {
    naive_dgrad(p, dy.data(), w.data(), sc_h, ref.data(), bound.data());
  }
  if (ctx.opt.host_only) return;

  Buf<float> ddy(d, dy), dw(d, w), dscale(d, scale), ddx(d, nx);
  Buf<unsigned char> ws(d, kc::conv_dgrad_workspace_bytes(p));
  const float* sc = has_scale ? dscale.get() : nullptr;
  const size_t plane = size_t(p.C) * p.H * p.W;
  const int64_t nonzero_terms = std::count_if(bound.begin(), bound.end(), [](float b) { return b > 0.f; });
  for (pk::ConvPrecision q : kPrecisions) {
    auto launch = [&](float* out) { kc::launch_conv_dgrad(p, q, ddy.get(), dw.get(), sc, out, ws.get(), d.stream()); };
    const std::string kname = std::string(prec_kernel(q)) + " ";
    ddx.poison();
    ws.poison();
    launch(ddx.get());
    d.sync();
    const std::vector<float> dx = ddx.download();
    const double e = max_rel(dx, ref, bound);
    const double tol = exact_for(q, mode) ? kDgradExactTol : dgrad_tolerance(q, p);
    st.of(q, mode).add(e);
    bool zeros_ok = true;
    if (mode == ScaleMode::all_zero) zeros_ok = std::all_of(dx.begin(), dx.end(), [](float v) { return v == 0.f; });
    if (mode == ScaleMode::mixed || exact_mode)
      zeros_ok = std::all_of(dx.begin(), dx.begin() + plane, [](float v) { return v == 0.f; });
    // BF16 on random inputs: the rounding must really be there (not a float32 path); only
    // where at least 100 outputs have terms (else e may just be small).
    const bool rounding_seen = !(q == pk::ConvPrecision::bf16 && !exact_mode && nonzero_terms >= 100) || e >= 1e-4;
    ctx.check(e <= tol && zeros_ok && rounding_seen, kname + tag,
              fmt("max rel err %.3g (tol %.3g)%s%s%s", e, tol, st.twin_ok ? "" : " vs double loops (no OpenBLAS)",
                  zeros_ok ? "" : ", dropped sample/channels not exactly 0",
                  rounding_seen ? "" : ", below 1e-4: no BF16 rounding?"));
    if (ctx.opt.repeat) {
      Buf<float> dx2(d, nx);
      dx2.poison();
      ws.poison();
      launch(dx2.get());
      d.sync();
      const std::vector<float> second = dx2.download();
      ctx.check(same_bits(second, dx), kname + "determinism " + tag,
                same_bits(second, dx) ? "second run bitwise equal" : bits_detail(second, dx));
    }
    if (timed(ctx, c.size)) {
      const double flops = 2.0 * p.N * p.K * double(p.P) * p.Q * p.C * p.R * p.S;  // dense, all channels
      time_flops(ctx, kname + tag + (has_scale ? fmt(" kept %.0f%%", 100 * kept_frac) : ""), flops,
                 [&] { launch(ddx.get()); });
    }
  }
}

void run_dgrad(Ctx& ctx) {
  DgradState st(ctx);
  try {
    pg::blas::init();
    ctx.report.info("INFO OpenBLAS for the CPU twin: " + pg::blas::core_name() + " (kernels chosen by: " +
                    pg::blas::core_choice() + ")");
  } catch (const std::exception& e) {
    st.twin_ok = false;
    ctx.check(false, "cpu_twin OpenBLAS", std::string("cannot load (") + e.what() + "): dgrad compared with double loops instead");
  }
  const ScaleMode quick_modes[] = {ScaleMode::none, ScaleMode::mixed};
  const ScaleMode all_modes[] = {ScaleMode::none, ScaleMode::mixed, ScaleMode::all_zero, ScaleMode::tf32_exact,
                                 ScaleMode::bf16_exact};
  for (const DgradCase& c : dgrad_cases()) {
    if (c.size != Size::small) continue;
    if (ctx.opt.quick) {
      for (ScaleMode m : quick_modes) dgrad_case(st, c, m, 1);
    } else {
      for (ScaleMode m : all_modes)
        for (uint32_t seed : seeds_of(ctx, {1u, 12345u})) dgrad_case(st, c, m, seed);
    }
  }

  // Unsupported configurations are refused before any launch.
  {
    const Conv2dParams p = conv(2, 17, 13, 11, 40, 3, 2, 1);
    Conv2dParams g = p;
    g.groups = 17;
    g.K = 17;
    Conv2dParams dil = p;
    dil.dil_h = 2;
    bool ok = !kc::conv_dgrad_supported(g) && !kc::conv_dgrad_supported(dil);
    for (pk::ConvPrecision q : kPrecisions) {
      for (const Conv2dParams* bad : {&g, &dil}) {
        bool threw = false;
        try {
          kc::launch_conv_dgrad(*bad, q, nullptr, nullptr, nullptr, nullptr, nullptr, ctx.dev.stream());
        } catch (const pg::Error&) {
          threw = true;
        }
        ok = ok && threw;
      }
    }
    ctx.check(ok, "conv_dgrad unsupported shapes refused",
              "groups 17, dilation 2: conv_dgrad_supported false, every precision throws");
  }
  if (ctx.opt.host_only) return;
  for (const DgradCase& c : dgrad_cases()) {
    if (c.size == Size::small || !wanted(ctx, c.size)) continue;
    dgrad_case(st, c, ScaleMode::none, 2);
    dgrad_case(st, c, ScaleMode::mixed, 3);
    if (c.exact) {
      dgrad_case(st, c, ScaleMode::tf32_exact, 4);
      dgrad_case(st, c, ScaleMode::bf16_exact, 5);
    }
  }
}

// =================================================================================================
// average pools: forward and gather backward bit for bit (count_include_pad, ceil mode)
// =================================================================================================

struct AvgPoolCase {
  Pool2dParams p;  // count_include_pad is run both ways
  uint32_t seed;
  Size size;
  const char* label;
};
std::vector<AvgPoolCase> avgpool_cases() {
  std::vector<AvgPoolCase> v;
  for (const Pool2dParams& p :
       {pool(3, 5, 7, 9, 3, 2, 1, false), pool(3, 5, 8, 10, 3, 2, 1, true), pool(3, 5, 8, 10, 3, 2, 0, true),
        pool(2, 3, 7, 9, 2, 2, 0, false), pool(2, 3, 7, 9, 2, 2, 0, true), pool(2, 3, 7, 9, 3, 1, 1, false),
        pool(1, 4, 13, 11, 3, 2, 1, true), pool(2, 3, 8, 8, 2, 2, 1, true), pool(1, 2, 5, 7, 5, 3, 2, true),
        pool(2, 3, 1, 1, 1, 1, 0, false), pool(1, 3, 6, 6, 2, 1, 1, false)})
    v.push_back({p, 1, Size::small, ""});
  v.push_back({pool(8, 256, 56, 56, 3, 2, 1, false), 2, Size::timed, ""});
  return v;
}
struct AdaptiveCase {
  kc::AdaptivePoolParams p;
  uint32_t seed;
  Size size;
  const char* label;
};
const AdaptiveCase kAdaptive[] = {
    {{15, 7, 9, 3, 4}, 1, Size::small, ""},   {{15, 7, 7, 1, 1}, 1, Size::small, ""},
    {{6, 5, 7, 7, 3}, 1, Size::small, ""},    {{15, 13, 11, 5, 7}, 1, Size::small, ""},
    {{4, 7, 7, 7, 7}, 1, Size::small, ""},    {{1, 1, 1, 1, 1}, 1, Size::small, ""},
    {{3, 1, 1, 2, 3}, 1, Size::small, ""},    {{300, 7, 7, 1, 1}, 1, Size::small, ""},
    {{130, 3, 3, 1, 1}, 1, Size::small, ""},  {{5, 64, 65, 1, 1}, 1, Size::small, ""},
    {{3, 64, 64, 1, 1}, 1, Size::small, ""},  {{4, 32, 64, 1, 1}, 1, Size::small, ""},
    {{15, 10, 10, 3, 3}, 1, Size::small, ""}, {{2, 1, 9, 1, 1}, 1, Size::small, ""},
    {{8 * 2048, 7, 7, 1, 1}, 3, Size::timed, "(resnet50 b8 global pool)"},
    {{8 * 512, 7, 7, 7, 7}, 4, Size::timed, "(vgg16 b8 adaptive pool)"},
    {{8 * 512, 14, 14, 7, 7}, 5, Size::timed, "(vgg16 b8 at 448 px)"}};

// One forward and one gather backward on the device against the twin's, and a second run.
void pool_pair(Ctx& ctx, const std::string& fwd, const std::string& bwd, size_t in, size_t out,
               const std::vector<float>& x, const std::vector<float>& g, const std::vector<float>& yr,
               const std::vector<float>& dxr, Size size,
               const std::function<void(const float*, float*, const float*, float*)>& launch,
               const std::function<void(const float*, float*)>& launch_fwd,
               const std::function<void(const float*, float*)>& launch_bwd) {
  Device& d = ctx.dev;
  Buf<float> dx_in(d, x), dy(d, out), dg(d, g), ddx(d, in);
  dy.poison();
  ddx.poison();
  launch(dx_in.get(), dy.get(), dg.get(), ddx.get());
  d.sync();
  const std::vector<float> y = dy.download(), dx = ddx.download();
  ctx.check(same_bits(y, yr), fwd, bits_detail(y, yr));
  ctx.check(same_bits(dx, dxr), bwd, bits_detail(dx, dxr));
  if (ctx.opt.repeat) {
    Buf<float> y2(d, out), dx2(d, in);
    y2.poison();
    dx2.poison();
    launch(dx_in.get(), y2.get(), dg.get(), dx2.get());
    d.sync();
    check_repeat(ctx, same_bits(y2.download(), y) && same_bits(dx2.download(), dx), fwd);
  }
  if (timed(ctx, size)) {
    time_bytes(ctx, fwd, double(in + out) * 4, [&] { launch_fwd(dx_in.get(), dy.get()); });
    time_bytes(ctx, bwd, double(in + out) * 4, [&] { launch_bwd(dg.get(), ddx.get()); });
  }
}

void run_avgpool(Ctx& ctx) {
  cudaStream_t s = ctx.dev.stream();
  // Where the data could hide a difference: the two divisor rules give different outputs on
  // the padded shapes, ceil mode changes P or Q on the ceil shapes, and a different summation
  // order changes the global pool (checked on the twins, below).
  int divisor_rules_differ = 0, ceil_changes_shape = 0, order_matters = 0;
  for (const AvgPoolCase& c : avgpool_cases()) {
    if (!wanted(ctx, c.size)) continue;
    Pool2dParams floor_p = c.p;
    floor_p.ceil_mode = false;
    pk::pool2d_output_size(floor_p);
    if (c.p.ceil_mode && (floor_p.P != c.p.P || floor_p.Q != c.p.Q)) ++ceil_changes_shape;
    std::vector<float> with_pad;
    for (bool cip : {true, false}) {
      Pool2dParams p = c.p;
      p.count_include_pad = cip;
      const std::string tag = with_label(fmt("%dx%dx%dx%d k%d s%d p%d%s%s", p.N, p.C, p.H, p.W, p.kh, p.stride_h,
                                             p.pad_h, p.ceil_mode ? " ceil" : "", cip ? "" : " exclude-pad"),
                                         c.label);
      const size_t in = size_t(p.N) * p.C * p.H * p.W, out = size_t(p.N) * p.C * p.P * p.Q;
      const std::vector<float> x = randn(in, uint32_t(in + c.seed)), g = randn(out, uint32_t(out + 3 * c.seed));
      std::vector<float> yr(out), dxr(in);
      kcpu::avgpool2d_forward(p, x.data(), yr.data());
      kcpu::avgpool2d_backward(p, g.data(), dxr.data());
      if (cip) with_pad = yr;
      else if (!same_bits(with_pad, yr)) ++divisor_rules_differ;
      pool_pair(
          ctx, "avgpool_forward " + tag, "avgpool_backward " + tag, in, out, x, g, yr, dxr, c.size,
          [&](const float* xi, float* yo, const float* gi, float* dxo) {
            kc::launch_avgpool_forward(p, xi, yo, s);
            kc::launch_avgpool_backward(p, gi, dxo, s);
          },
          [&](const float* xi, float* yo) { kc::launch_avgpool_forward(p, xi, yo, s); },
          [&](const float* gi, float* dxo) { kc::launch_avgpool_backward(p, gi, dxo, s); });
    }
  }
  for (const AdaptiveCase& c : kAdaptive) {
    if (!wanted(ctx, c.size)) continue;
    const kc::AdaptivePoolParams& p = c.p;
    const std::string tag = with_label(fmt("NC%d %dx%d->%dx%d", p.NC, p.H, p.W, p.P, p.Q), c.label);
    const size_t in = size_t(p.NC) * p.H * p.W, out = size_t(p.NC) * p.P * p.Q;
    const std::vector<float> x = randn(in, uint32_t(in + c.seed), 0.3f), g = randn(out, uint32_t(out + 7 * c.seed));
    std::vector<float> yr(out), dxr(in);
    kcpu::adaptive_avgpool2d_forward(p.NC, p.H, p.W, p.P, p.Q, x.data(), yr.data());
    kcpu::adaptive_avgpool2d_backward(p.NC, p.H, p.W, p.P, p.Q, g.data(), dxr.data());
    if (c.size == Size::small && p.P == 1 && p.Q == 1 && p.H * p.W > 1) {
      // The same means summed backwards: the bitwise comparison would see that order.
      const int64_t HW = int64_t(p.H) * p.W;
      for (int pl = 0; pl < p.NC; ++pl) {
        float r = 0.f;
        for (int64_t i = HW - 1; i >= 0; --i) r += x[size_t(pl * HW + i)];
        if (r / float(HW) != yr[size_t(pl)]) {
          ++order_matters;
          break;
        }
      }
    }
    pool_pair(
        ctx, "adaptive_avgpool_forward " + tag, "adaptive_avgpool_backward " + tag, in, out, x, g, yr, dxr, c.size,
        [&](const float* xi, float* yo, const float* gi, float* dxo) {
          kc::launch_adaptive_avgpool_forward(p, xi, yo, s);
          kc::launch_adaptive_avgpool_backward(p, gi, dxo, s);
        },
        [&](const float* xi, float* yo) { kc::launch_adaptive_avgpool_forward(p, xi, yo, s); },
        [&](const float* gi, float* dxo) { kc::launch_adaptive_avgpool_backward(p, gi, dxo, s); });
  }
  ctx.check(divisor_rules_differ >= 6 && ceil_changes_shape >= 4 && order_matters >= 5, "avgpool data can fail",
            fmt("divisor rules differ on %d shapes (>= 6), ceil mode changes the shape of %d (>= 4), "
                "the summation order shows on %d global pools (>= 5)",
                divisor_rules_differ, ceil_changes_shape, order_matters));
}

// =================================================================================================
// elementwise: add, scale, sample_channel_scale, channel_affine (never an FMA), bit for bit
// =================================================================================================

struct ElementwiseCase {
  int N, C;
  int64_t HW;
  Size size;
  const char* label;
};
const ElementwiseCase kElementwise[] = {
    {3, 5, 63, Size::small, ""},    {3, 5, 1, Size::small, ""},    {1, 17, 49, Size::small, ""},
    {1, 1, 1, Size::small, ""},     {2, 7, 49, Size::small, ""},   {1, 1, 31, Size::small, ""},
    {1, 8, 125, Size::small, ""},
    {8, 256, 56 * 56, Size::timed, "(resnet50 b8 layer1)"},
    {8, 64, 112 * 112, Size::timed, "(resnet50 b8 conv1)"},
    {8, 2048, 7 * 7, Size::timed, "(resnet50 b8 layer4)"}};

void elementwise_case(Ctx& ctx, const ElementwiseCase& c, size_t& fma_would_differ) {
  Device& d = ctx.dev;
  cudaStream_t s = d.stream();
  const int N = c.N, C = c.C;
  const int64_t HW = c.HW;
  const std::string tag = with_label(fmt("%dx%dx%lld", N, C, (long long)HW), c.label);
  const int64_t n = int64_t(N) * C * HW;
  const std::vector<float> a = randn(size_t(n), uint32_t(n)), b = randn(size_t(n), uint32_t(n + 1));
  const std::vector<float> ch_scale = randn(size_t(C), 2, 0.f, 2.f), ch_shift = randn(size_t(C), 3);
  std::vector<float> s_scale = randn(size_t(N) * C, 4, 1.f, 0.7f);
  s_scale[0] = 0.f;  // a dropped channel: its plane must be exactly 0
  const float alpha = 0.37f;
  const pk::ChannelAffineParams ap{N, C, HW};
  const pk::SampleChannelScaleParams sp{N, C, HW};
  // Twins.
  std::vector<float> add_r(static_cast<size_t>(n)), scale_r(add_r.size()), scs_r(add_r.size());
  kcpu::add(n, a.data(), b.data(), add_r.data());
  kcpu::scale(n, alpha, a.data(), scale_r.data());
  kcpu::sample_channel_scale(sp, a.data(), s_scale.data(), scs_r.data());
  const char* aff_name[4] = {"scale+shift", "scale", "shift", "neither"};
  std::vector<float> aff_r[4] = {a, a, a, a};
  for (int m = 0; m < 4; ++m)
    kcpu::channel_affine(ap, aff_r[m].data(), m < 2 ? ch_scale.data() : nullptr, m % 2 == 0 && m < 3 ? ch_shift.data() : nullptr);
  if (c.size == Size::small)  // a fused multiply-add would round once: the data tells the two apart
    for (size_t i = 0; i < size_t(n); ++i) {
      const size_t ch = (i / size_t(HW)) % size_t(C);
      const float fused = std::fma(a[i], ch_scale[ch], ch_shift[ch]);
      fma_would_differ += std::memcmp(&fused, &aff_r[0][i], 4) != 0;
    }

  Buf<float> da(d, a), db(d, b), dout(d, size_t(n)), dcs(d, ch_scale), dch(d, ch_shift), dss(d, s_scale);
  auto run_all = [&]() {
    std::vector<std::vector<float>> res;
    dout.poison();
    kc::launch_add(n, da.get(), db.get(), dout.get(), s);
    res.push_back(dout.download());
    Buf<float> ta(d, a), tb(d, b);  // in place: out == a, out == b
    kc::launch_add(n, ta.get(), db.get(), ta.get(), s);
    kc::launch_add(n, da.get(), tb.get(), tb.get(), s);
    res.push_back(ta.download());
    res.push_back(tb.download());
    dout.poison();
    kc::launch_scale(n, alpha, da.get(), dout.get(), s);
    res.push_back(dout.download());
    Buf<float> t2(d, a);
    kc::launch_scale(n, alpha, t2.get(), t2.get(), s);
    res.push_back(t2.download());
    dout.poison();
    kc::launch_sample_channel_scale(sp, da.get(), dss.get(), dout.get(), s);
    res.push_back(dout.download());
    Buf<float> t3(d, a);
    kc::launch_sample_channel_scale(sp, t3.get(), dss.get(), t3.get(), s);
    res.push_back(t3.download());
    for (int m = 0; m < 4; ++m) {
      Buf<float> y(d, a);
      kc::launch_channel_affine(ap, y.get(), m < 2 ? dcs.get() : nullptr, m % 2 == 0 && m < 3 ? dch.get() : nullptr, s);
      res.push_back(y.download());
    }
    return res;
  };
  const std::vector<std::vector<float>> r = run_all();
  const std::vector<float>* want[] = {&add_r, &add_r, &add_r, &scale_r, &scale_r, &scs_r, &scs_r,
                                      &aff_r[0], &aff_r[1], &aff_r[2], &aff_r[3]};
  const char* names[] = {"add", "add in-place a", "add in-place b", "scale", "scale in-place",
                         "sample_channel_scale", "sample_channel_scale in-place"};
  for (size_t i = 0; i < r.size(); ++i) {
    const std::string name = i < 7 ? names[i] : std::string("channel_affine ") + aff_name[i - 7];
    ctx.check(same_bits(r[i], *want[i]), name + " " + tag, bits_detail(r[i], *want[i]));
  }
  ctx.check(std::all_of(r[5].begin(), r[5].begin() + HW, [](float v) { return v == 0.f; }) && same_bits(aff_r[3], a),
            "elementwise zeros " + tag, "a zero scale gives a zero plane; channel_affine without scale and shift is the identity");
  if (ctx.opt.repeat) {
    const std::vector<std::vector<float>> r2 = run_all();
    bool same = true;
    for (size_t i = 0; i < r.size(); ++i) same = same && same_bits(r[i], r2[i]);
    check_repeat(ctx, same, "elementwise " + tag);
  }
  if (timed(ctx, c.size)) {
    const double nb = double(n) * 4;
    time_bytes(ctx, "add " + tag, 3 * nb, [&] { kc::launch_add(n, da.get(), db.get(), dout.get(), s); });
    time_bytes(ctx, "scale " + tag, 2 * nb, [&] { kc::launch_scale(n, alpha, da.get(), dout.get(), s); });
    time_bytes(ctx, "sample_channel_scale " + tag, 2 * nb,
               [&] { kc::launch_sample_channel_scale(sp, da.get(), dss.get(), dout.get(), s); });
    time_bytes(ctx, "channel_affine scale+shift " + tag, 2 * nb,
               [&] { kc::launch_channel_affine(ap, dout.get(), dcs.get(), dch.get(), s); });
  }
}

void run_elementwise(Ctx& ctx) {
  size_t fma_would_differ = 0;
  for (const ElementwiseCase& c : kElementwise)
    if (wanted(ctx, c.size)) elementwise_case(ctx, c, fma_would_differ);
  ctx.check(fma_would_differ >= 10, "channel_affine data can fail",
            fmt("%zu outputs where an FMA would round differently (>= 10)", fma_would_differ));
}

// =================================================================================================
// probability seed: attribution.cpp's double softmax, one block per row, within one float ulp
// =================================================================================================

constexpr int64_t kSeedUlps = 1;

// Distance in floats between a and b (both NaN: 0).
int64_t ulps(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return 0;
  if (std::isnan(a) || std::isnan(b)) return INT64_MAX;
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i < 0 ? int64_t(INT32_MIN) - int64_t(i) : int64_t(i);  // monotone in f, +0 and -0 adjacent
  };
  const int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

struct SeedCase {
  int N, K;
  uint32_t seed;
  Size size;
  const char* label;
  int rows;  // 0: random logits (row 1 all equal, row 2 with a -inf target class); 1: all
             // equal (p = 1/K exactly); 2: NaN logits (every probability NaN)
};
const SeedCase kSeed[] = {
    {3, 1, 1, Size::small, "", 0},      {3, 2, 7, Size::small, "", 0},     {3, 5, 12345, Size::small, "", 0},
    {3, 257, 1, Size::small, "", 0},    {3, 1000, 7, Size::small, "", 0},  {3, 1001, 12345, Size::small, "", 0},
    {1, 1000, 1, Size::small, "all equal", 1}, {2, 7, 3, Size::small, "NaN logits", 2},
    {8, 1000, 2, Size::timed, "(imagenet b8)", 0}, {256, 1000, 3, Size::timed, "(imagenet b256)", 0}};

void seed_case(Ctx& ctx, const SeedCase& c, Worst& worst, size_t& compared, size_t& differing) {
  Device& d = ctx.dev;
  const int N = c.N, K = c.K;
  const std::string tag = with_label(fmt("N%d K%d", N, K), c.label);
  const size_t total = size_t(N) * K;
  std::vector<float> logits = randn(total, uint32_t(total + c.seed), 0.f, 3.f);
  std::mt19937 rng{c.seed + uint32_t(K)};
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (auto& t : targets) t = int32_t(rng() % uint32_t(K));
  if (c.rows == 0) {
    if (N > 1) std::fill(logits.begin() + K, logits.begin() + 2 * K, 2.5f);  // all equal: p = 1/K
    if (N > 2 && K > 3) {
      logits[size_t(2 * K + 1)] = -INFINITY;  // one class impossible, and the target
      targets[2] = 1;
    }
  } else if (c.rows == 1) {
    std::fill(logits.begin(), logits.end(), -4.f);
    targets[0] = K - 1;
  } else {
    logits[3] = std::numeric_limits<float>::quiet_NaN();
    logits[size_t(K)] = std::numeric_limits<float>::quiet_NaN();
  }
  const pk::SeedParams p{N, K};
  std::vector<float> pr(total), sr(total);
  kcpu::probability_seed(p, logits.data(), targets.data(), pr.data(), sr.data());
  Buf<float> dl(d, logits), dp(d, total), ds(d, total), ds2(d, total);
  Buf<int32_t> dt(d, targets);
  dp.poison();
  ds.poison();
  ds2.poison();
  kc::launch_probability_seed(p, dl.get(), dt.get(), dp.get(), ds.get(), d.stream());
  kc::launch_probability_seed(p, dl.get(), dt.get(), nullptr, ds2.get(), d.stream());
  d.sync();
  const std::vector<float> probs = dp.download(), sd = ds.download(), sd2 = ds2.download();
  int64_t max_ulps = 0;
  size_t differ = 0;
  for (size_t i = 0; i < total; ++i) {
    max_ulps = std::max({max_ulps, ulps(probs[i], pr[i]), ulps(sd[i], sr[i])});
    differ += std::memcmp(&probs[i], &pr[i], 4) != 0;
  }
  compared += total;
  differing += count_bit_diffs(probs, pr);
  const double e = std::max(max_rel(probs, pr, pr), max_rel(sd, sr, sr));
  if (c.rows != 2) worst.add(e);
  // The seed is the probability at the target and 0 elsewhere, bit for bit, with or without probs.
  bool seed_ok = same_bits(sd, sd2);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const size_t i = size_t(n) * K + k;
      const float want = k == targets[size_t(n)] ? probs[i] : 0.f;
      seed_ok = seed_ok && (std::memcmp(&sd[i], &want, 4) == 0 || (c.rows == 2 && std::isnan(sd[i]) && std::isnan(want)));
    }
  bool rows_ok = true;
  if (c.rows == 0 && N > 2 && K > 3) rows_ok = probs[size_t(2 * K + 1)] == 0.f;
  if (c.rows == 1) rows_ok = probs[0] == float(1.0 / K) && sd[size_t(K - 1)] == float(1.0 / K) && sd[0] == 0.f;
  if (c.rows == 2)
    for (size_t i = 0; i < total; ++i) rows_ok = rows_ok && std::isnan(probs[i]) && std::isnan(pr[i]);
  ctx.check(max_ulps <= kSeedUlps && seed_ok && rows_ok, "probability_seed " + tag,
            fmt("max rel err %.3g, max %lld ulp (tol %lld), %zu of %zu probabilities not bit-exact%s%s", e,
                (long long)max_ulps, (long long)kSeedUlps, differ, total,
                seed_ok ? "" : ", seed is not p[target] one-hot / differs without probs",
                rows_ok ? "" : ", the special row is wrong (impossible class, 1/K or NaN)"));
  if (ctx.opt.repeat) {
    Buf<float> dp2(d, total), ds3(d, total);
    dp2.poison();
    ds3.poison();
    kc::launch_probability_seed(p, dl.get(), dt.get(), dp2.get(), ds3.get(), d.stream());
    d.sync();
    check_repeat(ctx, same_bits(dp2.download(), probs) && same_bits(ds3.download(), sd), "probability_seed " + tag);
  }
  if (timed(ctx, c.size))
    time_bytes(ctx, "probability_seed " + tag, double(total) * 12,
               [&] { kc::launch_probability_seed(p, dl.get(), dt.get(), dp.get(), ds.get(), d.stream()); });
}

void run_seed(Ctx& ctx) {
  Worst worst(ctx, "probability seed (relative)");
  size_t compared = 0, differing = 0;
  for (const SeedCase& c : kSeed)
    if (wanted(ctx, c.size)) seed_case(ctx, c, worst, compared, differing);
  ctx.report.info(fmt("INFO probability seed: %zu of %zu probabilities differ bitwise from the twin", differing, compared));
  // The tolerance can fail: two ulps off in one element exceed it.
  const float v = 0.123f, off = std::nextafter(std::nextafter(v, INFINITY), INFINITY);
  ctx.check(ulps(off, v) == 2 && ulps(off, v) > kSeedUlps, "probability_seed tolerance can fail", "two ulps counted as two");
}

// =================================================================================================
// saliency maps (grad, input x grad, IG): bit for bit, products rounded, no FMA, channel order
// =================================================================================================

struct MapsCase {
  int N, C;
  int64_t HW;
  uint32_t seed;
  Size size;
  const char* label;
};
const MapsCase kMaps[] = {
    {3, 5, 63, 1, Size::small, ""},  {3, 5, 63, 7, Size::small, ""}, {3, 3, 49, 1, Size::small, ""},
    {2, 1, 17, 1, Size::small, ""},  {3, 5, 1, 12345, Size::small, ""}, {1, 64, 9, 1, Size::small, ""},
    {8, 3, 224 * 224, 1, Size::timed, "(imagenet b8 input)"}};

void maps_case(Ctx& ctx, const MapsCase& c, size_t& fma_would_differ, size_t& order_would_differ) {
  Device& d = ctx.dev;
  const int N = c.N, C = c.C;
  const int64_t HW = c.HW;
  const std::string tag = with_label(fmt("%dx%dx%lld seed %u", N, C, (long long)HW, c.seed), c.label);
  const size_t total = size_t(N) * C * size_t(HW), out = size_t(N) * size_t(HW);
  const std::vector<float> g = randn(total, uint32_t(total + c.seed)), x = randn(total, uint32_t(total + 2 * c.seed));
  Buf<float> dg(d, g), dx(d, x), dm(d, out);
  const pk::MapKind kinds[] = {pk::MapKind::abs_grad, pk::MapKind::abs_input_x_grad, pk::MapKind::abs_mean_input_x_grad};
  const char* names[] = {"grad", "inputgrad", "ig"};
  for (int k = 0; k < 3; ++k) {
    const pk::ChannelMapParams p{N, C, HW, kinds[k]};
    const bool need_x = kinds[k] != pk::MapKind::abs_grad;
    std::vector<float> mr(out);
    kcpu::channel_map(p, g.data(), need_x ? x.data() : nullptr, mr.data());
    if (c.size == Size::small)
      for (size_t o = 0; o < out; ++o) {  // what the bitwise comparison would see
        const size_t n = o / size_t(HW), i = o % size_t(HW);
        float fused = 0.f, reversed = 0.f;
        for (int ch = 0; ch < C; ++ch) {
          const size_t j = (n * size_t(C) + size_t(ch)) * size_t(HW) + i;
          const size_t jr = (n * size_t(C) + size_t(C - 1 - ch)) * size_t(HW) + i;
          fused = std::fma(x[j], g[j], fused);
          reversed += std::fabs(g[jr]);
        }
        if (kinds[k] == pk::MapKind::abs_mean_input_x_grad && std::fabs(fused / float(C)) != mr[o]) ++fma_would_differ;
        if (kinds[k] == pk::MapKind::abs_grad && reversed / float(C) != mr[o]) ++order_would_differ;
      }
    dm.poison();
    kc::launch_channel_map(p, dg.get(), need_x ? dx.get() : nullptr, dm.get(), d.stream());
    d.sync();
    const std::vector<float> m = dm.download();
    const std::string name = std::string("channel_map ") + names[k] + " " + tag;
    ctx.check(same_bits(m, mr), name, bits_detail(m, mr));
    if (ctx.opt.repeat) {
      dm.poison();
      kc::launch_channel_map(p, dg.get(), need_x ? dx.get() : nullptr, dm.get(), d.stream());
      d.sync();
      check_repeat(ctx, same_bits(dm.download(), m), name);
    }
    if (timed(ctx, c.size))
      time_bytes(ctx, name, double(total) * (need_x ? 8 : 4) + double(out) * 4,
                 [&] { kc::launch_channel_map(p, dg.get(), need_x ? dx.get() : nullptr, dm.get(), d.stream()); });
  }
}

void run_maps(Ctx& ctx) {
  size_t fma_would_differ = 0, order_would_differ = 0;
  for (const MapsCase& c : kMaps)
    if (wanted(ctx, c.size)) maps_case(ctx, c, fma_would_differ, order_would_differ);
  ctx.check(fma_would_differ >= 10 && order_would_differ >= 10, "channel_map data can fail",
            fmt("%zu outputs where an FMA, %zu where the reverse channel order would round differently (>= 10 each)",
                fma_would_differ, order_would_differ));
}

// =================================================================================================
// input normalisation: uint8 HWC -> (u8 / 255 - mean) / std CHW, bit for bit
// =================================================================================================

struct PreprocessCase {
  int N, H, W;
  bool custom;  // mean and std other than ImageNet's
  uint32_t seed;
  Size size;
  const char* label;
};
const PreprocessCase kPreprocess[] = {
    {2, 7, 9, false, 1, Size::small, ""},       {2, 7, 9, true, 1, Size::small, "custom mean/std"},
    {1, 1, 1, false, 2, Size::small, ""},       {1, 1, 1, true, 2, Size::small, "custom mean/std"},
    {3, 5, 13, false, 4, Size::small, ""},      {3, 5, 13, true, 4, Size::small, "custom mean/std"},
    {1, 16, 16, false, 3, Size::small, ""},     {1, 16, 16, true, 3, Size::small, "custom mean/std"},
    {8, 224, 224, false, 5, Size::timed, "(imagenet b8)"}};

pk::NormalizeParams normalize_params(const PreprocessCase& c) {
  pk::NormalizeParams p;
  if (c.custom) {
    p.mean[0] = 0.5f, p.mean[1] = 0.25f, p.mean[2] = 0.1f;
    p.std[0] = 0.5f, p.std[1] = 0.3f, p.std[2] = 1.7f;
  }
  p.N = c.N, p.H = c.H, p.W = c.W;
  return p;
}

void preprocess_case(Ctx& ctx, const PreprocessCase& c) {
  Device& d = ctx.dev;
  const pk::NormalizeParams p = normalize_params(c);
  const std::string tag = with_label(fmt("%dx%dx%d", p.N, p.H, p.W), c.label);
  const size_t px = size_t(p.N) * p.H * p.W;
  std::vector<uint8_t> rgb(px * 3);
  std::mt19937 rng{c.seed};
  for (auto& b : rgb) b = uint8_t(rng());
  if (px >= 256)  // every byte value in every channel
    for (size_t i = 0; i < 256; ++i)
      for (size_t ch = 0; ch < 3; ++ch) rgb[i * 3 + ch] = uint8_t(i);
  std::vector<float> ref(px * 3);
  kcpu::normalize_u8(p, rgb.data(), ref.data());
  if (px >= 256 && !c.custom && c.size == Size::small) {
    // The twin is tools/lib/image_io.cpp's expression with torchvision's constants, and the
    // data tells it from a multiplication by the reciprocal (what a fast-math build might do).
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    bool twin_ok = true;
    int by_reciprocal_differs = 0;
    for (int u = 0; u < 256; ++u)
      for (int ch = 0; ch < 3; ++ch) {
        const float v = static_cast<float>(uint8_t(u)) / 255.0f;
        const float want = (v - mean[ch]) / sd[ch];
        twin_ok = twin_ok && std::memcmp(&want, &ref[size_t(ch) * px + size_t(u)], 4) == 0;
        const float r = (float(u) * (1.0f / 255.0f) - mean[ch]) / sd[ch];
        by_reciprocal_differs += std::memcmp(&r, &want, 4) != 0;
      }
    ctx.check(twin_ok && by_reciprocal_differs > 0, "normalize_u8 twin " + tag,
              fmt("image_io's expression %s; %d values differ by reciprocal (> 0)", twin_ok ? "matched" : "NOT matched",
                  by_reciprocal_differs));
  }
  Buf<uint8_t> drgb(d, rgb);
  Buf<float> dout(d, px * 3);
  dout.poison();
  kc::launch_normalize_u8(p, drgb.get(), dout.get(), d.stream());
  d.sync();
  const std::vector<float> out = dout.download();
  ctx.check(same_bits(out, ref), "normalize_u8 " + tag, bits_detail(out, ref));
  if (ctx.opt.repeat) {
    dout.poison();
    kc::launch_normalize_u8(p, drgb.get(), dout.get(), d.stream());
    d.sync();
    check_repeat(ctx, same_bits(dout.download(), out), "normalize_u8 " + tag);
  }
  if (timed(ctx, c.size))
    time_bytes(ctx, "normalize_u8 " + tag, double(px) * 15,
               [&] { kc::launch_normalize_u8(p, drgb.get(), dout.get(), d.stream()); });
}

void run_preprocess(Ctx& ctx) {
  for (const PreprocessCase& c : kPreprocess)
    if (wanted(ctx, c.size)) preprocess_case(ctx, c);
}

}  // namespace

const std::vector<Group>& groups() {
  static const std::vector<Group> g = {
      {"relu", run_relu},           {"maxpool", run_maxpool},         {"gap", run_gap},   {"variances", run_variances},
      {"moments", run_moments},     {"dgrad", run_dgrad},             {"avgpool", run_avgpool},
      {"elementwise", run_elementwise}, {"seed", run_seed},           {"maps", run_maps}, {"preprocess", run_preprocess},
      {"relu6", run_relu6},         {"depthwise", run_depthwise},
      {"layernorm", run_layernorm}, {"gelu", run_gelu},
      {"activations", run_activations}, {"se_scale", run_se_scale}};
  return g;
}

const Group& group(const std::string& name) {
  for (const Group& g : groups())
    if (name == g.name) return g;
  throw Error("kernel tests: no group '" + name + "'");
}

}  // namespace pg::kernel_tests
