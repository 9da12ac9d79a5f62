// Plain CPU twins (oracles) of kernels/cuda/channel_stats.h: the same parameter structs and
// contracts, written as direct loops with double accumulation, for the CUDA kernels' tests.
// defines: channel_gap, spatial_variances, class_moments_update
#pragma once
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// gap[n*C + c] = float(sum_hw relu((y - shift[c]) / scale[c]) / HW), the sum in double.
void channel_gap(const ChannelGapParams& p, const float* y, const float* raw_scale, const float* raw_shift,
                 float* gap);
// M[n], Nv[n] as launch_spatial_variances: S_H/S_L in double, then a two-pass unbiased
// variance (the arithmetic of parchgrad/parchgrad.cpp's hook).
void spatial_variances(const SpatialVarianceParams& p, const float* g, const float* grad_scale,
                       const uint8_t* select, double* M, double* Nv);
// acc[k*C + c] absorbs the batch one sample at a time (Welford), labels outside
// [0, classes) ignored.
void class_moments_update(const ClassMomentsParams& p, const float* gap, const int32_t* labels, ClassMoment* acc);

}  // namespace pg::kernels::cpu
