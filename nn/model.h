// Models built from a torchvision state dict: ResNet (BasicBlock/Bottleneck, any depths
// and widths) and VGG (with or without BatchNorm), with torchvision's tensor names.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "autograd/tape.h"
#include "nn/layers.h"
#include "weights/state_dict.h"

namespace pg::nn {

class Model {
 public:
  virtual ~Model() = default;
  // logits [N, classes] from x [N, 3, H, W].
  virtual ag::Var forward(Context& ctx, const ag::Var& x) const = 0;

  // Every conv in torchvision's module-registration order.
  const std::vector<const Conv2d*>& convs() const { return convs_; }
  const std::string& arch() const { return arch_; }
  int num_classes() const { return num_classes_; }
  int in_channels() const { return 3; }
  // Name of a preset group of convs ("layer34" for ResNets), or empty if unsupported.
  virtual std::vector<std::string> preset(const std::string& name) const { return {}; }

 protected:
  // A builder's finalize: names the model and starts its conv list over ...
  void begin_convs(const std::string& arch, int classes) {
    arch_ = arch;
    num_classes_ = classes;
    convs_.clear();
  }
  // ... then appends each conv in torchvision's module order (its index is its position).
  void push_conv(Conv2d& c) {
    c.bind_site();
    c.site.index = int(convs_.size());
    convs_.push_back(&c);
  }

  std::vector<const Conv2d*> convs_;
  std::string arch_;
  int num_classes_ = 0;
};

// The architectures that can be named with --model.
const std::vector<std::string>& known_architectures();

// Builds a model from weights. arch: one of known_architectures(), or "" to infer it from
// the tensor names and shapes (stage depths and widths are taken from the weights, so
// smaller torchvision-shaped models load too). source names the weights in errors.
// Missing, unexpected and mis-shaped tensors are reported by name.
std::unique_ptr<Model> build_model(const weights::StateDict& sd, const std::string& arch,
                                   const std::string& source);

// Loads the weights file and builds the model.
std::unique_ptr<Model> load_model(const std::string& weights_path, const std::string& arch);

// A model of a known architecture with random weights (Kaiming-normal convs, random
// BatchNorm statistics), for benchmarks and tests.
std::unique_ptr<Model> random_model(const std::string& arch, int num_classes, uint64_t seed);
weights::StateDict random_state_dict(const std::string& arch, int num_classes, uint64_t seed);

}  // namespace pg::nn
