// Per-channel reductions: gap, the spatial variances M/N, class moments. See channel_stats.h.
#include "kernels/cuda/channel_stats.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/compat.h"

namespace pg::kernels::cuda {
namespace {

// Block-wide sum of one double per thread in shared memory, as a tree of fixed shape
// (kThreads a power of two): the result depends only on the inputs, never on timing.
template <int kThreads>
PG_DEVICE_INLINE double block_sum(double v, double* s) {
  const int t = int(threadIdx.x);
  s[t] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (t < half) s[t] += s[t + half];
    __syncthreads();
  }
  const double r = s[0];
  __syncthreads();  // s may be reused by the caller
  return r;
}

// ---- (a) gap: one block per (n, c) plane ---------------------------------------------------
constexpr int kGapThreads = 128;

__global__ void __launch_bounds__(kGapThreads) channel_gap_kernel(ChannelGapParams p, const float* __restrict__ y,
                                                                  const float* __restrict__ raw_scale,
                                                                  const float* __restrict__ raw_shift,
                                                                  float* __restrict__ gap) {
  __shared__ double s[kGapThreads];
  const int64_t plane = blockIdx.x;  // n*C + c
  const int c = int(plane % p.C);
  const float sc = raw_scale ? raw_scale[c] : 1.f;
  const float sh = raw_shift ? raw_shift[c] : 0.f;
  const float* yp = y + plane * p.HW;
  double acc = 0;
  for (int64_t i = threadIdx.x; i < p.HW; i += kGapThreads) {
    const float v = (__ldg(&yp[i]) - sh) / sc;  // the same float operations as the CPU epilogue
    acc += v > 0.f ? double(v) : 0.0;
  }
  const double total = block_sum<kGapThreads>(acc, s);
  if (threadIdx.x == 0) gap[plane] = float(total / double(p.HW));
}

// ---- (b) spatial variances -------------------------------------------------------------------
// Pass 1: grid (tiles, N). Thread t of tile b owns position hw = b*kVarThreads + t and sums
// its column over all channels into S_H or S_L (in channel order). The block then merges its
// positions' (count, mean, M2) for S_H and S_L with Chan's formula along a fixed tree, and
// writes one Partial per (sample, tile). Pass 2: one thread per sample merges its tiles in
// order and finishes the variances.
constexpr int kVarThreads = 256;

struct Partial {
  double count, mean_h, m2_h, mean_l, m2_l;
};

// Chan et al.'s pairwise merge of (count, mean, M2); the counts are the same for H and L.
PG_DEVICE_INLINE void chan_merge(double na, double& mean, double& m2, double nb, double mean_b, double m2_b) {
  const double n = na + nb;
  if (nb == 0) return;
  const double delta = mean_b - mean;
  mean += delta * (nb / n);
  m2 += m2_b + delta * delta * (na * nb / n);
}

int64_t var_tiles(const SpatialVarianceParams& p) { return (p.HW + kVarThreads - 1) / kVarThreads; }

__global__ void __launch_bounds__(kVarThreads) spatial_variance_partial_kernel(
    SpatialVarianceParams p, const float* __restrict__ g, const float* __restrict__ grad_scale,
    const uint8_t* __restrict__ select, Partial* __restrict__ partial) {
  __shared__ double s_n[kVarThreads], s_mh[kVarThreads], s_m2h[kVarThreads], s_ml[kVarThreads],
      s_m2l[kVarThreads];
  const int t = int(threadIdx.x);
  const int n = int(blockIdx.y);
  const int64_t hw = int64_t(blockIdx.x) * kVarThreads + t;
  double sh = 0, sl = 0;
  const bool valid = hw < p.HW;
  if (valid) {
    const float* gp = g + int64_t(n) * p.C * p.HW + hw;
    const uint8_t* sel = select + int64_t(n) * p.C;
    for (int c = 0; c < p.C; ++c) {
      const double b = grad_scale ? double(__ldg(&grad_scale[c])) : 1.0;
      const double v = b * double(__ldg(&gp[int64_t(c) * p.HW]));
      if (__ldg(&sel[c])) sh += v; else sl += v;
    }
  }
  s_n[t] = valid ? 1.0 : 0.0;
  s_mh[t] = sh;
  s_ml[t] = sl;
  s_m2h[t] = 0;
  s_m2l[t] = 0;
  __syncthreads();
  for (int half = kVarThreads / 2; half > 0; half >>= 1) {
    if (t < half) {
      const double na = s_n[t], nb = s_n[t + half];
      chan_merge(na, s_mh[t], s_m2h[t], nb, s_mh[t + half], s_m2h[t + half]);
      chan_merge(na, s_ml[t], s_m2l[t], nb, s_ml[t + half], s_m2l[t + half]);
      s_n[t] = na + nb;
    }
    __syncthreads();
  }
  if (t == 0) partial[int64_t(n) * gridDim.x + blockIdx.x] = Partial{s_n[0], s_mh[0], s_m2h[0], s_ml[0], s_m2l[0]};
}

__global__ void spatial_variance_final_kernel(SpatialVarianceParams p, int64_t tiles,
                                              const Partial* __restrict__ partial, double* __restrict__ M,
                                              double* __restrict__ Nv) {
  const int n = int(blockIdx.x) * int(blockDim.x) + int(threadIdx.x);
  if (n >= p.N) return;
  const Partial* pp = partial + int64_t(n) * tiles;
  double count = 0, mh = 0, m2h = 0, ml = 0, m2l = 0;
  for (int64_t b = 0; b < tiles; ++b) {
    const Partial q = pp[b];
    chan_merge(count, mh, m2h, q.count, q.mean_h, q.m2_h);
    chan_merge(count, ml, m2l, q.count, q.mean_l, q.m2_l);
    count += q.count;
  }
  const double vh = count < 2 ? 0.0 : m2h / (count - 1), vl = count < 2 ? 0.0 : m2l / (count - 1);
  M[n] = vh + 1e-7;
  Nv[n] = vl + 1e-7;
}

// ---- (c) class moments: one thread per (class, channel) -----------------------------------
constexpr int kMomThreads = 256;

__global__ void __launch_bounds__(kMomThreads) class_moments_kernel(ClassMomentsParams p, const float* __restrict__ gap,
                                                                    const int32_t* __restrict__ labels,
                                                                    ClassMoment* __restrict__ acc) {
  const int64_t i = int64_t(blockIdx.x) * kMomThreads + threadIdx.x;
  if (i >= int64_t(p.classes) * p.C) return;
  const int k = int(i / p.C), c = int(i % p.C);
  // This batch's moments of class k (Welford, samples in batch order).
  double nb = 0, mean_b = 0, m2_b = 0;
  for (int n = 0; n < p.N; ++n) {
    if (__ldg(&labels[n]) != k) continue;
    const double x = double(__ldg(&gap[int64_t(n) * p.C + c]));
    nb += 1;
    const double d = x - mean_b;
    mean_b += d / nb;
    m2_b += d * (x - mean_b);
  }
  if (nb == 0) return;
  ClassMoment a = acc[i];
  chan_merge(a.count, a.mean, a.m2, nb, mean_b, m2_b);
  a.count += nb;
  acc[i] = a;
}

}  // namespace

void launch_channel_gap(const ChannelGapParams& p, const float* y, const float* raw_scale,
                        const float* raw_shift, float* gap, cudaStream_t stream) {
  if (int64_t(p.N) * p.C <= 0 || p.HW <= 0) return;
  PG_LAUNCH(channel_gap_kernel, unsigned(int64_t(p.N) * p.C), kGapThreads, 0, stream, p, y, raw_scale, raw_shift,
            gap);
  PG_CUDA_CHECK_LAUNCH();
}

size_t spatial_variance_workspace_bytes(const SpatialVarianceParams& p) {
  return size_t(p.N > 0 ? p.N : 0) * size_t(var_tiles(p)) * sizeof(Partial);
}

void launch_spatial_variances(const SpatialVarianceParams& p, const float* g, const float* grad_scale,
                              const uint8_t* select, double* M, double* Nv, void* workspace,
                              cudaStream_t stream) {
  if (p.N <= 0 || p.HW <= 0) return;
  const int64_t tiles = var_tiles(p);
  Partial* partial = static_cast<Partial*>(workspace);
  PG_LAUNCH(spatial_variance_partial_kernel, dim3(unsigned(tiles), unsigned(p.N)), kVarThreads, 0, stream, p, g,
            grad_scale, select, partial);
  PG_CUDA_CHECK_LAUNCH();
  PG_LAUNCH(spatial_variance_final_kernel, unsigned((p.N + 31) / 32), 32, 0, stream, p, tiles,
            static_cast<const Partial*>(partial), M, Nv);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_class_moments_update(const ClassMomentsParams& p, const float* gap, const int32_t* labels,
                                 ClassMoment* acc, cudaStream_t stream) {
  const int64_t total = int64_t(p.classes) * p.C;
  if (total <= 0 || p.N <= 0) return;
  PG_LAUNCH(class_moments_kernel, unsigned((total + kMomThreads - 1) / kMomThreads), kMomThreads, 0, stream, p, gap,
            labels, acc);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
