// Data gradient of a depthwise convolution (groups == C == K > 1, MobileNetV2's 3x3 convs) with
// ParchGrad's per-(sample, channel) scale fused: one thread per input element gathers the taps
// that reach it. Its CPU twin is kernels/cpu/depthwise.h's depthwise_dgrad, bit for bit: the
// same taps in the same order (r, s row-major), each term (scale * dy) * w rounded twice
// (__fmul_rn) and added (__fadd_rn) to a float32 sum from 0; a zero scale gives 0 without
// reading dy. Float32 in every ConvPrecision (a depthwise tap count is far too small for the
// tensor cores to pay).
// defines: DepthwiseDgradParams, depthwise_dgrad_supported, launch_depthwise_dgrad
#pragma once
#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// The conv's shape (kernels/params.h), P and Q filled by conv2d_output_size.
using DepthwiseDgradParams = Conv2dParams;

// groups == C == K > 1, any kernel size, stride, padding and dilation.
inline bool depthwise_dgrad_supported(const DepthwiseDgradParams& p) {
  return p.groups > 1 && p.groups == p.C && p.K == p.C && p.stride_h > 0 && p.stride_w > 0 && p.P > 0 && p.Q > 0;
}

// dx[N,C,H,W] (overwritten) = conv_transpose(scale[n,c] * dy[N,C,P,Q], w[C,1,R,S]); scale is
// [N*C] or nullptr (all ones). Throws pg::Error when !depthwise_dgrad_supported(p). Device
// pointers.
void launch_depthwise_dgrad(const DepthwiseDgradParams& p, const float* dy, const float* w, const float* scale,
                            float* dx, cudaStream_t stream);

}  // namespace pg::kernels::cuda
