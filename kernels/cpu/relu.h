// ReLU that remembers only a 1-bit mask per element for the backward pass.
// defines: relu_mask_words, relu_forward, relu_backward, relu6_forward
#pragma once
#include <cstdint>

namespace pg::kernels::cpu {

inline int64_t relu_mask_words(int64_t n) { return (n + 63) / 64; }

// In place: x = max(x, 0); mask bit i set where x[i] > 0. mask may be nullptr.
void relu_forward(float* x, int64_t n, uint64_t* mask);
// ReLU6 (hardtanh on [0, 6]), in place: x = min(max(x, 0), 6) (NaN -> 0, as relu_forward);
// mask bit i set where 0 < x[i] < 6, where PyTorch's hardtanh_backward passes the gradient
// (it zeroes it at x <= 0 and x >= 6, both ends included). Its backward is relu_backward.
void relu6_forward(float* x, int64_t n, uint64_t* mask);
// In place: g[i] = mask bit i ? g[i] : 0.
void relu_backward(float* g, int64_t n, const uint64_t* mask);

}  // namespace pg::kernels::cpu
