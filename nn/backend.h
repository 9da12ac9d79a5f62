// The one seam between the engine and where it runs. Every layer, the tape and the methods of
// parchgrad/ ask the backend of their tensors' device (`backend(device)`) for the work that
// depends on it; nothing above this header tests the build for a device (`#if`).
//
//   CpuBackend      nn/cpu_backend.cpp: the kernels of kernels/cpu (always present)
//   the device      nn/gpu/ops.cpp: the CUDA kernels of kernels/cuda with cuDNN and cuBLAS, or
//                   the same sources on the host SIMT runtime (PARCHGRAD_CUDA=SIM);
//                   nn/no_device.cpp in a build without one: every call fails with one clear
//                   error ("this build of parchgrad has no CUDA backend ...")
// Which device implementation is linked is decided when the project is configured; which
// backend a tensor uses is decided at run time by the tensor's device.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "kernels/params.h"
#include "core/memory.h"
#include "core/tensor.h"

namespace pg::nn {

struct Context;
class Conv2d;
class Linear;
class LayerNorm2d;

// Settings of the device path (--precision, --dgrad, --deterministic), carried through the
// call chain by nn::Context.
struct DeviceOptions {
  // Operands of the data-gradient convolution; tf32/bf16 also let the library's forward
  // convolutions use TF32 tensor-core math.
  kernels::ConvPrecision precision = kernels::ConvPrecision::fp32;
  // The data-gradient by cuDNN plus a separate scale kernel instead of the project's kernel
  // (the oracle and baseline).
  bool dgrad_library = false;
  // Only bitwise-reproducible library algorithms, each library call one sample at a time
  // (batch invariance; the project's kernels always are).
  bool deterministic = false;
};

// Saliency-map reductions over RGB.
enum class MapKind { grad, input_x_grad, ig };

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- layers: compute the output and, when ctx has a tape, record the backward step ----
  virtual ag::Var conv2d(Context& ctx, const Conv2d& conv, const ag::Var& x) = 0;
  virtual ag::Var linear(Context& ctx, const Linear& lin, const ag::Var& x) = 0;
  virtual ag::Var maxpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x) = 0;
  virtual ag::Var relu(Context& ctx, ag::Var x) = 0;  // in place
  virtual ag::Var relu6(Context& ctx, ag::Var x) = 0;  // in place; min(max(x, 0), 6)
  virtual ag::Var avgpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x) = 0;
  virtual ag::Var adaptive_avgpool(Context& ctx, const ag::Var& x, int P, int Q) = 0;
  // ConvNeXt: LayerNorm over the channels at each (n, h, w) of an NCHW tensor (a new tensor),
  // and exact (erf) GELU (a new tensor; x is kept for the backward).
  virtual ag::Var layernorm(Context& ctx, const LayerNorm2d& ln, const ag::Var& x) = 0;
  virtual ag::Var gelu(Context& ctx, const ag::Var& x) = 0;
  // EfficientNet and MobileNetV3 (kernels/cpu/activations.h, squeeze_excite.h): SiLU, sigmoid,
  // hardswish or hardsigmoid into a new tensor (the tape keeps x, or y for sigmoid); the
  // squeeze-and-excitation product x [N, C, H, W] * s [N, C, 1, 1] into a new tensor, its
  // backward giving both x (g * s) and s (the sum over H, W of g * x) their gradients (the
  // tape keeps s for x's and x for s's).
  virtual ag::Var activation(Context& ctx, kernels::Activation kind, const ag::Var& x) = 0;
  virtual ag::Var se_scale(Context& ctx, const ag::Var& x, const ag::Var& s) = 0;
  // a += b (tensors of equal size): the residual add and the tape's gradient accumulation.
  virtual void add_inplace(Tensor& a, const Tensor& b) = 0;

  // ---- ParchGrad ----------------------------------------------------------------------
  // The fused reduction of the method's section 4 on a conv's output gradient g [N, C, H, W]:
  // per sample, M[n] and Nv[n], the unbiased spatial variances (+1e-7) of the channel sums over
  // H (select[n*C + c] != 0) and over the rest, each channel scaled by bn_scale[c] (a host
  // pointer, [C], or nullptr) (kernels/cpu/channel_stats.h, the twin of the CUDA kernel).
  virtual void spatial_variances(const Tensor& g, const float* bn_scale, const std::vector<uint8_t>& select,
                                 std::vector<double>& M, std::vector<double>& Nv) = 0;
};

// The device of this build. Beyond Backend: setting it up, the device's memory (allocation
// and host<->device transfers, core/memory.h: installed as the ground floor's device memory by
// device_backend()), and the steps of the attribution that run on the device without a host
// round trip.
class DeviceBackend : public Backend, public DeviceMemory {
 public:
  // Selects the device (an index into the visible ones) and applies the options. Throws with
  // the runtime's reason when no device can be used.
  virtual void configure(const DeviceOptions& opt, int device_index) = 0;
  // How many devices the runtime sees (after CUDA_VISIBLE_DEVICES; 0 when none can be used).
  // Needs no configure: the command line picks a task's device from it (tools/cli/shard.h).
  virtual int device_count() const = 0;
  // E.g. "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB), driver 13.0, ..."; "" before configure.
  virtual std::string description() const = 0;
  // "cuda", "simt" or "none".
  virtual const char* runtime_name() const = 0;
  // The probability seed from device logits [N, K] and host targets: the device seed [N, K];
  // the host probabilities [N, K] into *probs when probs is not null.
  virtual Tensor probability_seed(const Tensor& logits, const std::vector<int>& targets, Tensor* probs) = 0;
  // Map reductions of a device gradient g [N, C, H, W] (x of the same shape for the
  // input-times-gradient kinds): the host map [N, H, W].
  virtual Tensor channel_map(const Tensor& g, const Tensor* x, MapKind kind) = 0;
  // uint8 RGB interleaved [N, H, W, 3] decoded on the host, normalised on the device as
  // torchvision does (x / 255 - mean[c]) / std[c], with the preprocessing's mean and std: the
  // device tensor [N, 3, H, W].
  virtual Tensor normalize_u8(const uint8_t* rgb, int N, int H, int W, const float mean[3], const float std[3]) = 0;
};

// The backend of a device: the CPU's, or this build's device.
Backend& backend(Device d);
// This build's device backend; the first call installs its memory as the ground floor's device
// memory (core/memory.h), so that device tensors can be made.
DeviceBackend& device_backend();

namespace detail {
// The one instance of this build's device backend: nn/gpu/ops.cpp or nn/no_device.cpp.
DeviceBackend& this_builds_device();
}  // namespace detail

}  // namespace pg::nn
