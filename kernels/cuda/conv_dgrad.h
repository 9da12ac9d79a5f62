// Convolution data-gradient dx = conv_transpose(scale[n,k] * dy, w) as an implicit GEMM per
// sample, in three precisions (ConvPrecision): float32 on the CUDA cores, and TF32 or BF16
// operands on the tensor cores with float32 accumulation. ParchGrad's per-(sample, output
// channel) scale is applied to dy in float32 as it is loaded, and the channels whose scale
// is exactly 0 are skipped.
//
// Phase decomposition (strided convolutions without wasted work): an input pixel
// ih = a + stride_h * u (a = ih mod stride_h, the row phase) receives contributions only
// from the taps r with r = (a + pad_h) mod stride_h (mod stride_h), i.e. r = r0 + stride_h*i,
// at the output row oh = u + (a + pad_h) / stride_h - i; the same holds for columns. Each of
// the stride_h * stride_w phases (a, b) is therefore a smaller dense GEMM over its own
// pixels and ceil((R - r0) / stride_h) x ceil((S - s0) / stride_w) taps, and no multiply-add
// is spent on a tap that cannot reach the pixel (stride 1: one phase, the plain GEMM).
//
// GEMM view, per sample n and phase (a, b):  dx[c, pix] = sum_{j, i, i2} A[pix, (j,i,i2)] * B[(j,i,i2), c]
//   A[pix, (j,i,i2)] = scale[n,k_j] * dy[n, k_j, oh, ow]   (0 when oh or ow is outside P, Q)
//   B[(j,i,i2), c]   = w[k_j, c, r0 + stride_h*i, s0 + stride_w*i2]
// over the kept output channels k_0 < k_1 < ... of that sample (all K when scale is null).
// The kept list is built on the device by a first small kernel (one warp per sample,
// ballot + popcount, in channel order), so the reduction order, and the result, is fixed.
//
// Tiles of 64 pixels x 64 channels, or 256 pixels x 16 channels when C <= 16 (the first
// conv, C = 3, then wastes 13 of 16 columns instead of 61 of 64).
//
// Supported: groups = 1, dilation 1, any stride, padding and kernel size, N * stride_h *
// stride_w <= 65535. Shapes are Conv2dParams (kernels/params.h), the twin is
// kernels/cpu/conv2d.h's conv2d_dgrad.
// defines: ConvDgradParams, conv_dgrad_supported, conv_dgrad_workspace_bytes,
//          launch_conv_dgrad (fp32 and by precision), launch_conv_dgrad_tf32,
//          launch_conv_dgrad_bf16
// (their parameter structs: kernels/params.h)
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

using ConvDgradParams = Conv2dParams;

// True for the configurations launch_conv_dgrad handles (groups 1, dilation 1, P, Q set).
bool conv_dgrad_supported(const ConvDgradParams& p);
// Bytes of device scratch memory: the kept-channel lists, int32 [N][K] + counts [N].
size_t conv_dgrad_workspace_bytes(const ConvDgradParams& p);

// dx[N,C,H,W] (overwritten) from dy[N,K,P,Q], w[K,C,R,S] and scale [N*K] (nullptr: all
// ones; a 0 skips the channel: an all-zero sample gets dx = 0), in the given precision.
// Throws pg::Error when !conv_dgrad_supported(p). Device pointers; workspace of
// conv_dgrad_workspace_bytes(p) bytes. Error of the result, per element, relative to
// sum |scale * dy * w| over its terms:
//   fp32  float32 sums (about L * 2^-24 at worst for a reduction of length L)
//   tf32  A and B rounded to TF32 (cvt.rna: nearest, ties away; 2^-11 each) as they are
//         staged: at most 2 * 2^-11 + 2^-22 per product, plus the float32 sums
//   bf16  A and B rounded to BF16 (nearest even; 2^-8 each): at most 2 * 2^-8 + 2^-16 per
//         product, plus the float32 sums
void launch_conv_dgrad(const ConvDgradParams& p, ConvPrecision prec, const float* dy, const float* w,
                       const float* scale, float* dx, void* workspace, cudaStream_t stream);

// The same with a fixed precision: float32 CUDA cores, TF32 mma.sync.m16n8k8, BF16
// mma.sync.m16n8k16 (the operands of the BF16 variant are staged in shared memory as bf16
// and read into fragments with ldmatrix).
void launch_conv_dgrad(const ConvDgradParams& p, const float* dy, const float* w, const float* scale, float* dx,
                       void* workspace, cudaStream_t stream);
void launch_conv_dgrad_tf32(const ConvDgradParams& p, const float* dy, const float* w, const float* scale,
                            float* dx, void* workspace, cudaStream_t stream);
void launch_conv_dgrad_bf16(const ConvDgradParams& p, const float* dy, const float* w, const float* scale,
                            float* dx, void* workspace, cudaStream_t stream);

}  // namespace pg::kernels::cuda
