#include "kernels/cpu/depthwise.h"

#include <algorithm>
#include <cstdint>

// Every product and sum rounded on its own, whatever the instruction set (GNU C++ contracts
// a * b + c into an FMA by default under -march=native): the order contract of the header.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pg::kernels::cpu {

void depthwise_forward(const Conv2dParams& p, const float* x, const float* w, const ConvEpilogue& epi, float* y) {
  const int64_t planes = int64_t(p.N) * p.C, PQ = p.out_plane();
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const int c = int(nc % p.C);
    const float* xc = x + nc * p.in_plane();
    const float* wc = w + int64_t(c) * p.R * p.S;
    float* yc = y + nc * PQ;
    for (int oh = 0; oh < p.P; ++oh) {
      float* yr = yc + int64_t(oh) * p.Q;
      std::fill(yr, yr + p.Q, 0.f);
      for (int r = 0; r < p.R; ++r) {
        const int ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
        if (ih < 0 || ih >= p.H) continue;
        const float* xr = xc + int64_t(ih) * p.W;
        for (int s = 0; s < p.S; ++s) {
          const float wv = wc[r * p.S + s];
          const int off = s * p.dil_w - p.pad_w;
          // Output columns whose input column q * stride + off lies inside [0, W).
          int q_lo = 0, q_hi = p.Q;
          while (q_lo < p.Q && q_lo * p.stride_w + off < 0) ++q_lo;
          while (q_hi > q_lo && (q_hi - 1) * p.stride_w + off >= p.W) --q_hi;
          if (p.stride_w == 1) {
            const float* xs = xr + off;
            for (int q = q_lo; q < q_hi; ++q) yr[q] += xs[q] * wv;
          } else {
            for (int q = q_lo; q < q_hi; ++q) yr[q] += xr[q * p.stride_w + off] * wv;
          }
        }
      }
      if (epi.bias) {
        const float b = epi.bias[c];
        for (int q = 0; q < p.Q; ++q) yr[q] += b;
      }
    }
  }
  if (epi.gap) {
    ConvEpilogue gap_only = epi;
    gap_only.bias = nullptr;  // added above
#pragma omp parallel for schedule(static)
    for (int n = 0; n < p.N; ++n) conv2d_epilogue(p, n, gap_only, y + int64_t(n) * p.K * PQ);
  }
}

void depthwise_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale, float* dx) {
  const int64_t planes = int64_t(p.N) * p.C, HW = p.in_plane();
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const int c = int(nc % p.C);
    const float sc = scale ? scale[nc] : 1.f;  // K == C: the plane index is n*K + c
    float* dxc = dx + nc * HW;
    std::fill(dxc, dxc + HW, 0.f);
    if (sc == 0.f) continue;
    const float* gc = dy + nc * p.out_plane();
    const float* wc = w + int64_t(c) * p.R * p.S;
    for (int ih = 0; ih < p.H; ++ih) {
      float* dr = dxc + int64_t(ih) * p.W;
      for (int r = 0; r < p.R; ++r) {
        const int th = ih + p.pad_h - r * p.dil_h;  // = oh * stride_h
        if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= p.P) continue;
        const float* gr = gc + int64_t(th / p.stride_h) * p.Q;
        for (int s = 0; s < p.S; ++s) {
          const float wv = wc[r * p.S + s];
          const int off = p.pad_w - s * p.dil_w;  // iw + off = ow * stride_w
          // Input columns iw in [0, W) with iw + off a multiple of stride_w in [0, (Q-1) * stride_w].
          int lo = std::max(0, -off);
          while (lo < p.W && (lo + off) % p.stride_w != 0) ++lo;
          const int hi = std::min(p.W, (p.Q - 1) * p.stride_w - off + 1);
          if (p.stride_w == 1) {
            const float* gs = gr + off;
            for (int iw = lo; iw < hi; ++iw) dr[iw] += (sc * gs[iw]) * wv;
          } else {
            for (int iw = lo; iw < hi; iw += p.stride_w) dr[iw] += (sc * gr[(iw + off) / p.stride_w]) * wv;
          }
        }
      }
    }
  }
}

}  // namespace pg::kernels::cpu
