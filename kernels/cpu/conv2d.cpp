#include "kernels/cpu/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/gemm.h"

namespace pg::kernels::cpu {

namespace {

int64_t col_rows(const Conv2dParams& p) { return int64_t(p.Cg()) * p.R * p.S; }

// col[(c*R + r)*S + s][(oh - oh0)*Q + ow] = x[c][oh*sh - ph + r*dh][ow*sw - pw + s*dw]
// (0 outside), for the Cg channels starting at x and the output rows [oh0, oh1).
void im2col(const Conv2dParams& p, const float* x, float* col, int oh0, int oh1) {
  const int P = oh1 - oh0, Q = p.Q;
  for (int c = 0; c < p.Cg(); ++c) {
    const float* xc = x + c * p.in_plane();
    for (int r = 0; r < p.R; ++r) {
      for (int s = 0; s < p.S; ++s) {
        float* out = col + ((int64_t(c) * p.R + r) * p.S + s) * P * Q;
        const int w_off = s * p.dil_w - p.pad_w;
        // Output columns whose input column lies inside [0, W).
        int q_lo = 0, q_hi = Q;
        while (q_lo < Q && q_lo * p.stride_w + w_off < 0) ++q_lo;
        while (q_hi > q_lo && (q_hi - 1) * p.stride_w + w_off >= p.W) --q_hi;
        for (int oh = oh0; oh < oh1; ++oh) {
          float* o = out + int64_t(oh - oh0) * Q;
          const int ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
          if (ih < 0 || ih >= p.H) {
            std::memset(o, 0, sizeof(float) * Q);
            continue;
          }
          const float* xr = xc + int64_t(ih) * p.W + w_off;
          for (int q = 0; q < q_lo; ++q) o[q] = 0.f;
          if (p.stride_w == 1) {
            std::memcpy(o + q_lo, xr + q_lo, sizeof(float) * (q_hi - q_lo));
          } else {
            for (int q = q_lo; q < q_hi; ++q) o[q] = xr[q * p.stride_w];
          }
          for (int q = q_hi; q < Q; ++q) o[q] = 0.f;
        }
      }
    }
  }
}

// Adjoint of im2col over output rows [oh0, oh1) for the channels [c0, c1) (col holds their
// rows only, starting with c0's): dx[c][ih][iw] += col[...]; dx must be zeroed first.
void col2im(const Conv2dParams& p, const float* col, float* dx, int c0, int c1, int oh0, int oh1) {
  const int P = oh1 - oh0, Q = p.Q;
  for (int c = c0; c < c1; ++c) {
    float* dc = dx + c * p.in_plane();
    for (int r = 0; r < p.R; ++r) {
      for (int s = 0; s < p.S; ++s) {
        const float* in = col + ((int64_t(c - c0) * p.R + r) * p.S + s) * P * Q;
        const int w_off = s * p.dil_w - p.pad_w;
        int q_lo = 0, q_hi = Q;
        while (q_lo < Q && q_lo * p.stride_w + w_off < 0) ++q_lo;
        while (q_hi > q_lo && (q_hi - 1) * p.stride_w + w_off >= p.W) --q_hi;
        for (int oh = oh0; oh < oh1; ++oh) {
          const int ih = oh * p.stride_h - p.pad_h + r * p.dil_h;
          if (ih < 0 || ih >= p.H) continue;
          const float* i = in + int64_t(oh - oh0) * Q;
          float* dr = dc + int64_t(ih) * p.W + w_off;
          if (p.stride_w == 1) {
            for (int q = q_lo; q < q_hi; ++q) dr[q] += i[q];
          } else {
            for (int q = q_lo; q < q_hi; ++q) dr[q * p.stride_w] += i[q];
          }
        }
      }
    }
  }
}

}  // namespace

void conv2d_epilogue(const Conv2dParams& p, int n, const ConvEpilogue& e, float* y) {
  const int64_t PQ = p.out_plane();
  for (int k = 0; k < p.K; ++k) {
    float* yk = y + k * PQ;
    if (e.bias) {
      const float b = e.bias[k];
      for (int64_t i = 0; i < PQ; ++i) yk[i] += b;
    }
    if (e.gap) {
      const float sc = e.raw_scale ? e.raw_scale[k] : 1.f;
      const float sh = e.raw_shift ? e.raw_shift[k] : 0.f;
      double acc = 0;
      for (int64_t i = 0; i < PQ; ++i) {
        const float v = (yk[i] - sh) / sc;
        acc += v > 0.f ? v : 0.f;
      }
      e.gap[int64_t(n) * p.K + k] = static_cast<float>(acc / double(PQ));
    }
  }
}

namespace {

// ---- Work decomposition ------------------------------------------------------------------
// Batch and thread invariance: every sample's result must be the same bits whatever the
// batch size, the other samples, its position and the thread count.
//   forward: the GEMM is gemm_ordered (kernels/cpu/gemm.h), whose every output element is
//   computed in one fixed order of fmas: its bits depend on the weights and the receptive field alone,
//   so the forward is batch, thread and position invariant by construction (equal receptive
//   fields give equal outputs: exact max-pool ties in flat image regions stay ties).
//   dgrad: OpenBLAS, whose rounding of an element depends on the GEMM call that computes it
//   (its shape, its blocking over the reduction, which micro-kernel handles the element, and
//   whether the call itself is threaded). So each convolution is cut into work units whose
//   GEMM calls are a function of the layer's shape alone, the same for every sample, and
//   every unit runs single-threaded BLAS (called inside the OpenMP team, where OpenBLAS does
//   not thread). The units are spread over the threads; which thread runs a unit never
//   changes its bits.
//   forward units: (sample, group, block of output rows, chunk of output channels)
//   dgrad units:   (sample, group, chunk of input channels), output-row blocks in order inside
// A dgrad unit owns its input channels' rows of dx, so col2im needs no synchronisation and
// every dx element receives its taps in one fixed order.

// Output rows per im2col block: the column matrix of a block stays within about 2 MB, so
// large planes (VGG's first layers) are lowered and multiplied in cache-sized pieces.
int64_t g_block_bytes = int64_t(2) << 20;

// Output channels per forward unit, input-channel rows (c, r, s) per dgrad unit: large
// enough that a unit's GEMM runs near full speed, small enough that one sample of a deep
// layer still gives several units to the threads.
constexpr int kForwardChunkChannels = 512;
constexpr int kDgradChunkRows = 2304;

// n items cut into ceil(n / target) near-equal chunks: the chunk length.
int balanced_chunk(int n, int target) {
  const int chunks = std::max(1, (n + target - 1) / target);
  return (n + chunks - 1) / chunks;
}

struct Plan {
  int64_t PQ = 0, rows = 0;  // output plane; rows of the column matrix (Cg * R * S)
  int fwd_step = 1, fwd_blocks = 1;  // forward: output rows per block, blocks
  int mchunk = 1, mchunks = 1;       // forward: output channels per unit, units per group
  int cchunk = 1, cchunks = 1;       // dgrad: input channels per unit, units per group
  int dgrad_step = 1;                // dgrad: output rows per block
};

int block_rows(const Conv2dParams& p, int64_t col_rows) {
  const int64_t row_bytes = col_rows * p.Q * int64_t(sizeof(float));
  return int(std::max<int64_t>(1, std::min<int64_t>(p.P, g_block_bytes / std::max<int64_t>(row_bytes, 1))));
}

Plan plan_for(const Conv2dParams& p) {
  Plan pl;
  pl.PQ = p.out_plane();
  pl.rows = col_rows(p);
  pl.fwd_step = block_rows(p, pl.rows);
  pl.fwd_blocks = (p.P + pl.fwd_step - 1) / pl.fwd_step;
  pl.mchunk = balanced_chunk(p.Kg(), kForwardChunkChannels);
  pl.mchunks = (p.Kg() + pl.mchunk - 1) / pl.mchunk;
  const int rs = p.R * p.S;
  pl.cchunk = balanced_chunk(p.Cg(), std::max(1, kDgradChunkRows / rs));
  pl.cchunks = (p.Cg() + pl.cchunk - 1) / pl.cchunk;
  pl.dgrad_step = block_rows(p, int64_t(pl.cchunk) * rs);
  return pl;
}

int64_t forward_ws(const Conv2dParams& p, const Plan& pl) {
  return (p.is_pointwise() ? 0 : pl.rows * pl.fwd_step * p.Q) + int64_t(gemm_ordered_workspace_floats());
}

int64_t dgrad_ws(const Conv2dParams& p, const Plan& pl) {
  // columns of one block + the gathered, scaled output-gradient rows of the sample + the
  // gathered weight columns of the unit's input channels
  const int64_t crows = int64_t(pl.cchunk) * p.R * p.S;
  return (p.is_pointwise() ? 0 : crows * pl.dgrad_step * p.Q) + int64_t(p.Kg()) * pl.PQ + int64_t(p.Kg()) * crows;
}

int64_t ws_per_thread(const Conv2dParams& p, const Plan& pl) {
  return std::max(forward_ws(p, pl), dgrad_ws(p, pl));
}

// Runs body(unit, workspace of the running thread) for every unit, spread over the OpenMP
// threads (dynamic: units differ in cost).
template <class F>
void for_each_unit(int64_t units, int64_t ws_floats, float* ws, F body) {
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t u = 0; u < units; ++u) body(u, ws + int64_t(omp_get_thread_num()) * ws_floats);
}

}  // namespace

void conv2d_set_block_bytes(int64_t bytes) { g_block_bytes = bytes > 0 ? bytes : (int64_t(2) << 20); }

size_t conv2d_workspace_floats(const Conv2dParams& p, int threads) {
  return size_t(ws_per_thread(p, plan_for(p))) * std::max(threads, 1);
}

void conv2d_forward(const Conv2dParams& p, const float* x, const float* w,
                    const ConvEpilogue& epi, float* y, float* workspace) {
  const Plan pl = plan_for(p);
  const int64_t PQ = pl.PQ, rows = pl.rows;
  const int Kg = p.Kg();
  const int64_t per_group = int64_t(pl.fwd_blocks) * pl.mchunks;
  const int64_t per_sample = per_group * p.groups;
  for_each_unit(int64_t(p.N) * per_sample, ws_per_thread(p, pl), workspace, [&](int64_t u, float* ws) {
    const int n = int(u / per_sample);
    const int g = int(u % per_sample / per_group);
    const int b = int(u % per_group / pl.mchunks), m = int(u % pl.mchunks);
    const int oh0 = b * pl.fwd_step, oh1 = std::min(p.P, oh0 + pl.fwd_step), cols = (oh1 - oh0) * p.Q;
    const int k0 = m * pl.mchunk, k1 = std::min(Kg, k0 + pl.mchunk);
    const float* xg = x + (int64_t(n) * p.C + int64_t(g) * p.Cg()) * p.in_plane();
    float* yk = y + (int64_t(n) * p.K + int64_t(g) * Kg + k0) * PQ + int64_t(oh0) * p.Q;
    const float* wk = w + (int64_t(g) * Kg + k0) * rows;
    if (p.is_pointwise()) {
      gemm_ordered(k1 - k0, cols, int(rows), wk, int(rows), xg + int64_t(oh0) * p.Q, int(PQ), yk, int(PQ), ws);
    } else {
      float* gemm_ws = ws + pl.rows * pl.fwd_step * p.Q;
      im2col(p, xg, ws, oh0, oh1);
      gemm_ordered(k1 - k0, cols, int(rows), wk, int(rows), ws, cols, yk, int(PQ), gemm_ws);
    }
    if (epi.bias) {
      for (int k = k0; k < k1; ++k) {
        const float bk = epi.bias[g * Kg + k];
        float* row = yk + int64_t(k - k0) * PQ;
        for (int i = 0; i < cols; ++i) row[i] += bk;
      }
    }
  });
  if (epi.gap) {
    ConvEpilogue gap_only = epi;
    gap_only.bias = nullptr;  // added above
#pragma omp parallel for schedule(static)
    for (int n = 0; n < p.N; ++n) conv2d_epilogue(p, n, gap_only, y + int64_t(n) * p.K * PQ);
  }
}

void conv2d_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale,
                  float* dx, float* workspace) {
  const Plan pl = plan_for(p);
  const int64_t PQ = pl.PQ, rows = pl.rows, rs = int64_t(p.R) * p.S;
  const int Kg = p.Kg();
  blas::init();
  const int64_t per_sample = int64_t(p.groups) * pl.cchunks;
  for_each_unit(int64_t(p.N) * per_sample, ws_per_thread(p, pl), workspace, [&](int64_t u, float* ws) {
    const int n = int(u / per_sample), g = int(u % per_sample / pl.cchunks), cc = int(u % pl.cchunks);
    const int c0 = cc * pl.cchunk, c1 = std::min(p.Cg(), c0 + pl.cchunk);
    const int64_t crow0 = c0 * rs, crows = (c1 - c0) * rs;
    float* col = ws;
    float* dy_sel = col + (p.is_pointwise() ? 0 : int64_t(pl.cchunk) * rs * pl.dgrad_step * p.Q);
    float* w_sel = dy_sel + int64_t(Kg) * PQ;
    const float* dyg = dy + (int64_t(n) * p.K + int64_t(g) * Kg) * PQ;
    // op(A) = the unit's columns of the [kept x rows] weight matrix, transposed.
    const float* a = w + int64_t(g) * Kg * rows + crow0;
    int lda = int(rows);
    float* dxc = dx + (int64_t(n) * p.C + int64_t(g) * p.Cg() + c0) * p.in_plane();
    int kept = Kg;
    if (scale) {
      // Gather the output-gradient rows of the channels with a non-zero scale, scaled as
      // they are copied; gather the matching weight columns only when some were dropped.
      const float* sg = scale + int64_t(n) * p.K + int64_t(g) * Kg;
      kept = 0;
      for (int k = 0; k < Kg; ++k) {
        if (sg[k] == 0.f) continue;
        const float s = sg[k];
        const float* src = dyg + k * PQ;
        float* dst = dy_sel + int64_t(kept) * PQ;
        for (int64_t i = 0; i < PQ; ++i) dst[i] = s * src[i];
        ++kept;
      }
      if (kept < Kg) {
        int j = 0;
        for (int k = 0; k < Kg; ++k)
          if (sg[k] != 0.f) std::memcpy(w_sel + int64_t(j++) * crows, a + k * rows, sizeof(float) * crows);
        a = w_sel;
        lda = int(crows);
      }
      dyg = dy_sel;
    }
    if (p.is_pointwise() && kept > 0) {  // the GEMM writes dx itself
      blas::sgemm(true, false, int(crows), int(PQ), kept, 1.f, a, lda, dyg, int(PQ), 0.f, dxc, int(PQ));
      return;
    }
    std::memset(dxc, 0, sizeof(float) * (c1 - c0) * p.in_plane());  // col2im accumulates
    if (kept == 0) return;
    float* dxg = dx + (int64_t(n) * p.C + int64_t(g) * p.Cg()) * p.in_plane();
    for (int oh0 = 0; oh0 < p.P; oh0 += pl.dgrad_step) {
      const int oh1 = std::min(p.P, oh0 + pl.dgrad_step), cols = (oh1 - oh0) * p.Q;
      blas::sgemm(true, false, int(crows), cols, kept, 1.f, a, lda, dyg + int64_t(oh0) * p.Q, int(PQ), 0.f, col,
                  cols);
      col2im(p, col, dxg, c0, c1, oh0, oh1);
    }
  });
}

}  // namespace pg::kernels::cpu
