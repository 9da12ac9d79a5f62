// ReLU forward that keeps a 1-bit mask for the backward pass, and that backward.
//
// Mask layout (the same bytes as kernels/cpu/relu.h's uint64 words on a little-endian
// machine, so either backend can read the other's mask): element i is bit (i % 32) of the
// uint32 word i / 32; the buffer holds relu_mask_words32(n) = 2 * ceil(n / 64) words (an
// even count), bits at and past n are 0.
// defines: ReluParams, relu_mask_words32, launch_relu_forward, launch_relu6_forward,
//          launch_relu_backward
#pragma once
#include <cstdint>

#include "core/stream.h"

namespace pg::kernels::cuda {

struct ReluParams {
  int64_t n = 0;  // elements
};

inline int64_t relu_mask_words32(int64_t n) { return 2 * ((n + 63) / 64); }

// y[i] = x[i] > 0 ? x[i] : 0 (NaN -> 0, as the CPU backend); mask bit i = x[i] > 0.
// y may equal x (in place); mask may be nullptr. Device pointers.
void launch_relu_forward(const ReluParams& p, const float* x, float* y, uint32_t* mask, cudaStream_t stream);
// ReLU6: y[i] = min(max(x[i], 0), 6) (NaN -> 0); mask bit i = 0 < x[i] < 6 (PyTorch's
// hardtanh_backward zeroes the gradient at both ends), the twin of cpu::relu6_forward. Its
// backward is launch_relu_backward.
void launch_relu6_forward(const ReluParams& p, const float* x, float* y, uint32_t* mask, cudaStream_t stream);
// dx[i] = mask bit i ? dy[i] : 0. dx may equal dy.
void launch_relu_backward(const ReluParams& p, const float* dy, const uint32_t* mask, float* dx,
                          cudaStream_t stream);

}  // namespace pg::kernels::cuda
