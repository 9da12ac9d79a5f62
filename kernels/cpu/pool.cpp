#include "kernels/cpu/pool.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace pg::kernels::cpu {

void maxpool2d_forward(const Pool2dParams& p, const float* x, float* y, int32_t* argmax) {
  const int64_t planes = int64_t(p.N) * p.C;
  // For each kernel column k, the output columns whose window column ow*stride - pad + k
  // lies inside the input: [lo[k], hi[k]).
  std::vector<int> lo(size_t(p.kw)), hi(size_t(p.kw));
  for (int k = 0; k < p.kw; ++k) {
    int a = 0;
    while (a < p.Q && a * p.stride_w - p.pad_w + k < 0) ++a;
    int e = a;
    while (e < p.Q && e * p.stride_w - p.pad_w + k < p.W) ++e;
    lo[size_t(k)] = a;
    hi[size_t(k)] = e;
  }
#pragma omp parallel
  {
    std::vector<float> best(size_t(p.Q));
    std::vector<int32_t> bi(size_t(p.Q));
#pragma omp for schedule(static)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const float* xp = x + pl * p.H * p.W;
      for (int oh = 0; oh < p.P; ++oh) {
        const int h0 = oh * p.stride_h - p.pad_h;
        const int hb = std::max(h0, 0), he = std::min(h0 + p.kh, p.H);
        for (int ow = 0; ow < p.Q; ++ow) {
          best[size_t(ow)] = -std::numeric_limits<float>::infinity();
          bi[size_t(ow)] = hb * p.W + std::max(ow * p.stride_w - p.pad_w, 0);
        }
        // Window elements in PyTorch's scan order (row, then column) for all output columns
        // at once: the first maximum wins; a NaN wins and stays.
        float* bp = best.data();
        int32_t* ip = bi.data();
        for (int ih = hb; ih < he; ++ih) {
          const float* row = xp + ih * p.W;
          for (int k = 0; k < p.kw; ++k) {
            // Locals, so that the stores below cannot alias the loop bounds.
            const int off = k - p.pad_w, s = p.stride_w, a = lo[size_t(k)], e = hi[size_t(k)];
            const int32_t base = ih * p.W + off;
            for (int ow = a; ow < e; ++ow) {
              const float v = row[ow * s + off];
              const bool take = v > bp[ow] || (v != v && bp[ow] == bp[ow]);
              bp[ow] = take ? v : bp[ow];
              ip[ow] = take ? base + ow * s : ip[ow];
            }
          }
        }
        const int64_t o = pl * p.P * p.Q + int64_t(oh) * p.Q;
        std::copy(best.begin(), best.end(), y + o);
        if (argmax) std::copy(bi.begin(), bi.end(), argmax + o);
      }
    }
  }
}

void maxpool2d_backward(const Pool2dParams& p, const float* dy, const int32_t* argmax, float* dx) {
  const int64_t planes = int64_t(p.N) * p.C, in = int64_t(p.H) * p.W, out = int64_t(p.P) * p.Q;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* d = dx + pl * in;
    std::memset(d, 0, sizeof(float) * in);
    const float* g = dy + pl * out;
    const int32_t* a = argmax + pl * out;
    for (int64_t o = 0; o < out; ++o) d[a[o]] += g[o];
  }
}

namespace {
// Divisor of an average-pool window, as PyTorch computes it.
int avg_divisor(const Pool2dParams& p, int oh, int ow) {
  int h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  int h1 = std::min(h0 + p.kh, p.H + p.pad_h), w1 = std::min(w0 + p.kw, p.W + p.pad_w);
  const int pool = (h1 - h0) * (w1 - w0);
  h0 = std::max(h0, 0);
  w0 = std::max(w0, 0);
  h1 = std::min(h1, p.H);
  w1 = std::min(w1, p.W);
  return p.count_include_pad ? pool : (h1 - h0) * (w1 - w0);
}
}  // namespace

void avgpool2d_forward(const Pool2dParams& p, const float* x, float* y) {
  const int64_t planes = int64_t(p.N) * p.C;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * p.H * p.W;
    for (int oh = 0; oh < p.P; ++oh)
      for (int ow = 0; ow < p.Q; ++ow) {
        const int h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        float s = 0.f;
        for (int ih = std::max(h0, 0); ih < std::min(h0 + p.kh, p.H); ++ih)
          for (int iw = std::max(w0, 0); iw < std::min(w0 + p.kw, p.W); ++iw) s += xp[ih * p.W + iw];
        y[pl * p.P * p.Q + int64_t(oh) * p.Q + ow] = s / float(avg_divisor(p, oh, ow));
      }
  }
}

void avgpool2d_backward(const Pool2dParams& p, const float* dy, float* dx) {
  const int64_t planes = int64_t(p.N) * p.C;
#pragma omp parallel for schedule(static)
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* d = dx + pl * p.H * p.W;
    std::memset(d, 0, sizeof(float) * p.H * p.W);
    for (int oh = 0; oh < p.P; ++oh)
      for (int ow = 0; ow < p.Q; ++ow) {
        const int h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
        const float g = dy[pl * p.P * p.Q + int64_t(oh) * p.Q + ow] / float(avg_divisor(p, oh, ow));
        for (int ih = std::max(h0, 0); ih < std::min(h0 + p.kh, p.H); ++ih)
          for (int iw = std::max(w0, 0); iw < std::min(w0 + p.kw, p.W); ++iw) d[ih * p.W + iw] += g;
      }
  }
}

namespace {
inline int win_start(int i, int in, int out) { return int((int64_t(i) * in) / out); }
inline int win_end(int i, int in, int out) { return int((int64_t(i + 1) * in + out - 1) / out); }
}  // namespace

void adaptive_avgpool2d_forward(int NC, int H, int W, int P, int Q, const float* x, float* y) {
#pragma omp parallel for schedule(static)
  for (int pl = 0; pl < NC; ++pl) {
    const float* xp = x + int64_t(pl) * H * W;
    for (int oh = 0; oh < P; ++oh) {
      const int h0 = win_start(oh, H, P), h1 = win_end(oh, H, P);
      for (int ow = 0; ow < Q; ++ow) {
        const int w0 = win_start(ow, W, Q), w1 = win_end(ow, W, Q);
        float s = 0.f;
        for (int ih = h0; ih < h1; ++ih)
          for (int iw = w0; iw < w1; ++iw) s += xp[ih * W + iw];
        y[int64_t(pl) * P * Q + oh * Q + ow] = s / float((h1 - h0) * (w1 - w0));
      }
    }
  }
}

void adaptive_avgpool2d_backward(int NC, int H, int W, int P, int Q, const float* dy, float* dx) {
#pragma omp parallel for schedule(static)
  for (int pl = 0; pl < NC; ++pl) {
    float* d = dx + int64_t(pl) * H * W;
    std::memset(d, 0, sizeof(float) * H * W);
    for (int oh = 0; oh < P; ++oh) {
      const int h0 = win_start(oh, H, P), h1 = win_end(oh, H, P);
      for (int ow = 0; ow < Q; ++ow) {
        const int w0 = win_start(ow, W, Q), w1 = win_end(ow, W, Q);
        const float g = dy[int64_t(pl) * P * Q + oh * Q + ow] / float((h1 - h0) * (w1 - w0));
        for (int ih = h0; ih < h1; ++ih)
          for (int iw = w0; iw < w1; ++iw) d[ih * W + iw] += g;
      }
    }
  }
}

}  // namespace pg::kernels::cpu
