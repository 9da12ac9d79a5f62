// CPU twins of kernels/cuda/elementwise.h: the same parameter structs and contracts, one
// float operation per element (channel_affine: a product and a sum, rounded separately;
// the .cpp is compiled without FMA contraction), so CUDA and CPU give the same bits.
// defines: add, channel_affine, sample_channel_scale, scale
#pragma once
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// out[i] = a[i] + b[i]; out may equal a or b.
void add(int64_t n, const float* a, const float* b, float* out);
// In place: y[n,c,i] = fl(fl(y * scale[c]) + shift[c]); scale nullptr: no product, shift
// nullptr: no sum.
void channel_affine(const ChannelAffineParams& p, float* y, const float* scale, const float* shift);
// out[n,k,i] = scale[n*K + k] * dy[n,k,i]; out may equal dy.
void sample_channel_scale(const SampleChannelScaleParams& p, const float* dy, const float* scale, float* out);
// out[i] = alpha * x[i]; out may equal x.
void scale(int64_t n, float alpha, const float* x, float* out);

}  // namespace pg::kernels::cpu
