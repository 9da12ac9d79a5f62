// The squeeze-and-excitation product of EfficientNet and MobileNetV3: out[n,c,i] = x[n,c,i] *
// s[n,c] (x [N, C, HW], s [N, C], the per-channel scale from the block's own pooled input), and
// its gradients to both operands:
//   dx[n,c,i] = g[n,c,i] * s[n,c]                   (one float product per element)
//   ds[n,c]   = float(sum over i = 0, 1, ..., HW-1 of double(g[n,c,i]) * double(x[n,c,i]))
// The products are exact in double (24-bit significands), the sum runs in index order from 0
// in double and is rounded to float once: a plane's result depends on that plane alone
// (batch, thread and position invariant), and any device that keeps the order gives the same
// bits (kernels/cuda/squeeze_excite.h, its twin).
// defines: se_scale_forward, se_scale_backward
#pragma once
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// out = x * s per plane (p.K = C); out may equal x.
void se_scale_forward(const SampleChannelScaleParams& p, const float* x, const float* s, float* out);
// dx = g * s (dx may equal g) and ds as above; either output may be nullptr (not wanted).
void se_scale_backward(const SampleChannelScaleParams& p, const float* g, const float* x, const float* s, float* dx,
                       float* ds);

}  // namespace pg::kernels::cpu
