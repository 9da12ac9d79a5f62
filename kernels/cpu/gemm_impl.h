// The blocked driver and micro-kernel of gemm_ordered (kernels/cpu/gemm.h), written once
// over a register type. Included by one source file per instruction set (gemm.cpp: scalar;
// gemm_avx2.cpp and gemm_avx512.cpp, each under its own target switch).
//
// Everything here has internal linkage on purpose: the same template compiled with
// different instruction sets must not be merged by the linker into one (an AVX-512 copy
// could then run on a CPU without it).
//
// Blocking (as in BLIS): for each NC-column block of B and KC-deep slice of the reduction,
// B's slice is packed into NR-column micro-panels; for each MC-row block of A, A's slice is
// packed into MR-row micro-panels; the micro-kernel then computes an MR x NR tile's chains
// over the KC slice from zero and adds them to the sums stored in C by the previous slices
// (blocked summation, as BLAS kernels do: the rounding error grows with KC + K / KC rather
// than with K). Panels are padded
// with zeros to whole micro-panels, so every element, edge or not, goes through the same
// micro-kernel and the same sequence of fmas (a padded lane only adds fma(0, b, c) to lanes
// that are never stored).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace pg::kernels::cpu {
namespace {

namespace gemm_blocking {
constexpr int kKC = 256;   // reduction slice: an A micro-panel and a B micro-panel in L1
constexpr int kMC = 96;    // rows of A per packed block (kMC x kKC floats in L2)
constexpr int kNC = 1536;  // columns of B per packed block
}  // namespace gemm_blocking

// Isa: V (register type), kW (floats per register), kMR, kNV (registers per tile row:
// NR = kNV * kW), and static zero/load/store/bcast/fma/add.
template <class Isa>
struct GemmKernel {
  using V = typename Isa::V;
  static constexpr int kMR = Isa::kMR, kNR = Isa::kNV * Isa::kW;
  static constexpr int kMCR = (gemm_blocking::kMC + kMR - 1) / kMR * kMR;
  static constexpr int kNCR = (gemm_blocking::kNC + kNR - 1) / kNR * kNR;
  static constexpr size_t kWorkspaceFloats = size_t(kMCR) * gemm_blocking::kKC + size_t(kNCR) * gemm_blocking::kKC;

  // c[i][j] (i < kMR, j < NV * kW, row stride ldc) = s (first) or c + s, where s is the
  // slice's chain: s = 0, then s = fma(ap[k][i], bp[k][j], s) for k = 0 .. kc-1. NV < kNV
  // serves the last, narrower column panel of a block (the chains are the same whatever the
  // tile's width).
  template <int NV>
  static inline void micro(int kc, const float* __restrict ap, const float* __restrict bp, float* c, int ldc,
                           bool first) {
    V acc[kMR][NV];
    for (int i = 0; i < kMR; ++i)
      for (int j = 0; j < NV; ++j) acc[i][j] = Isa::zero();
    for (int k = 0; k < kc; ++k) {
      V b[NV];
      for (int j = 0; j < NV; ++j) b[j] = Isa::load(bp + k * (NV * Isa::kW) + j * Isa::kW);
      for (int i = 0; i < kMR; ++i) {
        const V a = Isa::bcast(ap + k * kMR + i);
        for (int j = 0; j < NV; ++j) acc[i][j] = Isa::fma(a, b[j], acc[i][j]);
      }
    }
    for (int i = 0; i < kMR; ++i)
      for (int j = 0; j < NV; ++j)
        Isa::store(c + i * ldc + j * Isa::kW, first ? acc[i][j] : Isa::add(Isa::load(c + i * ldc + j * Isa::kW), acc[i][j]));
  }

  // Registers per row of the panel that holds `cols` columns.
  static int panel_nv(int cols) { return std::min(Isa::kNV, (cols + Isa::kW - 1) / Isa::kW); }

  template <int NV = Isa::kNV>
  static void micro_nv(int nv, int kc, const float* ap, const float* bp, float* c, int ldc, bool first) {
    if constexpr (NV > 1) {
      if (nv < NV) return micro_nv<NV - 1>(nv, kc, ap, bp, c, ldc, first);
    }
    micro<NV>(kc, ap, bp, c, ldc, first);
  }

  // A[m0 .. m0+mc) x [k0 .. k0+kc) into micro-panels ap[panel][k][kMR], zero rows past mc.
  static void pack_a(const float* A, int lda, int mc, int kc, float* ap) {
    for (int i0 = 0; i0 < mc; i0 += kMR) {
      const int rows = std::min(kMR, mc - i0);
      for (int k = 0; k < kc; ++k) {
        float* dst = ap + k * kMR;
        for (int i = 0; i < rows; ++i) dst[i] = A[int64_t(i0 + i) * lda + k];
        for (int i = rows; i < kMR; ++i) dst[i] = 0.f;
      }
      ap += int64_t(kc) * kMR;
    }
  }

  // B[k0 .. k0+kc) x [n0 .. n0+nc) into micro-panels bp[panel][k][w]: w = kNR, except the
  // last panel, as wide as panel_nv registers; zero columns past nc.
  static void pack_b(const float* B, int ldb, int kc, int nc, float* bp) {
    for (int j0 = 0; j0 < nc; j0 += kNR) {
      const int cols = std::min(kNR, nc - j0), w = panel_nv(cols) * Isa::kW;
      for (int k = 0; k < kc; ++k) {
        float* dst = bp + k * w;
        const float* src = B + int64_t(k) * ldb + j0;
        if (cols == kNR) {
          for (int j = 0; j < kNR; ++j) dst[j] = src[j];
        } else {
          for (int j = 0; j < cols; ++j) dst[j] = src[j];
          for (int j = cols; j < w; ++j) dst[j] = 0.f;
        }
      }
      bp += int64_t(kc) * kNR;
    }
  }

  static void run(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                  float* ws) {
    using namespace gemm_blocking;
    if (K == 0) {
      for (int i = 0; i < M; ++i) std::memset(C + int64_t(i) * ldc, 0, sizeof(float) * N);
      return;
    }
    float* ap = ws;
    float* bp = ws + size_t(kMCR) * kKC;
    alignas(64) float edge[kMR * kNR] = {};
    for (int n0 = 0; n0 < N; n0 += kNC) {
      const int nc = std::min(kNC, N - n0);
      for (int k0 = 0; k0 < K; k0 += kKC) {
        const int kc = std::min(kKC, K - k0);
        const bool first = k0 == 0;
        pack_b(B + int64_t(k0) * ldb + n0, ldb, kc, nc, bp);
        for (int m0 = 0; m0 < M; m0 += kMC) {
          const int mc = std::min(kMC, M - m0);
          pack_a(A + int64_t(m0) * lda + k0, lda, mc, kc, ap);
          for (int j0 = 0; j0 < nc; j0 += kNR) {
            const int cols = std::min(kNR, nc - j0), nv = panel_nv(cols);
            const float* bpanel = bp + int64_t(j0 / kNR) * kc * kNR;
            for (int i0 = 0; i0 < mc; i0 += kMR) {
              const int rows = std::min(kMR, mc - i0);
              const float* apanel = ap + int64_t(i0 / kMR) * kc * kMR;
              float* c = C + int64_t(m0 + i0) * ldc + n0 + j0;
              if (rows == kMR && cols == nv * Isa::kW) {
                micro_nv(nv, kc, apanel, bpanel, c, ldc, first);
                continue;
              }
              // An edge tile: run the same micro-kernel on a full tile copy.
              if (!first)
                for (int i = 0; i < rows; ++i) std::memcpy(edge + i * kNR, c + int64_t(i) * ldc, sizeof(float) * cols);
              micro_nv(nv, kc, apanel, bpanel, edge, kNR, first);
              for (int i = 0; i < rows; ++i) std::memcpy(c + int64_t(i) * ldc, edge + i * kNR, sizeof(float) * cols);
            }
          }
        }
      }
    }
  }
};

}  // namespace
}  // namespace pg::kernels::cpu
