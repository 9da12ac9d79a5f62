// The backward seed of the engine: softmax of each row of logits [N, K] in double, as
// parchgrad/attribution.cpp's softmax, and seed = onehot(target) * p[target]:
//   mx = l[0] then max(mx, l[k]) (std::max: a NaN after l[0] is skipped, a NaN l[0] stays)
//   sum = sum_k exp(double(l[k]) - mx)
//   p[k] = float(exp(double(l[k]) - mx) / sum)
//   seed[n,k] = k == targets[n] ? p[n, targets[n]] : 0
// One block per row; the maximum is exact in any order, the sum is a fixed-order tree in
// double (per-thread strided partial sums, then a shared-memory tree), so a run gives the
// same bits every time. Against the CPU twin's sequential double sum (kernels/cpu/seed.h)
// the double sums differ by O(K * 2^-53) relative, which almost never moves the float
// rounding: the probabilities agree within one float ulp (the tests see them bitwise equal
// on the host runtime; on a GPU the device's double exp, within 1 ulp, adds its share).
// defines: launch_probability_seed
// (their parameter structs: kernels/params.h)
#pragma once
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// logits [N, K]; targets int32 [N], each in [0, K) (the caller checks; a row whose target is
// outside gets an all-zero seed). probs [N, K] may be nullptr (not written); seed [N, K]
// overwritten. Device pointers.
void launch_probability_seed(const SeedParams& p, const float* logits, const int32_t* targets, float* probs,
                             float* seed, cudaStream_t stream);

}  // namespace pg::kernels::cuda
