// Depthwise data gradient: a grid-stride loop over the input elements, each a gather over its
// R x S taps (see depthwise_dgrad.h for the order contract).
#include "kernels/cuda/depthwise_dgrad.h"

#include <string>

#include "core/error.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

PG_NO_FP_CONTRACT  // bit-identical to the CPU twin (portable.h)

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) depthwise_dgrad_kernel(DepthwiseDgradParams p, const float* __restrict__ dy,
                                                                   const float* __restrict__ w,
                                                                   const float* __restrict__ scale,
                                                                   float* __restrict__ dx) {
  const int64_t total = int64_t(p.N) * p.C * p.H * p.W;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int iw = int(i % p.W);
    const int ih = int(i / p.W % p.H);
    const int64_t plane = i / (int64_t(p.H) * p.W);  // n * C + c (= n * K + c)
    const int c = int(plane % p.C);
    const float sc = scale ? __ldg(&scale[plane]) : 1.f;
    float acc = 0.f;
    if (sc != 0.f) {
      const float* g = dy + plane * p.P * p.Q;
      const float* wc = w + int64_t(c) * p.R * p.S;
      for (int r = 0; r < p.R; ++r) {
        const int th = ih + p.pad_h - r * p.dil_h;
        if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= p.P) continue;
        const float* gr = g + int64_t(th / p.stride_h) * p.Q;
        for (int s = 0; s < p.S; ++s) {
          const int tw = iw + p.pad_w - s * p.dil_w;
          if (tw < 0 || tw % p.stride_w != 0 || tw / p.stride_w >= p.Q) continue;
          acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(sc, __ldg(&gr[tw / p.stride_w])), __ldg(&wc[r * p.S + s])));
        }
      }
    }
    dx[i] = acc;
  }
}

}  // namespace

void launch_depthwise_dgrad(const DepthwiseDgradParams& p, const float* dy, const float* w, const float* scale,
                            float* dx, cudaStream_t stream) {
  if (!depthwise_dgrad_supported(p))
    throw Error("launch_depthwise_dgrad: not a depthwise convolution (groups " + std::to_string(p.groups) + ", C " +
                std::to_string(p.C) + ", K " + std::to_string(p.K) + ")");
  const int64_t total = int64_t(p.N) * p.C * p.H * p.W;
  if (total <= 0) return;
  PG_LAUNCH(depthwise_dgrad_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, dy, w, scale, dx);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
