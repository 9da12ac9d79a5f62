// The activations of EfficientNet and MobileNetV3 (SiLU, sigmoid, hardswish, hardsigmoid),
// forward and input gradient: grid-stride loops, one element per step. The twin is
// kernels/cpu/activations.h (the formulas, PyTorch's, and what the backward reads: the input,
// or the output for sigmoid): the same operations in the same order, each rounded on its own
// (__fmul_rn, __fadd_rn, __fsub_rn, __fdiv_rn, no FMA), clamps as std::min/std::max compare.
// exp is expf: on the host SIMT runtime the same function as the twin's (bit for bit); under
// nvcc CUDA's expf (within 2 ulp), so a GPU's SiLU and sigmoid may differ from the twin in the
// last bits, hardswish and hardsigmoid never.
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
