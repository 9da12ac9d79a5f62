// uint8 HWC -> normalised float CHW: one thread per pixel. See preprocess.h.
#include "kernels/cuda/preprocess.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) normalize_u8_kernel(NormalizeParams p, const uint8_t* __restrict__ rgb,
                                                                float* __restrict__ out) {
  const int64_t hw = int64_t(p.H) * p.W;
  const int64_t total = int64_t(p.N) * hw;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t o = int64_t(blockIdx.x) * kThreads + threadIdx.x; o < total; o += stride) {
    const int64_t n = o / hw, i = o - n * hw;
    const uint8_t* px = rgb + o * 3;
    float* dst = out + n * 3 * hw + i;
    PG_UNROLL
    for (int c = 0; c < 3; ++c) {
      const float v = __fdiv_rn(float(__ldg(&px[c])), 255.0f);
      dst[c * hw] = __fdiv_rn(__fsub_rn(v, p.mean[c]), p.std[c]);
    }
  }
}

}  // namespace

void launch_normalize_u8(const NormalizeParams& p, const uint8_t* rgb, float* out, cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.H * p.W;
  if (total <= 0) return;
  PG_LAUNCH(normalize_u8_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, rgb, out);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
