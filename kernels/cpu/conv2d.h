// CPU convolution: forward (im2col + gemm_ordered, whose outputs depend on the receptive
// field alone, with a fused per-sample epilogue) and the data-gradient (OpenBLAS SGEMM +
// col2im) with ParchGrad's per-(sample, channel) scale applied to the output-gradient
// operand. Weights are never differentiated.
// defines: conv2d_workspace_floats, conv2d_forward, conv2d_dgrad
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// Epilogue applied to each sample's output while it is still in cache.
struct ConvEpilogue {
  const float* bias = nullptr;       // [K], added to the output
  // When gap != nullptr: gap[n*K + k] = mean_{p,q} relu(y_raw), where the raw conv output is
  // y_raw = (y - raw_shift[k]) / raw_scale[k] (BatchNorm folded into the conv) or y itself
  // when raw_scale is nullptr.
  float* gap = nullptr;
  const float* raw_scale = nullptr;  // [K]
  const float* raw_shift = nullptr;  // [K]
};

// Applies the epilogue to sample n's output y[K,P,Q] (shared with the Winograd path).
void conv2d_epilogue(const Conv2dParams& p, int n, const ConvEpilogue& e, float* y);

// Size of the im2col blocks (bytes of columns per block, 2 MB by default; 0 restores it).
// Changing it only changes the order of work, never the result; tests use it to force
// one output row per block. Not thread-safe: set it before running convolutions.
void conv2d_set_block_bytes(int64_t bytes);

// Floats of scratch memory that conv2d_forward/conv2d_dgrad need with `threads` OpenMP
// threads.
size_t conv2d_workspace_floats(const Conv2dParams& p, int threads);

// y[N,K,P,Q] = conv(x[N,C,H,W], w[K,C/groups,R,S]) (+ epilogue). Overwrites y.
void conv2d_forward(const Conv2dParams& p, const float* x, const float* w,
                    const ConvEpilogue& epi, float* y, float* workspace);

// dx[N,C,H,W] = conv_transpose(scale[n,k] * dy[N,K,P,Q], w). scale is [N*K] or nullptr
// (all ones); a zero scale skips the channel's work entirely. Overwrites dx.
void conv2d_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale,
                  float* dx, float* workspace);

}  // namespace pg::kernels::cpu
