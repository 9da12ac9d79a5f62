// Average pools: one thread per output (forward) or per input element (backward, gather);
// the global pool (P = Q = 1) stages its planes through shared memory. See avgpool.h.
#include "kernels/cuda/avgpool.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// ---- average pool -------------------------------------------------------------------------------

// PyTorch's divisor (kernels/cpu/pool.cpp's avg_divisor): the window clipped to the padded
// input, or to the input itself without count_include_pad.
PG_DEVICE_INLINE int avg_divisor(const Pool2dParams& p, int oh, int ow) {
  int h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  int h1 = imin(h0 + p.kh, p.H + p.pad_h), w1 = imin(w0 + p.kw, p.W + p.pad_w);
  const int pool = (h1 - h0) * (w1 - w0);
  h0 = imax(h0, 0);
  w0 = imax(w0, 0);
  h1 = imin(h1, p.H);
  w1 = imin(w1, p.W);
  return p.count_include_pad ? pool : (h1 - h0) * (w1 - w0);
}

__global__ void __launch_bounds__(kThreads) avgpool_forward_kernel(Pool2dParams p, const float* __restrict__ x,
                                                                   float* __restrict__ y) {
  const int64_t total = int64_t(p.N) * p.C * p.P * p.Q;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t o = int64_t(blockIdx.x) * kThreads + threadIdx.x; o < total; o += stride) {
    const int ow = int(o % p.Q), oh = int((o / p.Q) % p.P);
    const int64_t plane = o / (int64_t(p.P) * p.Q);
    const float* xp = x + plane * p.H * p.W;
    const int h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
    const int hb = imax(h0, 0), he = imin(h0 + p.kh, p.H);
    const int wb = imax(w0, 0), we = imin(w0 + p.kw, p.W);
    float s = 0.f;  // row by row, as the CPU
    for (int ih = hb; ih < he; ++ih)
      for (int iw = wb; iw < we; ++iw) s += __ldg(&xp[ih * p.W + iw]);
    y[o] = __fdiv_rn(s, float(avg_divisor(p, oh, ow)));
  }
}

// Input element i lies in the window of output o when o*s - pad <= i < o*s - pad + k, i.e.
// o in [ceil((i + pad - k + 1) / s), floor((i + pad) / s)], clipped to [0, out).
PG_DEVICE_INLINE void window_range(int i, int pad, int k, int s, int out, int& lo, int& hi) {
  const int a = i + pad - k + 1;  // may be negative: ceil division by hand
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  hi = imin((i + pad) / s, out - 1);  // i + pad >= 0 always
}

__global__ void __launch_bounds__(kThreads) avgpool_backward_kernel(Pool2dParams p, const float* __restrict__ dy,
                                                                    float* __restrict__ dx) {
  const int64_t total = int64_t(p.N) * p.C * p.H * p.W;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int iw = int(i % p.W), ih = int((i / p.W) % p.H);
    const int64_t plane = i / (int64_t(p.H) * p.W);
    int oh0, oh1, ow0, ow1;
    window_range(ih, p.pad_h, p.kh, p.stride_h, p.P, oh0, oh1);
    window_range(iw, p.pad_w, p.kw, p.stride_w, p.Q, ow0, ow1);
    const float* g = dy + plane * p.P * p.Q;
    float acc = 0.f;  // outputs in ascending order: the CPU scatter's order of additions
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow) acc += __fdiv_rn(__ldg(&g[oh * p.Q + ow]), float(avg_divisor(p, oh, ow)));
    dx[i] = acc;
  }
}

// ---- adaptive average pool ----------------------------------------------------------------------

// Output i of `out` covers input [floor(i*in/out), ceil((i+1)*in/out)).
PG_DEVICE_INLINE int win_start(int i, int in, int out) { return int((int64_t(i) * in) / out); }
PG_DEVICE_INLINE int win_end(int i, int in, int out) { return int((int64_t(i + 1) * in + out - 1) / out); }

__global__ void __launch_bounds__(kThreads) adaptive_forward_kernel(AdaptivePoolParams p, const float* __restrict__ x,
                                                                    float* __restrict__ y) {
  const int64_t total = int64_t(p.NC) * p.P * p.Q;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t o = int64_t(blockIdx.x) * kThreads + threadIdx.x; o < total; o += stride) {
    const int ow = int(o % p.Q), oh = int((o / p.Q) % p.P);
    const int64_t plane = o / (int64_t(p.P) * p.Q);
    const float* xp = x + plane * p.H * p.W;
    const int h0 = win_start(oh, p.H, p.P), h1 = win_end(oh, p.H, p.P);
    const int w0 = win_start(ow, p.W, p.Q), w1 = win_end(ow, p.W, p.Q);
    float s = 0.f;
    for (int ih = h0; ih < h1; ++ih)
      for (int iw = w0; iw < w1; ++iw) s += __ldg(&xp[ih * p.W + iw]);
    y[o] = __fdiv_rn(s, float((h1 - h0) * (w1 - w0)));
  }
}

// Global pool (P = Q = 1): block b owns planes [b*ppb, b*ppb + ppb), a contiguous range of
// ppb*HW floats. It walks that range in tiles of kTile floats: all threads load a tile
// (coalesced), then thread t adds the elements of its plane that lie in the tile, in index
// order. Across tiles that is one sequential float sum per plane from +0, the CPU's sum.
// Thread t reads s[t*HW + j]: for odd HW (7x7) the 32 lanes hit 32 different banks.
constexpr int kGlobalThreads = 128;
constexpr int kTile = 4096;  // floats: 16 KiB of shared memory

__global__ void __launch_bounds__(kGlobalThreads) global_avgpool_kernel(AdaptivePoolParams p, int ppb,
                                                                        const float* __restrict__ x,
                                                                        float* __restrict__ y) {
  __shared__ float s[kTile];
  const int t = int(threadIdx.x);
  const int64_t HW = int64_t(p.H) * p.W;
  const int64_t first = int64_t(blockIdx.x) * ppb;
  const int planes = int(int64_t(p.NC) - first < ppb ? int64_t(p.NC) - first : ppb);
  const int64_t r0 = first * HW, r1 = (first + planes) * HW;  // this block's floats
  const int64_t mine0 = r0 + int64_t(t) * HW, mine1 = mine0 + HW;  // thread t's plane
  float acc = 0.f;
  for (int64_t tile = r0; tile < r1; tile += kTile) {
    const int n = int(r1 - tile < kTile ? r1 - tile : kTile);
    for (int j = t; j < n; j += kGlobalThreads) s[j] = __ldg(&x[tile + j]);
    __syncthreads();
    if (t < planes) {
      const int64_t a = mine0 > tile ? mine0 : tile, b = mine1 < tile + n ? mine1 : tile + n;
      for (int64_t j = a; j < b; ++j) acc += s[j - tile];
    }
    __syncthreads();  // the next tile overwrites s
  }
  if (t < planes) y[first + t] = __fdiv_rn(acc, float(HW));
}

// Input row i lies in the windows of outputs [floor(i*out/in), ceil((i+1)*out/in) - 1]:
// start(o) <= i  <=>  o*in < (i+1)*out,  and  end(o) > i  <=>  (o+1)*in > i*out.
PG_DEVICE_INLINE void adaptive_range(int i, int in, int out, int& lo, int& hi) {
  lo = int((int64_t(i) * out) / in);
  const int h = int((int64_t(i + 1) * out - 1) / in);
  hi = imin(h, out - 1);
}

__global__ void __launch_bounds__(kThreads) adaptive_backward_kernel(AdaptivePoolParams p,
                                                                     const float* __restrict__ dy,
                                                                     float* __restrict__ dx) {
  const int64_t total = int64_t(p.NC) * p.H * p.W;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const int iw = int(i % p.W), ih = int((i / p.W) % p.H);
    const int64_t plane = i / (int64_t(p.H) * p.W);
    int oh0, oh1, ow0, ow1;
    adaptive_range(ih, p.H, p.P, oh0, oh1);
    adaptive_range(iw, p.W, p.Q, ow0, ow1);
    const float* g = dy + plane * p.P * p.Q;
    float acc = 0.f;  // ascending outputs, as the CPU scatter
    for (int oh = oh0; oh <= oh1; ++oh) {
      const int rows = win_end(oh, p.H, p.P) - win_start(oh, p.H, p.P);
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int cols = win_end(ow, p.W, p.Q) - win_start(ow, p.W, p.Q);
        acc += __fdiv_rn(__ldg(&g[oh * p.Q + ow]), float(rows * cols));
      }
    }
    dx[i] = acc;
  }
}

}  // namespace

void launch_avgpool_forward(const Pool2dParams& p, const float* x, float* y, cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.C * p.P * p.Q;
  if (total <= 0) return;
  PG_LAUNCH(avgpool_forward_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, x, y);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_avgpool_backward(const Pool2dParams& p, const float* dy, float* dx, cudaStream_t stream) {
  const int64_t total = int64_t(p.N) * p.C * p.H * p.W;
  if (total <= 0) return;
  PG_LAUNCH(avgpool_backward_kernel, grid_1d(total, kThreads), kThreads, 0, stream, p, dy, dx);
  PG_CUDA_CHECK_LAUNCH();
}

void launch_adaptive_avgpool_forward(const AdaptivePoolParams& p, const float* x, float* y, cudaStream_t stream) {
  if (p.NC <= 0 || p.P <= 0 || p.Q <= 0 || p.H <= 0 || p.W <= 0) return;
  if (p.P == 1 && p.Q == 1) {
    const int64_t HW = int64_t(p.H) * p.W;
    const int ppb = int(HW >= kTile ? 1 : (kTile / HW < kGlobalThreads ? kTile / HW : kGlobalThreads));
    PG_LAUNCH(global_avgpool_kernel, unsigned((p.NC + ppb - 1) / ppb), kGlobalThreads, 0, stream, p, ppb, x, y);
  } else {
    PG_LAUNCH(adaptive_forward_kernel, grid_1d(int64_t(p.NC) * p.P * p.Q, kThreads), kThreads, 0, stream, p, x, y);
  }
  PG_CUDA_CHECK_LAUNCH();
}

void launch_adaptive_avgpool_backward(const AdaptivePoolParams& p, const float* dy, float* dx,
                                      cudaStream_t stream) {
  if (p.NC <= 0 || p.P <= 0 || p.Q <= 0 || p.H <= 0 || p.W <= 0) return;
  PG_LAUNCH(adaptive_backward_kernel, grid_1d(int64_t(p.NC) * p.H * p.W, kThreads), kThreads, 0, stream, p, dy, dx);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
