// Exact GELU: grid-stride loops over the elements (see gelu.h and kernels/cpu/gelu.h).
#include "kernels/cuda/gelu.h"

#include "kernels/cuda/compat.h"  // before smooth_math.h (PG_SIMT tells it the compiler)
#include "kernels/cpu/smooth_math.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"

PG_NO_FP_CONTRACT  // the CPU twin's order (portable.h)

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) gelu_forward_kernel(GeluParams p, const float* x, float* y) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < p.n; i += stride) {
    y[i] = smooth::gelu(x[i]);
  }
}

__global__ void __launch_bounds__(kThreads) gelu_backward_kernel(GeluParams p, const float* __restrict__ x,
                                                                 const float* dy, float* dx) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < p.n; i += stride) {
    dx[i] = smooth::gelu_grad(__ldg(&x[i]), dy[i]);
  }
}

}  // namespace

void launch_gelu_forward(const GeluParams& p, const float* x, float* y, cudaStream_t stream) {
  if (p.n <= 0) return;
  PG_LAUNCH(gelu_forward_kernel, grid_1d(p.n, kThreads), kThreads, 0, stream, p, x, y);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_gelu_backward(const GeluParams& p, const float* x, const float* dy, float* dx, cudaStream_t stream) {
  if (p.n <= 0) return;
  PG_LAUNCH(gelu_backward_kernel, grid_1d(p.n, kThreads), kThreads, 0, stream, p, x, dy, dx);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
