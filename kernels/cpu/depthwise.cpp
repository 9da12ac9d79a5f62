#include "kernels/cpu/depthwise.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

// Every product and sum rounded on its own, whatever the instruction set (GNU C++ contracts
// a * b + c into an FMA by default under -march=native): the order contract of the header.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace pg::kernels::cpu {

namespace {

// The vector path: a band of input rows (forward) or of scaled, stride-spread output-gradient
// rows (dgrad) is copied into a zero-bordered buffer on the stack, and each output element is
// then the sum over all R x S taps in row-major order with no bounds test, kTileRows rows by
// kTileCols columns at a time (independent sums the compiler keeps in vector registers; every
// lane does the scalar code's operations). A tap that falls on the zero border adds
// 0 * w = +-0, which leaves a float32 sum that starts at +0 unchanged bit for bit (such a sum
// is never -0), so this gives the bits of the loops that skip those taps (the header's
// contract; for finite weights). Planes whose band does not fit kBandFloats take the loops.
constexpr int kTileRows = 4, kTileCols = 8;
constexpr int kBandFloats = 16384;  // 64 KiB of stack per thread
constexpr int kMaxTaps = 64;        // R * S

int round_up(int a, int b) { return (a + b - 1) / b * b; }

// kTileCols floats as one value of GNU C's vector extension: lane-wise IEEE products and sums,
// which the compiler maps onto whatever vector registers the target has (the same bits on each).
typedef float Lanes __attribute__((vector_size(kTileCols * sizeof(float))));
inline Lanes load_lanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// The first `cols` lanes of v to p[0, cols).
inline void store_lanes(float* p, const Lanes& v, int cols) {
  if (cols == kTileCols) {
    std::memcpy(p, &v, sizeof v);
  } else {
    for (int j = 0; j < cols; ++j) p[j] = v[j];
  }
}

// Forward: output (oh0 + i, q0 + j), tap (r, s) reads band row i * stride_h + r * dil_h, band
// column (q0 + j) * stride_w + s * dil_w, stored at phase (column % stride_w), index
// column / stride_w (each band row holds stride_w phases of `phase_w` floats, so the reads of a
// tap are contiguous in j).
// The sums of one tile: kTileRows outputs by kTileCols lanes; tap t = r * S + s reads
// base + off[t] + i * row_step (+ j).
void tile_sums(const float* base, const int* off, int taps, int64_t row_step, const float* wc,
               Lanes (&acc)[kTileRows]) {
  for (int i = 0; i < kTileRows; ++i) acc[i] = Lanes{};
  for (int t = 0; t < taps; ++t) {
    const float wv = wc[t];
    const float* b = base + off[t];
    for (int i = 0; i < kTileRows; ++i) acc[i] += load_lanes(b + i * row_step) * wv;
  }
}

// The loops of the header's contract for one (sample, channel) plane.
void forward_plane_loops(const Conv2dParams& p, const float* xc, const float* wc, const float* bias, float* yc) {
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
        for (int q = q_lo; q < q_hi; ++q) yr[q] += xr[q * p.stride_w + off] * wv;
      }
    }
    if (bias) {
      const float b = *bias;
      for (int q = 0; q < p.Q; ++q) yr[q] += b;
    }
  }
}

void dgrad_plane_loops(const Conv2dParams& p, const float* gc, const float* wc, float sc, float* dxc) {
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
        for (int iw = lo; iw < hi; iw += p.stride_w) dr[iw] += (sc * gr[(iw + off) / p.stride_w]) * wv;
      }
    }
  }
}

// Forward band geometry: kTileRows output rows need h input rows; band column k is input column
// k - pad_w, the tiles cover round_up(Q, kTileCols) output columns; a row holds stride_w phases
// of phase_w floats (tile_sums).
struct ForwardBand {
  int h, phase_w, row_w;
  explicit ForwardBand(const Conv2dParams& p)
      : h((kTileRows - 1) * p.stride_h + (p.R - 1) * p.dil_h + 1),
        phase_w(round_up(p.Q, kTileCols) + (p.S - 1) * p.dil_w / p.stride_w + 1),
        row_w(p.stride_w * phase_w) {}
  bool fits(const Conv2dParams& p) const { return int64_t(h) * row_w <= kBandFloats && p.R * p.S <= kMaxTaps; }
};

void forward_plane_tiled(const Conv2dParams& p, const ForwardBand& g, const float* xc, const float* wc,
                         const float* bias, float* yc, float* band) {
  // Tap (r, s) reads band row r * dil_h, column s * dil_w: phase (column % stride_w), index
  // column / stride_w.
  int off[kMaxTaps];
  for (int r = 0; r < p.R; ++r)
    for (int s = 0; s < p.S; ++s) {
      const int col = s * p.dil_w;
      off[r * p.S + s] = r * p.dil_h * g.row_w + (col % p.stride_w) * g.phase_w + col / p.stride_w;
    }
  for (int oh0 = 0; oh0 < p.P; oh0 += kTileRows) {
    for (int i = 0; i < g.h; ++i) {
      float* br = band + int64_t(i) * g.row_w;
      const int ih = oh0 * p.stride_h - p.pad_h + i;
      if (ih < 0 || ih >= p.H) {
        std::fill(br, br + g.row_w, 0.f);
        continue;
      }
      const float* xr = xc + int64_t(ih) * p.W;
      int lo[2] = {0, 0}, hi[2] = {0, 0};
      for (int ph = 0; ph < p.stride_w; ++ph) {
        // Phase ph, index k: input column k * stride_w + ph - pad_w, inside [0, W) for k in [l, h).
        float* bp = br + int64_t(ph) * g.phase_w;
        const int first = ph - p.pad_w;  // the input column of k = 0
        const int l = std::min(g.phase_w, first >= 0 ? 0 : (-first + p.stride_w - 1) / p.stride_w);
        const int h = std::max(l, std::min(g.phase_w, first >= p.W ? 0 : (p.W - 1 - first) / p.stride_w + 1));
        std::fill(bp, bp + l, 0.f);
        std::fill(bp + h, bp + g.phase_w, 0.f);
        if (p.stride_w == 1) {
          std::copy(xr + (l + first), xr + (h + first), bp + l);
        } else if (p.stride_w == 2) {
          lo[ph] = l, hi[ph] = h;  // below
        } else {
          for (int k = l; k < h; ++k) bp[k] = xr[k * p.stride_w + first];
        }
      }
      if (p.stride_w == 2) {
        // Both phases at once where both are inside (pairs of adjacent input columns: a
        // deinterleave the compiler vectorises), the ends one by one.
        float* b0 = br;
        float* b1 = br + g.phase_w;
        const int jl = std::max(lo[0], lo[1]), jh = std::max(jl, std::min(hi[0], hi[1]));
        const int pw = p.pad_w;  // phase 0's column k is input column 2k - pw, phase 1's 2k + 1 - pw
        for (int k = lo[0]; k < std::min(jl, hi[0]); ++k) b0[k] = xr[2 * k - pw];
        for (int k = lo[1]; k < std::min(jl, hi[1]); ++k) b1[k] = xr[2 * k + 1 - pw];
        for (int k = jl; k < jh; ++k) {
          b0[k] = xr[2 * k - pw];
          b1[k] = xr[2 * k + 1 - pw];
        }
        for (int k = std::max(jh, lo[0]); k < hi[0]; ++k) b0[k] = xr[2 * k - pw];
        for (int k = std::max(jh, lo[1]); k < hi[1]; ++k) b1[k] = xr[2 * k + 1 - pw];
      }
    }
    const int rows = std::min(kTileRows, p.P - oh0);
    for (int q0 = 0; q0 < p.Q; q0 += kTileCols) {
      Lanes acc[kTileRows];
      tile_sums(band + q0, off, p.R * p.S, int64_t(p.stride_h) * g.row_w, wc, acc);
      const int cols = std::min(kTileCols, p.Q - q0);
      for (int i = 0; i < rows; ++i) store_lanes(yc + int64_t(oh0 + i) * p.Q + q0, bias ? acc[i] + *bias : acc[i], cols);
    }
  }
}

// Dgrad band geometry: dx rows ih0 .. ih0 + kTileRows - 1 read the stride-spread, scaled dy
// (dyup[u][v] = scale * dy[u / stride_h][v / stride_w] where both divide, else 0) at rows
// u = ih + pad_h - r * dil_h, columns v = iw + pad_w - s * dil_w; band row i holds
// u = ih0 + pad_h - (R - 1) * dil_h + i, band column k holds v = k + pad_w - (S - 1) * dil_w.
struct DgradBand {
  int h, w;
  explicit DgradBand(const Conv2dParams& p)
      : h(kTileRows + (p.R - 1) * p.dil_h), w(round_up(p.W, kTileCols) + (p.S - 1) * p.dil_w) {}
  bool fits(const Conv2dParams& p) const { return int64_t(h) * w <= kBandFloats && p.R * p.S <= kMaxTaps; }
};

void dgrad_plane_tiled(const Conv2dParams& p, const DgradBand& g, const float* gc, const float* wc, float sc,
                       float* dxc, float* band) {
  // Tap (r, s) reads band row (R - 1 - r) * dil_h, column (S - 1 - s) * dil_w.
  int off[kMaxTaps];
  for (int r = 0; r < p.R; ++r)
    for (int s = 0; s < p.S; ++s) off[r * p.S + s] = (p.R - 1 - r) * p.dil_h * g.w + (p.S - 1 - s) * p.dil_w;
  const int v0 = p.pad_w - (p.S - 1) * p.dil_w;
  for (int ih0 = 0; ih0 < p.H; ih0 += kTileRows) {
    for (int i = 0; i < g.h; ++i) {
      float* br = band + int64_t(i) * g.w;
      std::fill(br, br + g.w, 0.f);
      const int u = ih0 + p.pad_h - (p.R - 1) * p.dil_h + i;
      if (u < 0 || u % p.stride_h != 0 || u / p.stride_h >= p.P) continue;
      const float* gr = gc + int64_t(u / p.stride_h) * p.Q;
      // Column k = ow * stride_w - v0 for 0 <= ow < Q and 0 <= k < w: ow in [lo, hi).
      const int lo = std::min(p.Q, v0 <= 0 ? 0 : (v0 + p.stride_w - 1) / p.stride_w);
      const int hi = std::max(lo, std::min(p.Q, (g.w - 1 + v0) / p.stride_w + 1));
      if (p.stride_w == 1) {
        for (int ow = lo; ow < hi; ++ow) br[ow - v0] = sc * gr[ow];
      } else {
        for (int ow = lo; ow < hi; ++ow) br[ow * p.stride_w - v0] = sc * gr[ow];
      }
    }
    const int rows = std::min(kTileRows, p.H - ih0);
    for (int q0 = 0; q0 < p.W; q0 += kTileCols) {
      Lanes acc[kTileRows];
      tile_sums(band + q0, off, p.R * p.S, g.w, wc, acc);
      const int cols = std::min(kTileCols, p.W - q0);
      for (int i = 0; i < rows; ++i) store_lanes(dxc + int64_t(ih0 + i) * p.W + q0, acc[i], cols);
    }
  }
}

}  // namespace

void depthwise_forward(const Conv2dParams& p, const float* x, const float* w, const ConvEpilogue& epi, float* y) {
  const int64_t planes = int64_t(p.N) * p.C, PQ = p.out_plane();
  const ForwardBand g(p);
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const int c = int(nc % p.C);
    const float* xc = x + nc * p.in_plane();
    const float* wc = w + int64_t(c) * p.R * p.S;
    const float* bias = epi.bias ? epi.bias + c : nullptr;
    float* yc = y + nc * PQ;
    if (!g.fits(p)) {
      forward_plane_loops(p, xc, wc, bias, yc);
      continue;
    }
    float band[kBandFloats];
    forward_plane_tiled(p, g, xc, wc, bias, yc, band);
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
  const DgradBand g(p);
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const int c = int(nc % p.C);
    const float sc = scale ? scale[nc] : 1.f;  // K == C: the plane index is n*K + c
    float* dxc = dx + nc * HW;
    if (sc == 0.f) {
      std::fill(dxc, dxc + HW, 0.f);
      continue;
    }
    const float* gc = dy + nc * p.out_plane();
    const float* wc = w + int64_t(c) * p.R * p.S;
    if (!g.fits(p)) {
      std::fill(dxc, dxc + HW, 0.f);
      dgrad_plane_loops(p, gc, wc, sc, dxc);
      continue;
    }
    float band[kBandFloats];
    dgrad_plane_tiled(p, g, gc, wc, sc, dxc, band);
  }
}

}  // namespace pg::kernels::cpu
