// The squeeze-and-excitation product and its two gradients (see squeeze_excite.h).
#include "kernels/cuda/squeeze_excite.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

PG_NO_FP_CONTRACT  // bit-identical to the CPU twin (portable.h)

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// No __restrict__ on x/out: out may alias x.
__global__ void __launch_bounds__(kThreads) se_scale_kernel(SampleChannelScaleParams p, const float* x,
                                                            const float* __restrict__ s, float* out) {
  const int64_t total = int64_t(p.N) * p.K * p.HW;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride)
    out[i] = __fmul_rn(x[i], __ldg(&s[i / p.HW]));
}

// One thread per plane, in index order: the twin's sum.
__global__ void __launch_bounds__(kThreads) se_scale_ds_kernel(SampleChannelScaleParams p, const float* __restrict__ g,
                                                               const float* __restrict__ x, float* __restrict__ ds) {
  const int64_t planes = int64_t(p.N) * p.K;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t nc = int64_t(blockIdx.x) * kThreads + threadIdx.x; nc < planes; nc += stride) {
    const float* gp = g + nc * p.HW;
    const float* xp = x + nc * p.HW;
    double acc = 0.0;
    // The product is exact in double, so a fused multiply-add rounds as the twin's add does.
    for (int64_t i = 0; i < p.HW; ++i) acc += double(__ldg(&gp[i])) * double(__ldg(&xp[i]));
    ds[nc] = float(acc);
  }
}

}  // namespace

void launch_se_scale_forward(const SampleChannelScaleParams& p, const float* x, const float* s, float* out,
                             cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.K * p.HW;
  if (total <= 0) return;
  PG_LAUNCH(se_scale_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, x, s, out);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_se_scale_backward(const SampleChannelScaleParams& p, const float* g, const float* x, const float* s,
                              float* dx, float* ds, cudaStream_t stream) {
  const int64_t planes = int64_t(p.N) * p.K;
  if (planes <= 0 || p.HW <= 0) return;
  // ds first: dx may overwrite g.
  if (ds) {
    PG_LAUNCH(se_scale_ds_kernel, grid_1d(planes, kThreads), kThreads, 0, stream, p, g, x, ds);
    PG_CUDA_CHECK_LAUNCH();
  }
  if (dx) {
    PG_LAUNCH(se_scale_kernel, grid_1d(planes * p.HW, kThreads), kThreads, 0, stream, p, g, s, dx);
    PG_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace pg::kernels::cuda
