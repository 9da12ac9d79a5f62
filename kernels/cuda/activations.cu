// Elementwise activations and their input gradients (see activations.h for the contract).
#include "kernels/cuda/activations.h"

#include "kernels/cuda/compat.h"  // before smooth_math.h (PG_SIMT tells it the compiler)
#include "kernels/cpu/smooth_math.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/portable.h"
#include "kernels/cuda/compat.h"

PG_NO_FP_CONTRACT  // bit-identical to the CPU twin (portable.h)

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// std::max(a, b) and std::min(a, b) as the twin evaluates them (NaN passes as the twin's).
PG_DEVICE_INLINE float max_as_std(float a, float b) { return a < b ? b : a; }
PG_DEVICE_INLINE float min_as_std(float a, float b) { return b < a ? b : a; }

template <Activation kA>
PG_DEVICE_INLINE float forward_one(float v) {
  if (kA == Activation::silu) return smooth::silu(v);
  if (kA == Activation::sigmoid) return smooth::sigmoid(v);
  const float r = min_as_std(max_as_std(__fadd_rn(v, 3.f), 0.f), 6.f);
  if (kA == Activation::hardswish) return __fdiv_rn(__fmul_rn(v, r), 6.f);
  return __fdiv_rn(r, 6.f);  // hardsigmoid
}

template <Activation kA>
PG_DEVICE_INLINE float backward_one(float s, float g) {
  if (kA == Activation::silu) return smooth::silu_grad(s, g);
  if (kA == Activation::sigmoid) return __fmul_rn(__fmul_rn(g, __fsub_rn(1.f, s)), s);
  if (kA == Activation::hardswish) {
    if (s < -3.f) return 0.f;
    if (s <= 3.f) return __fmul_rn(g, __fadd_rn(__fdiv_rn(s, 3.f), 0.5f));
    return g;
  }
  return s > -3.f && s < 3.f ? __fmul_rn(g, 1.f / 6.f) : 0.f;  // hardsigmoid
}

// No __restrict__: y may alias x, dx may alias g.
template <Activation kA>
__global__ void __launch_bounds__(kThreads) activation_forward_kernel(int64_t n, const float* x, float* y) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) y[i] = forward_one<kA>(x[i]);
}

template <Activation kA>
__global__ void __launch_bounds__(kThreads) activation_backward_kernel(int64_t n, const float* saved, const float* g,
                                                                       float* dx) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    dx[i] = backward_one<kA>(saved[i], g[i]);
}

template <Activation kA>
void forward_as(int64_t n, const float* x, float* y, cudaStream_t stream) {
  PG_LAUNCH((activation_forward_kernel<kA>), grid_1d(n, kThreads), kThreads, 0, stream, n, x, y);
}

template <Activation kA>
void backward_as(int64_t n, const float* s, const float* g, float* dx, cudaStream_t stream) {
  PG_LAUNCH((activation_backward_kernel<kA>), grid_1d(n, kThreads), kThreads, 0, stream, n, s, g, dx);
}

}  // namespace

void launch_activation_forward(const ActivationParams& p, const float* x, float* y, cudaStream_t stream) {
  if (p.n <= 0) return;
  switch (p.kind) {
    case Activation::silu: forward_as<Activation::silu>(p.n, x, y, stream); break;
    case Activation::sigmoid: forward_as<Activation::sigmoid>(p.n, x, y, stream); break;
    case Activation::hardswish: forward_as<Activation::hardswish>(p.n, x, y, stream); break;
    case Activation::hardsigmoid: forward_as<Activation::hardsigmoid>(p.n, x, y, stream); break;
  }
  PG_CUDA_CHECK_LAUNCH();
}

void launch_activation_backward(const ActivationParams& p, const float* saved, const float* g, float* dx,
                                cudaStream_t stream) {
  if (p.n <= 0) return;
  switch (p.kind) {
    case Activation::silu: backward_as<Activation::silu>(p.n, saved, g, dx, stream); break;
    case Activation::sigmoid: backward_as<Activation::sigmoid>(p.n, saved, g, dx, stream); break;
    case Activation::hardswish: backward_as<Activation::hardswish>(p.n, saved, g, dx, stream); break;
    case Activation::hardsigmoid: backward_as<Activation::hardsigmoid>(p.n, saved, g, dx, stream); break;
  }
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
