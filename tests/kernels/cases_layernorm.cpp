// ConvNeXt's kernels against their CPU twins (tests/kernels/harness.h says who runs them):
//   * layernorm forward and backward (kernels/cuda/layernorm.h vs kernels/cpu/layernorm.h):
//     bit for bit (the same double operations in the same order, none fused; IEEE double
//     add, multiply, divide and square root round the same everywhere);
//   * gelu forward and backward (kernels/cuda/gelu.h vs kernels/cpu/gelu.h): bit for bit (both
//     call kernels/cpu/smooth_math.h: IEEE double operations only, no library erf or exp).
// Every output buffer is poisoned (0xFF bytes: NaN) before each launch; a second launch into
// fresh buffers must give the same bits; the backward also runs in place (dx == dy).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/params.h"
#include "tests/kernels/harness.h"

namespace pg::kernel_tests {
namespace {

namespace kc = pg::kernels::cuda;
namespace kcpu = pg::kernels::cpu;
using pg::kernels::GeluParams;
using pg::kernels::LayerNormParams;

std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.f, float mean = 0.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Distance in floats between a and b (monotone integer keys; +0 and -0 adjacent).
int64_t ulps(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : INT64_MAX;
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i < 0 ? int64_t(INT32_MIN) - int64_t(i) : int64_t(i);
  };
  const int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

std::string detail(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return "sizes differ";
  int64_t worst = 0;
  size_t at = 0, n = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const int64_t u = ulps(a[i], b[i]);
    if (u) ++n;
    if (u > worst) worst = u, at = i;
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "%zu of %zu differ, worst %lld ulps at %zu (%.9g vs %.9g)", n, a.size(),
                (long long)worst, at, a.empty() ? 0.0 : double(a[at]), a.empty() ? 0.0 : double(b[at]));
  return buf;
}

// Largest ulps() over the elements (0: the same bits, NaN matching any NaN).
int64_t worst_ulps(const std::vector<float>& a, const std::vector<float>& b) {
  int64_t w = a.size() == b.size() ? 0 : INT64_MAX;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) w = std::max(w, ulps(a[i], b[i]));
  return w;
}

struct LayerNormCase {
  int N, C;
  int64_t HW;
  uint32_t seed;
  bool large;
  const char* label;
};
const LayerNormCase kLayerNorm[] = {
    {2, 96, 49, 1, false, "a tiny stage-1 block"},
    {3, 5, 130, 2, false, "positions over one block of threads"},
    {2, 768, 1, 3, false, "the classifier's LayerNorm2d on 1x1"},
    {1, 1, 9, 4, false, "one channel: the output is the bias"},
    {1, 3, 4, 5, false, "a constant position (variance 0)"},
    {8, 96, 56 * 56, 6, true, "convnext_tiny stage 1 at batch 8"},
    {8, 768, 7 * 7, 7, true, "convnext_tiny stage 4 at batch 8"},
};

void layernorm_case(Ctx& ctx, const LayerNormCase& c) {
  Device& d = ctx.dev;
  char tag[96];
  std::snprintf(tag, sizeof tag, "N=%d C=%d HW=%lld %s", c.N, c.C, (long long)c.HW, c.label);
  LayerNormParams p;
  p.N = c.N, p.C = c.C, p.HW = c.HW, p.eps = 1e-6;
  const size_t n = size_t(c.N) * c.C * c.HW;
  std::vector<float> x = randn(n, c.seed, 3.f, 0.5f);
  if (std::string(c.label).find("constant") != std::string::npos)
    for (int ch = 0; ch < c.C; ++ch) x[size_t(ch) * c.HW] = 1.25f;  // position 0: all channels equal
  const std::vector<float> w = randn(size_t(c.C), c.seed + 100, 0.5f, 1.f), b = randn(size_t(c.C), c.seed + 200);
  const std::vector<float> dy = randn(n, c.seed + 300);
  std::vector<float> y_ref(n), dx_ref(n);
  kcpu::layernorm_forward(p, x.data(), w.data(), b.data(), y_ref.data());
  kcpu::layernorm_backward(p, x.data(), w.data(), dy.data(), dx_ref.data());

  Buf<float> dx_in(d, x), dw(d, w), db(d, b), ddy(d, dy), dyo(d, n), ddx(d, n);
  dyo.poison();
  ddx.poison();
  kc::launch_layernorm_forward(p, dx_in.get(), dw.get(), db.get(), dyo.get(), d.stream());
  kc::launch_layernorm_backward(p, dx_in.get(), dw.get(), ddy.get(), ddx.get(), d.stream());
  d.sync();
  const std::vector<float> y = dyo.download(), dx = ddx.download();
  ctx.check(same_bits(y, y_ref), std::string("layernorm_forward ") + tag, detail(y, y_ref));
  ctx.check(same_bits(dx, dx_ref), std::string("layernorm_backward ") + tag, detail(dx, dx_ref));
  if (ctx.opt.repeat) {
    Buf<float> y2(d, n), g2(d, dy);  // the backward in place, into dy's buffer
    y2.poison();
    kc::launch_layernorm_forward(p, dx_in.get(), dw.get(), db.get(), y2.get(), d.stream());
    kc::launch_layernorm_backward(p, dx_in.get(), dw.get(), g2.get(), g2.get(), d.stream());
    d.sync();
    ctx.check(same_bits(y2.download(), y) && same_bits(g2.download(), dx),
              std::string("layernorm repeat, backward in place ") + tag, "a second launch differs");
  }
  if (c.C == 1) {
    bool bias = true;
    for (float v : y_ref) bias = bias && v == b[0];
    ctx.check(bias, std::string("layernorm twin, one channel ") + tag, "every output equals the bias");
  }
}

struct GeluCase {
  int64_t n;
  uint32_t seed;
  bool large;
};
const GeluCase kGelu[] = {{1, 1, false}, {1000, 2, false}, {5 * 13 * 11 + 3, 3, false}, {int64_t(8) * 384 * 56 * 56, 4, true}};

void gelu_case(Ctx& ctx, const GeluCase& c) {
  Device& d = ctx.dev;
  char tag[48];
  std::snprintf(tag, sizeof tag, "n=%lld", (long long)c.n);
  std::vector<float> x = randn(size_t(c.n), c.seed, 3.f);
  if (c.n > 8) {  // zero, signed zero, the tails, infinities
    x[0] = 0.f, x[1] = -0.f, x[2] = -10.f, x[3] = 10.f, x[4] = -40.f, x[5] = INFINITY, x[6] = -INFINITY;
  }
  const std::vector<float> dy = randn(size_t(c.n), c.seed + 50);
  std::vector<float> y_ref(size_t(c.n)), dx_ref(size_t(c.n));
  kcpu::gelu_forward(x.data(), c.n, y_ref.data());
  kcpu::gelu_backward(x.data(), dy.data(), c.n, dx_ref.data());
  GeluParams p;
  p.n = c.n;
  Buf<float> dx_in(d, x), ddy(d, dy), dyo(d, size_t(c.n)), ddx(d, size_t(c.n));
  dyo.poison();
  ddx.poison();
  kc::launch_gelu_forward(p, dx_in.get(), dyo.get(), d.stream());
  kc::launch_gelu_backward(p, dx_in.get(), ddy.get(), ddx.get(), d.stream());
  d.sync();
  const std::vector<float> y = dyo.download(), dx = ddx.download();
  // NaN (from -inf, and the gradient at +-inf) as any NaN: a GPU's NaN payload is its own.
  ctx.check(worst_ulps(y, y_ref) == 0, std::string("gelu_forward (bit for bit) ") + tag, detail(y, y_ref));
  ctx.check(worst_ulps(dx, dx_ref) == 0, std::string("gelu_backward (bit for bit) ") + tag, detail(dx, dx_ref));
  if (c.n > 8) {
    const bool tails = y_ref[0] == 0.f && y_ref[3] == 10.f && y_ref[4] == 0.f && y_ref[5] == INFINITY &&
                       dx_ref[0] == 0.5f * dy[0] && dx_ref[3] == dy[3] && dx_ref[4] == 0.f;
    ctx.check(tails, std::string("gelu twin values ") + tag, "0 -> 0, 10 -> 10, -40 -> 0, inf -> inf; slope 1/2 at 0");
  }
  if (ctx.opt.repeat) {
    Buf<float> y2(d, x), g2(d, dy);  // both in place
    kc::launch_gelu_backward(p, y2.get(), g2.get(), g2.get(), d.stream());
    kc::launch_gelu_forward(p, y2.get(), y2.get(), d.stream());
    d.sync();
    ctx.check(same_bits(y2.download(), y) && same_bits(g2.download(), dx), std::string("gelu repeat, in place ") + tag,
              "a second launch differs");
  }
}

}  // namespace

void run_layernorm(Ctx& ctx) {
  for (const LayerNormCase& c : kLayerNorm)
    if (!c.large || ctx.opt.large) layernorm_case(ctx, c);
}

void run_gelu(Ctx& ctx) {
  for (const GeluCase& c : kGelu)
    if (!c.large || ctx.opt.large) gelu_case(ctx, c);
}

}  // namespace pg::kernel_tests
