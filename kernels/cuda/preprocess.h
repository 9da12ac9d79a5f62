// Input normalisation: decoded, resized and cropped images arrive as uint8 RGB, interleaved
// [N, H, W, 3]; the kernel writes the float tensor [N, 3, H, W] exactly as torchvision's
// ToTensor + Normalize (and tools/lib/image_io.cpp's preprocess_imagenet) compute it:
//   v = float(u8) / 255.0f;  out = (v - mean[c]) / std[c]
// three IEEE float operations, each rounded to nearest, so the result is bit-identical to
// the host's. CPU twin: kernels/cpu/preprocess.h.
// defines: launch_normalize_u8
// (their parameter structs: kernels/params.h)
#pragma once
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// rgb: uint8 [N, H, W, 3]; out: float [N, 3, H, W] (overwritten). Device pointers.
void launch_normalize_u8(const NormalizeParams& p, const uint8_t* rgb, float* out, cudaStream_t stream);

}  // namespace pg::kernels::cuda
