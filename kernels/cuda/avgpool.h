// Average pooling and adaptive average pooling on NCHW planes, and their input gradients.
// The arithmetic is kernels/cpu/pool.cpp's (the twins avgpool2d_forward/backward,
// adaptive_avgpool2d_forward/backward), so every result is bit-identical to the CPU:
//   forward   y = (window elements summed in float, row by row from +0) / float(divisor)
//   backward  dx[i] = sum over the windows that hold i, in ascending output order, of
//             dy[o] / float(divisor of o), from +0: a gather (one thread per input element,
//             no atomics) that adds the same terms in the same order as the CPU's scatter.
// defines: AvgPoolParams, AdaptivePoolParams, launch_avgpool_forward, launch_avgpool_backward,
//          launch_adaptive_avgpool_forward, launch_adaptive_avgpool_backward
#pragma once
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// The CPU backend's shape struct (fill P and Q with pool2d_output_size). The divisor is
// PyTorch's: with count_include_pad the window clipped to the padded input
// [-pad, H + pad), else the window clipped to the input; ceil_mode only changes P and Q.
using AvgPoolParams = Pool2dParams;

// Adaptive pooling of NC = N*C planes of H x W to P x Q. Output row i averages input rows
// [floor(i*H/P), ceil((i+1)*H/P)), columns likewise (PyTorch's windows; they may overlap).
struct AdaptivePoolParams {
  int NC = 0, H = 0, W = 0, P = 0, Q = 0;
};

// y[N,C,P,Q] (overwritten). Device pointers.
void launch_avgpool_forward(const Pool2dParams& p, const float* x, float* y, cudaStream_t stream);
// dx[N,C,H,W] (overwritten; elements in no window get 0). dx must not alias dy.
void launch_avgpool_backward(const Pool2dParams& p, const float* dy, float* dx, cudaStream_t stream);

// y[NC,P,Q] (overwritten). P = Q = 1 (the global pool of ResNet) runs a kernel of its own:
// each block stages the contiguous planes of up to 128 outputs through shared memory with
// coalesced loads, then one thread per plane sums it in index order (the CPU's order).
void launch_adaptive_avgpool_forward(const AdaptivePoolParams& p, const float* x, float* y, cudaStream_t stream);
// dx[NC,H,W] (overwritten). dx must not alias dy.
void launch_adaptive_avgpool_backward(const AdaptivePoolParams& p, const float* dy, float* dx,
                                      cudaStream_t stream);

}  // namespace pg::kernels::cuda
