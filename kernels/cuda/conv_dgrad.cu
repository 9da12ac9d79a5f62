// Convolution data-gradient as an implicit GEMM, float32 / TF32 / BF16. See conv_dgrad.h.
//
// Tiles: a block computes BM (pixels of one phase of one sample) x BN (input channels) of dx
// with 256 threads, BM x BN = 4096: 64 x 64, or 256 x 16 when C <= 16 (the first conv, C = 3,
// would otherwise spend 61 of every 64 columns of work on channels that do not exist).
// Grid: x = BM-pixel tiles of one phase (sized for the largest phase, a = b = 0; the other
// phases' surplus blocks return at once), y = BN-channel tiles, z = (sample, phase).
// The reduction runs over (kept channel j, tap i, tap i2) of the phase in steps of 16; each
// step the block stages A (16 x BM) and B (16 x BN) in shared memory, and the next step's
// elements are fetched into registers while the current step is multiplied (one tile in
// flight, one barrier pair per step). Staging roles: A pixel tid % BM with LA = 16 * BM / 256
// consecutive reduction rows from LA * (tid / BM); B channel tid % BN with LB (>= 2)
// consecutive rows from LB * (tid / BN) (with BN = 16 only the first 128 threads stage B).
//
// float32 (dgrad_fp32_kernel): each thread a 4 x 4 micro-tile in registers, FMAs.
// TF32 (dgrad_tf32_kernel): A and B rounded to TF32 (cvt.rna) as they are stored, tiles
//   [k][pixel] / [k][channel] of floats; 8 warps in a (BM / 32) x (BN / 16) grid, each warp a
//   32 x 16 tile as 2 x 2 mma.sync.m16n8k8, two k-steps of 8 per staged step. Rows are padded
//   by 8 floats (row strides 72, 264, 24: 8 mod 32 or 24) so that the fragment loads
//   (g = lane/4 along pixels or channels, t = lane%4 along k) hit 32 different banks.
// BF16 (dgrad_bf16_kernel): A and B rounded to BF16 (nearest even) as they are stored, tiles
//   [pixel][k] / [channel][k] of bf16 pairs (k contiguous, as the m16n8k16 fragments hold
//   them: two consecutive k of one row per register), the same warp grid and 32 x 16 warp
//   tiles, one m16n8k16 per staged step. Fragments come from ldmatrix.x4 (A: one per 16
//   pixels; B: one for the warp's 16 channels). Rows are 16 bf16 + 8 padding (48 bytes), so
//   the 8 rows of one 8x8 matrix start in banks 0, 12, 24, 4, 16, 28, 8, 20: no conflict.
//
// The ParchGrad scale multiplies dy in float32 before any rounding, in all three variants.
#include "kernels/cuda/conv_dgrad.h"

#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/ptx.h"
#include "kernels/cuda/compat.h"
#include "core/error.h"

namespace pg::kernels::cuda {
namespace {

constexpr int kTile = 4096;  // BM x BN, outputs per block
constexpr int kBK = 16;      // reduction step
constexpr int kThreads = 256;
constexpr int kRowW = 12;    // row stride of the bf16 tiles, in 32-bit words (16 bf16 + 8 padding)
constexpr int kSmallC = 16;  // C <= kSmallC: BN = 16 tiles

// The tile shape of a BN (64 or 16).
template <int BN>
struct Tile {
  static constexpr int BM = kTile / BN;                          // 64 or 256 pixels
  static constexpr int LA = kBK * BM / kThreads;                 // A rows per thread: 4 or 16
  static constexpr int LB = kBK * BN / kThreads < 2 ? 2 : kBK * BN / kThreads;  // B rows: 4 or 2
  static constexpr int kBStagers = kBK * BN / LB;                // threads staging B: 256 or 128
  static constexpr int WN = BN / 16, WM = 8 / WN;                // warp grid (pixels x channels)
  static_assert(WM * 32 == BM && WN * 16 == BN && LA * kThreads == kBK * BM && LA % 2 == 0 &&
                    kBStagers <= kThreads && BM % 4 == 0 && (BM / 4) * (BN / 4) == kThreads,
                "tile shape");
};

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

// ---- phases ---------------------------------------------------------------------------------
// Phase (a, b) of dx: the pixels ih = a + stride_h*u (u < Hp), iw = b + stride_w*v (v < Wp).
// Its taps are r = r0 + stride_h*i (i < Rp), s = s0 + stride_w*i2 (i2 < Sp), and tap (i, i2)
// takes dy at oh = u + oh0 - i, ow = v + ow0 - i2 (when inside [0, P) x [0, Q)): from
// oh*stride_h = ih + pad_h - r with r = (a + pad_h) mod stride_h + stride_h*i.
struct Phase {
  int a, b, Hp, Wp, r0, s0, Rp, Sp, oh0, ow0;
};

PG_HOST_DEVICE inline Phase phase_of(const ConvDgradParams& p, int ph) {
  Phase f;
  f.a = ph / p.stride_w;
  f.b = ph - f.a * p.stride_w;
  f.Hp = f.a < p.H ? (p.H - f.a + p.stride_h - 1) / p.stride_h : 0;
  f.Wp = f.b < p.W ? (p.W - f.b + p.stride_w - 1) / p.stride_w : 0;
  f.r0 = (f.a + p.pad_h) % p.stride_h;
  f.s0 = (f.b + p.pad_w) % p.stride_w;
  f.Rp = f.r0 < p.R ? (p.R - f.r0 + p.stride_h - 1) / p.stride_h : 0;  // 0: dx is 0 on this phase
  f.Sp = f.s0 < p.S ? (p.S - f.s0 + p.stride_w - 1) / p.stride_w : 0;
  f.oh0 = (f.a + p.pad_h) / p.stride_h;
  f.ow0 = (f.b + p.pad_w) / p.stride_w;
  return f;
}

// Two floats as a pair of bf16 (round to nearest even), lo in the low half.
PG_DEVICE_INLINE uint32_t pack_bf16x2(float lo, float hi) {
  return uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(lo))) |
         (uint32_t(__bfloat16_as_ushort(__float2bfloat16_rn(hi))) << 16);
}

// ---- the implicit GEMM ----------------------------------------------------------------------
template <ConvPrecision kPrec, int BN>
PG_DEVICE_INLINE void dgrad_body(const ConvDgradParams& p, const float* __restrict__ dy, const float* __restrict__ w,
                                 const float* __restrict__ scale, const int32_t* __restrict__ kept,
                                 const int32_t* __restrict__ count, float* __restrict__ dx) {
  const int nph = p.stride_h * p.stride_w;
  const int n = int(blockIdx.z) / nph;
  const Phase f = phase_of(p, int(blockIdx.z) - n * nph);
  const int HWp = f.Hp * f.Wp;  // pixels of this phase
  using T = Tile<BN>;
  constexpr int BM = T::BM, LA = T::LA, LB = T::LB;
  const int m0 = int(blockIdx.x) * BM, c0 = int(blockIdx.y) * BN;
  if (m0 >= HWp) return;  // block-uniform, before any barrier: a smaller phase's surplus tile

  const int tid = int(threadIdx.x);
  const int HW = p.H * p.W, PQ = p.P * p.Q, RS = p.R * p.S, RSp = f.Rp * f.Sp;
  const int ktot = count[n] * RSp;  // reduction length: kept channels x this phase's taps
  const int32_t* kept_n = kept + int64_t(n) * p.K;
  const float* dy_n = dy + int64_t(n) * p.K * PQ;
  const float* scale_n = scale ? scale + int64_t(n) * p.K : nullptr;
  float* dx_n = dx + int64_t(n) * p.C * HW;
  // Offset in dx's plane of the phase's pixel m.
  auto pixel_offset = [&](int m) {
    const int u = m / f.Wp, v = m - u * f.Wp;
    return (f.a + p.stride_h * u) * p.W + f.b + p.stride_w * v;
  };

  // Staging roles, fixed over the loop: this thread loads the A elements of pixel `ml`,
  // reduction rows ka + q (q < LA) of each step, and (when b_on) the B elements of channel
  // `cl`, rows kb + q (q < LB).
  const int ml = tid % BM, ka = (tid / BM) * LA;
  const int cl = tid % BN, kb = (tid / BN) * LB;
  const bool b_on = tid < T::kBStagers;
  const int pm = m0 + ml, c = c0 + cl;
  const bool pix_ok = pm < HWp, c_ok = b_on && c < p.C;
  const int u = pix_ok ? pm / f.Wp : 0, v = pix_ok ? pm - u * f.Wp : 0;
  const int ohb = u + f.oh0, owb = v + f.ow0;  // dy position of tap (0, 0)
  const float* w_c = w + int64_t(c_ok ? c : 0) * RS + f.r0 * p.S + f.s0;  // w[., c, r0, s0]
  const int64_t w_kstride = int64_t(p.C) * RS;

  // Reduction index kk = (j * Rp + i) * Sp + i2: kept channel j, taps i, i2 of this phase.
  // Each thread stages consecutive kk, so only the first of a step is divided out.
  struct Tap {
    int j, i, i2;
  };
  auto tap_of = [&](int kk) {
    Tap x;
    x.j = kk / RSp;
    const int tap = kk - x.j * RSp;
    x.i = tap / f.Sp;
    x.i2 = tap - x.i * f.Sp;
    return x;
  };
  auto next_tap = [&](Tap& x) {
    if (++x.i2 == f.Sp) {
      x.i2 = 0;
      if (++x.i == f.Rp) {
        x.i = 0;
        ++x.j;
      }
    }
  };
  // One A element (scale * dy, 0 outside the output) and one B element (w) of a tap.
  auto load_a = [&](int k, const Tap& x) {
    const int oh = ohb - x.i, ow = owb - x.i2;
    if (oh < 0 || oh >= p.P || ow < 0 || ow >= p.Q) return 0.f;
    const float g = __ldg(&dy_n[int64_t(k) * PQ + oh * p.Q + ow]);
    return scale_n ? __ldg(&scale_n[k]) * g : g;  // the ParchGrad scale, fused into the load
  };
  auto load_b = [&](int k, const Tap& x) {
    return __ldg(&w_c[k * w_kstride + p.stride_h * x.i * p.S + p.stride_w * x.i2]);
  };
  float a_reg[LA], b_reg[LB];
  // Fetches the staged elements of the step starting at reduction index k0 into registers.
  auto fetch = [&](int k0) {
    if constexpr (BM == BN) {  // A and B rows coincide (ka == kb): one walk for both
      Tap x = tap_of(k0 + ka);
      PG_UNROLL
      for (int q = 0; q < LA; ++q) {
        float a = 0.f, b = 0.f;
        if (k0 + ka + q < ktot) {
          const int k = __ldg(&kept_n[x.j]);
          if (pix_ok) a = load_a(k, x);
          if (c_ok) b = load_b(k, x);
        }
        a_reg[q] = a;
        b_reg[q] = b;
        next_tap(x);
      }
    } else {
      Tap x = tap_of(k0 + ka);
      PG_UNROLL
      for (int q = 0; q < LA; ++q) {
        a_reg[q] = pix_ok && k0 + ka + q < ktot ? load_a(__ldg(&kept_n[x.j]), x) : 0.f;
        next_tap(x);
      }
      Tap y = tap_of(k0 + kb);
      PG_UNROLL
      for (int q = 0; q < LB; ++q) {
        b_reg[q] = c_ok && k0 + kb + q < ktot ? load_b(__ldg(&kept_n[y.j]), y) : 0.f;
        next_tap(y);
      }
    }
  };

  if constexpr (kPrec == ConvPrecision::fp32) {
    __shared__ __align__(16) float As[kBK][BM + 8];
    __shared__ __align__(16) float Bs[kBK][BN + 8];
    // Compute roles: pixels tx*4 + i, channels ty*4 + j.
    const int tx = tid % (BM / 4), ty = tid / (BM / 4);
    float acc[4][4] = {};
    if (ktot > 0) fetch(0);  // ktot = 0: no kept channel, or a phase without taps (RSp = 0)
    for (int k0 = 0; k0 < ktot; k0 += kBK) {
      PG_UNROLL
      for (int q = 0; q < LA; ++q) As[ka + q][ml] = a_reg[q];
      if (b_on) {
        PG_UNROLL
        for (int q = 0; q < LB; ++q) Bs[kb + q][cl] = b_reg[q];
      }
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
    for (int i = 0; i < 4; ++i) {
      const int m = m0 + tx * 4 + i;
      if (m >= HWp) continue;
      const int off = pixel_offset(m);
      PG_UNROLL
      for (int jj = 0; jj < 4; ++jj) {
        const int cc = c0 + ty * 4 + jj;
        if (cc < p.C) dx_n[int64_t(cc) * HW + off] = acc[i][jj];
      }
    }
  } else {
    // Warp (wm, wn) owns pixels wm*32 + [0, 32) and channels wn*16 + [0, 16) of the tile, as
    // 2 x 2 fragments of 16 pixels x 8 channels.
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wm = warp % T::WM, wn = warp / T::WM;
    float acc[2][2][4] = {};
    if constexpr (kPrec == ConvPrecision::tf32) {
      __shared__ __align__(16) float As[kBK][BM + 8];
      __shared__ __align__(16) float Bs[kBK][BN + 8];
      if (ktot > 0) fetch(0);  // ktot = 0: no kept channel, or a phase without taps (RSp = 0)
      for (int k0 = 0; k0 < ktot; k0 += kBK) {
        PG_UNROLL
        for (int q = 0; q < LA; ++q) As[ka + q][ml] = __uint_as_float(pg_cvt_rna_tf32(a_reg[q]));
        if (b_on) {
          PG_UNROLL
          for (int q = 0; q < LB; ++q) Bs[kb + q][cl] = __uint_as_float(pg_cvt_rna_tf32(b_reg[q]));
        }
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
            const int cn = wn * 16 + ni * 8 + g;
            b[ni][0] = __float_as_uint(Bs[ks + t][cn]);
            b[ni][1] = __float_as_uint(Bs[ks + t + 4][cn]);
          }
          PG_UNROLL
          for (int mi = 0; mi < 2; ++mi)
            PG_UNROLL
            for (int ni = 0; ni < 2; ++ni) pg_mma_m16n8k8_tf32(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
        }
        __syncthreads();
      }
    } else {
      // Word (row, kw) holds the bf16 of k = 2kw (low half) and 2kw + 1 (high half).
      __shared__ __align__(16) uint32_t Ah[BM][kRowW];
      __shared__ __align__(16) uint32_t Bh[BN][kRowW];
      // ldmatrix.x4 row addresses (lane l addresses row l % 8 of matrix l / 8):
      //   A, 16 pixels x 16 k: matrices (pixels 0-7 | 8-15) x (k 0-7 | 8-15), in the order of
      //     the fragment registers a0 (g, 2t), a1 (g+8, 2t), a2 (g, 2t+8), a3 (g+8, 2t+8):
      //     pixel l % 16, k 8 * (l / 16).
      //   B, 16 k x 16 channels: matrices (ch 0-7, k 0-7), (ch 0-7, k 8-15), (ch 8-15, k 0-7),
      //     (ch 8-15, k 8-15) = b0, b1 of the first 8 channels, then of the next 8:
      //     channel l % 8 + 8 * (l / 16), k 8 * ((l / 8) % 2).
      const int a_row = lane % 16, a_kw = 4 * (lane / 16);
      const int b_row = wn * 16 + lane % 8 + 8 * (lane / 16), b_kw = 4 * ((lane / 8) % 2);
      if (ktot > 0) fetch(0);  // ktot = 0: no kept channel, or a phase without taps (RSp = 0)
      for (int k0 = 0; k0 < ktot; k0 += kBK) {
        PG_UNROLL
        for (int q = 0; q < LA / 2; ++q) Ah[ml][ka / 2 + q] = pack_bf16x2(a_reg[2 * q], a_reg[2 * q + 1]);
        if (b_on) {
          PG_UNROLL
          for (int q = 0; q < LB / 2; ++q) Bh[cl][kb / 2 + q] = pack_bf16x2(b_reg[2 * q], b_reg[2 * q + 1]);
        }
        __syncthreads();
        if (k0 + kBK < ktot) fetch(k0 + kBK);
        uint32_t a[2][4], b[4];
        PG_UNROLL
        for (int mi = 0; mi < 2; ++mi) pg_ldmatrix_x4(a[mi], &Ah[wm * 32 + mi * 16 + a_row][a_kw]);
        pg_ldmatrix_x4(b, &Bh[b_row][b_kw]);
        PG_UNROLL
        for (int mi = 0; mi < 2; ++mi)
          PG_UNROLL
          for (int ni = 0; ni < 2; ++ni) pg_mma_m16n8k16_bf16(acc[mi][ni], a[mi], &b[2 * ni], acc[mi][ni]);
        __syncthreads();
      }
    }
    // C fragment: c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1); row = pixel.
    PG_UNROLL
    for (int mi = 0; mi < 2; ++mi)
      PG_UNROLL
      for (int h = 0; h < 2; ++h) {
        const int m = m0 + wm * 32 + mi * 16 + g + 8 * h;
        if (m >= HWp) continue;
        const int off = pixel_offset(m);
        PG_UNROLL
        for (int ni = 0; ni < 2; ++ni)
          PG_UNROLL
          for (int e = 0; e < 2; ++e) {
            const int cc = c0 + wn * 16 + ni * 8 + 2 * t + e;
            if (cc < p.C) dx_n[int64_t(cc) * HW + off] = acc[mi][ni][2 * h + e];
          }
      }
  }
}

// One kernel per precision (readable names in the compile gate's listing and SASS).
template <int BN>
__global__ void __launch_bounds__(kThreads)
    dgrad_fp32_kernel(ConvDgradParams p, const float* __restrict__ dy, const float* __restrict__ w,
                      const float* __restrict__ scale, const int32_t* __restrict__ kept,
                      const int32_t* __restrict__ count, float* __restrict__ dx) {
  dgrad_body<ConvPrecision::fp32, BN>(p, dy, w, scale, kept, count, dx);
}
template <int BN>
__global__ void __launch_bounds__(kThreads)
    dgrad_tf32_kernel(ConvDgradParams p, const float* __restrict__ dy, const float* __restrict__ w,
                      const float* __restrict__ scale, const int32_t* __restrict__ kept,
                      const int32_t* __restrict__ count, float* __restrict__ dx) {
  dgrad_body<ConvPrecision::tf32, BN>(p, dy, w, scale, kept, count, dx);
}
template <int BN>
__global__ void __launch_bounds__(kThreads)
    dgrad_bf16_kernel(ConvDgradParams p, const float* __restrict__ dy, const float* __restrict__ w,
                      const float* __restrict__ scale, const int32_t* __restrict__ kept,
                      const int32_t* __restrict__ count, float* __restrict__ dx) {
  dgrad_body<ConvPrecision::bf16, BN>(p, dy, w, scale, kept, count, dx);
}

}  // namespace

bool conv_dgrad_supported(const ConvDgradParams& p) {
  return p.groups == 1 && p.dil_h == 1 && p.dil_w == 1 && p.N > 0 && p.C > 0 && p.K > 0 && p.R > 0 && p.S > 0 &&
         p.P > 0 && p.Q > 0 && p.stride_h > 0 && p.stride_w > 0 &&
         int64_t(p.N) * p.stride_h * p.stride_w <= 65535;  // grid.z = (sample, phase)
}

size_t conv_dgrad_workspace_bytes(const ConvDgradParams& p) {
  return (size_t(p.N) * size_t(p.K) + size_t(p.N)) * sizeof(int32_t);
}

void launch_conv_dgrad(const ConvDgradParams& p, ConvPrecision prec, const float* dy, const float* w,
                       const float* scale, float* dx, void* workspace, cudaStream_t stream) {
  if (!conv_dgrad_supported(p))
    throw pg::Error(std::string("launch_conv_dgrad (") + conv_precision_name(prec) +
                    "): unsupported convolution (groups " + std::to_string(p.groups) + ", dilation " +
                    std::to_string(p.dil_h) + "x" + std::to_string(p.dil_w) + ", N " + std::to_string(p.N) +
                    ", stride " + std::to_string(p.stride_h) + "x" + std::to_string(p.stride_w) + ")");
  int32_t* kept = static_cast<int32_t*>(workspace);
  int32_t* count = kept + int64_t(p.N) * p.K;
  PG_LAUNCH(compact_kernel, unsigned(p.N), 32, 0, stream, p, scale, kept, count);
  PG_CUDA_CHECK_LAUNCH();
  // Phase (0, 0) has the most pixels: ceil(H / stride_h) x ceil(W / stride_w).
  const Phase f0 = phase_of(p, 0);
  const int bn = p.C <= kSmallC ? 16 : 64, bm = kTile / bn;
  const dim3 grid(unsigned((f0.Hp * f0.Wp + bm - 1) / bm), unsigned((p.C + bn - 1) / bn),
                  unsigned(p.N * p.stride_h * p.stride_w));
  const int32_t* kept_c = kept;
  const int32_t* count_c = count;
  switch (prec) {
    case ConvPrecision::fp32:
      if (bn == 16) PG_LAUNCH(dgrad_fp32_kernel<16>, grid, kThreads, 0, stream, p, dy, w, scale, kept_c, count_c, dx);
      else PG_LAUNCH(dgrad_fp32_kernel<64>, grid, kThreads, 0, stream, p, dy, w, scale, kept_c, count_c, dx);
      break;
    case ConvPrecision::tf32:
      if (bn == 16) PG_LAUNCH(dgrad_tf32_kernel<16>, grid, kThreads, 0, stream, p, dy, w, scale, kept_c, count_c, dx);
      else PG_LAUNCH(dgrad_tf32_kernel<64>, grid, kThreads, 0, stream, p, dy, w, scale, kept_c, count_c, dx);
      break;
    case ConvPrecision::bf16:
      if (bn == 16) PG_LAUNCH(dgrad_bf16_kernel<16>, grid, kThreads, 0, stream, p, dy, w, scale, kept_c, count_c, dx);
      else PG_LAUNCH(dgrad_bf16_kernel<64>, grid, kThreads, 0, stream, p, dy, w, scale, kept_c, count_c, dx);
      break;
  }
  PG_CUDA_CHECK_LAUNCH();
}

void launch_conv_dgrad(const ConvDgradParams& p, const float* dy, const float* w, const float* scale, float* dx,
                       void* workspace, cudaStream_t stream) {
  launch_conv_dgrad(p, ConvPrecision::fp32, dy, w, scale, dx, workspace, stream);
}

void launch_conv_dgrad_tf32(const ConvDgradParams& p, const float* dy, const float* w, const float* scale, float* dx,
                            void* workspace, cudaStream_t stream) {
  launch_conv_dgrad(p, ConvPrecision::tf32, dy, w, scale, dx, workspace, stream);
}

void launch_conv_dgrad_bf16(const ConvDgradParams& p, const float* dy, const float* w, const float* scale, float* dx,
                            void* workspace, cudaStream_t stream) {
  launch_conv_dgrad(p, ConvPrecision::bf16, dy, w, scale, dx, workspace, stream);
}

}  // namespace pg::kernels::cuda
