// Layers of the engine. Each forward computes its output and, when a tape is given,
// records the backward step with only what the input gradient needs.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "autograd/hooks.h"
#include "autograd/tape.h"
#include "kernels/params.h"
#include "nn/backend.h"
#include "core/tensor.h"

namespace pg::nn {

// Whether PARCHGRAD_WINOGRAD=1 is set (the default of Context::winograd).
bool winograd_from_environment();

// Per-pass state: the tape (nullptr for a forward-only pass), the conv hook (nullptr for
// none) and the scratch buffer shared by the convolutions.
struct Context {
  // Where the model runs: the methods of parchgrad/ move inputs there and results back.
  Device device = Device::cpu;
  // The device path's settings (--precision, --dgrad, --deterministic).
  DeviceOptions device_options;
  // When on, 3x3 stride-1 convolutions on the CPU use Winograd F(2x2, 3x3) where eligible
  // (kernels/cpu/winograd.h); off uses im2col + SGEMM everywhere. Off by default because its
  // rounding, though within 1e-6 of the direct method per layer, moves more ReLU and max-pool
  // decisions of deep VGGs across their thresholds than the PyTorch parity tests allow.
  // PARCHGRAD_WINOGRAD=1 in the environment turns it on.
  bool winograd = winograd_from_environment();
  ag::Tape* tape = nullptr;
  ag::ConvHook* hook = nullptr;
  std::vector<float> workspace;
  float* scratch(size_t floats);
  // When set, the model stores the output of its last conv block here (Grad-CAM).
  bool capture_feature = false;
  ag::Var feature;
};

// The backward step of a one-input layer, for the CPU layers here and the device ones
// (nn/gpu/ops.cpp) alike: when the pass has a tape and x is on it, gives `out` a new tape id
// and records a step that takes out's gradient g (nothing to do when none reached it) and
// adds back(g) into x's gradient. back may return g itself, edited in place.
template <class Back>
void record_backward(Context& ctx, const ag::Var& x, ag::Var& out, Back back) {
  if (!ctx.tape || x.id < 0) return;
  const int in_id = x.id;
  out.id = ctx.tape->new_value();
  ctx.tape->record([in_id, out_id = out.id, back = std::move(back)](ag::Tape& tape) {
    Tensor g = tape.take(out_id);
    if (!g.empty()) tape.accumulate(in_id, back(std::move(g)));
  });
}

// The backward step of a two-input layer (se_scale), as record_backward: when the pass has a
// tape and a or b is on it, gives `out` a new tape id and records a step that takes out's
// gradient g (nothing to do when none reached it) and calls back(g, need_a, need_b), which
// returns {da, db} (each empty when not needed; da may be g itself); db is added into b's
// gradient, then da into a's.
template <class Back>
void record_backward2(Context& ctx, const ag::Var& a, const ag::Var& b, ag::Var& out, Back back) {
  if (!ctx.tape || (a.id < 0 && b.id < 0)) return;
  const int ia = a.id, ib = b.id;
  out.id = ctx.tape->new_value();
  ctx.tape->record([ia, ib, out_id = out.id, back = std::move(back)](ag::Tape& tape) {
    Tensor g = tape.take(out_id);
    if (g.empty()) return;
    std::pair<Tensor, Tensor> d = back(std::move(g), ia >= 0, ib >= 0);
    if (ib >= 0) tape.accumulate(ib, std::move(d.second));
    if (ia >= 0) tape.accumulate(ia, std::move(d.first));
  });
}


// A layer's weights on the devices, one copy per device index (nn/gpu/ops.cpp makes a copy at
// the layer's first use on a device, under the mutex), so that one model can serve several
// devices (`--gpu all`, C API models of one file on two GPUs). Copies are never removed.
template <class Copy>
struct PerDevice {
  std::mutex mu;
  std::map<int, std::unique_ptr<const Copy>> copies;
};

// Conv2d with an optional BatchNorm (inference form) folded in at load time.
class Conv2d {
 public:
  ag::ConvSite site;
  int in_channels = 0, out_channels = 0, kernel_h = 1, kernel_w = 1;
  int stride = 1, pad = 0, dilation = 1, groups = 1;
  Tensor weight;              // [K, C/groups, R, S], BN scale folded in
  Tensor bias;                // [K] or empty
  Tensor bn_scale, bn_shift;  // [K] or empty (no BN)
  // The Winograd-transformed weights (forward and data-gradient), made at first use and
  // shared by copies of the layer.
  struct WinogradWeights {
    std::once_flag fwd_once, dgrad_once;
    std::vector<float> fwd, dgrad;
  };
  std::shared_ptr<WinogradWeights> winograd = std::make_shared<WinogradWeights>();
  // Device copies of weight, bias and the BatchNorm scale/shift, one per device, made at the
  // layer's first use on that device.
  struct DeviceCopy {
    Tensor weight, bias, bn_scale, bn_shift;
  };
  using DeviceWeights = PerDevice<DeviceCopy>;
  std::shared_ptr<DeviceWeights> device = std::make_shared<DeviceWeights>();
  // False for a convolution that stands in for another module (ConvNeXt's nn.Linear layers on
  // the NHWC permute, run as 1x1 convs on NCHW): no hook sees it (ParchGrad, `stats`), and it
  // is in no model's convs().
  bool hookable = true;

  // Folds y = gamma * (x - mean) / sqrt(var + eps) + beta into weight and bias.
  void fold_batchnorm(const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                      const Tensor& var, double eps);
  // Points site.bn_scale/bn_shift at this layer's tensors (call once it is in place).
  void bind_site();
  kernels::Conv2dParams params(const std::vector<int64_t>& in_shape) const;
  ag::Var forward(Context& ctx, const ag::Var& x) const;
};

class Linear {
 public:
  Tensor weight;  // [out, in]
  Tensor bias;    // [out] or empty
  struct DeviceCopy {
    Tensor weight, bias;
  };
  using DeviceWeights = PerDevice<DeviceCopy>;
  std::shared_ptr<DeviceWeights> device = std::make_shared<DeviceWeights>();
  ag::Var forward(Context& ctx, const ag::Var& x) const;
};

// LayerNorm over the channels of an NCHW tensor at each (n, h, w) (ConvNeXt's LayerNorm2d, and
// its blocks' nn.LayerNorm over the last dimension of the NHWC permute: the same normalisation).
class LayerNorm2d {
 public:
  std::string name;  // torchvision's module name, for errors
  Tensor weight, bias;  // [C]
  double eps = 1e-6;
  struct DeviceCopy {
    Tensor weight, bias;
  };
  using DeviceWeights = PerDevice<DeviceCopy>;
  std::shared_ptr<DeviceWeights> device = std::make_shared<DeviceWeights>();
  kernels::LayerNormParams params(const Tensor& x) const;
  ag::Var forward(Context& ctx, const ag::Var& x) const;
};

struct MaxPool2d {
  int kernel = 2, stride = 2, pad = 0;
  bool ceil_mode = false;
  ag::Var forward(Context& ctx, const ag::Var& x) const;
};

// In place on x's tensor (which must not be needed elsewhere).
ag::Var relu(Context& ctx, ag::Var x);
// ReLU6 (MobileNetV2), in place likewise; the gradient passes where 0 < x < 6.
ag::Var relu6(Context& ctx, ag::Var x);
// Exact (erf) GELU (ConvNeXt): a new tensor.
ag::Var gelu(Context& ctx, const ag::Var& x);
ag::Var adaptive_avgpool(Context& ctx, const ag::Var& x, int out_h, int out_w);
ag::Var avgpool(Context& ctx, const ag::Var& x, int kernel, int stride, int pad,
                bool ceil_mode, bool count_include_pad);
// a + b, written into a's tensor.
ag::Var add(Context& ctx, ag::Var a, const ag::Var& b);
// a += b on their backend: the tape's gradient accumulation (ag::Tape's Add).
void add_gradients(Tensor& a, const Tensor& b);
ag::Var flatten(Context& ctx, const ag::Var& x);

// ---- EfficientNet and MobileNetV3 ---------------------------------------------------------
// SiLU, sigmoid, hardswish or hardsigmoid (kernels/cpu/activations.h): a new tensor of x's
// shape (any shape); the backward keeps x (y for sigmoid).
ag::Var activation(Context& ctx, kernels::Activation kind, const ag::Var& x);
// x [N, C, H, W] * s [N, C, 1, 1] (the squeeze-and-excitation product): a new tensor;
// gradients flow to both x and s.
ag::Var se_scale(Context& ctx, const ag::Var& x, const ag::Var& s);
// The kernels' shape of that product (N, K = C, HW); throws when s is not [N, C, 1, 1] for x.
kernels::SampleChannelScaleParams se_scale_params(const Tensor& x, const Tensor& s);

// torchvision's SqueezeExcitation (ops/misc.py): s = scale_act(fc2(act(fc1(avgpool(x))))),
// then x * s. fc1 and fc2 are 1x1 convs with bias (Conv2d modules: they count in a model's conv
// list, and their output is 1x1). EfficientNet: act SiLU, scale_act sigmoid; MobileNetV3: ReLU
// and hardsigmoid (hard = true).
struct SqueezeExcitation {
  Conv2d fc1, fc2;
  bool hard = false;
  ag::Var forward(Context& ctx, const ag::Var& x) const;
};

}  // namespace pg::nn
