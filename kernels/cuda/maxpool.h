// Max pooling with an int32 argmax per output, and its input gradient.
// defines: MaxPoolParams, launch_maxpool_forward, launch_maxpool_backward
#pragma once
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// The shape struct of the CPU backend (N, C, H, W, P, Q, window, stride, padding, ceil
// mode; fill P and Q with pool2d_output_size). count_include_pad is ignored.
using MaxPoolParams = Pool2dParams;

// y[N,C,P,Q] = max over each window; argmax[N,C,P,Q] (may be nullptr) = ih*W + iw of the
// maximum within its input plane. PyTorch's rule: elements are scanned row by row, the
// first maximum wins ties, a NaN wins and stays; padding never wins. A window that holds
// only -inf reports its first in-bounds element. Same results as cpu::maxpool2d_forward.
void launch_maxpool_forward(const MaxPoolParams& p, const float* x, float* y, int32_t* argmax,
                            cudaStream_t stream);

// dx[N,C,H,W] (overwritten) = sum of dy over the outputs whose argmax is that element,
// as a gather (one thread per input element, outputs in ascending order): no atomics, so
// it is deterministic and adds in the same order as cpu::maxpool2d_backward's scatter.
void launch_maxpool_backward(const MaxPoolParams& p, const float* dy, const int32_t* argmax, float* dx,
                             cudaStream_t stream);

}  // namespace pg::kernels::cuda
