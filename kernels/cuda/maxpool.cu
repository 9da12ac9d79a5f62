// Max pooling: one thread per output (forward) or per input element (backward, gather).
#include "kernels/cuda/maxpool.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) maxpool_forward_kernel(MaxPoolParams p, const float* __restrict__ x,
                                                                   float* __restrict__ y,
                                                                   int32_t* __restrict__ argmax) {
  const int64_t total = int64_t(p.N) * p.C * p.P * p.Q;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t o = int64_t(blockIdx.x) * kThreads + threadIdx.x; o < total; o += stride) {
    const int ow = int(o % p.Q), oh = int((o / p.Q) % p.P);
    const int64_t plane = o / (int64_t(p.P) * p.Q);
    const float* xp = x + plane * p.H * p.W;
    const int h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
    const int hb = imax(h0, 0), he = imin(h0 + p.kh, p.H);
    const int wb = imax(w0, 0), we = imin(w0 + p.kw, p.W);
    float best = -INFINITY;
    int32_t bi = hb * p.W + wb;
    for (int ih = hb; ih < he; ++ih) {
      for (int iw = wb; iw < we; ++iw) {
        const float v = __ldg(&xp[ih * p.W + iw]);
        // Strictly greater keeps the first maximum; a NaN replaces a number, never a NaN.
        if (v > best || (v != v && best == best)) {
          best = v;
          bi = ih * p.W + iw;
        }
      }
    }
    y[o] = best;
    if (argmax) argmax[o] = bi;
  }
}

// Input element (ih, iw) lies in the window of output row oh when
// oh*sh - ph <= ih < oh*sh - ph + kh, i.e. oh in [ceil((ih + ph - kh + 1) / sh), floor((ih + ph) / sh)].
PG_DEVICE_INLINE void window_range(int i, int pad, int k, int s, int out, int& lo, int& hi) {
  const int a = i + pad - k + 1;  // may be negative: ceil division by hand
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = imin((i + pad) / s, out - 1);  // i + pad >= 0 always
}

__global__ void __launch_bounds__(kThreads) maxpool_backward_kernel(MaxPoolParams p, const float* __restrict__ dy,
                                                                    const int32_t* __restrict__ argmax,
                                                                    float* __restrict__ dx) {
  const int64_t total = int64_t(p.N) * p.C * p.H * p.W;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int iw = int(i % p.W), ih = int((i / p.W) % p.H);
    const int64_t plane = i / (int64_t(p.H) * p.W);
    const int32_t self = ih * p.W + iw;
    int oh0, oh1, ow0, ow1;
    window_range(ih, p.pad_h, p.kh, p.stride_h, p.P, oh0, oh1);
    window_range(iw, p.pad_w, p.kw, p.stride_w, p.Q, ow0, ow1);
    const int64_t base = plane * p.P * p.Q;
    float acc = 0.f;
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = base + int64_t(oh) * p.Q + ow;
        if (__ldg(&argmax[o]) == self) acc += __ldg(&dy[o]);
      }
    dx[i] = acc;
  }
}

}  // namespace

void launch_maxpool_forward(const MaxPoolParams& p, const float* x, float* y, int32_t* argmax,
                            cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.C * p.P * p.Q;
  if (total <= 0) return;
  PG_LAUNCH(maxpool_forward_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, x, y, argmax);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_maxpool_backward(const MaxPoolParams& p, const float* dy, const int32_t* argmax, float* dx,
                             cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.C * p.H * p.W;
  if (total <= 0) return;
  PG_LAUNCH(maxpool_backward_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, dy, argmax, dx);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
