// Channel reductions into saliency maps: one thread per output position. See maps.h.
#include "kernels/cuda/maps.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

PG_NO_FP_CONTRACT  // bit-identical to the CPU twin (portable.h)

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

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
    const float mean = __fdiv_rn(s, C);
    m[o] = kKind == MapKind::abs_mean_input_x_grad ? fabsf(mean) : mean;
  }
}

}  // namespace

void launch_channel_map(const ChannelMapParams& p, const float* g, const float* x, float* m, cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.HW;
  if (total <= 0) return;
  const unsigned grid = grid_1d(total, kThreads);
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
