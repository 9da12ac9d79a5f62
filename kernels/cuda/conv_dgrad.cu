// Convolution data-gradient as an implicit GEMM on CUDA cores. See conv_dgrad.h.
//
// Tiling: a block computes a 64 (input pixels of one sample) x 64 (input channels) tile of
// dx with 256 threads, each a 4 x 4 micro-tile in registers. The reduction runs over
// (kept channel j, r, s) in steps of 16; each step the block stages A (16 x 64) and B
// (16 x 64) in shared memory, and the next step's elements are fetched into registers while
// the current step is multiplied (one tile in flight, one barrier pair per step).
//
// TF32 variant (kTf32 = true, launch_conv_dgrad_tf32): the same staging, with A and B
// rounded to TF32 (cvt.rna) as they are stored; 8 warps in a 2 (pixels) x 4 (channels)
// grid, each warp a 32 x 16 tile as 2 x 2 mma.sync.m16n8k8 (.tf32 inputs, f32 accumulate),
// two k-steps of 8 per staged step of 16. Rows of the shared tiles are padded by 8 floats
// so that the fragment loads (lanes g = lane/4 along pixels, t = lane%4 along k) hit 32
// different banks.
#include "kernels/cuda/conv_dgrad.h"

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/simt/tensor_core.h"
#include "kernels/simt/cuda_compat.h"
#include "nn/error.h"

namespace pg::kernels::cuda {
namespace {

constexpr int kBM = 64;   // input pixels per tile
constexpr int kBN = 64;   // input channels per tile
constexpr int kBK = 16;   // reduction step
constexpr int kThreads = 256;
constexpr int kPad = kBM + 8;  // row stride of the shared tiles (floats)
constexpr int kLoads = kBK * kBM / kThreads;  // A (and B) elements each thread stages per step: 4
static_assert(kBM == kBN && kThreads % kBM == 0 && kLoads * kThreads == kBK * kBM, "tile shape");

// ---- kept-channel lists: one warp per sample ------------------------------------------------
__global__ void __launch_bounds__(32) compact_kernel(ConvDgradParams p, const float* __restrict__ scale,
                                                    int32_t* __restrict__ kept, int32_t* __restrict__ count) {
  const int n = int(blockIdx.x);
  const unsigned lane = threadIdx.x;
  int base = 0;
  for (int k0 = 0; k0 < p.K; k0 += 32) {  // uniform bounds: all lanes reach the ballot
    const int k = k0 + int(lane);
    const bool keep = k < p.K && (scale == nullptr || scale[int64_t(n) * p.K + k] != 0.f);
    const unsigned bits = __ballot_sync(0xFFFFFFFFu, keep);
    if (keep) kept[int64_t(n) * p.K + base + __popc(bits & ((1u << lane) - 1u))] = k;
    base += __popc(bits);
  }
  if (lane == 0) count[n] = base;
}

// ---- the implicit GEMM ----------------------------------------------------------------------
template <bool kTf32>
__global__ void __launch_bounds__(kThreads) dgrad_kernel(ConvDgradParams p, const float* __restrict__ dy,
                                                         const float* __restrict__ w,
                                                         const float* __restrict__ scale,
                                                         const int32_t* __restrict__ kept,
                                                         const int32_t* __restrict__ count,
                                                         float* __restrict__ dx) {
  __shared__ __align__(16) float As[kBK][kPad];
  __shared__ __align__(16) float Bs[kBK][kPad];

  const int tid = int(threadIdx.x);
  const int n = int(blockIdx.z);
  const int HW = p.H * p.W, PQ = p.P * p.Q, RS = p.R * p.S;
  const int m0 = int(blockIdx.x) * kBM, c0 = int(blockIdx.y) * kBN;
  const int ktot = count[n] * RS;  // reduction length: kept channels x taps
  const int32_t* kept_n = kept + int64_t(n) * p.K;
  const float* dy_n = dy + int64_t(n) * p.K * PQ;
  const float* scale_n = scale ? scale + int64_t(n) * p.K : nullptr;

  // Staging roles, fixed over the loop: this thread loads A rows of pixel `ml` and B rows of
  // channel `cl`, reduction rows kl0 + 4q (q = 0..3).
  const int ml = tid % kBM, cl = tid % kBN, kl0 = tid / kBM;
  const int pix = m0 + ml, c = c0 + cl;
  const bool pix_ok = pix < HW, c_ok = c < p.C;
  const int ih = pix_ok ? pix / p.W : 0, iw = pix_ok ? pix % p.W : 0;
  // Offsets so that oh*stride_h = ih + pad_h - r.
  const int ihp = ih + p.pad_h, iwp = iw + p.pad_w;

  float a_reg[kLoads], b_reg[kLoads];
  auto fetch = [&](int k0) {
    PG_UNROLL
    for (int q = 0; q < kLoads; ++q) {
      const int kk = k0 + kl0 + q * (kThreads / kBM);
      float a = 0.f, b = 0.f;
      if (kk < ktot) {
        const int j = kk / RS, rs = kk - j * RS;
        const int r = rs / p.S, s = rs - r * p.S;
        const int k = __ldg(&kept_n[j]);
        if (c_ok) b = __ldg(&w[(int64_t(k) * p.C + c) * RS + rs]);
        const int ohs = ihp - r, ows = iwp - s;
        if (pix_ok && ohs >= 0 && ows >= 0 && ohs % p.stride_h == 0 && ows % p.stride_w == 0) {
          const int oh = ohs / p.stride_h, ow = ows / p.stride_w;
          if (oh < p.P && ow < p.Q) {
            const float g = __ldg(&dy_n[int64_t(k) * PQ + oh * p.Q + ow]);
            a = scale_n ? __ldg(&scale_n[k]) * g : g;  // the ParchGrad scale, fused into the load
          }
        }
      }
      a_reg[q] = a;
      b_reg[q] = b;
    }
  };

  // Stores this thread's staged elements (rounded to TF32 for the tensor-core variant).
  auto stage = [&]() {
    PG_UNROLL
    for (int q = 0; q < kLoads; ++q) {
      const int row = kl0 + q * (kThreads / kBM);
      As[row][ml] = kTf32 ? __uint_as_float(pg_cvt_rna_tf32(a_reg[q])) : a_reg[q];
      Bs[row][cl] = kTf32 ? __uint_as_float(pg_cvt_rna_tf32(b_reg[q])) : b_reg[q];
    }
  };
  float* dx_n = dx + int64_t(n) * p.C * HW;

  if constexpr (!kTf32) {
    // Compute roles: pixels tx*4 + i, channels ty*4 + j.
    const int tx = tid % 16, ty = tid / 16;
    float acc[4][4] = {};
    fetch(0);
    for (int k0 = 0; k0 < ktot; k0 += kBK) {
      stage();
      __syncthreads();
      if (k0 + kBK < ktot) fetch(k0 + kBK);  // next step's loads overlap this step's math
      PG_UNROLL
      for (int kk = 0; kk < kBK; ++kk) {
        const float4 a = *reinterpret_cast<const float4*>(&As[kk][tx * 4]);
        const float4 b = *reinterpret_cast<const float4*>(&Bs[kk][ty * 4]);
        const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
        PG_UNROLL
        for (int i = 0; i < 4; ++i)
          PG_UNROLL
          for (int jj = 0; jj < 4; ++jj) acc[i][jj] = __fmaf_rn(av[i], bv[jj], acc[i][jj]);
      }
      __syncthreads();
    }
    PG_UNROLL
    for (int jj = 0; jj < 4; ++jj) {
      const int cc = c0 + ty * 4 + jj;
      if (cc >= p.C) continue;
      PG_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int m = m0 + tx * 4 + i;
        if (m < HW) dx_n[int64_t(cc) * HW + m] = acc[i][jj];
      }
    }
  } else {
    // Warp (wm, wn) owns pixels wm*32 + [0, 32) and channels wn*16 + [0, 16) of the tile.
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wm = warp % 2, wn = warp / 2;
    float acc[2][2][4] = {};
    fetch(0);
    for (int k0 = 0; k0 < ktot; k0 += kBK) {
      stage();
      __syncthreads();
      if (k0 + kBK < ktot) fetch(k0 + kBK);
      PG_UNROLL
      for (int ks = 0; ks < kBK; ks += 8) {
        // A (16 pixels x 8 k, row-major): a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4).
        uint32_t a[2][4], b[2][2];
        PG_UNROLL
        for (int mi = 0; mi < 2; ++mi) {
          const int m = wm * 32 + mi * 16 + g;
          a[mi][0] = __float_as_uint(As[ks + t][m]);
          a[mi][1] = __float_as_uint(As[ks + t][m + 8]);
          a[mi][2] = __float_as_uint(As[ks + t + 4][m]);
          a[mi][3] = __float_as_uint(As[ks + t + 4][m + 8]);
        }
        // B (8 k x 8 channels, column-major): b0 (k = t, n = g), b1 (k = t+4, n = g).
        PG_UNROLL
        for (int ni = 0; ni < 2; ++ni) {
          const int c = wn * 16 + ni * 8 + g;
          b[ni][0] = __float_as_uint(Bs[ks + t][c]);
          b[ni][1] = __float_as_uint(Bs[ks + t + 4][c]);
        }
        PG_UNROLL
        for (int mi = 0; mi < 2; ++mi)
          PG_UNROLL
          for (int ni = 0; ni < 2; ++ni) pg_mma_m16n8k8_tf32(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
      }
      __syncthreads();
    }
    // C fragment: c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1); row = pixel.
    PG_UNROLL
    for (int mi = 0; mi < 2; ++mi)
      PG_UNROLL
      for (int ni = 0; ni < 2; ++ni)
        PG_UNROLL
        for (int i = 0; i < 4; ++i) {
          const int m = m0 + wm * 32 + mi * 16 + g + 8 * (i >> 1);
          const int cc = c0 + wn * 16 + ni * 8 + 2 * t + (i & 1);
          if (m < HW && cc < p.C) dx_n[int64_t(cc) * HW + m] = acc[mi][ni][i];
        }
  }
}

void launch(bool tf32, const ConvDgradParams& p, const float* dy, const float* w, const float* scale, float* dx,
            void* workspace, cudaStream_t stream) {
  if (!conv_dgrad_supported(p))
    throw pg::Error(std::string(tf32 ? "launch_conv_dgrad_tf32" : "launch_conv_dgrad") +
                    ": unsupported convolution (groups " + std::to_string(p.groups) + ", dilation " +
                    std::to_string(p.dil_h) + "x" + std::to_string(p.dil_w) + ", N " + std::to_string(p.N) + ")");
  int32_t* kept = static_cast<int32_t*>(workspace);
  int32_t* count = kept + int64_t(p.N) * p.K;
  PG_LAUNCH(compact_kernel, unsigned(p.N), 32, 0, stream, p, scale, kept, count);
  PG_CUDA_CHECK_LAUNCH();
  const dim3 grid(unsigned((p.H * p.W + kBM - 1) / kBM), unsigned((p.C + kBN - 1) / kBN), unsigned(p.N));
  const int32_t* kept_c = kept;
  const int32_t* count_c = count;
  if (tf32) {
    PG_LAUNCH((dgrad_kernel<true>), grid, kThreads, 0, stream, p, dy, w, scale, kept_c, count_c, dx);
  } else {
    PG_LAUNCH((dgrad_kernel<false>), grid, kThreads, 0, stream, p, dy, w, scale, kept_c, count_c, dx);
  }
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace

bool conv_dgrad_supported(const ConvDgradParams& p) {
  return p.groups == 1 && p.dil_h == 1 && p.dil_w == 1 && p.N > 0 && p.C > 0 && p.K > 0 && p.R > 0 && p.S > 0 &&
         p.P > 0 && p.Q > 0 && p.stride_h > 0 && p.stride_w > 0 && p.N <= 65535;
}

size_t conv_dgrad_workspace_bytes(const ConvDgradParams& p) {
  return (size_t(p.N) * size_t(p.K) + size_t(p.N)) * sizeof(int32_t);
}

void launch_conv_dgrad(const ConvDgradParams& p, const float* dy, const float* w, const float* scale, float* dx,
                       void* workspace, cudaStream_t stream) {
  launch(false, p, dy, w, scale, dx, workspace, stream);
}

void launch_conv_dgrad_tf32(const ConvDgradParams& p, const float* dy, const float* w, const float* scale, float* dx,
                            void* workspace, cudaStream_t stream) {
  launch(true, p, dy, w, scale, dx, workspace, stream);
}

}  // namespace pg::kernels::cuda
