// 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3): each 2x2 output
// tile is computed from a 4x4 input patch with 16 multiplications per (input, output)
// channel pair instead of 36, as 16 SGEMMs over all tiles of a block:
//   forward  y = A^T [ U_e (K x C) . V_e (C x T) ]_e A,  U = G g G^T,  V = B^T d B
//   dgrad    the same correlation on dy with the kernel flipped and transposed (w'[c][k][r][s]
//            = w[k][c][2-r][2-s]) and padding 2 - pad, with ParchGrad's per-(sample, channel)
//            scale applied as dy is transformed and zero-scale channels dropped from the GEMMs.
// The transforms of F(2, 3) (B, G, A with entries 0, +-1, +-1/2) add rounding comparable to
// the direct method's; see tests/unit/test_ops.cpp for the bounds checked against it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/conv2d.h"
#include "kernels/params.h"

namespace pg::kernels::cpu {

// True for a conv this path computes, and for which it is worth it: 3x3, stride 1, dilation
// 1, one group, padding 0..2, and an output of at least 14x14 (smaller planes have too few
// tiles to amortise streaming the 16 transformed weight matrices).
bool winograd_eligible(const Conv2dParams& p);

// Floats of one transformed weight set: 16 * K * C.
size_t winograd_weight_floats(const Conv2dParams& p);
// U[e][k][c] (e = 4x4 transform element) from w[K][C][3][3], for winograd_forward.
void winograd_forward_weights(const Conv2dParams& p, const float* w, float* U);
// U'[e][k][c] of the flipped kernel (row k = output channel of the forward conv), for
// winograd_dgrad; rows of dropped channels are skipped by copying the kept rows.
void winograd_dgrad_weights(const Conv2dParams& p, const float* w, float* U);

// Scratch floats for winograd_forward / winograd_dgrad with `threads` OpenMP threads.
size_t winograd_workspace_floats(const Conv2dParams& p, int threads);

// As conv2d_forward (same epilogue), with U from winograd_forward_weights.
void winograd_forward(const Conv2dParams& p, const float* x, const float* U, const ConvEpilogue& epi, float* y,
                      float* workspace);
// As conv2d_dgrad (scale [N*K] or null; zero skips the channel), with U from
// winograd_dgrad_weights.
void winograd_dgrad(const Conv2dParams& p, const float* dy, const float* U, const float* scale, float* dx,
                    float* workspace);

}  // namespace pg::kernels::cpu
