// Typed parameter structs shared by every backend (kernels/cpu and kernels/cuda): the
// CUDA kernels and their CPU twins take the same structs, and nothing here knows either.
// Shapes are NCHW; a conv's weight is [K, C/groups, R, S].
#pragma once
#include <cstdint>
#include <string>

namespace pg::kernels {

struct Conv2dParams {
  int N = 0, C = 0, H = 0, W = 0;  // input
  int K = 0, R = 0, S = 0;         // output channels, kernel height/width
  int P = 0, Q = 0;                // output height/width
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int dil_h = 1, dil_w = 1;
  int groups = 1;

  int Cg() const { return C / groups; }
  int Kg() const { return K / groups; }
  int64_t in_plane() const { return int64_t(H) * W; }
  int64_t out_plane() const { return int64_t(P) * Q; }
  // True when the conv is a plain matrix product over pixels (1x1, stride 1, no pad).
  bool is_pointwise() const {
    return R == 1 && S == 1 && stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }
};

// Fills P and Q; returns false if the output would be empty.
inline bool conv2d_output_size(Conv2dParams& p) {
  p.P = (p.H + 2 * p.pad_h - p.dil_h * (p.R - 1) - 1) / p.stride_h + 1;
  p.Q = (p.W + 2 * p.pad_w - p.dil_w * (p.S - 1) - 1) / p.stride_w + 1;
  return p.H + 2 * p.pad_h >= p.dil_h * (p.R - 1) + 1 && p.W + 2 * p.pad_w >= p.dil_w * (p.S - 1) + 1;
}

struct Pool2dParams {
  int N = 0, C = 0, H = 0, W = 0;
  int P = 0, Q = 0;
  int kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // average pooling only
};

// PyTorch's pooling output size (floor or ceil mode; in ceil mode the last window must
// start inside the input or left padding).
inline bool pool2d_output_size(Pool2dParams& p) {
  auto out = [&](int in, int k, int s, int pad) {
    int num = in + 2 * pad - k;
    if (num < 0) return 0;
    int o = (p.ceil_mode ? (num + s - 1) / s : num / s) + 1;
    if (p.ceil_mode && (o - 1) * s >= in + pad) --o;
    return o;
  };
  p.P = out(p.H, p.kh, p.stride_h, p.pad_h);
  p.Q = out(p.W, p.kw, p.stride_w, p.pad_w);
  return p.P > 0 && p.Q > 0;
}

// ---- channel statistics (kernels/cuda/channel_stats.h, kernels/cpu/channel_stats.h) ----
struct ChannelGapParams {
  int N = 0, C = 0;  // samples, channels
  int64_t HW = 0;    // spatial positions per plane (> 0)
};
struct SpatialVarianceParams {
  int N = 0, C = 0;  // samples, channels
  int64_t HW = 0;    // spatial positions per plane (> 0)
};
struct ClassMomentsParams {
  int N = 0;        // samples in the batch
  int C = 0;        // channels
  int classes = 0;  // number of classes
};
// Running moments of one (class, channel): count, mean and sum of squared deviations.
struct ClassMoment {
  double count = 0, mean = 0, m2 = 0;
};

// ---- elementwise passes (kernels/cuda/elementwise.h, kernels/cpu/elementwise.h) ----
struct ChannelAffineParams {
  int N = 0, C = 0;  // samples, channels
  int64_t HW = 0;    // elements per (n, c) plane
};
struct SampleChannelScaleParams {
  int N = 0, K = 0;  // samples, channels
  int64_t HW = 0;    // elements per (n, k) plane
};

// ---- saliency-map reductions over channels (kernels/cuda/maps.h, kernels/cpu/maps.h) ----
enum class MapKind { abs_grad, abs_input_x_grad, abs_mean_input_x_grad };
struct ChannelMapParams {
  int N = 0, C = 0;  // samples, channels (C > 0)
  int64_t HW = 0;    // positions per plane
  MapKind kind = MapKind::abs_grad;
};

// ---- input normalisation (kernels/cuda/preprocess.h, kernels/cpu/preprocess.h) ----
struct NormalizeParams {
  int N = 0, H = 0, W = 0;  // images, rows, columns
  float mean[3] = {0.485f, 0.456f, 0.406f};  // ImageNet's, per RGB channel
  float std[3] = {0.229f, 0.224f, 0.225f};
};

// ---- probability seed (kernels/cuda/seed.h, kernels/cpu/seed.h) ----
struct SeedParams {
  int N = 0, K = 0;  // rows (samples), classes
};

// ---- LayerNorm over channels and exact GELU (kernels/cuda/layernorm.h, kernels/cuda/gelu.h,
// kernels/cpu/layernorm.h, kernels/cpu/gelu.h; ConvNeXt) ----
struct LayerNormParams {
  int N = 0, C = 0;     // samples, channels (the normalised dimension)
  int64_t HW = 0;       // positions per (n, c) plane; each (n, position) is normalised on its own
  double eps = 1e-6;    // added to the biased variance
};
struct GeluParams {
  int64_t n = 0;  // elements
};

// ---- activations of EfficientNet and MobileNetV3 (kernels/cpu/activations.h,
// kernels/cuda/activations.h) ----
enum class Activation { silu, sigmoid, hardswish, hardsigmoid };
// Whether the backward reads the output y (sigmoid) rather than the input x (the others).
inline bool activation_saves_output(Activation a) { return a == Activation::sigmoid; }
struct ActivationParams {
  Activation kind = Activation::silu;
  int64_t n = 0;  // elements
};

// ---- precision of the device convolutions ----
// Operand precision of the data-gradient GEMM (--precision fp32|tf32|bf16). Accumulation is
// float32 in all three.
enum class ConvPrecision { fp32, tf32, bf16 };
// "fp32", "tf32", "bf16".
inline const char* conv_precision_name(ConvPrecision prec) {
  switch (prec) {
    case ConvPrecision::fp32: return "fp32";
    case ConvPrecision::tf32: return "tf32";
    case ConvPrecision::bf16: return "bf16";
  }
  return "?";
}
// Parses one of those names; false (and *out untouched) for anything else.
inline bool parse_conv_precision(const std::string& name, ConvPrecision* out) {
  for (ConvPrecision prec : {ConvPrecision::fp32, ConvPrecision::tf32, ConvPrecision::bf16})
    if (name == conv_precision_name(prec)) {
      *out = prec;
      return true;
    }
  return false;
}

}  // namespace pg::kernels
