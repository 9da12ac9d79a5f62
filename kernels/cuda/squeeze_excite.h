// The squeeze-and-excitation product out[n,c,i] = x[n,c,i] * s[n,c] and its gradients to both
// operands (EfficientNet, MobileNetV3). The twin is kernels/cpu/squeeze_excite.h, bit for bit:
// one float product per element (__fmul_rn), and ds[n,c] = float(the sum over i in index order
// from 0 of double(g) * double(x)), one thread per (n, c) plane walking it in that order (the
// double products are exact, so the only roundings are the sum's, in the twin's order).
// defines: launch_se_scale_forward, launch_se_scale_backward (params: kernels/params.h's
// SampleChannelScaleParams, K = C)
#pragma once
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// out = x * s per plane; out may equal x. Device pointers.
void launch_se_scale_forward(const SampleChannelScaleParams& p, const float* x, const float* s, float* out,
                             cudaStream_t stream);
// dx = g * s (dx may equal g), ds[N*C] as above; either output may be nullptr.
void launch_se_scale_backward(const SampleChannelScaleParams& p, const float* g, const float* x, const float* s,
                              float* dx, float* ds, cudaStream_t stream);

}  // namespace pg::kernels::cuda
