// Elementwise passes: grid-stride loops, one float operation per element (two for the
// affine epilogue). See elementwise.h.
#include "kernels/cuda/elementwise.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

PG_NO_FP_CONTRACT  // bit-identical to the CPU twin (portable.h)

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// No __restrict__ where the contract allows out to alias an input.
__global__ void __launch_bounds__(kThreads) add_kernel(int64_t n, const float* a, const float* b, float* out) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) out[i] = __fadd_rn(a[i], b[i]);
}

template <bool kScale, bool kShift>
__global__ void __launch_bounds__(kThreads) channel_affine_kernel(ChannelAffineParams p, float* __restrict__ y,
                                                                  const float* __restrict__ scale,
                                                                  const float* __restrict__ shift) {
  const int64_t total = int64_t(p.N) * p.C * p.HW;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int c = int((i / p.HW) % p.C);
    float v = y[i];
    if (kScale) v = __fmul_rn(v, __ldg(&scale[c]));
    if (kShift) v = __fadd_rn(v, __ldg(&shift[c]));
    y[i] = v;
  }
}

__global__ void __launch_bounds__(kThreads) sample_channel_scale_kernel(SampleChannelScaleParams p, const float* dy,
                                                                        const float* __restrict__ scale, float* out) {
  const int64_t total = int64_t(p.N) * p.K * p.HW;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride)
    out[i] = __fmul_rn(__ldg(&scale[i / p.HW]), dy[i]);  // plane index n*K + k
}

__global__ void __launch_bounds__(kThreads) scale_kernel(int64_t n, float alpha, const float* x, float* out) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) out[i] = __fmul_rn(alpha, x[i]);
}

}  // namespace

void launch_add(int64_t n, const float* a, const float* b, float* out, cudaStream_t stream) {
  if (n <= 0) return;
  PG_LAUNCH(add_kernel, grid_1d(n, kThreads), kThreads, 0, stream, n, a, b, out);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_channel_affine(const ChannelAffineParams& p, float* y, const float* scale, const float* shift,
                           cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.C * p.HW;
  if (total <= 0 || (!scale && !shift)) return;
  const unsigned grid = grid_1d(total, kThreads);
  if (scale && shift) {
    PG_LAUNCH((channel_affine_kernel<true, true>), grid, kThreads, 0, stream, p, y, scale, shift);
  } else if (scale) {
    PG_LAUNCH((channel_affine_kernel<true, false>), grid, kThreads, 0, stream, p, y, scale, shift);
  } else {
    PG_LAUNCH((channel_affine_kernel<false, true>), grid, kThreads, 0, stream, p, y, scale, shift);
  }
  PG_CUDA_CHECK_LAUNCH();
}

void launch_sample_channel_scale(const SampleChannelScaleParams& p, const float* dy, const float* scale, float* out,
                                 cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.K * p.HW;
  if (total <= 0) return;
  PG_LAUNCH(sample_channel_scale_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, dy, scale, out);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_scale(int64_t n, float alpha, const float* x, float* out, cudaStream_t stream) {
  if (n <= 0) return;
  PG_LAUNCH(scale_kernel, grid_1d(n, kThreads), kThreads, 0, stream, n, alpha, x, out);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
