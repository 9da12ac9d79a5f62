#include "nn/layers.h"

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>

#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/relu.h"
#include "kernels/cpu/winograd.h"
#include "nn/error.h"
#include "nn/profile.h"
#if PARCHGRAD_GPU
#include "nn/gpu/ops.h"
// A layer whose input lives on the device runs there (nn/gpu/ops.h).
#define PG_DEVICE_DISPATCH(cond, call) \
  if (cond) return call
#else
#define PG_DEVICE_DISPATCH(cond, call) \
  if (cond) throw Error("this build of parchgrad has no CUDA backend")
#endif

namespace pg::nn {

namespace kc = pg::kernels::cpu;

namespace {
bool winograd_default() {
  const char* e = std::getenv("PARCHGRAD_WINOGRAD");
  return e && std::string(e) == "1";
}
bool g_winograd = winograd_default();
}  // namespace

void set_winograd(bool on) { g_winograd = on; }
bool winograd_enabled() { return g_winograd; }

float* Context::scratch(size_t floats) {
  if (workspace.size() < floats) workspace.resize(floats);
  return workspace.data();
}

void Conv2d::fold_batchnorm(const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                            const Tensor& var, double eps) {
  const int K = out_channels;
  const int64_t per = weight.numel() / K;
  Tensor w = weight.clone();
  Tensor b({K});
  bn_scale = Tensor({K});
  bn_shift = Tensor({K});
  for (int k = 0; k < K; ++k) {
    const double s = double(gamma[k]) / std::sqrt(double(var[k]) + eps);
    const double shift = double(beta[k]) - double(mean[k]) * s;
    for (int64_t i = 0; i < per; ++i) w[k * per + i] = float(double(w[k * per + i]) * s);
    const double cb = bias.empty() ? 0.0 : double(bias[k]);
    b[k] = float(cb * s + shift);
    bn_scale[k] = float(s);
    bn_shift[k] = float(shift);
  }
  weight = w;
  bias = b;
}

void Conv2d::bind_site() {
  site.out_channels = out_channels;
  site.bn_scale = bn_scale.empty() ? nullptr : bn_scale.data();
  site.bn_shift = bn_shift.empty() ? nullptr : bn_shift.data();
}

kernels::Conv2dParams Conv2d::params(const std::vector<int64_t>& s) const {
  if (s.size() != 4) throw Error(site.name + ": expected a 4-d input, got " + shape_str(s));
  if (s[1] != in_channels)
    throw Error(site.name + ": input has " + std::to_string(s[1]) + " channels, the layer expects " +
                std::to_string(in_channels));
  kernels::Conv2dParams p;
  p.N = int(s[0]);
  p.C = in_channels;
  p.H = int(s[2]);
  p.W = int(s[3]);
  p.K = out_channels;
  p.R = kernel_h;
  p.S = kernel_w;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.dil_h = p.dil_w = dilation;
  p.groups = groups;
  if (!kernels::conv2d_output_size(p))
    throw Error(site.name + ": input " + shape_str(s) + " is too small for this layer");
  return p;
}

ag::Var Conv2d::forward(Context& ctx, const ag::Var& x) const {
  PG_DEVICE_DISPATCH(x.value.is_cuda(), dev::conv2d(ctx, *this, x));
  const kernels::Conv2dParams p = params(x.value.shape());
  const int threads = omp_get_max_threads();
  Tensor y({p.N, p.K, p.P, p.Q});
  const bool hooked = ctx.hook && ctx.hook->hooks(site);
  kc::ConvEpilogue epi;
  epi.bias = bias.empty() ? nullptr : bias.data();
  Tensor gap;
  if (hooked) {
    gap = Tensor({p.N, p.K});
    epi.gap = gap.data();
    epi.raw_scale = site.bn_scale;
    epi.raw_shift = site.bn_shift;
  }
  const double flops = 2.0 * p.N * p.K * p.P * p.Q * double(p.Cg()) * p.R * p.S;
  const bool wino = g_winograd && kc::winograd_eligible(p);
  if (wino) {
    profile::Scope prof("conv fwd 3x3", flops);
    WinogradWeights& ww = *winograd;
    std::call_once(ww.fwd_once, [&] {
      ww.fwd.resize(kc::winograd_weight_floats(p));
      kc::winograd_forward_weights(p, weight.data(), ww.fwd.data());
    });
    kc::winograd_forward(p, x.value.data(), ww.fwd.data(), epi, y.data(),
                         ctx.scratch(kc::winograd_workspace_floats(p, threads)));
  } else {
    profile::Scope prof(p.is_pointwise() ? "conv fwd 1x1" : p.R == 3 ? "conv fwd 3x3" : "conv fwd other", flops);
    kc::conv2d_forward(p, x.value.data(), weight.data(), epi, y.data(),
                       ctx.scratch(kc::conv2d_workspace_floats(p, threads)));
  }
  if (hooked) ctx.hook->on_forward(site, gap);
  ag::Var out{y, -1};
  Context* c = &ctx;
  record_backward(ctx, x, out, [this, p, hooked, c, threads, wino](Tensor g) {
    Tensor scale;
    if (hooked) scale = c->hook->on_backward(site, g);
    if (!scale.empty() && scale.numel() != int64_t(p.N) * p.K)
      throw Error(site.name + ": hook returned a scale of shape " + scale.shape_str());
    Tensor dx({p.N, p.C, p.H, p.W});
    profile::Scope prof(p.is_pointwise() ? "conv dgrad 1x1" : p.R == 3 ? "conv dgrad 3x3" : "conv dgrad other",
                        2.0 * p.N * p.K * p.P * p.Q * double(p.Cg()) * p.R * p.S);
    if (wino) {
      WinogradWeights& ww = *winograd;
      std::call_once(ww.dgrad_once, [&] {
        ww.dgrad.resize(kc::winograd_weight_floats(p));
        kc::winograd_dgrad_weights(p, weight.data(), ww.dgrad.data());
      });
      kc::winograd_dgrad(p, g.data(), ww.dgrad.data(), scale.empty() ? nullptr : scale.data(), dx.data(),
                         c->scratch(kc::winograd_workspace_floats(p, threads)));
    } else {
      kc::conv2d_dgrad(p, g.data(), weight.data(), scale.empty() ? nullptr : scale.data(), dx.data(),
                       c->scratch(kc::conv2d_workspace_floats(p, threads)));
    }
    return dx;
  });
  return out;
}

ag::Var Linear::forward(Context& ctx, const ag::Var& x) const {
  PG_DEVICE_DISPATCH(x.value.is_cuda(), dev::linear(ctx, *this, x));
  const int N = int(x.value.dim(0)), in = int(weight.dim(1)), outf = int(weight.dim(0));
  if (x.value.ndim() != 2 || x.value.dim(1) != in)
    throw Error("linear: input " + x.value.shape_str() + " does not match weight " + weight.shape_str());
  Tensor y({N, outf});
  kc::linear_forward(N, in, outf, x.value.data(), weight.data(), bias.empty() ? nullptr : bias.data(), y.data());
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [this, N, in, outf](Tensor g) {
    Tensor dx({N, in});
    kc::linear_backward(N, in, outf, g.data(), weight.data(), dx.data());
    return dx;
  });
  return out;
}

namespace {
// Square pooling window over an NCHW input; throws when the input is too small.
kernels::Pool2dParams pool_params(const char* what, const Tensor& x, int kernel, int stride, int pad,
                                  bool ceil_mode, bool count_include_pad) {
  const auto& s = x.shape();
  kernels::Pool2dParams p;
  p.N = int(s[0]);
  p.C = int(s[1]);
  p.H = int(s[2]);
  p.W = int(s[3]);
  p.kh = p.kw = kernel;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  p.ceil_mode = ceil_mode;
  p.count_include_pad = count_include_pad;
  if (!kernels::pool2d_output_size(p)) throw Error(std::string(what) + ": input " + x.shape_str() + " is too small");
  return p;
}
}  // namespace

ag::Var MaxPool2d::forward(Context& ctx, const ag::Var& x) const {
  const kernels::Pool2dParams p = pool_params("maxpool", x.value, kernel, stride, pad, ceil_mode, false);
  PG_DEVICE_DISPATCH(x.value.is_cuda(), dev::maxpool(ctx, p, x));
  Tensor y({p.N, p.C, p.P, p.Q});
  const bool record = ctx.tape && x.id >= 0;
  std::shared_ptr<std::vector<int32_t>> argmax;
  if (record) argmax = std::make_shared<std::vector<int32_t>>(y.numel());
  {
    profile::Scope prof("maxpool fwd");
    kc::maxpool2d_forward(p, x.value.data(), y.data(), record ? argmax->data() : nullptr);
  }
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [p, argmax](Tensor g) {
    Tensor dx({p.N, p.C, p.H, p.W});
    profile::Scope prof("maxpool bwd");
    kc::maxpool2d_backward(p, g.data(), argmax->data(), dx.data());
    return dx;
  });
  return out;
}

ag::Var relu(Context& ctx, ag::Var x) {
  PG_DEVICE_DISPATCH(x.value.is_cuda(), dev::relu(ctx, std::move(x)));
  const int64_t n = x.value.numel();
  const bool record = ctx.tape && x.id >= 0;
  std::shared_ptr<std::vector<uint64_t>> mask;
  if (record) mask = std::make_shared<std::vector<uint64_t>>(kc::relu_mask_words(n));
  {
    profile::Scope prof("relu fwd");
    kc::relu_forward(x.value.data(), n, record ? mask->data() : nullptr);
  }
  ag::Var out{x.value, -1};  // in place
  record_backward(ctx, x, out, [mask, n](Tensor g) {
    profile::Scope prof("relu bwd");
    kc::relu_backward(g.data(), n, mask->data());
    return g;
  });
  return out;
}

ag::Var adaptive_avgpool(Context& ctx, const ag::Var& x, int P, int Q) {
  PG_DEVICE_DISPATCH(x.value.is_cuda(), dev::adaptive_avgpool(ctx, x, P, Q));
  const auto s = x.value.shape();
  const int NC = int(s[0] * s[1]), H = int(s[2]), W = int(s[3]);
  Tensor y({s[0], s[1], P, Q});
  kc::adaptive_avgpool2d_forward(NC, H, W, P, Q, x.value.data(), y.data());
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [s, NC, H, W, P, Q](Tensor g) {
    Tensor dx(s);
    kc::adaptive_avgpool2d_backward(NC, H, W, P, Q, g.data(), dx.data());
    return dx;
  });
  return out;
}

ag::Var avgpool(Context& ctx, const ag::Var& x, int kernel, int stride, int pad, bool ceil_mode,
                bool count_include_pad) {
  const kernels::Pool2dParams p = pool_params("avgpool", x.value, kernel, stride, pad, ceil_mode, count_include_pad);
  PG_DEVICE_DISPATCH(x.value.is_cuda(), dev::avgpool(ctx, p, x));
  Tensor y({p.N, p.C, p.P, p.Q});
  kc::avgpool2d_forward(p, x.value.data(), y.data());
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [p](Tensor g) {
    Tensor dx({p.N, p.C, p.H, p.W});
    kc::avgpool2d_backward(p, g.data(), dx.data());
    return dx;
  });
  return out;
}

ag::Var add(Context& ctx, ag::Var a, const ag::Var& b) {
  if (a.value.shape() != b.value.shape())
    throw Error("add: shapes " + a.value.shape_str() + " and " + b.value.shape_str() + " differ");
  if (a.value.is_cuda() || b.value.is_cuda()) {
#if PARCHGRAD_GPU
    dev::add_inplace(a.value, b.value);
#else
    throw Error("this build of parchgrad has no CUDA backend");
#endif
  } else {
    profile::Scope prof("add fwd");
    float* pa = a.value.data();
    const float* pb = b.value.data();
    const int64_t n = a.value.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] += pb[i];
  }
  if (ctx.tape && (a.id >= 0 || b.id >= 0)) {
    const int ia = a.id, ib = b.id, out_id = ctx.tape->new_value();
    a.id = out_id;
    ctx.tape->record([ia, ib, out_id](ag::Tape& tape) {
      Tensor g = tape.take(out_id);
      if (g.empty()) return;
      profile::Scope prof("add bwd");
      // Each branch gets its own copy: hooks may edit a gradient in place.
      if (ia >= 0 && ib >= 0) tape.accumulate(ib, g.clone());
      else if (ib >= 0) tape.accumulate(ib, std::move(g));
      if (ia >= 0 && !g.empty()) tape.accumulate(ia, std::move(g));
    });
  }
  return a;
}

ag::Var flatten(Context& ctx, const ag::Var& x) {
  const auto s = x.value.shape();
  ag::Var out{x.value.reshape({s[0], x.value.numel() / s[0]}), -1};
  record_backward(ctx, x, out, [s](Tensor g) { return g.reshape(s); });
  return out;
}

}  // namespace pg::nn
