// Exact (erf) GELU, forward and input gradient (ConvNeXt's nn.GELU(), approximate='none').
// In double, each operation rounded on its own (no FMA), the result rounded to float once:
//   y  = float((x * 0.5) * (1 + erf(x * M_SQRT1_2)))
//   dx = float(dy * (cdf + x * pdf)),  cdf = 0.5 * (1 + erf(x * M_SQRT1_2)),
//        pdf = exp(-0.5 * (x * x)) * (M_2_SQRTPI * M_SQRT1_2 * 0.5)
// (PyTorch's GeluCUDAKernelImpl / the CPU kernel's formulas, evaluated in double rather than
// float). kernels/cuda/gelu.cu computes the same expressions; its erf and exp are CUDA's, so
// the two may differ in the last bit of a double, which can move the float result by one ulp.
// defines: gelu_forward, gelu_backward
#pragma once
#include <cstdint>

namespace pg::kernels::cpu {

// y[i] = GELU(x[i]); y may equal x.
void gelu_forward(const float* x, int64_t n, float* y);
// dx[i] = dy[i] * GELU'(x[i]); dx may equal dy.
void gelu_backward(const float* x, const float* dy, int64_t n, float* dx);

}  // namespace pg::kernels::cpu
