// The device side of the dispatch layer: the layers of nn/layers.h on tensors that live on
// the device, each a kernel of kernels/cuda (or a library call of nn/gpu/runtime.h) that
// records its backward step on the tape like the CPU layers do. nn/layers.cpp sends a layer
// here when its input is a device tensor. Compiled only in builds with a device backend
// (PARCHGRAD_GPU).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "kernels/cuda/conv_dgrad.h"
#include "kernels/params.h"
#include "nn/layers.h"

namespace pg::nn::dev {

// Settings of the device path (the command line's --precision, --dgrad, --deterministic).
struct DeviceOptions {
  // Operands of the data-gradient convolution; tf32/bf16 also let the library's forward
  // convolutions use TF32 tensor-core math.
  kernels::cuda::ConvPrecision precision = kernels::cuda::ConvPrecision::fp32;
  // The data-gradient by cuDNN plus a separate scale kernel instead of the project's kernel
  // (the oracle and baseline).
  bool dgrad_library = false;
  // Only bitwise-reproducible library algorithms (the project's kernels always are).
  bool deterministic = false;
};
// Initialises the runtime (gpu::init) and applies the options. Not thread-safe.
void configure(const DeviceOptions& opt, int device_index = 0);
const DeviceOptions& options();

ag::Var conv2d(Context& ctx, const Conv2d& conv, const ag::Var& x);
ag::Var linear(Context& ctx, const Linear& lin, const ag::Var& x);
ag::Var maxpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x);
ag::Var relu(Context& ctx, ag::Var x);
ag::Var avgpool(Context& ctx, const kernels::Pool2dParams& p, const ag::Var& x);
ag::Var adaptive_avgpool(Context& ctx, const ag::Var& x, int P, int Q);

// a += b (device tensors of equal size): the residual add (nn::add records its backward) and
// the tape's gradient accumulation.
void add_inplace(Tensor& a, const Tensor& b);

// ParchGrad's fused reduction on a device gradient g [N, C, H, W] (dL/dy of the conv):
// M[n], Nv[n] as kernels/cuda/channel_stats.h's launch_spatial_variances, with the raw
// gradient scale bn_scale (host pointer, [C], or nullptr) and select[n*C + c] != 0 for c in H.
void spatial_variances(const Tensor& g, const float* bn_scale, const std::vector<uint8_t>& select,
                       std::vector<double>& M, std::vector<double>& Nv);

// The probability seed on the device: from device logits [N, K] and host targets, returns
// the device seed [N, K] and writes the host probabilities [N, K] into *probs.
Tensor probability_seed(const Tensor& logits, const std::vector<int>& targets, Tensor* probs);

// Images decoded on the host, uint8 RGB interleaved [N, H, W, 3], normalised on the device as
// torchvision does (kernels/cuda/preprocess.h): the device tensor [N, 3, H, W]. A quarter of
// the bytes of the float tensor cross the bus.
Tensor normalize_u8(const uint8_t* rgb, int N, int H, int W);

// Saliency map reductions over RGB on the device (kernels/cuda/maps.h): g [N, C, H, W] and,
// for the input-times-gradient kinds, x of the same shape; returns the host map [N, H, W].
enum class MapKind { grad, input_x_grad, ig };
Tensor channel_map(const Tensor& g, const Tensor* x, MapKind kind);

}  // namespace pg::nn::dev
