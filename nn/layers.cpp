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
#include "nn/backend.h"
#include "core/error.h"
#include "nn/profile.h"

namespace pg::nn {

namespace kc = pg::kernels::cpu;

bool winograd_from_environment() {
  const char* e = std::getenv("PARCHGRAD_WINOGRAD");
  return e && std::string(e) == "1";
}

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
  return backend(x.value.device()).conv2d(ctx, *this, x);
}

ag::Var Linear::forward(Context& ctx, const ag::Var& x) const {
  return backend(x.value.device()).linear(ctx, *this, x);
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
  return backend(x.value.device()).maxpool(ctx, p, x);
}

ag::Var relu(Context& ctx, ag::Var x) {
  Backend& b = backend(x.value.device());
  return b.relu(ctx, std::move(x));
}

ag::Var relu6(Context& ctx, ag::Var x) {
  Backend& b = backend(x.value.device());
  return b.relu6(ctx, std::move(x));
}

kernels::LayerNormParams LayerNorm2d::params(const Tensor& x) const {
  if (x.ndim() != 4 || x.dim(1) != weight.numel())
    throw Error(name + ": input " + x.shape_str() + " does not have the layer's " + std::to_string(weight.numel()) +
                " channels");
  kernels::LayerNormParams p;
  p.N = int(x.dim(0));
  p.C = int(x.dim(1));
  p.HW = x.dim(2) * x.dim(3);
  p.eps = eps;
  return p;
}

ag::Var LayerNorm2d::forward(Context& ctx, const ag::Var& x) const {
  return backend(x.value.device()).layernorm(ctx, *this, x);
}

ag::Var gelu(Context& ctx, const ag::Var& x) { return backend(x.value.device()).gelu(ctx, x); }

ag::Var adaptive_avgpool(Context& ctx, const ag::Var& x, int P, int Q) {
  return backend(x.value.device()).adaptive_avgpool(ctx, x, P, Q);
}

ag::Var avgpool(Context& ctx, const ag::Var& x, int kernel, int stride, int pad, bool ceil_mode,
                bool count_include_pad) {
  const kernels::Pool2dParams p = pool_params("avgpool", x.value, kernel, stride, pad, ceil_mode, count_include_pad);
  return backend(x.value.device()).avgpool(ctx, p, x);
}

void add_gradients(Tensor& a, const Tensor& b) { backend(a.device()).add_inplace(a, b); }

ag::Var add(Context& ctx, ag::Var a, const ag::Var& b) {
  if (a.value.shape() != b.value.shape())
    throw Error("add: shapes " + a.value.shape_str() + " and " + b.value.shape_str() + " differ");
  if (a.value.device() != b.value.device())
    throw Error("add: operands on different devices (" + std::string(device_name(a.value.device())) + ", " +
                device_name(b.value.device()) + ")");
  {
    profile::Scope prof("add fwd");
    backend(a.value.device()).add_inplace(a.value, b.value);
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

ag::Var activation(Context& ctx, kernels::Activation kind, const ag::Var& x) {
  return backend(x.value.device()).activation(ctx, kind, x);
}

kernels::SampleChannelScaleParams se_scale_params(const Tensor& x, const Tensor& s) {
  if (x.ndim() != 4 || s.ndim() != 4 || s.dim(0) != x.dim(0) || s.dim(1) != x.dim(1) || s.dim(2) != 1 ||
      s.dim(3) != 1)
    throw Error("se_scale: scale " + s.shape_str() + " does not fit input " + x.shape_str());
  if (x.device() != s.device()) throw Error("se_scale: operands on different devices");
  kernels::SampleChannelScaleParams p;
  p.N = int(x.dim(0));
  p.K = int(x.dim(1));
  p.HW = x.dim(2) * x.dim(3);
  return p;
}

ag::Var se_scale(Context& ctx, const ag::Var& x, const ag::Var& s) {
  return backend(x.value.device()).se_scale(ctx, x, s);
}

ag::Var SqueezeExcitation::forward(Context& ctx, const ag::Var& x) const {
  ag::Var s = adaptive_avgpool(ctx, x, 1, 1);
  s = fc1.forward(ctx, s);
  s = hard ? relu(ctx, s) : activation(ctx, kernels::Activation::silu, s);
  s = fc2.forward(ctx, s);
  s = activation(ctx, hard ? kernels::Activation::hardsigmoid : kernels::Activation::sigmoid, s);
  return se_scale(ctx, x, s);
}

ag::Var flatten(Context& ctx, const ag::Var& x) {
  const auto s = x.value.shape();
  ag::Var out{x.value.reshape({s[0], x.value.numel() / s[0]}), -1};
  record_backward(ctx, x, out, [s](Tensor g) { return g.reshape(s); });
  return out;
}

}  // namespace pg::nn
