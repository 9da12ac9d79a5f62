// Pooling on NCHW planes: max-pool with argmax (index within the input plane), average
// pool, adaptive average pool (PyTorch's window rule), and their input gradients.
// defines: maxpool2d_forward, maxpool2d_backward, avgpool2d_forward, avgpool2d_backward,
//          adaptive_avgpool2d_forward, adaptive_avgpool2d_backward
#pragma once
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// y[N,C,P,Q]; argmax[N,C,P,Q] (may be nullptr) holds ih*W + iw of each maximum (the first
// one in scan order on ties, as PyTorch). Padding never wins.
void maxpool2d_forward(const Pool2dParams& p, const float* x, float* y, int32_t* argmax);
// dx (overwritten) = scatter-add of dy through argmax.
void maxpool2d_backward(const Pool2dParams& p, const float* dy, const int32_t* argmax, float* dx);

void avgpool2d_forward(const Pool2dParams& p, const float* x, float* y);
void avgpool2d_backward(const Pool2dParams& p, const float* dy, float* dx);

// Output window i covers [floor(i*In/Out), ceil((i+1)*In/Out)).
void adaptive_avgpool2d_forward(int NC, int H, int W, int P, int Q, const float* x, float* y);
void adaptive_avgpool2d_backward(int NC, int H, int W, int P, int Q, const float* dy, float* dx);

}  // namespace pg::kernels::cpu
