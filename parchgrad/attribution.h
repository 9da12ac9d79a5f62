// Attribution: the backward seed and saliency maps computed from the input gradient.
#pragma once
#include <vector>

#include "autograd/hooks.h"
#include "nn/model.h"

namespace pg {

// Row-wise softmax of logits [N, K] (computed in double, stored as float).
Tensor softmax(const Tensor& logits);

// Resolves per-sample targets: a negative entry means "top-1 class". One entry may serve
// every sample. Throws if a class id is out of range.
std::vector<int> resolve_targets(const Tensor& logits, const std::vector<int>& targets);

// dL/dlogits = onehot(target) * softmax(logits)[target], per sample (the reference's seed).
Tensor probability_seed(const Tensor& probs, const std::vector<int>& targets);

struct GradientResult {
  Tensor logits;             // [N, K]
  Tensor probs;              // [N, K]
  std::vector<int> targets;  // resolved
  Tensor grad;               // dL/dx [N, 3, H, W]
};

// Forward with a tape, then backward from the probability seed; hook may be nullptr.
GradientResult input_gradient(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                              const std::vector<int>& targets, ag::ConvHook* hook = nullptr);

// Forward only.
Tensor forward_logits(const nn::Model& model, nn::Context& ctx, const Tensor& x);

// Map [N, H, W] = mean over RGB of |g|.
Tensor gradient_map(const Tensor& grad);

// Throws pg::Error (prefixed by `what`) when x has NaN or infinite values or is not
// [N, 3, H, W].
void check_input(const Tensor& x, const std::string& what);

}  // namespace pg
