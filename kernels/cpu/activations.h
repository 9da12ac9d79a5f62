// The smooth and piecewise-linear activations of EfficientNet and MobileNetV3, forward and
// input gradient, elementwise on float32 (any shape), in PyTorch's formulas:
//   silu         y = x / (1 + exp(-x))
//                dx = g * s * (1 + x * (1 - s)),  s = 1 / (1 + exp(-x))   (needs x)
//   sigmoid      y = 1 / (1 + exp(-x))
//                dx = g * (1 - y) * y                                     (needs y)
//   hardswish    y = x * min(max(x + 3, 0), 6) / 6
//                dx = 0 for x < -3, g * (x / 3 + 0.5) for -3 <= x <= 3, g for x > 3
//                (aten's hardswish_backward: both ends of the middle piece included) (needs x)
//   hardsigmoid  y = min(max(x + 3, 0), 6) / 6
//                dx = g * (1 / 6) for -3 < x < 3, else 0 (aten's hardsigmoid_backward: no
//                gradient at either kink)                                 (needs x)
// Each product, sum and quotient is rounded on its own in the order written (no FMA: this
// file's .cpp is compiled without contraction); exp is std::exp on float. One element's result
// depends on that element alone, so batch, thread and position invariance are trivial.
// kernels/cuda/activations.h is the twin (the same arithmetic; bit for bit where its exp is the
// same function, i.e. on the host SIMT runtime; within a few ulp of exp on a GPU).
// (Activation, activation_saves_output and ActivationParams: kernels/params.h.)
// defines: activation_forward, activation_backward
#pragma once
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// y[i] = f(x[i]), i < n; y may equal x.
void activation_forward(Activation a, const float* x, float* y, int64_t n);
// dx[i] = f'(saved[i]) * g[i] in the formulas above; saved is x, or y for sigmoid
// (activation_saves_output). dx may equal g.
void activation_backward(Activation a, const float* saved, const float* g, float* dx, int64_t n);

}  // namespace pg::kernels::cpu
