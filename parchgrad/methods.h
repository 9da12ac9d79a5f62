// Attribution methods (grad, input x grad, integrated gradients, SmoothGrad, Grad-CAM),
// each with or without ParchGrad, per docs/parchgrad-method.md section 6.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "parchgrad/attribution.h"
#include "parchgrad/parchgrad.h"

namespace pg {

enum class Method { Grad, InputGrad, IG, SmoothGrad, GradCAM };
Method parse_method(const std::string& name);
const char* method_name(Method m);

struct MethodOptions {
  Method method = Method::Grad;
  int ig_steps = 25;
  // Integrated gradients' baseline b (the path is b + a (x - b), a in [0, 1]): the normalised
  // zero (the ImageNet mean colour), black (every pixel 0 before normalisation), or a given
  // normalised tensor [3, H, W].
  enum class Baseline { zero, black, given };
  Baseline ig_baseline = Baseline::zero;
  Tensor ig_baseline_tensor;
  int sg_samples = 25;
  double sg_sigma = 0.15;  // fraction of each input's value range
  uint64_t seed = 0;
  // Optional fixed SmoothGrad noise (already scaled): [M, 3, H, W], the same for every
  // sample, or [M, S, 3, H, W], one per sample of the whole run, taken by sample_ids.
  Tensor sg_noise;
  // The index of each sample of x in the run (for [M, S, ...] noise); empty: 0 .. N-1.
  std::vector<int64_t> sample_ids;
  int max_batch = 32;      // images per pass for IG/SmoothGrad copies (memory bound)
};

struct Explanation {
  Tensor maps;               // [N, H, W]
  Tensor probs;              // [N, K] of the clean inputs
  std::vector<int> targets;  // resolved
  // Per sample, the ParchGrad decisions at each hooked layer (clean input's backward;
  // empty without ParchGrad or for IG/SmoothGrad).
  std::vector<std::vector<LayerExplain>> layers;
};

// Maps of x [N, 3, H, W], one Explanation per target set (each one class per sample, or one
// for all; -r = the r-th ranked class). grad, inputgrad and gradcam serve every target set
// from one forward pass. hook may be null.
std::vector<Explanation> explain(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                                 const std::vector<std::vector<int>>& target_sets, const MethodOptions& opt,
                                 ParchGradHook* hook);

// Bilinear resize of maps [N, h, w] to [N, H, W] (PyTorch's align_corners=False rule).
Tensor upsample_bilinear(const Tensor& maps, int H, int W);

}  // namespace pg
