// The activations of EfficientNet and MobileNetV3 (SiLU, sigmoid, hardswish, hardsigmoid),
// forward and input gradient: grid-stride loops, one element per step. The twin is
// kernels/cpu/activations.h (the formulas, PyTorch's, and what the backward reads: the input,
// or the output for sigmoid), bit for bit: SiLU, its gradient and sigmoid call the twin's own
// double-precision functions (kernels/cpu/smooth_math.h: IEEE operations only, spelled with
// __dadd_rn, __dmul_rn, __ddiv_rn on a GPU, no FMA, no library exp); the sigmoid gradient,
// hardswish and hardsigmoid are the same float operations in the same order, each rounded on its
// own (__fmul_rn, __fadd_rn, __fsub_rn, __fdiv_rn), clamps as std::min/std::max compare.
// defines: launch_activation_forward, launch_activation_backward (ActivationParams:
// kernels/params.h)
#pragma once
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// y[i] = f(x[i]); y may equal x. Device pointers.
void launch_activation_forward(const ActivationParams& p, const float* x, float* y, cudaStream_t stream);
// dx[i] = f'(saved[i]) * g[i]; saved is x, or y for sigmoid. dx may equal g.
void launch_activation_backward(const ActivationParams& p, const float* saved, const float* g, float* dx,
                                cudaStream_t stream);

}  // namespace pg::kernels::cuda
