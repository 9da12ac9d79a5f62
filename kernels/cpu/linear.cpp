#include "kernels/cpu/linear.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace pg::kernels::cpu {

// Written here rather than as one SGEMM over the batch: a BLAS call over [N, in] rounds a
// sample's row according to N (its threading, blocking and micro-kernel tails), and the
// logits and gradients must not depend on the other samples of the batch. Each output
// element below is computed by the same code path in the same order whatever N and the
// thread count; the threads split the output columns, never a sum.

namespace {

// The dot product: element k adds into lane k mod kLanes, in increasing k, within blocks of
// kBlock elements; each block's lanes are then added into the lanes' running sums, and the
// lanes are summed pairwise in a fixed tree at the end. Contiguous lanes let the compiler use
// vector registers without reordering any sum; the two levels keep every sequential sum short
// (32 terms within a block, one term per block outside: 49 for VGG's 25088 inputs), so the
// rounding error stays below a blocked SGEMM's.
constexpr int kLanes = 16;
constexpr int kBlock = 512;

float dot(const float* a, const float* b, int n) {
  float total[kLanes] = {};
  for (int k0 = 0; k0 < n; k0 += kBlock) {
    const int k1 = std::min(n, k0 + kBlock);
    float acc[kLanes] = {};
    int k = k0;
    for (; k + kLanes <= k1; k += kLanes)
      for (int j = 0; j < kLanes; ++j) acc[j] += a[k + j] * b[k + j];
    for (int j = 0; k + j < k1; ++j) acc[j] += a[k + j] * b[k + j];
    for (int j = 0; j < kLanes; ++j) total[j] += acc[j];
  }
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int j = 0; j < width; ++j) total[j] += total[j + width];
  return total[0];
}

// Output features per parallel chunk: the chunk's weight rows are read from memory once
// and reused for every sample from cache.
constexpr int kRowsPerChunk = 16;
// Input features per parallel chunk of the backward pass, and output features per block of
// its sum (the same two-level order as dot()).
constexpr int kColsPerChunk = 512;
constexpr int kOutBlock = 64;

}  // namespace

void linear_forward(int N, int in, int out, const float* x, const float* w, const float* b, float* y) {
  const int chunks = (out + kRowsPerChunk - 1) / kRowsPerChunk;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c) {
    const int o0 = c * kRowsPerChunk, o1 = std::min(out, o0 + kRowsPerChunk);
    for (int n = 0; n < N; ++n) {
      const float* xn = x + int64_t(n) * in;
      float* yn = y + int64_t(n) * out;
      for (int o = o0; o < o1; ++o) {
        const float v = dot(xn, w + int64_t(o) * in, in);
        yn[o] = b ? v + b[o] : v;
      }
    }
  }
}

void linear_backward(int N, int in, int out, const float* dy, const float* w, float* dx) {
  // dx[n, i] = sum over blocks of kOutBlock outputs, in order, of (sum over the block's o, in
  // increasing o, of dy[n, o] * w[o, i]).
  const int chunks = (in + kColsPerChunk - 1) / kColsPerChunk;
#pragma omp parallel
  {
    std::vector<float> part(size_t(N) * kColsPerChunk);
#pragma omp for schedule(static)
    for (int c = 0; c < chunks; ++c) {
      const int i0 = c * kColsPerChunk, len = std::min(in, i0 + kColsPerChunk) - i0;
      for (int n = 0; n < N; ++n) std::memset(dx + int64_t(n) * in + i0, 0, sizeof(float) * len);
      for (int o0 = 0; o0 < out; o0 += kOutBlock) {
        const int o1 = std::min(out, o0 + kOutBlock);
        std::fill(part.begin(), part.end(), 0.f);
        for (int o = o0; o < o1; ++o) {
          const float* wo = w + int64_t(o) * in + i0;
          for (int n = 0; n < N; ++n) {
            const float d = dy[int64_t(n) * out + o];
            float* pn = part.data() + int64_t(n) * kColsPerChunk;
            for (int i = 0; i < len; ++i) pn[i] += d * wo[i];
          }
        }
        for (int n = 0; n < N; ++n) {
          float* dxn = dx + int64_t(n) * in + i0;
          const float* pn = part.data() + int64_t(n) * kColsPerChunk;
          for (int i = 0; i < len; ++i) dxn[i] += pn[i];
        }
      }
    }
  }
}

}  // namespace pg::kernels::cpu
