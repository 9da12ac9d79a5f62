// LayerNorm over channels: a grid-stride loop over the N * HW positions, each reduced over C
// in double (see layernorm.h and kernels/cpu/layernorm.h for the order contract).
#include "kernels/cuda/layernorm.h"

#include <cmath>

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

PG_NO_FP_CONTRACT  // bit-identical to the CPU twin (portable.h)

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Double operations that are never contracted: the _rn intrinsics under nvcc, plain
// operators on the host runtime (where PG_NO_FP_CONTRACT turns contraction off).
#if PG_SIMT
inline double dadd(double a, double b) { return a + b; }
inline double dsub(double a, double b) { return a - b; }
inline double dmul(double a, double b) { return a * b; }
inline double ddiv(double a, double b) { return a / b; }
inline double dsqrt(double a) { return std::sqrt(a); }
#else
__device__ __forceinline__ double dadd(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double dsub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double dmul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double ddiv(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ double dsqrt(double a) { return __dsqrt_rn(a); }
#endif

// mean and rstd of one position; xs points at channel 0 of that position.
__device__ void position_stats(const LayerNormParams& p, const float* xs, double* mean, double* rstd) {
  double s = 0.0;
  for (int c = 0; c < p.C; ++c) s = dadd(s, double(__ldg(&xs[int64_t(c) * p.HW])));
  const double m = ddiv(s, double(p.C));
  double q = 0.0;
  for (int c = 0; c < p.C; ++c) {
    const double d = dsub(double(__ldg(&xs[int64_t(c) * p.HW])), m);
    q = dadd(q, dmul(d, d));
  }
  *mean = m;
  *rstd = ddiv(1.0, dsqrt(dadd(ddiv(q, double(p.C)), p.eps)));
}

__global__ void __launch_bounds__(kThreads) layernorm_forward_kernel(LayerNormParams p, const float* __restrict__ x,
                                                                     const float* __restrict__ w,
                                                                     const float* __restrict__ b,
                                                                     float* __restrict__ y) {
  const int64_t total = int64_t(p.N) * p.HW;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < total; t += stride) {
    const int64_t n = t / p.HW, i = t % p.HW;
    const int64_t base = n * p.C * p.HW + i;
    double mean, rstd;
    position_stats(p, x + base, &mean, &rstd);
    for (int c = 0; c < p.C; ++c) {
      const int64_t k = base + int64_t(c) * p.HW;
      const double wc = w ? double(__ldg(&w[c])) : 1.0, bc = b ? double(__ldg(&b[c])) : 0.0;
      y[k] = float(dadd(dmul(dmul(dsub(double(__ldg(&x[k])), mean), rstd), wc), bc));
    }
  }
}

__global__ void __launch_bounds__(kThreads) layernorm_backward_kernel(LayerNormParams p, const float* __restrict__ x,
                                                                      const float* __restrict__ w, const float* dy,
                                                                      float* dx) {
  const int64_t total = int64_t(p.N) * p.HW;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t t = int64_t(blockIdx.x) * kThreads + threadIdx.x; t < total; t += stride) {
    const int64_t n = t / p.HW, i = t % p.HW;
    const int64_t base = n * p.C * p.HW + i;
    double mean, rstd;
    position_stats(p, x + base, &mean, &rstd);
    double a = 0.0, bs = 0.0;
    for (int c = 0; c < p.C; ++c) {
      const int64_t k = base + int64_t(c) * p.HW;
      const double g = dmul(double(dy[k]), w ? double(__ldg(&w[c])) : 1.0);
      const double xh = dmul(dsub(double(__ldg(&x[k])), mean), rstd);
      a = dadd(a, g);
      bs = dadd(bs, dmul(g, xh));
    }
    a = ddiv(a, double(p.C));
    bs = ddiv(bs, double(p.C));
    for (int c = 0; c < p.C; ++c) {
      const int64_t k = base + int64_t(c) * p.HW;
      const double g = dmul(double(dy[k]), w ? double(__ldg(&w[c])) : 1.0);
      const double xh = dmul(dsub(double(__ldg(&x[k])), mean), rstd);
      dx[k] = float(dmul(rstd, dsub(dsub(g, a), dmul(xh, bs))));
    }
  }
}

}  // namespace

void launch_layernorm_forward(const LayerNormParams& p, const float* x, const float* w, const float* b, float* y,
                              cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.HW;
  if (total <= 0 || p.C <= 0) return;
  PG_LAUNCH(layernorm_forward_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, x, w, b, y);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_layernorm_backward(const LayerNormParams& p, const float* x, const float* w, const float* dy, float* dx,
                               cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.HW;
  if (total <= 0 || p.C <= 0) return;
  PG_LAUNCH(layernorm_backward_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, x, w, dy, dx);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
