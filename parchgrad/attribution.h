// Attribution: the backward seed and saliency maps computed from the input gradient.
#pragma once
#include <functional>
#include <vector>

#include "autograd/hooks.h"
#include "nn/model.h"

namespace pg {

// Row-wise softmax of logits [N, K] (computed in double, stored as float).
Tensor softmax(const Tensor& logits);

// Resolves per-sample targets: a negative entry -r means "the class ranked r-th" (-1: top-1). One entry may serve
// every sample. Throws if a class id is out of range.
std::vector<int> resolve_targets(const Tensor& logits, const std::vector<int>& targets);

// dL/dlogits = onehot(target) * softmax(logits)[target], per sample (the reference's seed).
Tensor probability_seed(const Tensor& probs, const std::vector<int>& targets);

struct GradientResult {
  Tensor logits;             // [N, K]
  Tensor probs;              // [N, K]
  std::vector<int> targets;  // resolved
  Tensor grad;               // dL/dx [N, 3, H, W] (empty when BackwardOptions::keep_grad is off)
  Tensor map;                // [N, H, W] when BackwardOptions::map asks for one
  Tensor feature;            // last conv block output (with capture_feature and no feature_id)
  Tensor feature_grad;       // its gradient (with feature_id: the gradient of that value)
};

struct BackwardOptions {
  ag::ConvHook* hook = nullptr;
  // Called with the resolved targets after the forward pass, before backward.
  std::function<void(const std::vector<int>&)> on_targets;
  bool capture_feature = false;
  // With capture_feature: the tape id of the value whose gradient is kept instead of the
  // model's own feature's (Grad-CAM at another layer: its id in a forward from the tape's
  // start, see methods.cpp); -1: the model's feature (ctx.feature).
  int feature_id = -1;
  // A map computed where the gradient is (on the device: only the map comes back), and
  // whether the gradient itself is returned.
  enum class Map { none, grad, inputgrad } map = Map::none;
  bool keep_grad = true;
};

// Forward with a tape, then backward from the probability seed. x may be a host tensor or,
// with ctx.device == cuda, already on the device; results are host tensors.
GradientResult input_gradient(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                              const std::vector<int>& targets, const BackwardOptions& opt = {});

// One forward, then one backward per target set: target_sets[j] holds one class per sample.
std::vector<GradientResult> input_gradients(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                                            const std::vector<std::vector<int>>& target_sets,
                                            const BackwardOptions& opt = {});

// Forward only.
Tensor forward_logits(const nn::Model& model, nn::Context& ctx, const Tensor& x);

// Map [N, H, W] = mean over RGB of |g| (host tensors).
Tensor gradient_map(const Tensor& grad);
// Map [N, H, W] = mean over RGB of |x * g| (host tensors).
Tensor input_gradient_map(const Tensor& x, const Tensor& grad);

// Throws pg::Error (prefixed by `what`) when x has NaN or infinite values or is not
// [N, 3, H, W].
void check_input(const Tensor& x, const std::string& what);

}  // namespace pg
