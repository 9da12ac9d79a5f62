// Channel reductions into saliency maps: one thread per output position. See maps.h.
#include "kernels/cuda/maps.h"

#include "kernels/cuda/check.h"
#include "kernels/simt/cuda_compat.h"

// On the host runtime __fmul_rn/__fadd_rn are plain * and +; once inlined, g++ -O3
// -march=native would fuse x*g into the sum as an FMA (GNU C++ contracts by default).
// Under nvcc the _rn intrinsics are never fused.
#if PG_SIMT && defined(__clang__)
#pragma clang fp contract(off)
#elif PG_SIMT && defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

PG_DEVICE_INLINE float div_rn(float a, float b) {
#if PG_SIMT
  return a / b;
#else
  return __fdiv_rn(a, b);
#endif
}

unsigned grid_for(int64_t threads_needed) {
  const int64_t b = (threads_needed + kThreads - 1) / kThreads;
  return unsigned(b < 1 ? 1 : (b > 8192 ? 8192 : b));
}

template <MapKind kKind>
__global__ void __launch_bounds__(kThreads) channel_map_kernel(ChannelMapParams p, const float* __restrict__ g,
                                                               const float* __restrict__ x, float* __restrict__ m) {
  const int64_t total = int64_t(p.N) * p.HW;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const float C = float(p.C);
  for (int64_t o = int64_t(blockIdx.x) * kThreads + threadIdx.x; o < total; o += stride) {
    const int64_t n = o / p.HW, i = o - n * p.HW;
    const int64_t base = n * p.C * p.HW + i;
    float s = 0.f;
    for (int c = 0; c < p.C; ++c) {
      const int64_t j = base + int64_t(c) * p.HW;
      const float gv = __ldg(&g[j]);
      if (kKind == MapKind::abs_grad) {
        s = __fadd_rn(s, fabsf(gv));
      } else if (kKind == MapKind::abs_input_x_grad) {
        s = __fadd_rn(s, fabsf(__fmul_rn(__ldg(&x[j]), gv)));
      } else {
        s = __fadd_rn(s, __fmul_rn(__ldg(&x[j]), gv));
      }
    }
    const float mean = div_rn(s, C);
    m[o] = kKind == MapKind::abs_mean_input_x_grad ? fabsf(mean) : mean;
  }
}

}  // namespace

void launch_channel_map(const ChannelMapParams& p, const float* g, const float* x, float* m, cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.HW;
  if (total <= 0) return;
  const unsigned grid = grid_for(total);
  switch (p.kind) {
    case MapKind::abs_grad:
      PG_LAUNCH(channel_map_kernel<MapKind::abs_grad>, grid, kThreads, 0, stream, p, g, x, m);
      break;
    case MapKind::abs_input_x_grad:
      PG_LAUNCH(channel_map_kernel<MapKind::abs_input_x_grad>, grid, kThreads, 0, stream, p, g, x, m);
      break;
    case MapKind::abs_mean_input_x_grad:
      PG_LAUNCH(channel_map_kernel<MapKind::abs_mean_input_x_grad>, grid, kThreads, 0, stream, p, g, x, m);
      break;
  }
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
