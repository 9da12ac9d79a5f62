// The CPU backend: every layer on the kernels of kernels/cpu (im2col + OpenBLAS or Winograd
// convolutions, the fixed-order linear layer, pools, ReLU with 1-bit masks), the spatial
// variances of ParchGrad by the CPU twin of the CUDA reduction, host memory.
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "kernels/cpu/activations.h"
#include "kernels/cpu/channel_stats.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/depthwise.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/layernorm.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/relu.h"
#include "kernels/cpu/squeeze_excite.h"
#include "kernels/cpu/winograd.h"
#include "nn/backend.h"
#include "core/error.h"
#include "nn/layers.h"
#include "nn/profile.h"

namespace pg::nn {

namespace kc = pg::kernels::cpu;

namespace {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  ag::Var conv2d(Context& ctx, const Conv2d& conv, const ag::Var& x) override;
  ag::Var linear(Context& ctx, const Linear& lin, const ag::Var& x) override;
  ag::Var maxpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x) override;
  ag::Var relu(Context& ctx, ag::Var x) override;
  ag::Var relu6(Context& ctx, ag::Var x) override;
  ag::Var avgpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x) override;
  ag::Var adaptive_avgpool(Context& ctx, const ag::Var& x, int P, int Q) override;
  ag::Var activation(Context& ctx, kernels::Activation kind, const ag::Var& x) override;
  ag::Var se_scale(Context& ctx, const ag::Var& x, const ag::Var& s) override;
  ag::Var layernorm(Context& ctx, const LayerNorm2d& ln, const ag::Var& x) override;
  ag::Var gelu(Context& ctx, const ag::Var& x) override;
  void add_inplace(Tensor& a, const Tensor& b) override;
  void spatial_variances(const Tensor& g, const float* bn_scale, const std::vector<uint8_t>& select,
                         std::vector<double>& M, std::vector<double>& Nv) override;

 private:
  ag::Var relu_like(Context& ctx, ag::Var x, bool six);
};

ag::Var CpuBackend::conv2d(Context& ctx, const Conv2d& conv, const ag::Var& x) {
  const kernels::Conv2dParams p = conv.params(x.value.shape());
  const int threads = omp_get_max_threads();
  Tensor y({p.N, p.K, p.P, p.Q});
  const bool hooked = conv.hookable && ctx.hook && ctx.hook->hooks(conv.site);
  kc::ConvEpilogue epi;
  epi.bias = conv.bias.empty() ? nullptr : conv.bias.data();
  Tensor gap;
  if (hooked) {
    gap = Tensor({p.N, p.K});
    epi.gap = gap.data();
    epi.raw_scale = conv.site.bn_scale;
    epi.raw_shift = conv.site.bn_shift;
  }
  const double flops = 2.0 * p.N * p.K * p.P * p.Q * double(p.Cg()) * p.R * p.S;
  const bool depthwise = kc::depthwise_supported(p);
  const bool wino = !depthwise && ctx.winograd && kc::winograd_eligible(p);
  if (depthwise) {
    profile::Scope prof("conv fwd depthwise", flops);
    kc::depthwise_forward(p, x.value.data(), conv.weight.data(), epi, y.data());
  } else if (wino) {
    profile::Scope prof("conv fwd 3x3", flops);
    Conv2d::WinogradWeights& ww = *conv.winograd;
    std::call_once(ww.fwd_once, [&] {
      ww.fwd.resize(kc::winograd_weight_floats(p));
      kc::winograd_forward_weights(p, conv.weight.data(), ww.fwd.data());
    });
    kc::winograd_forward(p, x.value.data(), ww.fwd.data(), epi, y.data(),
                         ctx.scratch(kc::winograd_workspace_floats(p, threads)));
  } else {
    profile::Scope prof(p.is_pointwise() ? "conv fwd 1x1" : p.R == 3 ? "conv fwd 3x3" : "conv fwd other", flops);
    kc::conv2d_forward(p, x.value.data(), conv.weight.data(), epi, y.data(),
                       ctx.scratch(kc::conv2d_workspace_floats(p, threads)));
  }
  if (hooked) ctx.hook->on_forward(conv.site, gap);
  ag::Var out{y, -1};
  Context* c = &ctx;
  const Conv2d* cv = &conv;
  record_backward(ctx, x, out, [cv, p, hooked, c, threads, wino, depthwise](Tensor g) {
    Tensor scale;
    if (hooked) scale = c->hook->on_backward(cv->site, g);
    if (!scale.empty() && scale.numel() != int64_t(p.N) * p.K)
      throw Error(cv->site.name + ": hook returned a scale of shape " + scale.shape_str());
    Tensor dx({p.N, p.C, p.H, p.W});
    profile::Scope prof(depthwise           ? "conv dgrad depthwise"
                        : p.is_pointwise() ? "conv dgrad 1x1"
                        : p.R == 3         ? "conv dgrad 3x3"
                                           : "conv dgrad other",
                        2.0 * p.N * p.K * p.P * p.Q * double(p.Cg()) * p.R * p.S);
    if (depthwise) {
      kc::depthwise_dgrad(p, g.data(), cv->weight.data(), scale.empty() ? nullptr : scale.data(), dx.data());
    } else if (wino) {
      Conv2d::WinogradWeights& ww = *cv->winograd;
      std::call_once(ww.dgrad_once, [&] {
        ww.dgrad.resize(kc::winograd_weight_floats(p));
        kc::winograd_dgrad_weights(p, cv->weight.data(), ww.dgrad.data());
      });
      kc::winograd_dgrad(p, g.data(), ww.dgrad.data(), scale.empty() ? nullptr : scale.data(), dx.data(),
                         c->scratch(kc::winograd_workspace_floats(p, threads)));
    } else {
      kc::conv2d_dgrad(p, g.data(), cv->weight.data(), scale.empty() ? nullptr : scale.data(), dx.data(),
                       c->scratch(kc::conv2d_workspace_floats(p, threads)));
    }
    return dx;
  });
  return out;
}


ag::Var CpuBackend::linear(Context& ctx, const Linear& lin, const ag::Var& x) {
  const int N = int(x.value.dim(0)), in = int(lin.weight.dim(1)), outf = int(lin.weight.dim(0));
  if (x.value.ndim() != 2 || x.value.dim(1) != in)
    throw Error("linear: input " + x.value.shape_str() + " does not match weight " + lin.weight.shape_str());
  Tensor y({N, outf});
  kc::linear_forward(N, in, outf, x.value.data(), lin.weight.data(), lin.bias.empty() ? nullptr : lin.bias.data(), y.data());
  ag::Var out{y, -1};
  const Linear* l = &lin;
  record_backward(ctx, x, out, [l, N, in, outf](Tensor g) {
    Tensor dx({N, in});
    kc::linear_backward(N, in, outf, g.data(), l->weight.data(), dx.data());
    return dx;
  });
  return out;
}


ag::Var CpuBackend::maxpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x) {
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


ag::Var CpuBackend::relu(Context& ctx, ag::Var x) { return relu_like(ctx, std::move(x), false); }
ag::Var CpuBackend::relu6(Context& ctx, ag::Var x) { return relu_like(ctx, std::move(x), true); }

// ReLU or ReLU6, in place: the same 1-bit mask and backward.
ag::Var CpuBackend::relu_like(Context& ctx, ag::Var x, bool six) {
  const int64_t n = x.value.numel();
  const bool record = ctx.tape && x.id >= 0;
  std::shared_ptr<std::vector<uint64_t>> mask;
  if (record) mask = std::make_shared<std::vector<uint64_t>>(kc::relu_mask_words(n));
  {
    profile::Scope prof(six ? "relu6 fwd" : "relu fwd");
    (six ? kc::relu6_forward : kc::relu_forward)(x.value.data(), n, record ? mask->data() : nullptr);
  }
  ag::Var out{x.value, -1};  // in place
  record_backward(ctx, x, out, [mask, n](Tensor g) {
    profile::Scope prof("relu bwd");
    kc::relu_backward(g.data(), n, mask->data());
    return g;
  });
  return out;
}


ag::Var CpuBackend::adaptive_avgpool(Context& ctx, const ag::Var& x, int P, int Q) {
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


// ConvNeXt's LayerNorm over channels: the backward recomputes the statistics from x (kept by
// reference: the models never write into a LayerNorm's input afterwards).
ag::Var CpuBackend::layernorm(Context& ctx, const LayerNorm2d& ln, const ag::Var& x) {
  const kernels::LayerNormParams p = ln.params(x.value);
  Tensor y(x.value.shape());
  {
    profile::Scope prof("layernorm fwd");
    kc::layernorm_forward(p, x.value.data(), ln.weight.data(), ln.bias.data(), y.data());
  }
  ag::Var out{y, -1};
  const LayerNorm2d* l = &ln;
  record_backward(ctx, x, out, [l, p, xv = x.value](Tensor g) {
    profile::Scope prof("layernorm bwd");
    kc::layernorm_backward(p, xv.data(), l->weight.data(), g.data(), g.data());
    return g;
  });
  return out;
}

ag::Var CpuBackend::gelu(Context& ctx, const ag::Var& x) {
  const int64_t n = x.value.numel();
  Tensor y(x.value.shape());
  {
    profile::Scope prof("gelu fwd");
    kc::gelu_forward(x.value.data(), n, y.data());
  }
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [n, xv = x.value](Tensor g) {
    profile::Scope prof("gelu bwd");
    kc::gelu_backward(xv.data(), g.data(), n, g.data());
    return g;
  });
  return out;
}

ag::Var CpuBackend::avgpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x) {
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


// SiLU, sigmoid, hardswish, hardsigmoid: a new tensor; the backward reads x, or y for
// sigmoid, kept by reference (the models never write into either afterwards).
ag::Var CpuBackend::activation(Context& ctx, kernels::Activation kind, const ag::Var& x) {
  const int64_t n = x.value.numel();
  Tensor y(x.value.shape());
  {
    profile::Scope prof("activation fwd");
    kc::activation_forward(kind, x.value.data(), y.data(), n);
  }
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [kind, n, saved = kernels::activation_saves_output(kind) ? y : x.value](Tensor g) {
    profile::Scope prof("activation bwd");
    kc::activation_backward(kind, saved.data(), g.data(), g.data(), n);
    return g;
  });
  return out;
}

// The squeeze-and-excitation product; the backward keeps s only for x's gradient and x only
// for s's.
ag::Var CpuBackend::se_scale(Context& ctx, const ag::Var& x, const ag::Var& s) {
  const kernels::SampleChannelScaleParams p = se_scale_params(x.value, s.value);
  Tensor y(x.value.shape());
  {
    profile::Scope prof("se scale fwd");
    kc::se_scale_forward(p, x.value.data(), s.value.data(), y.data());
  }
  ag::Var out{y, -1};
  record_backward2(ctx, x, s, out,
                   [p, xv = s.id >= 0 ? x.value : Tensor(), sv = x.id >= 0 ? s.value : Tensor(),
                    s_shape = s.value.shape()](Tensor g, bool need_dx, bool need_ds) {
                     profile::Scope prof("se scale bwd");
                     Tensor ds = need_ds ? Tensor(s_shape) : Tensor();
                     kc::se_scale_backward(p, g.data(), need_ds ? xv.data() : nullptr, need_dx ? sv.data() : nullptr,
                                           need_dx ? g.data() : nullptr, need_ds ? ds.data() : nullptr);
                     return std::make_pair(need_dx ? std::move(g) : Tensor(), std::move(ds));
                   });
  return out;
}

void CpuBackend::add_inplace(Tensor& a, const Tensor& b) {
  float* pa = a.data();
  const float* pb = b.data();
  const int64_t n = a.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) pa[i] += pb[i];
}

void CpuBackend::spatial_variances(const Tensor& g, const float* bn_scale, const std::vector<uint8_t>& select,
                                   std::vector<double>& M, std::vector<double>& Nv) {
  kernels::SpatialVarianceParams p;
  p.N = int(g.dim(0));
  p.C = int(g.dim(1));
  p.HW = g.dim(2) * g.dim(3);
  M.assign(size_t(p.N), 0.0);
  Nv.assign(size_t(p.N), 0.0);
  kc::spatial_variances(p, g.data(), bn_scale, select.data(), M.data(), Nv.data());
}

}  // namespace

DeviceBackend& device_backend() {
  static DeviceBackend& dev = [] () -> DeviceBackend& {
    DeviceBackend& d = detail::this_builds_device();
    install_device_memory(d);
    return d;
  }();
  return dev;
}

Backend& backend(Device d) {
  static CpuBackend cpu;
  if (d == Device::cpu) return cpu;
  return device_backend();
}

}  // namespace pg::nn
