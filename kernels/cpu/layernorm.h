// LayerNorm over the channels of an NCHW tensor, forward and input gradient (ConvNeXt: its
// LayerNorm2d in the stem, the downsample layers and the classifier, and its blocks' LayerNorm
// over the last dimension of the NHWC permute, which on NCHW is the same normalisation over C at
// each (n, h, w)).
//
// Order of the arithmetic (kernels/cuda/layernorm.cu keeps it bit for bit): at each (n, i),
// i a position of the HW plane, in double, every product and sum rounded on its own (no FMA):
//   mean = (sum over c = 0, 1, ..., C-1 of x[c]) / C
//   var  = (sum over c in the same order of (x[c] - mean)^2) / C        (biased, two passes)
//   rstd = 1 / sqrt(var + eps)
//   y[c] = float(((x[c] - mean) * rstd) * w[c] + b[c])
// backward (the exact gradient through the mean and the variance), with xhat[c] = (x[c] - mean)
// * rstd recomputed from x in the same way and g[c] = dy[c] * w[c]:
//   a = sum over c of g[c],  b = sum over c of g[c] * xhat[c]           (c ascending)
//   dx[c] = float(rstd * ((g[c] - a / C) - xhat[c] * (b / C)))
// Every (n, i) is reduced on its own, in channel order, so a sample's bits depend neither on
// the batch, the position nor the thread count. The backward needs x, not the forward's saved
// statistics (it recomputes them, in the same order, so they are the same numbers).
// defines: layernorm_forward, layernorm_backward
#pragma once
#include "kernels/params.h"

namespace pg::kernels::cpu {

// y[N,C,HW] = LayerNorm over C of x, then the per-channel affine w, b ([C] each; nullptr: 1
// and 0). Overwrites y (which must not alias x).
void layernorm_forward(const LayerNormParams& p, const float* x, const float* w, const float* b, float* y);

// dx[N,C,HW] = the input gradient of layernorm_forward at x for the output gradient dy.
// Overwrites dx (which may alias dy, not x).
void layernorm_backward(const LayerNormParams& p, const float* x, const float* w, const float* dy, float* dx);

}  // namespace pg::kernels::cpu
