// Elementwise passes of the CUDA backward/forward glue: residual add and gradient
// accumulation, the per-channel affine epilogue after a library convolution, the ParchGrad
// per-(sample, channel) scale as a pass of its own, and a scaled copy. Each result is one
// float operation per element (channel_affine: two, rounded separately, never fused into an
// FMA), so the CPU twins in kernels/cpu/elementwise.h give the same bits.
// defines: launch_add, launch_channel_affine, launch_sample_channel_scale, launch_scale
// (their parameter structs: kernels/params.h)
#pragma once
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// out[i] = a[i] + b[i] for i < n; out may equal a or b (residual add, gradient accumulation).
void launch_add(int64_t n, const float* a, const float* b, float* out, cudaStream_t stream);

// In place on y[N,C,HW]: y = y * scale[c] + shift[c], as t = fl(y * scale[c]) then
// fl(t + shift[c]) (two roundings, no FMA). scale nullptr: 1 (the product is skipped, which
// is the same value); shift nullptr: 0 (the sum is skipped: -0 stays -0, unlike -0 + 0).
void launch_channel_affine(const ChannelAffineParams& p, float* y, const float* scale, const float* shift,
                           cudaStream_t stream);

// out[n,k,i] = scale[n*K + k] * dy[n,k,i]; out may equal dy. (ParchGrad's edit as its own
// pass, before a library data-gradient that cannot fuse it.)
void launch_sample_channel_scale(const SampleChannelScaleParams& p, const float* dy, const float* scale, float* out,
                                 cudaStream_t stream);

// out[i] = alpha * x[i] for i < n; out may equal x (integrated gradients' scaled copies).
void launch_scale(int64_t n, float alpha, const float* x, float* out, cudaStream_t stream);

}  // namespace pg::kernels::cuda
