// Deliberately broken kernels (positive controls for compute-sanitizer). See broken_kernels.h.
// The bugs are on purpose; do not "fix" them.
#include "tests/cuda/broken_kernels.h"

#include <cuda_runtime.h>

#include <cstdio>

namespace pg::gputest {
namespace {

constexpr int kThreads = 256;
constexpr int kAlloc = 1000;  // floats allocated; the grid below covers 5 * 256 = 1280

// BUG (on purpose): no `if (i < n)` guard, so threads 1000..1279 write past the end.
__global__ void oob_write_kernel(float* out, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  out[i] = float(i) + float(n);
}

// BUG (on purpose): thread t writes s[t], then reads s[(t + 32) % 256], a slot written by a
// thread of another warp, without the __syncthreads() that would order the two.
__global__ void missing_barrier_kernel(const float* in, float* out) {
  __shared__ float s[kThreads];
  const int t = int(threadIdx.x);
  const int base = int(blockIdx.x) * kThreads;
  s[t] = in[base + t];
  // __syncthreads();  <- missing
  out[base + t] = s[(t + 32) % kThreads];
}

void report(const char* what, cudaError_t e) {
  std::printf("broken kernel %s: %s (%s)\n", what, e == cudaSuccess ? "ran" : "error", cudaGetErrorString(e));
}

}  // namespace

void run_broken_oob(cudaStream_t stream) {
  float* buf = nullptr;
  cudaError_t e = cudaMalloc(&buf, kAlloc * sizeof(float));
  if (e != cudaSuccess) return report("oob_write_kernel (cudaMalloc)", e);
  oob_write_kernel<<<(kAlloc + kThreads - 1) / kThreads + 1, kThreads, 0, stream>>>(buf, kAlloc);
  e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  report("oob_write_kernel", e);
  cudaFree(buf);
}

void run_broken_race(cudaStream_t stream) {
  const int blocks = 4, n = blocks * kThreads;
  float *in = nullptr, *out = nullptr;
  cudaError_t e = cudaMalloc(&in, n * sizeof(float));
  if (e == cudaSuccess) e = cudaMalloc(&out, n * sizeof(float));
  if (e == cudaSuccess) e = cudaMemsetAsync(in, 0, n * sizeof(float), stream);
  if (e != cudaSuccess) {
    report("missing_barrier_kernel (setup)", e);
  } else {
    missing_barrier_kernel<<<blocks, kThreads, 0, stream>>>(in, out);
    e = cudaGetLastError();
    if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
    report("missing_barrier_kernel", e);
  }
  cudaFree(in);
  cudaFree(out);
}

}  // namespace pg::gputest
