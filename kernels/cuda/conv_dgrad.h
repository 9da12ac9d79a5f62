// Convolution data-gradient dx = conv_transpose(scale[n,k] * dy, w) on CUDA cores (float32),
// as an implicit GEMM per sample, with ParchGrad's per-(sample, output channel) scale
// applied to dy as it is loaded and the channels whose scale is exactly 0 skipped.
//
// GEMM view, per sample n:  dx[c, pix] = sum_{j, r, s} A[pix, (j, r, s)] * B[(j, r, s), c]
//   A[pix, (j,r,s)] = scale[n,k_j] * dy[n, k_j, oh, ow]  where ih = oh*stride_h - pad_h + r,
//                     iw = ow*stride_w - pad_w + s (0 when no such (oh, ow) exists)
//   B[(j,r,s), c]   = w[k_j, c, r, s]
// over the kept output channels k_0 < k_1 < ... of that sample (all K when scale is null).
// The kept list is built on the device by a first small kernel (one warp per sample,
// ballot + popcount, in channel order), so the reduction order, and the result, is fixed.
//
// Supported: groups = 1, dilation 1, any stride, padding and kernel size. Shapes are
// Conv2dParams (kernels/params.h), the twin is kernels/cpu/conv2d.h's conv2d_dgrad.
// defines: ConvDgradParams, conv_dgrad_supported, conv_dgrad_workspace_bytes, launch_conv_dgrad,
//          launch_conv_dgrad_tf32
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

using ConvDgradParams = Conv2dParams;

// True for the configurations launch_conv_dgrad handles (groups 1, dilation 1, P, Q set).
bool conv_dgrad_supported(const ConvDgradParams& p);
// Bytes of device scratch memory: the kept-channel lists, int32 [N][K] + counts [N].
size_t conv_dgrad_workspace_bytes(const ConvDgradParams& p);

// dx[N,C,H,W] (overwritten) from dy[N,K,P,Q], w[K,C,R,S] and scale [N*K] (nullptr: all
// ones; a 0 skips the channel: an all-zero sample gets dx = 0). Throws pg::Error when
// !conv_dgrad_supported(p). Device pointers; workspace of conv_dgrad_workspace_bytes(p).
void launch_conv_dgrad(const ConvDgradParams& p, const float* dy, const float* w, const float* scale, float* dx,
                       void* workspace, cudaStream_t stream);

// The same on the tensor cores: A (scale * dy) and B (w) rounded to TF32 (10 mantissa
// bits, round to nearest, ties away from zero) as they are staged, products accumulated in
// float32 by mma.sync.m16n8k8. Error: about 2^-10 of sum |scale * dy * w| per element.
void launch_conv_dgrad_tf32(const ConvDgradParams& p, const float* dy, const float* w, const float* scale,
                            float* dx, void* workspace, cudaStream_t stream);

}  // namespace pg::kernels::cuda
