// Exact (erf) GELU, forward and input gradient (ConvNeXt's nn.GELU(), approximate='none').
// Evaluated in double by kernels/cpu/smooth_math.h and rounded to float once:
//   y  = float(x * Phi(x)),  dx = float(dy * (Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi))),
//   Phi(x) = erfc(|x| / sqrt 2) / 2 for x < 0, 1 - erfc(|x| / sqrt 2) / 2 otherwise, erfc from
//   exp(-x^2 / 2) times a polynomial for exp(t^2) erfc(t)
// (PyTorch's formulas; its own (x * 0.5) * (1 + erf(x / sqrt 2)) cancels for x < -5.9, where
// erfc keeps full accuracy). Correctly rounded but for rare double-rounding cases (a sweep of 7
// million inputs finds at most 0.500 ulp for the forward, 0.503 for the gradient, at x = -0.7504);
// the gradient near its zero (x ~ -0.7518), where Phi(x) + x phi(x) cancels, carries an absolute
// error of ~1e-14 |dy| on top of the float rounding. x = -inf gives NaN (x * 0), the
// gradient NaN at +-inf (x * 0), as PyTorch's. No FMA, no library call, the same operations in
// every vector lane: batch, thread, position and instruction-set invariant.
// kernels/cuda/gelu.cu calls the same functions: bit for bit.
// defines: gelu_forward, gelu_backward
#pragma once
#include <cstdint>

namespace pg::kernels::cpu {

// y[i] = GELU(x[i]); y may equal x.
void gelu_forward(const float* x, int64_t n, float* y);
// dx[i] = dy[i] * GELU'(x[i]); dx may equal dy.
void gelu_backward(const float* x, const float* dy, int64_t n, float* dx);

}  // namespace pg::kernels::cpu
