// Depthwise convolution (groups == C == K > 1: one R x S filter per channel, MobileNetV2's 3x3
// convs, EfficientNet's 3x3 and 5x5, ConvNeXt's 7x7), forward and data gradient per (sample,
// channel) plane. The generic grouped path of conv2d.h (im2col + one GEMM per group) is correct
// but spends its time on per-group overhead when a group is a single channel.
//
// Order of the arithmetic (kernels/cuda/depthwise_dgrad.cu keeps the dgrad's bit for bit):
//   forward  y[n,c,oh,ow] = the taps (r, s) in row-major order, each product x * w rounded and
//            added to a float32 sum that starts at 0 (no FMA: this file is compiled with
//            -ffp-contract=off); taps outside the input are skipped, which is adding 0 * w, so
//            an output depends on its receptive field and the weights alone (position
//            invariance: equal receptive fields give equal bits); then the bias.
//   dgrad    dx[n,c,ih,iw] = the taps (r, s) that reach it, in row-major order, each term
//            (scale[n,c] * dy[n,c,oh,ow]) * w[c,r,s] rounded twice and added to a float32 sum
//            that starts at 0; a zero scale gives a zero plane (no work).
// How: a band of input rows (forward) or of scaled dy rows spread by the stride (dgrad) is
// copied into a zero-bordered stack buffer (the forward's columns split by stride phase so each
// tap reads contiguous floats), then each tile of 4 output rows by 8 columns sums all R x S taps
// in the order above without bounds tests, in vector registers (every lane does the scalar
// operations; GNU C vector types, so SSE, AVX2 and AVX-512 give the same bits). A tap on the
// zero border or between the stride's positions adds +-0, which leaves a sum that starts at +0
// unchanged bit for bit: the same bits as skipping it (for finite weights). Kernels above 64
// taps or rows too wide for the 64 KiB band take plain loops in the same order.
// Each (sample, channel) plane is one unit of work, so a sample's bits never depend on the
// batch or the thread count.
// defines: depthwise_supported, depthwise_forward, depthwise_dgrad
#pragma once
#include "kernels/cpu/conv2d.h"
#include "kernels/params.h"

namespace pg::kernels::cpu {

// True for the convolutions these kernels take: groups == C == K > 1 (any kernel size,
// stride, padding and dilation).
inline bool depthwise_supported(const Conv2dParams& p) { return p.groups > 1 && p.groups == p.C && p.K == p.C; }

// y[N,C,P,Q] = depthwise conv(x[N,C,H,W], w[C,1,R,S]) + epilogue (bias, GAP). Overwrites y.
void depthwise_forward(const Conv2dParams& p, const float* x, const float* w, const ConvEpilogue& epi, float* y);

// dx[N,C,H,W] = conv_transpose(scale[n,c] * dy[N,C,P,Q], w); scale is [N*C] or nullptr (all
// ones). Overwrites dx.
void depthwise_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale, float* dx);

}  // namespace pg::kernels::cpu
