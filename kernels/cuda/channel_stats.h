// Per-channel reductions of ParchGrad (docs/parchgrad-method.md sections 2, 3, 5):
//   (a) the forward statistic gap[n,c] = mean_{h,w} relu(y_raw[n,c,h,w]);
//   (b) the two spatial variances M, N of the gradient edit, one pass over dL/dy;
//   (c) the per-(class, channel) count/mean/M2 update of `parchgrad stats`.
// All reductions run in a fixed order (per-thread loops, then shared-memory trees of a
// fixed shape, then sequential merges): no atomics, so results are bitwise reproducible
// from run to run. Accumulation is in double.
// CPU twins: kernels/cpu/channel_stats.h (same parameter structs).
// defines: launch_channel_gap, spatial_variance_workspace_bytes, launch_spatial_variances,
//          launch_class_moments_update
// (their parameter structs: kernels/params.h)
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// ---- (a) gap ------------------------------------------------------------------------------
// y[N,C,HW] is the conv output with BatchNorm folded in; y_raw = (y - raw_shift[c]) /
// raw_scale[c], or y itself when raw_scale is nullptr (raw_shift nullptr: 0).
// gap[n*C + c] = float(sum_hw relu(y_raw) / HW), the sum in double. Overwrites gap.
void launch_channel_gap(const ChannelGapParams& p, const float* y, const float* raw_scale,
                        const float* raw_shift, float* gap, cudaStream_t stream);

// ---- (b) spatial variances ------------------------------------------------------------------
// Bytes of scratch memory launch_spatial_variances needs (per-tile partial moments).
size_t spatial_variance_workspace_bytes(const SpatialVarianceParams& p);
// For each sample n, with g_raw[c,hw] = grad_scale[c] * g[n,c,hw] (grad_scale = BatchNorm's
// scale, turning dL/dy into dL/dy_raw; nullptr: 1) and select[n*C + c] != 0 meaning c in H:
//   S_H[hw] = sum_{c in H} g_raw[c,hw],  S_L[hw] = sum_{c not in H} g_raw[c,hw]
//   M[n] = var(S_H) + 1e-7,  Nv[n] = var(S_L) + 1e-7
// var = unbiased variance over the HW positions (0 when HW < 2, as the CPU hook). An empty
// H or L gives a variance of 0 (its S is all zeros). g is read once. Sums in double.
void launch_spatial_variances(const SpatialVarianceParams& p, const float* g, const float* grad_scale,
                              const uint8_t* select, double* M, double* Nv, void* workspace,
                              cudaStream_t stream);

// ---- (c) class moments ----------------------------------------------------------------------
// acc[k*C + c] (in place) absorbs gap[n*C + c] of the batch's samples with labels[n] == k:
// the batch's own moments of that class (samples in batch order) are merged into the
// running ones with Chan's formula. Labels outside [0, classes) are ignored.
void launch_class_moments_update(const ClassMomentsParams& p, const float* gap, const int32_t* labels,
                                 ClassMoment* acc, cudaStream_t stream);

}  // namespace pg::kernels::cuda
