// Exact GELU: grid-stride loops over the elements (see gelu.h and kernels/cpu/gelu.h).
#include "kernels/cuda/gelu.h"

#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

PG_NO_FP_CONTRACT  // the CPU twin's order (portable.h)

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr double kSqrt1_2 = 0.70710678118654752440;   // M_SQRT1_2
constexpr double kTwoSqrtPi = 1.12837916709551257390;  // M_2_SQRTPI
constexpr double kBeta = kTwoSqrtPi * kSqrt1_2 * 0.5;

#if PG_SIMT
inline double dadd(double a, double b) { return a + b; }
inline double dmul(double a, double b) { return a * b; }
#else
__device__ __forceinline__ double dadd(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double dmul(double a, double b) { return __dmul_rn(a, b); }
#endif

__global__ void __launch_bounds__(kThreads) gelu_forward_kernel(GeluParams p, const float* x, float* y) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < p.n; i += stride) {
    const double v = double(x[i]);
    y[i] = float(dmul(dmul(v, 0.5), dadd(1.0, erf(dmul(v, kSqrt1_2)))));
  }
}

__global__ void __launch_bounds__(kThreads) gelu_backward_kernel(GeluParams p, const float* __restrict__ x,
                                                                 const float* dy, float* dx) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < p.n; i += stride) {
    const double v = double(__ldg(&x[i]));
    const double cdf = dmul(0.5, dadd(1.0, erf(dmul(v, kSqrt1_2))));
    const double pdf = dmul(exp(dmul(-0.5, dmul(v, v))), kBeta);
    dx[i] = float(dmul(double(dy[i]), dadd(cdf, dmul(v, pdf))));
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
