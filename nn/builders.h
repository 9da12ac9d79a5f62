// Architecture specs shared by the ResNet and VGG builders: a spec is derived from the
// weights or from a torchvision name, then lists the tensors it expects.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nn/binder.h"
#include "nn/layers.h"

namespace pg::nn {

struct ResNetSpec {
  std::string name;           // torchvision name or "resnet (custom)"
  bool bottleneck = false;
  int stem = 64;              // conv1 output channels
  std::vector<int> blocks;    // blocks per stage (layer1, layer2, ...)
  std::vector<int> mid, out;  // per stage: inner width (conv1 output), block output width
  std::vector<int> groups;    // per stage: groups of the 3x3 conv
  int num_classes = 1000;
};

struct VGGSpec {
  std::string name;
  std::vector<int> cfg;       // conv widths, -1 for a max-pool
  bool batch_norm = false;
  int pool = 7;               // adaptive average pool output (pool x pool)
  std::vector<int> hidden;    // classifier hidden widths (4096, 4096)
  int num_classes = 1000;
};

// torchvision's mobilenet_v2 (width_mult 1.0): the inverted residual blocks in order.
struct MobileNetSpec {
  std::string name;
  int stem = 32;    // features.0 output channels
  int last = 1280;  // features.18 output channels
  struct Block {
    int in = 0, hidden = 0, out = 0, stride = 1;
    bool expand = true;  // a 1x1 expansion conv first (expansion factor != 1)
  };
  std::vector<Block> blocks;
  int num_classes = 1000;
};

// torchvision's ConvNeXt: per stage its width and its number of CNBlocks; a downsample
// (LayerNorm2d, 2x2 stride-2 conv) between consecutive stages.
struct ConvNeXtSpec {
  std::string name;         // convnext_tiny, _small, _base, _large or "convnext (custom)"
  std::vector<int> dims;    // stage widths (features.0 output is dims[0])
  std::vector<int> depths;  // CNBlocks per stage
  int num_classes = 1000;
};

// torchvision's EfficientNet (B0-B7: MBConv blocks; V2 S/M/L: FusedMBConv then MBConv), blocks
// in order, each with its place features.<stage>.<index>.
struct EfficientNetSpec {
  std::string name;
  int stem = 32;         // features.0 output channels
  int last = 1280;       // features[-1] output channels
  double bn_eps = 1e-5;  // 1e-3 for B5-B7 and V2
  struct Block {
    bool fused = false;  // FusedMBConv: a kxk conv (expanding or not), no SE
    int stage = 1, index = 0;
    int in = 0, expanded = 0, out = 0, kernel = 3, stride = 1;
    int squeeze = 0;  // the SE's width (MBConv)
  };
  std::vector<Block> blocks;
  int num_classes = 1000;
};

// torchvision's MobileNetV3 (large or small, width_mult 1.0): InvertedResidual blocks with
// optional SE (ReLU/hardsigmoid) and ReLU or hardswish activations.
struct MobileNetV3Spec {
  std::string name;
  int stem = 16;      // features.0 output channels
  int last = 960;     // features[-1] output channels (6 x the last block's)
  int hidden = 1280;  // classifier.0 output
  struct Block {
    int in = 0, expanded = 0, out = 0, kernel = 3, stride = 1;
    int squeeze = 0;  // SE width, 0 for none
    bool hardswish = false;
  };
  std::vector<Block> blocks;
  int num_classes = 1000;
};

bool resnet_spec_from_name(const std::string& name, ResNetSpec* spec);
bool vgg_spec_from_name(const std::string& name, VGGSpec* spec);
ResNetSpec resnet_spec_from_weights(const weights::StateDict& sd, const std::string& source);
VGGSpec vgg_spec_from_weights(const weights::StateDict& sd, const std::string& source);
bool mobilenet_spec_from_name(const std::string& name, MobileNetSpec* spec);
MobileNetSpec mobilenet_spec_from_weights(const weights::StateDict& sd, const std::string& source);
bool convnext_spec_from_name(const std::string& name, ConvNeXtSpec* spec);
ConvNeXtSpec convnext_spec_from_weights(const weights::StateDict& sd, const std::string& source);

bool efficientnet_spec_from_name(const std::string& name, EfficientNetSpec* spec);
EfficientNetSpec efficientnet_spec_from_weights(const weights::StateDict& sd, const std::string& source);
bool mobilenet_v3_spec_from_name(const std::string& name, MobileNetV3Spec* spec);
MobileNetV3Spec mobilenet_v3_spec_from_weights(const weights::StateDict& sd, const std::string& source);

// Every tensor the spec expects, with its shape, in torchvision's state-dict order.
std::vector<std::pair<std::string, std::vector<int64_t>>> resnet_tensors(const ResNetSpec& s);
std::vector<std::pair<std::string, std::vector<int64_t>>> vgg_tensors(const VGGSpec& s);
std::vector<std::pair<std::string, std::vector<int64_t>>> mobilenet_tensors(const MobileNetSpec& s);
std::vector<std::pair<std::string, std::vector<int64_t>>> convnext_tensors(const ConvNeXtSpec& s);

std::vector<std::pair<std::string, std::vector<int64_t>>> efficientnet_tensors(const EfficientNetSpec& s);
std::vector<std::pair<std::string, std::vector<int64_t>>> mobilenet_v3_tensors(const MobileNetV3Spec& s);

std::unique_ptr<class Model> build_resnet(const ResNetSpec& spec, WeightBinder& binder);
std::unique_ptr<class Model> build_vgg(const VGGSpec& spec, WeightBinder& binder);
std::unique_ptr<class Model> build_mobilenet(const MobileNetSpec& spec, WeightBinder& binder);
std::unique_ptr<class Model> build_efficientnet(const EfficientNetSpec& spec, WeightBinder& binder);
std::unique_ptr<class Model> build_mobilenet_v3(const MobileNetV3Spec& spec, WeightBinder& binder);
std::unique_ptr<class Model> build_convnext(const ConvNeXtSpec& spec, WeightBinder& binder);

// How well the tensors a spec expects fit a state dict: the names that differ (expected but
// absent, or present but not expected) and the expected shapes that agree. Where the weights
// cannot tell a family's variants apart by name alone (EfficientNet, MobileNetV3: strides and
// eps are not in them), the variant that fits best (fewest differing names, then most agreeing
// shapes) is taken, and the binder then names whatever still does not fit.
struct SpecFit {
  long names_differ = 0, shapes_agree = 0;
  bool better_than(const SpecFit& o) const {
    return names_differ < o.names_differ || (names_differ == o.names_differ && shapes_agree > o.shapes_agree);
  }
};
using TensorList = std::vector<std::pair<std::string, std::vector<int64_t>>>;
SpecFit spec_fit(const weights::StateDict& sd, const TensorList& expected);

// Builds one conv (and folds the BatchNorm named bn_prefix, if not empty, with its eps: PyTorch's
// default 1e-5, 1e-3 for EfficientNet B5-B7 and V2 and for MobileNetV3) from the binder.
Conv2d make_conv(WeightBinder& b, const std::string& name, const std::string& bn_prefix, int in,
                 int out, int k, int stride, int pad, int groups, bool has_bias, int index, double bn_eps = 1e-5);

}  // namespace pg::nn
