// The device backend (nn/backend.h) of a build with one: every layer on device tensors by the
// project's kernels (kernels/cuda) or a library call (nn/gpu/runtime.h: cuDNN, cuBLAS), each
// recording its backward step on the same tape, ParchGrad's device reduction, the seed, the
// maps and the input normalisation. With PARCHGRAD_CUDA=SIM the same code runs on the host
// SIMT runtime (nn/gpu/runtime_simt.cpp).
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/cuda/activations.h"
#include "kernels/cuda/avgpool.h"
#include "kernels/cuda/channel_stats.h"
#include "kernels/cuda/conv_dgrad.h"
#include "kernels/cuda/depthwise_dgrad.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/maps.h"
#include "kernels/cuda/maxpool.h"
#include "kernels/cuda/preprocess.h"
#include "kernels/cuda/relu.h"
#include "kernels/cuda/seed.h"
#include "kernels/cuda/squeeze_excite.h"
#include "nn/backend.h"
#include "core/error.h"
#include "nn/gpu/runtime.h"
#include "nn/layers.h"

namespace pg::nn {
namespace dev {

namespace kcu = pg::kernels::cuda;

namespace {

cudaStream_t compute() { return gpu::stream(gpu::Stage::compute); }

// Untyped device memory owned like a tensor's storage.
std::shared_ptr<void> device_buffer(size_t bytes) {
  return std::shared_ptr<void>(gpu::alloc(bytes), [](void* p) { gpu::free(p); });
}

Tensor upload(const Tensor& host) { return host.empty() ? Tensor() : host.to(Device::cuda); }

// The layer's weights on the calling thread's device, uploaded at its first use there.
template <class Copy, class Make>
const Copy& on_this_device(PerDevice<Copy>& d, Make make) {
  const int dev = gpu::current_device();
  std::lock_guard<std::mutex> lock(d.mu);
  auto& slot = d.copies[dev];
  if (!slot) slot = std::make_unique<const Copy>(make());
  return *slot;
}

const Conv2d::DeviceCopy& device_weights(const Conv2d& conv) {
  return on_this_device(*conv.device, [&] {
    return Conv2d::DeviceCopy{upload(conv.weight), upload(conv.bias), upload(conv.bn_scale), upload(conv.bn_shift)};
  });
}

const LayerNorm2d::DeviceCopy& device_weights(const LayerNorm2d& ln) {
  return on_this_device(*ln.device, [&] { return LayerNorm2d::DeviceCopy{upload(ln.weight), upload(ln.bias)}; });
}

const Linear::DeviceCopy& device_weights(const Linear& lin) {
  return on_this_device(*lin.device, [&] { return Linear::DeviceCopy{upload(lin.weight), upload(lin.bias)}; });
}

// Library calls (cuDNN, cuBLAS) choose their algorithm, tiling and reduction split from the
// whole call's shape, so a sample's bits can depend on how many samples share the call. With
// --deterministic every library call is made one sample at a time, always with the shape of
// one sample, so that a sample's result depends on nothing but the sample: batch invariance.
// The project's own kernels need no such loop: their tiles never span two samples and their
// reductions run in a fixed order.
bool per_sample_calls(bool deterministic, int N) { return deterministic && N > 1; }

// Runs call(x_n, y_n) for every sample n, where sample n's input has xs floats and its output
// ys. Every call sees its operands aligned as the start of a batch is (256 bytes): a library
// may choose its kernel by the pointers' alignment, so a sample that starts at an odd offset
// goes through aligned buffers.
template <class F>
void each_sample(int N, const float* x, int64_t xs, float* y, int64_t ys, F call) {
  if (xs % 64 == 0 && ys % 64 == 0) {
    for (int n = 0; n < N; ++n) call(x + n * xs, y + n * ys);
    return;
  }
  auto bx = device_buffer(size_t(xs) * sizeof(float)), by = device_buffer(size_t(ys) * sizeof(float));
  float* ax = static_cast<float*>(bx.get());
  float* ay = static_cast<float*>(by.get());
  for (int n = 0; n < N; ++n) {
    gpu::copy(ax, x + n * xs, size_t(xs) * sizeof(float));
    call(ax, ay);
    gpu::copy(y + n * ys, ay, size_t(ys) * sizeof(float));
  }
}

void lib_conv_forward(bool det, const kernels::Conv2dParams& p, const float* x, const float* w, float* y) {
  if (!per_sample_calls(det, p.N)) return gpu::conv_forward(p, x, w, y);
  kernels::Conv2dParams one = p;
  one.N = 1;
  each_sample(p.N, x, int64_t(p.C) * p.in_plane(), y, int64_t(p.K) * p.out_plane(),
              [&](const float* xn, float* yn) { gpu::conv_forward(one, xn, w, yn); });
}

void lib_conv_backward_data(bool det, const kernels::Conv2dParams& p, const float* dy, const float* w, float* dx) {
  if (!per_sample_calls(det, p.N)) return gpu::conv_backward_data(p, dy, w, dx);
  kernels::Conv2dParams one = p;
  one.N = 1;
  each_sample(p.N, dy, int64_t(p.K) * p.out_plane(), dx, int64_t(p.C) * p.in_plane(),
              [&](const float* dyn, float* dxn) { gpu::conv_backward_data(one, dyn, w, dxn); });
}

void lib_linear_forward(bool det, int N, int in, int out, const float* x, const float* w, const float* b, float* y) {
  if (!per_sample_calls(det, N)) return gpu::linear_forward(N, in, out, x, w, b, y);
  each_sample(N, x, in, y, out, [&](const float* xn, float* yn) { gpu::linear_forward(1, in, out, xn, w, b, yn); });
}

void lib_linear_backward(bool det, int N, int in, int out, const float* dy, const float* w, float* dx) {
  if (!per_sample_calls(det, N)) return gpu::linear_backward(N, in, out, dy, w, dx);
  each_sample(N, dy, out, dx, in, [&](const float* dyn, float* dxn) { gpu::linear_backward(1, in, out, dyn, w, dxn); });
}

void require_device(const Tensor& t, const char* what) {
  if (!t.is_cuda()) throw Error(std::string("internal error: ") + what + " got a host tensor on the device path");
}

}  // namespace

class GpuBackend final : public DeviceBackend {
 public:
  const char* name() const override { return "cuda"; }
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
  std::shared_ptr<float> allocate(int64_t n) override {
    void* p = gpu::alloc(static_cast<size_t>(n) * sizeof(float));
    return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { gpu::free(q); });
  }
  void copy(float* dst, const float* src, size_t bytes) override { gpu::copy(dst, src, bytes); }
  void zero(float* dst, size_t bytes) override { gpu::zero(dst, bytes); }

  void configure(const DeviceOptions& opt, int device_index) override {
    gpu::init(device_index);
    gpu::LibrarySettings s;
    s.deterministic = opt.deterministic;
    s.tensor_math = opt.precision != kernels::ConvPrecision::fp32;
    gpu::set_library_settings(s);
  }
  int device_count() const override { return gpu::device_count(); }
  std::string description() const override { return gpu::initialized() ? gpu::device_description() : ""; }
  const char* runtime_name() const override { return gpu::backend_name(); }
  void upload(float* dst, const float* src, size_t bytes) override { gpu::upload(dst, src, bytes); }
  void download(float* dst, const float* src, size_t bytes) override { gpu::download(dst, src, bytes); }
  Tensor probability_seed(const Tensor& logits, const std::vector<int>& targets, Tensor* probs) override;
  Tensor channel_map(const Tensor& g, const Tensor* x, MapKind kind) override;
  Tensor normalize_u8(const uint8_t* rgb, int N, int H, int W, const float mean[3], const float std[3]) override;

 private:
  ag::Var relu_like(Context& ctx, ag::Var x, bool six);
};

ag::Var GpuBackend::conv2d(Context& ctx, const Conv2d& conv, const ag::Var& x) {
  require_device(x.value, "conv2d");
  const kernels::Conv2dParams p = conv.params(x.value.shape());
  const Conv2d::DeviceCopy& dw = device_weights(conv);
  Tensor y({p.N, p.K, p.P, p.Q}, Device::cuda);
  lib_conv_forward(ctx.device_options.deterministic, p, x.value.dptr(), dw.weight.dptr(), y.dptr());
  if (!dw.bias.empty()) {
    kernels::ChannelAffineParams ap;
    ap.N = p.N;
    ap.C = p.K;
    ap.HW = p.out_plane();
    kcu::launch_channel_affine(ap, y.dptr(), nullptr, dw.bias.dptr(), compute());
  }
  const bool hooked = conv.hookable && ctx.hook && ctx.hook->hooks(conv.site);
  if (hooked) {
    // The forward statistic of the raw conv output, from the output just written.
    Tensor gap({p.N, p.K}, Device::cuda);
    kernels::ChannelGapParams gp;
    gp.N = p.N;
    gp.C = p.K;
    gp.HW = p.out_plane();
    kcu::launch_channel_gap(gp, y.dptr(), dw.bn_scale.empty() ? nullptr : dw.bn_scale.dptr(),
                            dw.bn_shift.empty() ? nullptr : dw.bn_shift.dptr(), gap.dptr(), compute());
    ctx.hook->on_forward(conv.site, gap.to(Device::cpu));
  }
  ag::Var out{y, -1};
  Context* c = &ctx;
  const Conv2d* cv = &conv;
  const DeviceOptions opt = ctx.device_options;
  record_backward(ctx, x, out, [cv, p, hooked, c, opt](Tensor g) {
    Tensor scale;
    if (hooked) scale = c->hook->on_backward(cv->site, g);
    if (!scale.empty() && scale.numel() != int64_t(p.N) * p.K)
      throw Error(cv->site.name + ": hook returned a scale of shape " + scale.shape_str());
    const Tensor scale_dev = scale.empty() ? Tensor() : scale.to(Device::cuda);
    const float* s = scale_dev.empty() ? nullptr : scale_dev.dptr();
    const Conv2d::DeviceCopy& dw = device_weights(*cv);
    Tensor dx({p.N, p.C, p.H, p.W}, Device::cuda);
    if (!opt.dgrad_library && kcu::depthwise_dgrad_supported(p)) {
      // Depthwise (MobileNetV2): the project's gather kernel with the scale fused, float32
      // whatever the precision.
      kcu::launch_depthwise_dgrad(p, g.dptr(), dw.weight.dptr(), s, dx.dptr(), compute());
    } else if (opt.dgrad_library || !kcu::conv_dgrad_supported(p)) {
      if (s) {
        kernels::SampleChannelScaleParams sp;
        sp.N = p.N;
        sp.K = p.K;
        sp.HW = p.out_plane();
        kcu::launch_sample_channel_scale(sp, g.dptr(), s, g.dptr(), compute());
      }
      lib_conv_backward_data(opt.deterministic, p, g.dptr(), dw.weight.dptr(), dx.dptr());
    } else {
      auto ws = device_buffer(kcu::conv_dgrad_workspace_bytes(p));
      kcu::launch_conv_dgrad(p, opt.precision, g.dptr(), dw.weight.dptr(), s, dx.dptr(), ws.get(),
                             compute());
    }
    return dx;
  });
  return out;
}

ag::Var GpuBackend::linear(Context& ctx, const Linear& lin, const ag::Var& x) {
  require_device(x.value, "linear");
  const int N = int(x.value.dim(0)), in = int(lin.weight.dim(1)), outf = int(lin.weight.dim(0));
  if (x.value.ndim() != 2 || x.value.dim(1) != in)
    throw Error("linear: input " + x.value.shape_str() + " does not match weight " + lin.weight.shape_str());
  const Linear::DeviceCopy& dw = device_weights(lin);
  Tensor y({N, outf}, Device::cuda);
  lib_linear_forward(ctx.device_options.deterministic, N, in, outf, x.value.dptr(), dw.weight.dptr(), dw.bias.empty() ? nullptr : dw.bias.dptr(),
                      y.dptr());
  ag::Var out{y, -1};
  const Linear* l = &lin;
  const bool det = ctx.device_options.deterministic;
  record_backward(ctx, x, out, [l, N, in, outf, det](Tensor g) {
    Tensor dx({N, in}, Device::cuda);
    lib_linear_backward(det, N, in, outf, g.dptr(), device_weights(*l).weight.dptr(), dx.dptr());
    return dx;
  });
  return out;
}

ag::Var GpuBackend::maxpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x) {
  require_device(x.value, "maxpool");
  Tensor y({p.N, p.C, p.P, p.Q}, Device::cuda);
  const bool record = ctx.tape && x.id >= 0;
  std::shared_ptr<void> argmax;
  if (record) argmax = device_buffer(size_t(y.numel()) * sizeof(int32_t));
  kcu::launch_maxpool_forward(p, x.value.dptr(), y.dptr(), record ? static_cast<int32_t*>(argmax.get()) : nullptr,
                              compute());
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [p, argmax](Tensor g) {
    Tensor dx({p.N, p.C, p.H, p.W}, Device::cuda);
    kcu::launch_maxpool_backward(p, g.dptr(), static_cast<const int32_t*>(argmax.get()), dx.dptr(), compute());
    return dx;
  });
  return out;
}

ag::Var GpuBackend::relu(Context& ctx, ag::Var x) { return relu_like(ctx, std::move(x), false); }
ag::Var GpuBackend::relu6(Context& ctx, ag::Var x) { return relu_like(ctx, std::move(x), true); }

// ReLU or ReLU6 in place: the same 1-bit mask and backward.
ag::Var GpuBackend::relu_like(Context& ctx, ag::Var x, bool six) {
  require_device(x.value, six ? "relu6" : "relu");
  kcu::ReluParams rp;
  rp.n = x.value.numel();
  const bool record = ctx.tape && x.id >= 0;
  std::shared_ptr<void> mask;
  if (record) mask = device_buffer(size_t(kcu::relu_mask_words32(rp.n)) * sizeof(uint32_t));
  (six ? kcu::launch_relu6_forward : kcu::launch_relu_forward)(
      rp, x.value.dptr(), x.value.dptr(), record ? static_cast<uint32_t*>(mask.get()) : nullptr, compute());
  ag::Var out{x.value, -1};  // in place
  record_backward(ctx, x, out, [mask, rp](Tensor g) {
    kcu::launch_relu_backward(rp, g.dptr(), static_cast<const uint32_t*>(mask.get()), g.dptr(), compute());
    return g;
  });
  return out;
}

ag::Var GpuBackend::avgpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x) {
  require_device(x.value, "avgpool");
  Tensor y({p.N, p.C, p.P, p.Q}, Device::cuda);
  kcu::launch_avgpool_forward(p, x.value.dptr(), y.dptr(), compute());
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [p](Tensor g) {
    Tensor dx({p.N, p.C, p.H, p.W}, Device::cuda);
    kcu::launch_avgpool_backward(p, g.dptr(), dx.dptr(), compute());
    return dx;
  });
  return out;
}

ag::Var GpuBackend::adaptive_avgpool(Context& ctx, const ag::Var& x, int P, int Q) {
  require_device(x.value, "adaptive_avgpool");
  const auto s = x.value.shape();
  kcu::AdaptivePoolParams ap;
  ap.NC = int(s[0] * s[1]);
  ap.H = int(s[2]);
  ap.W = int(s[3]);
  ap.P = P;
  ap.Q = Q;
  Tensor y({s[0], s[1], P, Q}, Device::cuda);
  kcu::launch_adaptive_avgpool_forward(ap, x.value.dptr(), y.dptr(), compute());
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [s, ap](Tensor g) {
    Tensor dx(s, Device::cuda);
    kcu::launch_adaptive_avgpool_backward(ap, g.dptr(), dx.dptr(), compute());
    return dx;
  });
  return out;
}

// ConvNeXt's LayerNorm over channels (the project's kernel, the CPU twin's bits): the backward
// recomputes the statistics from x, kept by reference.
ag::Var GpuBackend::layernorm(Context& ctx, const LayerNorm2d& ln, const ag::Var& x) {
  require_device(x.value, "layernorm");
  const kernels::LayerNormParams p = ln.params(x.value);
  const LayerNorm2d::DeviceCopy& dw = device_weights(ln);
  Tensor y(x.value.shape(), Device::cuda);
  kcu::launch_layernorm_forward(p, x.value.dptr(), dw.weight.dptr(), dw.bias.dptr(), y.dptr(), compute());
  ag::Var out{y, -1};
  const LayerNorm2d* l = &ln;
  record_backward(ctx, x, out, [l, p, xv = x.value](Tensor g) {
    kcu::launch_layernorm_backward(p, xv.dptr(), device_weights(*l).weight.dptr(), g.dptr(), g.dptr(), compute());
    return g;
  });
  return out;
}

ag::Var GpuBackend::gelu(Context& ctx, const ag::Var& x) {
  require_device(x.value, "gelu");
  kernels::GeluParams p;
  p.n = x.value.numel();
  Tensor y(x.value.shape(), Device::cuda);
  kcu::launch_gelu_forward(p, x.value.dptr(), y.dptr(), compute());
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [p, xv = x.value](Tensor g) {
    kcu::launch_gelu_backward(p, xv.dptr(), g.dptr(), g.dptr(), compute());
    return g;
  });
  return out;
}

// SiLU, sigmoid, hardswish, hardsigmoid: a new tensor; the backward reads x, or y for sigmoid.
ag::Var GpuBackend::activation(Context& ctx, kernels::Activation kind, const ag::Var& x) {
  require_device(x.value, "activation");
  kernels::ActivationParams ap;
  ap.kind = kind;
  ap.n = x.value.numel();
  Tensor y(x.value.shape(), Device::cuda);
  kcu::launch_activation_forward(ap, x.value.dptr(), y.dptr(), compute());
  ag::Var out{y, -1};
  record_backward(ctx, x, out, [ap, saved = kernels::activation_saves_output(kind) ? y : x.value](Tensor g) {
    kcu::launch_activation_backward(ap, saved.dptr(), g.dptr(), g.dptr(), compute());
    return g;
  });
  return out;
}

// The squeeze-and-excitation product; the backward keeps s only for x's gradient and x only
// for s's.
ag::Var GpuBackend::se_scale(Context& ctx, const ag::Var& x, const ag::Var& s) {
  require_device(x.value, "se_scale");
  require_device(s.value, "se_scale");
  const kernels::SampleChannelScaleParams p = se_scale_params(x.value, s.value);
  Tensor y(x.value.shape(), Device::cuda);
  kcu::launch_se_scale_forward(p, x.value.dptr(), s.value.dptr(), y.dptr(), compute());
  ag::Var out{y, -1};
  record_backward2(ctx, x, s, out,
                   [p, xv = s.id >= 0 ? x.value : Tensor(), sv = x.id >= 0 ? s.value : Tensor(),
                    s_shape = s.value.shape()](Tensor g, bool need_dx, bool need_ds) {
                     Tensor ds = need_ds ? Tensor(s_shape, Device::cuda) : Tensor();
                     kcu::launch_se_scale_backward(p, g.dptr(), need_ds ? xv.dptr() : nullptr,
                                                   need_dx ? sv.dptr() : nullptr, need_dx ? g.dptr() : nullptr,
                                                   need_ds ? ds.dptr() : nullptr, compute());
                     return std::make_pair(need_dx ? std::move(g) : Tensor(), std::move(ds));
                   });
  return out;
}

void GpuBackend::add_inplace(Tensor& a, const Tensor& b) {
  require_device(a, "add_inplace");
  require_device(b, "add_inplace");
  kcu::launch_add(a.numel(), a.dptr(), b.dptr(), a.dptr(), compute());
}

void GpuBackend::spatial_variances(const Tensor& g, const float* bn_scale, const std::vector<uint8_t>& select,
                       std::vector<double>& M, std::vector<double>& Nv) {
  require_device(g, "spatial_variances");
  kernels::SpatialVarianceParams sp;
  sp.N = int(g.dim(0));
  sp.C = int(g.dim(1));
  sp.HW = g.dim(2) * g.dim(3);
  if (select.size() != size_t(sp.N) * sp.C) throw Error("internal error: spatial_variances: selection size");
  auto sel = device_buffer(select.size());
  gpu::upload(sel.get(), select.data(), select.size());
  std::shared_ptr<void> scale;
  if (bn_scale) {
    scale = device_buffer(size_t(sp.C) * sizeof(float));
    gpu::upload(scale.get(), bn_scale, size_t(sp.C) * sizeof(float));
  }
  auto out = device_buffer(2 * size_t(sp.N) * sizeof(double));
  auto ws = device_buffer(kcu::spatial_variance_workspace_bytes(sp));
  double* dM = static_cast<double*>(out.get());
  kcu::launch_spatial_variances(sp, g.dptr(), static_cast<const float*>(scale.get()),
                                static_cast<const uint8_t*>(sel.get()), dM, dM + sp.N, ws.get(), compute());
  std::vector<double> host(2 * size_t(sp.N));
  gpu::download(host.data(), dM, host.size() * sizeof(double));
  M.assign(host.begin(), host.begin() + sp.N);
  Nv.assign(host.begin() + sp.N, host.end());
}

Tensor GpuBackend::probability_seed(const Tensor& logits, const std::vector<int>& targets, Tensor* probs) {
  require_device(logits, "probability_seed");
  kernels::SeedParams sp;
  sp.N = int(logits.dim(0));
  sp.K = int(logits.dim(1));
  if (targets.size() != size_t(sp.N)) throw Error("internal error: probability_seed: target count");
  std::vector<int32_t> t(targets.begin(), targets.end());
  auto td = device_buffer(t.size() * sizeof(int32_t));
  gpu::upload(td.get(), t.data(), t.size() * sizeof(int32_t));
  Tensor seed({sp.N, sp.K}, Device::cuda);
  Tensor p({sp.N, sp.K}, Device::cuda);
  kcu::launch_probability_seed(sp, logits.dptr(), static_cast<const int32_t*>(td.get()), p.dptr(), seed.dptr(),
                               compute());
  if (probs) *probs = p.to(Device::cpu);
  return seed;
}

Tensor GpuBackend::normalize_u8(const uint8_t* rgb, int N, int H, int W, const float mean[3], const float std[3]) {
  const size_t bytes = size_t(N) * H * W * 3;
  auto u8 = device_buffer(bytes);
  gpu::upload(u8.get(), rgb, bytes);
  Tensor x({N, 3, H, W}, Device::cuda);
  kernels::NormalizeParams np;
  np.N = N;
  np.H = H;
  np.W = W;
  for (int c = 0; c < 3; ++c) {
    np.mean[c] = mean[c];
    np.std[c] = std[c];
  }
  kcu::launch_normalize_u8(np, static_cast<const uint8_t*>(u8.get()), x.dptr(), compute());
  return x;
}

Tensor GpuBackend::channel_map(const Tensor& g, const Tensor* x, MapKind kind) {
  require_device(g, "channel_map");
  kernels::ChannelMapParams mp;
  mp.N = int(g.dim(0));
  mp.C = int(g.dim(1));
  mp.HW = g.dim(2) * g.dim(3);
  mp.kind = kind == MapKind::grad           ? kernels::MapKind::abs_grad
            : kind == MapKind::input_x_grad ? kernels::MapKind::abs_input_x_grad
                                            : kernels::MapKind::abs_mean_input_x_grad;
  if (kind != MapKind::grad) {
    if (!x || x->shape() != g.shape()) throw Error("internal error: channel_map needs the input");
    require_device(*x, "channel_map");
  }
  Tensor m({g.dim(0), g.dim(2), g.dim(3)}, Device::cuda);
  kcu::launch_channel_map(mp, g.dptr(), x ? x->dptr() : nullptr, m.dptr(), compute());
  return m.to(Device::cpu);
}

}  // namespace dev

DeviceBackend& detail::this_builds_device() {
  static dev::GpuBackend instance;
  return instance;
}

}  // namespace pg::nn
