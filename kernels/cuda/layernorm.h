// LayerNorm over the channels of an NCHW tensor, forward and input gradient (ConvNeXt), one
// thread per (sample, position) looping over the channels (consecutive threads read
// consecutive positions of a channel plane). Its CPU twin is kernels/cpu/layernorm.h, bit for
// bit: the same double arithmetic in the same order, every operation rounded on its own
// (__dmul_rn, __dadd_rn, __ddiv_rn, __dsqrt_rn: never fused).
// defines: launch_layernorm_forward, launch_layernorm_backward
#pragma once
#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// y[N,C,HW] = LayerNorm over C of x, then w, b ([C]; nullptr: 1 and 0). y must not alias x.
// Device pointers.
void launch_layernorm_forward(const LayerNormParams& p, const float* x, const float* w, const float* b, float* y,
                              cudaStream_t stream);
// dx = the input gradient at x for dy; dx may alias dy, not x. Device pointers.
void launch_layernorm_backward(const LayerNormParams& p, const float* x, const float* w, const float* dy, float* dx,
                               cudaStream_t stream);

}  // namespace pg::kernels::cuda
