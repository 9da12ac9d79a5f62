// The kernels of EfficientNet and MobileNetV3 against their CPU twins (tests/kernels/harness.h
// says who runs them and how):
//   activations (kernels/cuda/activations.h vs kernels/cpu/activations.h): forward and
//     backward bit for bit (hardswish and hardsigmoid: the same float operations; SiLU and
//     sigmoid: the same kernels/cpu/smooth_math.h functions, IEEE double operations only);
//   se_scale (kernels/cuda/squeeze_excite.h vs kernels/cpu/squeeze_excite.h): forward, dx and ds
//     bit for bit (one float product per element; ds's double sum in the twin's order).
// Every output buffer is poisoned before each launch; the kinks and NaN are in the data.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/activations.h"
#include "kernels/cpu/squeeze_excite.h"
#include "kernels/cuda/activations.h"
#include "kernels/cuda/squeeze_excite.h"
#include "kernels/params.h"
#include "tests/kernels/harness.h"

namespace pg::kernel_tests {
namespace {

namespace kc = pg::kernels::cuda;
namespace kcpu = pg::kernels::cpu;
using pg::kernels::Activation;

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

std::vector<float> randn(size_t n, uint32_t seed, float sd) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
std::string bits_detail(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return fmt("sizes %zu vs %zu", a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0) return fmt("first difference at %zu: %.9g vs %.9g", i, a[i], b[i]);
  return "bit-exact";
}
const char* name_of(Activation a) {
  switch (a) {
    case Activation::silu: return "silu";
    case Activation::sigmoid: return "sigmoid";
    case Activation::hardswish: return "hardswish";
    case Activation::hardsigmoid: return "hardsigmoid";
  }
  return "?";
}

// The same bits, NaN matching any NaN (a GPU's NaN payload is its own).
void compare(Ctx& ctx, const std::string& name, const std::vector<float>& got, const std::vector<float>& ref) {
  bool same = got.size() == ref.size();
  for (size_t i = 0; same && i < got.size(); ++i)
    same = std::memcmp(&got[i], &ref[i], 4) == 0 || (std::isnan(got[i]) && std::isnan(ref[i]));
  ctx.check(same, name, bits_detail(got, ref));
}

}  // namespace

// =================================================================================================
// activations: forward and backward against the twin, the kinks, NaN, +-inf, in place
// =================================================================================================

void run_activations(Ctx& ctx) {
  Device& d = ctx.dev;
  for (Activation a : {Activation::silu, Activation::sigmoid, Activation::hardswish, Activation::hardsigmoid}) {
    for (int64_t n : {int64_t(1), int64_t(257), int64_t(5 * 13 * 11 + 3)}) {
      const std::string tag = fmt("%s n=%lld", name_of(a), (long long)n);
      std::vector<float> x = randn(size_t(n), uint32_t(n + 11), 3.f);
      const std::vector<float> g = randn(size_t(n), uint32_t(n + 12), 1.f);
      if (n > 12) {  // the kinks and edge values
        const float e[] = {-3.f, 3.f, std::nextafter(-3.f, 0.f), std::nextafter(3.f, 0.f), std::nextafter(3.f, 4.f),
                           0.f, -0.f, 90.f, -90.f, std::numeric_limits<float>::quiet_NaN(), INFINITY, -INFINITY};
        std::copy(std::begin(e), std::end(e), x.begin());
      }
      std::vector<float> ref_y(static_cast<size_t>(n)), ref_dx(static_cast<size_t>(n));
      kcpu::activation_forward(a, x.data(), ref_y.data(), n);
      const std::vector<float>& saved = pg::kernels::activation_saves_output(a) ? ref_y : x;
      kcpu::activation_backward(a, saved.data(), g.data(), ref_dx.data(), n);

      Buf<float> dx_in(d, x), dy(d, size_t(n)), ds(d, saved), dg(d, g), ddx(d, size_t(n));
      dy.poison();
      ddx.poison();
      pg::kernels::ActivationParams p;
      p.kind = a;
      p.n = n;
      kc::launch_activation_forward(p, dx_in.get(), dy.get(), d.stream());
      kc::launch_activation_backward(p, ds.get(), dg.get(), ddx.get(), d.stream());
      d.sync();
      const std::vector<float> y = dy.download(), dxv = ddx.download();
      compare(ctx, "activation_forward " + tag, y, ref_y);
      compare(ctx, "activation_backward " + tag, dxv, ref_dx);
      if (n > 12 && a == Activation::hardswish) {  // the twin itself: aten's boundaries
        ctx.check(ref_dx[0] == g[0] * -0.5f && ref_dx[1] == g[1] * 1.5f && ref_dx[4] == g[4],
                  "hardswish twin kinks " + tag, "g * (x / 3 + 0.5) at x = -3 and 3, g above 3");
      }
      if (n > 12 && a == Activation::hardsigmoid) {
        ctx.check(ref_dx[0] == 0.f && ref_dx[1] == 0.f && ref_dx[2] == g[2] * (1.f / 6.f),
                  "hardsigmoid twin kinks " + tag, "0 at x = -3 and 3, g / 6 just inside");
      }
      if (ctx.opt.repeat) {  // in place: y over x, dx over g
        Buf<float> y2(d, x), g2(d, g);
        kc::launch_activation_forward(p, y2.get(), y2.get(), d.stream());
        kc::launch_activation_backward(p, ds.get(), g2.get(), g2.get(), d.stream());
        d.sync();
        ctx.check(same_bits(y2.download(), y) && same_bits(g2.download(), dxv), "activation in place " + tag,
                  "in place equals out of place, bitwise");
      }
    }
  }
}

// =================================================================================================
// se_scale: forward, dx and ds bit for bit (the double sum in the twin's order)
// =================================================================================================

void run_se_scale(Ctx& ctx) {
  Device& d = ctx.dev;
  struct Case {
    int N, C;
    int64_t HW;
  };
  for (const Case& c : {Case{1, 1, 1}, Case{2, 7, 1}, Case{2, 5, 49}, Case{3, 33, 64 * 64 + 3}}) {
    const std::string tag = fmt("N=%d C=%d HW=%lld", c.N, c.C, (long long)c.HW);
    pg::kernels::SampleChannelScaleParams p;
    p.N = c.N, p.K = c.C, p.HW = c.HW;
    const size_t n = size_t(c.N) * c.C * size_t(c.HW), planes = size_t(c.N) * c.C;
    const std::vector<float> x = randn(n, uint32_t(n + 1), 2.f), g = randn(n, uint32_t(n + 2), 1.f);
    const std::vector<float> s = randn(planes, uint32_t(n + 3), 1.f);
    std::vector<float> ref_y(n), ref_dx(n), ref_ds(planes);
    kcpu::se_scale_forward(p, x.data(), s.data(), ref_y.data());
    kcpu::se_scale_backward(p, g.data(), x.data(), s.data(), ref_dx.data(), ref_ds.data());
    Buf<float> dxin(d, x), dgv(d, g), dsv(d, s), dy(d, n), ddx(d, n), dds(d, planes);
    dy.poison();
    ddx.poison();
    dds.poison();
    kc::launch_se_scale_forward(p, dxin.get(), dsv.get(), dy.get(), d.stream());
    kc::launch_se_scale_backward(p, dgv.get(), dxin.get(), dsv.get(), ddx.get(), dds.get(), d.stream());
    d.sync();
    const std::vector<float> y = dy.download(), dxv = ddx.download(), ds = dds.download();
    ctx.check(same_bits(y, ref_y), "se_scale_forward " + tag, bits_detail(y, ref_y));
    ctx.check(same_bits(dxv, ref_dx), "se_scale dx " + tag, bits_detail(dxv, ref_dx));
    ctx.check(same_bits(ds, ref_ds), "se_scale ds " + tag, bits_detail(ds, ref_ds));
    if (c.HW > 1000) {  // the twin itself: a float sum in another order would differ somewhere
      std::vector<float> other(planes);
      for (size_t k = 0; k < planes; ++k) {
        float acc = 0.f;
        for (int64_t i = c.HW - 1; i >= 0; --i) acc += g[k * size_t(c.HW) + size_t(i)] * x[k * size_t(c.HW) + size_t(i)];
        other[k] = acc;
      }
      ctx.check(!same_bits(other, ref_ds), "se_scale ds order matters " + tag,
                "a reversed float sum differs from the twin (the bit-for-bit check can fail)");
    }
    if (ctx.opt.repeat) {  // dx in place over g, ds alone
      Buf<float> g2(d, g), ds2(d, planes);
      ds2.poison();
      kc::launch_se_scale_backward(p, g2.get(), dxin.get(), dsv.get(), g2.get(), ds2.get(), d.stream());
      d.sync();
      ctx.check(same_bits(g2.download(), dxv) && same_bits(ds2.download(), ds), "se_scale in place " + tag,
                "dx over g equals the out-of-place run, bitwise");
    }
  }
}

}  // namespace pg::kernel_tests
