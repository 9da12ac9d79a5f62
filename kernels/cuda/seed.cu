// The probability seed: one block per row of logits. See seed.h.
#include "kernels/cuda/seed.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/compat.h"

namespace pg::kernels::cuda {
namespace {

constexpr int kThreads = 256;  // a power of two: the trees below halve it

__global__ void __launch_bounds__(kThreads) probability_seed_kernel(SeedParams p, const float* __restrict__ logits,
                                                                    const int32_t* __restrict__ targets,
                                                                    float* __restrict__ probs,
                                                                    float* __restrict__ seed) {
  __shared__ double s[kThreads];
  const int t = int(threadIdx.x);
  const int64_t row = blockIdx.x;
  const float* l = logits + row * p.K;

  // Maximum of the non-NaN logits (a max is exact, so any order gives the host's value);
  // the host's std::max chain skips every NaN except a NaN l[0], which it keeps.
  double m = -INFINITY;
  for (int k = t; k < p.K; k += kThreads) {
    const double v = double(__ldg(&l[k]));
    m = v > m ? v : m;
  }
  s[t] = m;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (t < half && s[t + half] > s[t]) s[t] = s[t + half];
    __syncthreads();
  }
  const double l0 = double(__ldg(&l[0]));
  const double mx = l0 != l0 ? l0 : s[0];
  __syncthreads();  // s is reused

  // Sum of exp(l - mx) in double: strided per-thread sums, then a tree of fixed shape.
  double acc = 0;
  for (int k = t; k < p.K; k += kThreads) acc += exp(double(__ldg(&l[k])) - mx);
  s[t] = acc;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half >>= 1) {
    if (t < half) s[t] += s[t + half];
    __syncthreads();
  }
  const double sum = s[0];

  const int target = __ldg(&targets[row]);
  for (int k = t; k < p.K; k += kThreads) {
    const float pk = float(exp(double(__ldg(&l[k])) - mx) / sum);
    if (probs) probs[row * p.K + k] = pk;
    seed[row * p.K + k] = k == target ? pk : 0.f;
  }
}

}  // namespace

void launch_probability_seed(const SeedParams& p, const float* logits, const int32_t* targets, float* probs,
                             float* seed, cudaStream_t stream) {
  if (p.N <= 0 || p.K <= 0) return;
  PG_LAUNCH(probability_seed_kernel, unsigned(p.N), kThreads, 0, stream, p, logits, targets, probs, seed);
  PG_CUDA_CHECK_LAUNCH();
}

}  // namespace pg::kernels::cuda
