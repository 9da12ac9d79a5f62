// Fully connected layer: y = x W^T + b and its input gradient dx = dy W.
// defines: linear_forward, linear_backward
#pragma once

namespace pg::kernels::cpu {

// x [N, in], w [out, in], b [out] or nullptr, y [N, out] (overwritten).
void linear_forward(int N, int in, int out, const float* x, const float* w, const float* b, float* y);
// dy [N, out], dx [N, in] (overwritten).
void linear_backward(int N, int in, int out, const float* dy, const float* w, float* dx);

}  // namespace pg::kernels::cpu
