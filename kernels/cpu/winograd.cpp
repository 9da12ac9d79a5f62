#include "kernels/cpu/winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/blas.h"

namespace pg::kernels::cpu {

namespace {

constexpr int kElems = 16;                     // 4x4 transform elements
constexpr int64_t kBlockBytes = int64_t(2) << 20;  // V and M of one tile block stay within ~2 MB

// u = G g G^T for one 3x3 kernel g (row-major), G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1].
void transform_kernel(const float g[9], float u[16]) {
  float t[4][3];
  for (int j = 0; j < 3; ++j) {
    t[0][j] = g[j];
    t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
    t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
    t[3][j] = g[6 + j];
  }
  for (int i = 0; i < 4; ++i) {
    u[i * 4 + 0] = t[i][0];
    u[i * 4 + 1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
    u[i * 4 + 2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
    u[i * 4 + 3] = t[i][2];
  }
}

// The geometry of one 3x3 stride-1 correlation: in [Ci][Hi][Wi] -> out [Co][Ho][Wo].
struct Corr {
  int Ci, Hi, Wi, Co, Ho, Wo, ph, pw;
  int tiles_h() const { return (Ho + 1) / 2; }
  int tiles_w() const { return (Wo + 1) / 2; }
  int64_t tiles() const { return int64_t(tiles_h()) * tiles_w(); }
  int block_tiles() const {
    const int64_t per_tile = int64_t(kElems) * (Ci + Co) * int64_t(sizeof(float));
    return int(std::max<int64_t>(16, std::min<int64_t>(tiles(), kBlockBytes / per_tile)));
  }
};

Corr forward_corr(const Conv2dParams& p) { return {p.C, p.H, p.W, p.K, p.P, p.Q, p.pad_h, p.pad_w}; }
Corr dgrad_corr(const Conv2dParams& p) { return {p.K, p.P, p.Q, p.C, p.H, p.W, 2 - p.pad_h, 2 - p.pad_w}; }

// Scratch of one thread: V [16][Ci][Tb], M [16][Co][Tb], and (dgrad) the kept weight rows
// [16][Ci][Co] plus the kept channel list.
int64_t thread_ws(const Corr& c, bool dgrad) {
  const int64_t tb = c.block_tiles();
  const int64_t rowbuf = 8 * (2 * int64_t(c.tiles_w()) + 2);
  return kElems * (c.Ci + c.Co) * tb + rowbuf + (dgrad ? int64_t(kElems) * c.Ci * c.Co + c.Ci : 0);
}

// V[e][j][t - t0] = (B^T d B)[e] for the 4x4 patch of input channel chan[j] (scaled by
// scale[j]) under tile t, B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]. Works a row of tiles
// at a time: the four input rows are copied into a zero-padded buffer, transformed down the
// columns for the whole row (vectorised), then across each tile's four columns.
void transform_input(const Corr& c, const float* in, const int* chan, const float* scale, int nch, int64_t t0,
                     int64_t t1, float* V, float* rowbuf) {
  const int64_t tb = t1 - t0, es = int64_t(nch) * tb;
  const int TW = c.tiles_w(), Wp = 2 * TW + 2;  // padded row: columns -pw .. 2*TW + 2 - pw
  float* R[4] = {rowbuf, rowbuf + Wp, rowbuf + 2 * Wp, rowbuf + 3 * Wp};
  float* T[4] = {rowbuf + 4 * Wp, rowbuf + 5 * Wp, rowbuf + 6 * Wp, rowbuf + 7 * Wp};
  for (int j = 0; j < nch; ++j) {
    const float* x = in + int64_t(chan ? chan[j] : j) * c.Hi * c.Wi;
    const float s = scale ? scale[j] : 1.f;
    for (int64_t th = t0 / TW; th * TW < t1; ++th) {
      const int tw0 = int(std::max<int64_t>(t0 - th * TW, 0)), tw1 = int(std::min<int64_t>(t1 - th * TW, TW));
      const int r0 = int(th) * 2 - c.ph;
      // Input columns q = 2*tw0 - pw .. 2*tw1 + 2 - pw, zero outside the plane.
      const int x0 = 2 * tw0, x1 = 2 * tw1 + 2;
      for (int a = 0; a < 4; ++a) {
        const int r = r0 + a;
        float* dst = R[a];
        if (r < 0 || r >= c.Hi) {
          std::fill(dst + x0, dst + x1, 0.f);
          continue;
        }
        const float* src = x + int64_t(r) * c.Wi - c.pw;
        const int lo = std::clamp(c.pw, x0, x1), hi = std::clamp(c.Wi + c.pw, x0, x1);
        std::fill(dst + x0, dst + lo, 0.f);
        std::copy(src + lo, src + hi, dst + lo);
        std::fill(dst + hi, dst + x1, 0.f);
      }
      for (int q = x0; q < x1; ++q) {
        T[0][q] = s * (R[0][q] - R[2][q]);
        T[1][q] = s * (R[1][q] + R[2][q]);
        T[2][q] = s * (R[2][q] - R[1][q]);
        T[3][q] = s * (R[1][q] - R[3][q]);
      }
      float* v = V + int64_t(j) * tb + (th * TW + tw0 - t0);
      const int n = tw1 - tw0;
      for (int a = 0; a < 4; ++a) {
        const float* ta = T[a] + x0;
        float* v0 = v + (a * 4 + 0) * es;
        float* v1 = v + (a * 4 + 1) * es;
        float* v2 = v + (a * 4 + 2) * es;
        float* v3 = v + (a * 4 + 3) * es;
        for (int i = 0; i < n; ++i) {
          const float d0 = ta[2 * i], d1 = ta[2 * i + 1], d2 = ta[2 * i + 2], d3 = ta[2 * i + 3];
          v0[i] = d0 - d2;
          v1[i] = d1 + d2;
          v2[i] = d2 - d1;
          v3[i] = d1 - d3;
        }
      }
    }
  }
}

// out tile = A^T m A for every output channel and tile, A^T = [1 1 1 0; 0 1 -1 -1], a row
// of tiles at a time.
void transform_output(const Corr& c, const float* M, int64_t t0, int64_t t1, float* out, float* rowbuf) {
  const int64_t tb = t1 - t0, es = int64_t(c.Co) * tb;
  const int TW = c.tiles_w();
  float* S[2][4];
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 4; ++b) S[a][b] = rowbuf + (a * 4 + b) * TW;
  for (int co = 0; co < c.Co; ++co) {
    float* o = out + int64_t(co) * c.Ho * c.Wo;
    for (int64_t th = t0 / TW; th * TW < t1; ++th) {
      const int tw0 = int(std::max<int64_t>(t0 - th * TW, 0)), tw1 = int(std::min<int64_t>(t1 - th * TW, TW));
      const int n = tw1 - tw0;
      const float* m = M + int64_t(co) * tb + (th * TW + tw0 - t0);
      for (int b = 0; b < 4; ++b) {
        const float* m0 = m + (0 + b) * es;
        const float* m1 = m + (4 + b) * es;
        const float* m2 = m + (8 + b) * es;
        const float* m3 = m + (12 + b) * es;
        float* s0 = S[0][b];
        float* s1 = S[1][b];
        for (int i = 0; i < n; ++i) {
          s0[i] = m0[i] + m1[i] + m2[i];
          s1[i] = m1[i] - m2[i] - m3[i];
        }
      }
      const int r0 = int(th) * 2;
      for (int a = 0; a < 2 && r0 + a < c.Ho; ++a) {
        float* row = o + int64_t(r0 + a) * c.Wo + 2 * tw0;
        const float *sa0 = S[a][0], *sa1 = S[a][1], *sa2 = S[a][2], *sa3 = S[a][3];
        const int full = (2 * tw1 <= c.Wo) ? n : n - 1;  // the last tile may have one column
        for (int i = 0; i < full; ++i) {
          row[2 * i] = sa0[i] + sa1[i] + sa2[i];
          row[2 * i + 1] = sa1[i] - sa2[i] - sa3[i];
        }
        if (full < n) row[2 * full] = sa0[full] + sa1[full] + sa2[full];
      }
    }
  }
}

// One sample's tile block: V from the input, 16 GEMMs with A_e (Co x nch), the output.
// A_e(co, j) = trans ? A[e][j][co] : A[e][co][j], with row length lda and element stride es.
void run_block(const Corr& c, const float* in, const int* chan, const float* scale, int nch, const float* A,
               int64_t a_es, int lda, bool trans, int64_t t0, int64_t t1, float* out, float* ws) {
  const int64_t tb = t1 - t0;
  float* V = ws;
  float* M = V + int64_t(kElems) * c.Ci * tb;
  float* rowbuf = M + int64_t(kElems) * c.Co * tb;
  transform_input(c, in, chan, scale, nch, t0, t1, V, rowbuf);
  for (int e = 0; e < kElems; ++e)
    blas::sgemm(trans, false, c.Co, int(tb), nch, 1.f, A + e * a_es, lda, V + e * int64_t(nch) * tb, int(tb), 0.f,
                M + e * int64_t(c.Co) * tb, int(tb));
  transform_output(c, M, t0, t1, out, rowbuf);
}

// Runs body(n, t0, t1, ws) over every (sample, tile block), in parallel.
template <class F>
void for_each_block(int N, const Corr& c, int64_t ws_per_thread, float* ws, F body) {
  const int64_t tb = c.block_tiles(), T = c.tiles(), nb = (T + tb - 1) / tb;
  const int64_t items = int64_t(N) * nb;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t it = 0; it < items; ++it) {
    const int n = int(it / nb);
    const int64_t t0 = (it % nb) * tb;
    body(n, t0, std::min(T, t0 + tb), ws + int64_t(omp_get_thread_num()) * ws_per_thread);
  }
}

}  // namespace

bool winograd_eligible(const Conv2dParams& p) {
  return p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1 &&
         p.groups == 1 && p.pad_h >= 0 && p.pad_h <= 2 && p.pad_w >= 0 && p.pad_w <= 2 && p.P >= 14 && p.Q >= 14 &&
         p.C >= 4 && p.K >= 4;
}

size_t winograd_weight_floats(const Conv2dParams& p) { return size_t(kElems) * p.K * p.C; }

void winograd_forward_weights(const Conv2dParams& p, const float* w, float* U) {
  const int64_t es = int64_t(p.K) * p.C;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < p.K; ++k)
    for (int c = 0; c < p.C; ++c) {
      float u[16];
      transform_kernel(w + (int64_t(k) * p.C + c) * 9, u);
      for (int e = 0; e < kElems; ++e) U[e * es + int64_t(k) * p.C + c] = u[e];
    }
}

void winograd_dgrad_weights(const Conv2dParams& p, const float* w, float* U) {
  const int64_t es = int64_t(p.K) * p.C;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < p.K; ++k)
    for (int c = 0; c < p.C; ++c) {
      const float* g = w + (int64_t(k) * p.C + c) * 9;
      const float flipped[9] = {g[8], g[7], g[6], g[5], g[4], g[3], g[2], g[1], g[0]};
      float u[16];
      transform_kernel(flipped, u);
      for (int e = 0; e < kElems; ++e) U[e * es + int64_t(k) * p.C + c] = u[e];
    }
}

size_t winograd_workspace_floats(const Conv2dParams& p, int threads) {
  return size_t(std::max(thread_ws(forward_corr(p), false), thread_ws(dgrad_corr(p), true))) * std::max(threads, 1);
}

void winograd_forward(const Conv2dParams& p, const float* x, const float* U, const ConvEpilogue& epi, float* y,
                      float* workspace) {
  blas::init();
  const Corr c = forward_corr(p);
  const int64_t per_thread = std::max(thread_ws(c, false), thread_ws(dgrad_corr(p), true));
  for_each_block(p.N, c, per_thread, workspace, [&](int n, int64_t t0, int64_t t1, float* ws) {
    run_block(c, x + int64_t(n) * p.C * p.in_plane(), nullptr, nullptr, p.C, U, int64_t(p.K) * p.C, p.C, false, t0,
              t1, y + int64_t(n) * p.K * p.out_plane(), ws);
  });
  if (epi.bias || epi.gap) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < p.N; ++n) conv2d_epilogue(p, n, epi, y + int64_t(n) * p.K * p.out_plane());
  }
}

void winograd_dgrad(const Conv2dParams& p, const float* dy, const float* U, const float* scale, float* dx,
                    float* workspace) {
  blas::init();
  const Corr c = dgrad_corr(p);
  const int64_t per_thread = std::max(thread_ws(forward_corr(p), false), thread_ws(c, true));
  const int64_t es = int64_t(p.K) * p.C;
  for_each_block(p.N, c, per_thread, workspace, [&](int n, int64_t t0, int64_t t1, float* ws) {
    const float* dyn = dy + int64_t(n) * p.K * p.out_plane();
    float* dxn = dx + int64_t(n) * p.C * p.in_plane();
    if (!scale) {
      run_block(c, dyn, nullptr, nullptr, p.K, U, es, p.C, true, t0, t1, dxn, ws);
      return;
    }
    // The channels with a non-zero scale, their scales, and their rows of U'.
    const float* sn = scale + int64_t(n) * p.K;
    float* sel = ws + thread_ws(c, false);  // past V, M and the row buffers
    int* chan = reinterpret_cast<int*>(sel + int64_t(kElems) * p.K * p.C);
    std::vector<float> s;
    int kept = 0;
    for (int k = 0; k < p.K; ++k)
      if (sn[k] != 0.f) {
        chan[kept++] = k;
        s.push_back(sn[k]);
      }
    if (kept == 0) {
      const int64_t TW = c.tiles_w();
      for (int co = 0; co < c.Co; ++co)
        for (int64_t t = t0; t < t1; ++t) {
          const int r0 = int(t / TW) * 2, q0 = int(t % TW) * 2;
          for (int a = 0; a < 2 && r0 + a < c.Ho; ++a)
            for (int b = 0; b < 2 && q0 + b < c.Wo; ++b) dxn[int64_t(co) * c.Ho * c.Wo + int64_t(r0 + a) * c.Wo + q0 + b] = 0.f;
        }
      return;
    }
    const float* A = U;
    int64_t a_es = es;
    if (kept < p.K) {
      for (int e = 0; e < kElems; ++e)
        for (int j = 0; j < kept; ++j)
          std::memcpy(sel + (int64_t(e) * kept + j) * p.C, U + e * es + int64_t(chan[j]) * p.C, sizeof(float) * p.C);
      A = sel;
      a_es = int64_t(kept) * p.C;
    }
    run_block(c, dyn, chan, s.data(), kept, A, a_es, p.C, true, t0, t1, dxn, ws);
  });
}

}  // namespace pg::kernels::cpu
