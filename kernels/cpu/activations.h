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
// SiLU, its gradient and sigmoid are evaluated in double by kernels/cpu/smooth_math.h (its own
// exp; each operation rounded on its own, no FMA) and rounded to float once: correctly rounded
// but for rare double-rounding cases (a sweep of 7 million inputs finds at most 0.500 ulp; the
// float formulas with std::exp gave up to 2.4 ulp). exp(-x) is +inf where float exp(-x)
// overflows (x <= -88.72283935546875), so SiLU gives -0, sigmoid 0 and SiLU(-inf) NaN there, as
// the float formulas did. The sigmoid gradient, hardswish and hardsigmoid are the float
// formulas above, each product, sum and quotient rounded on its own in the order written (no
// FMA: the .cpp is compiled without contraction). One element's result depends on that element
// alone and every vector lane computes what the scalar code does, so batch, thread, position
// and instruction-set invariance hold. kernels/cuda/activations.h is the twin, bit for bit (it
// calls the same smooth_math.h functions).
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
