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
  // zero (the ImageNet mean colour), black (every pixel 0 before normalisation), the input
  // blurred (blur_baseline with ig_blur_sigma, per sample), or a given normalised tensor
  // [3, H, W].
  enum class Baseline { zero, black, blurred, given };
  Baseline ig_baseline = Baseline::zero;
  Tensor ig_baseline_tensor;
  double ig_blur_sigma = 10.0;  // pixels of the model's input (blurred only)
  // Grad-CAM's target layer: the torchvision name of the module whose output (and its
  // gradient) Grad-CAM takes ("layer3", "layer4.1", "features.29", "layer4.0.conv2"; see
  // resolve_cam_layer). Empty: the model's default (ResNet: the last block; VGG: the last
  // ReLU, before the final max-pool).
  std::string gradcam_layer;
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
  Tensor logits;             // [N, K] of the clean inputs
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

// Grad-CAM's target layer, resolved against a model. The layers are the module outputs of the
// model's forward, named as torchvision names the modules: ResNet: conv1, bn1, relu, maxpool,
// layerS (its last block), layerS.B (a block's output, after its final ReLU), and inside a
// block convK, bnK, downsample.0 and downsample.1 (e.g. layer4.0.conv2); VGG: features.I for
// every I (a conv, its BatchNorm, its ReLU or a max-pool). A conv followed by BatchNorm gives
// the raw conv output (as in PyTorch; the engine folds BatchNorm into the conv and recovers
// it), its BatchNorm the normalised one.
struct CamLayer {
  std::string name;        // as asked; the default's name when none was
  bool is_default = true;  // the layer the model itself captures (the same map, bit for bit)
  // The convs whose input depends on this layer's output, in the model's conv order: the only
  // places where a ParchGrad edit can change the gradient that reaches the layer.
  std::vector<std::string> above;
};
// Throws pg::Error (naming --gradcam-layer and the accepted names) for a name that is not a
// layer of the model.
CamLayer resolve_cam_layer(const nn::Model& model, const std::string& name);

// What Grad-CAM takes at `layer` (resolve_cam_layer's names; empty: the default) for one
// target per sample (-r: the r-th ranked class): the layer's output A [N, K, h, w] and the
// gradient of the probability seed with respect to it, with `hook` in the backward pass (a
// plain conv hook: a ParchGradHook needs its targets set, which explain does).
// Any layer but the model's own is found by running the forward up to it (walk_default: the
// default layer too, the same bits as the model's capture).
struct CamInputs {
  Tensor value, grad;
};
CamInputs gradcam_inputs(const nn::Model& model, nn::Context& ctx, const Tensor& x, const std::vector<int>& targets,
                         const std::string& layer, ag::ConvHook* hook = nullptr, bool walk_default = false);

// Integrated gradients' blurred baseline of x [N, 3, H, W]: each channel of each sample
// convolved with a Gaussian of standard deviation sigma pixels (separable, truncated at
// 4 sigma, mirrored at the border: scipy.ndimage.gaussian_filter(x, (0, 0, sigma, sigma),
// mode="reflect", truncate=4.0)), on the normalised tensor. sigma 0 returns x.
Tensor blur_baseline(const Tensor& x, double sigma);

}  // namespace pg
