// CPU twin of kernels/cuda/preprocess.h: uint8 RGB [N, H, W, 3] to the normalised float
// tensor [N, 3, H, W] with tools/lib/image_io.cpp's float operations.
// defines: normalize_u8
#pragma once
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// out[n,c,i] = (float(rgb[(n*HW + i)*3 + c]) / 255.0f - mean[c]) / std[c].
void normalize_u8(const NormalizeParams& p, const uint8_t* rgb, float* out);

}  // namespace pg::kernels::cpu
