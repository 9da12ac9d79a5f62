// ReLU with a 1-bit mask: one warp produces one 32-bit mask word with __ballot_sync.
#include "kernels/cuda/relu.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // a multiple of 32: every warp is whole

// Warp-stride loop over mask words: warp w handles elements [32w, 32w + 32). The loop
// bounds are uniform over the warp, so all 32 lanes reach every __ballot_sync.
// kSix: ReLU6 (clamp at 6, mask 0 < x < 6).
template <bool kSix>
__global__ void __launch_bounds__(kThreads) relu_forward_kernel(ReluParams p, const float* x, float* y,
                                                                uint32_t* mask) {
  const int64_t words = 2 * ((p.n + 63) / 64);  // relu_mask_words32 (a host function)
  const int lane = int(threadIdx.x) & 31;
  const int64_t warps = int64_t(gridDim.x) * (kThreads / 32);
  for (int64_t w = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32; w < words; w += warps) {
    const int64_t i = w * 32 + lane;
    bool pos = false;
    if (i < p.n) {
      const float v = x[i];
      if (kSix) {
        pos = v > 0.f && v < 6.f;
        y[i] = v > 0.f ? (v < 6.f ? v : 6.f) : 0.f;
      } else {
        pos = v > 0.f;
        y[i] = pos ? v : 0.f;
      }
    }
    const unsigned bits = __ballot_sync(0xFFFFFFFFu, pos);
    if (mask && lane == 0) mask[w] = bits;
  }
}

__global__ void __launch_bounds__(kThreads) relu_backward_kernel(ReluParams p, const float* dy,
                                                                 const uint32_t* mask, float* dx) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < p.n; i += stride) {
    const bool keep = (__ldg(&mask[i >> 5]) >> (i & 31)) & 1u;
    dx[i] = keep ? dy[i] : 0.f;
  }
}

// Enough blocks to fill a large GPU, few enough that each thread loops a little.
}  // namespace

void launch_relu_forward(const ReluParams& p, const float* x, float* y, uint32_t* mask, cudaStream_t stream) {
  if (p.n <= 0) return;
  PG_LAUNCH((relu_forward_kernel<false>), grid_1d(relu_mask_words32(p.n) * 32, kThreads, 4096), kThreads, 0, stream, p, x, y,
            mask);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_relu6_forward(const ReluParams& p, const float* x, float* y, uint32_t* mask, cudaStream_t stream) {
  if (p.n <= 0) return;
  PG_LAUNCH((relu_forward_kernel<true>), grid_1d(relu_mask_words32(p.n) * 32, kThreads, 4096), kThreads, 0, stream, p, x, y,
            mask);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_relu_backward(const ReluParams& p, const float* dy, const uint32_t* mask, float* dx,
                          cudaStream_t stream) {
  if (p.n <= 0) return;
  PG_LAUNCH(relu_backward_kernel, grid_1d(p.n, kThreads, 4096), kThreads, 0, stream, p, dy, mask, dx);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
