// CPU twin of kernels/cuda/seed.h: parchgrad/attribution.cpp's softmax (double, sequential
// per row) and the probability seed, on raw pointers.
// defines: probability_seed
#pragma once
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// probs [N, K] (may be nullptr) = softmax rows; seed [N, K] = onehot(targets[n]) * p[n,
// targets[n]] (all zero where the target is outside [0, K)).
void probability_seed(const SeedParams& p, const float* logits, const int32_t* targets, float* probs, float* seed);

}  // namespace pg::kernels::cpu
