// Exact (erf) GELU forward and input gradient (ConvNeXt), one thread per element. Its CPU twin
// is kernels/cpu/gelu.h, bit for bit: both call kernels/cpu/smooth_math.h's double-precision
// functions (IEEE operations only, spelled with __dadd_rn, __dmul_rn, __ddiv_rn on a GPU; no
// FMA, no library erf or exp).
// defines: launch_gelu_forward, launch_gelu_backward
#pragma once
#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// y[i] = GELU(x[i]); y may equal x. Device pointers.
void launch_gelu_forward(const GeluParams& p, const float* x, float* y, cudaStream_t stream);
// dx[i] = dy[i] * GELU'(x[i]); dx may equal dy. Device pointers.
void launch_gelu_backward(const GeluParams& p, const float* x, const float* dy, float* dx, cudaStream_t stream);

}  // namespace pg::kernels::cuda
