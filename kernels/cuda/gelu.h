// Exact (erf) GELU forward and input gradient (ConvNeXt), one thread per element. Its CPU twin
// is kernels/cpu/gelu.h: the same double expressions, each operation rounded on its own; erf
// and exp are the device's, which may differ from the host's in the last bit of a double, so
// the float results agree within one ulp (bit for bit on the host SIMT runtime, which calls the
// host's).
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
