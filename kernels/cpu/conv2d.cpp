#include "kernels/cpu/conv2d.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/blas.h"

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

// Adjoint of im2col over output rows [oh0, oh1): dx[c][ih][iw] += col[...]; dx must be
// zeroed first.
void col2im(const Conv2dParams& p, const float* col, float* dx, int oh0, int oh1) {
  const int P = oh1 - oh0, Q = p.Q;
  for (int c = 0; c < p.Cg(); ++c) {
    float* dc = dx + c * p.in_plane();
    for (int r = 0; r < p.R; ++r) {
      for (int s = 0; s < p.S; ++s) {
        const float* in = col + ((int64_t(c) * p.R + r) * p.S + s) * P * Q;
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

// Output rows per im2col block: the column matrix of a block stays within about 2 MB, so
// large planes (VGG's first layers) are lowered and multiplied in cache-sized pieces.
int64_t g_block_bytes = int64_t(2) << 20;

int block_rows(const Conv2dParams& p) {
  const int64_t row_bytes = col_rows(p) * p.Q * int64_t(sizeof(float));
  return int(std::max<int64_t>(1, std::min<int64_t>(p.P, g_block_bytes / std::max<int64_t>(row_bytes, 1))));
}

int64_t col_floats(const Conv2dParams& p) {
  return p.is_pointwise() ? 0 : col_rows(p) * int64_t(block_rows(p)) * p.Q;
}

int64_t forward_ws(const Conv2dParams& p) { return col_floats(p); }

int64_t dgrad_ws(const Conv2dParams& p) {
  // columns + gathered/scaled output-gradient rows + gathered weight rows of one group
  return col_floats(p) + int64_t(p.Kg()) * p.out_plane() + int64_t(p.Kg()) * col_rows(p);
}

// Runs body(n, workspace_of_this_thread) for every sample; parallel over samples when there
// are at least as many samples as threads (BLAS then runs single-threaded inside), else
// serially with BLAS and the loops inside it multithreaded.
template <class F>
void for_each_sample(int N, int64_t ws_per_thread, float* ws, F body) {
  const int threads = omp_get_max_threads();
  if (N >= threads && threads > 1) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int n = 0; n < N; ++n) body(n, ws + int64_t(omp_get_thread_num()) * ws_per_thread);
  } else {
    for (int n = 0; n < N; ++n) body(n, ws);
  }
}

}  // namespace

void conv2d_set_block_bytes(int64_t bytes) { g_block_bytes = bytes > 0 ? bytes : (int64_t(2) << 20); }

size_t conv2d_workspace_floats(const Conv2dParams& p, int threads) {
  return size_t(std::max<int64_t>(forward_ws(p), dgrad_ws(p))) * std::max(threads, 1);
}

void conv2d_forward(const Conv2dParams& p, const float* x, const float* w,
                    const ConvEpilogue& epi, float* y, float* workspace) {
  const int64_t PQ = p.out_plane(), rows = col_rows(p);
  const int Kg = p.Kg();
  blas::init();
  for_each_sample(p.N, std::max<int64_t>(forward_ws(p), dgrad_ws(p)), workspace,
                  [&](int n, float* ws) {
    for (int g = 0; g < p.groups; ++g) {
      const float* xg = x + (int64_t(n) * p.C + int64_t(g) * p.Cg()) * p.in_plane();
      float* yg = y + (int64_t(n) * p.K + int64_t(g) * Kg) * PQ;
      const float* wg = w + int64_t(g) * Kg * rows;
      if (p.is_pointwise()) {
        blas::sgemm(false, false, Kg, int(PQ), int(rows), 1.f, wg,
                    int(rows), xg, int(PQ), 0.f, yg, int(PQ));
        continue;
      }
      const int step = block_rows(p);
      for (int oh0 = 0; oh0 < p.P; oh0 += step) {
        const int oh1 = std::min(p.P, oh0 + step), cols = (oh1 - oh0) * p.Q;
        im2col(p, xg, ws, oh0, oh1);
        blas::sgemm(false, false, Kg, cols, int(rows), 1.f, wg,
                    int(rows), ws, cols, 0.f, yg + int64_t(oh0) * p.Q, int(PQ));
      }
    }
    conv2d_epilogue(p, n, epi, y + int64_t(n) * p.K * PQ);
  });
}

void conv2d_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale,
                  float* dx, float* workspace) {
  const int64_t PQ = p.out_plane(), rows = col_rows(p);
  const int Kg = p.Kg();
  blas::init();
  for_each_sample(p.N, std::max<int64_t>(forward_ws(p), dgrad_ws(p)), workspace,
                  [&](int n, float* ws) {
    float* col = ws;
    float* dy_sel = ws + col_floats(p);
    float* w_sel = dy_sel + int64_t(Kg) * PQ;
    for (int g = 0; g < p.groups; ++g) {
      const float* dyg = dy + (int64_t(n) * p.K + int64_t(g) * Kg) * PQ;
      const float* wg = w + int64_t(g) * Kg * rows;
      float* dxg = dx + (int64_t(n) * p.C + int64_t(g) * p.Cg()) * p.in_plane();
      int kept = Kg;
      if (scale) {
        // Gather the output-gradient rows of the channels with a non-zero scale, scaled as
        // they are copied; gather the matching weight rows only when some were dropped.
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
            if (sg[k] != 0.f) std::memcpy(w_sel + int64_t(j++) * rows, wg + k * rows, sizeof(float) * rows);
          wg = w_sel;
        }
        dyg = dy_sel;
      }
      if (kept == 0) {
        std::memset(dxg, 0, sizeof(float) * p.Cg() * p.in_plane());
        continue;
      }
      if (p.is_pointwise()) {
        blas::sgemm(true, false, int(rows), int(PQ), kept, 1.f, wg,
                    int(rows), dyg, int(PQ), 0.f, dxg, int(PQ));
      } else {
        std::memset(dxg, 0, sizeof(float) * p.Cg() * p.in_plane());
        const int step = block_rows(p);
        for (int oh0 = 0; oh0 < p.P; oh0 += step) {
          const int oh1 = std::min(p.P, oh0 + step), cols = (oh1 - oh0) * p.Q;
          blas::sgemm(true, false, int(rows), cols, kept, 1.f, wg,
                      int(rows), dyg + int64_t(oh0) * p.Q, int(PQ), 0.f, col, cols);
          col2im(p, col, dxg, oh0, oh1);
        }
      }
    }
  });
}

}  // namespace pg::kernels::cpu
