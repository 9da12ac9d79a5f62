// The ParchGrad insertion point: a hook on every convolution's raw output gradient.
#pragma once
#include <string>

#include "core/tensor.h"

namespace pg::ag {

// One convolution of a model, as a hook sees it.
struct ConvSite {
  std::string name;    // torchvision module name, e.g. "layer4.1.conv2" or "features.28"
  int index = 0;       // position in torchvision's module-registration order
  int out_channels = 0;
  // BatchNorm folded into this conv (nullptr when there is none): the stored conv computes
  // y = bn_scale * y_raw + bn_shift, so y_raw = (y - bn_shift) / bn_scale and the raw
  // conv output gradient is dL/dy_raw = dL/dy * bn_scale.
  const float* bn_scale = nullptr;
  const float* bn_shift = nullptr;
};

class ConvHook {
 public:
  virtual ~ConvHook() = default;
  // Whether this conv is hooked (asked once per forward for each conv).
  virtual bool hooks(const ConvSite& site) const = 0;
  // Forward: gap[N, K] = mean_{h,w} relu(y_raw) of the hooked conv, computed as its output
  // is produced.
  virtual void on_forward(const ConvSite& site, const Tensor& gap) {}
  // Backward: grad = dL/dy [N, K, P, Q] of the (BN-folded) conv output, before the
  // data-gradient convolution consumes it. The hook may edit grad in place, and/or return
  // a per-(sample, channel) scale [N, K] that is applied to grad inside the data-gradient
  // convolution (a zero scale skips the channel). Return an empty tensor for no scale.
  // Since the scale is per channel, scaling dL/dy equals scaling dL/dy_raw.
  virtual Tensor on_backward(const ConvSite& site, Tensor& grad) = 0;
};

}  // namespace pg::ag
