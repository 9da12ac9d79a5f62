#include "nn/model.h"

#include <cmath>
#include <random>

#include "nn/builders.h"
#include "core/error.h"

namespace pg::nn {

const std::vector<std::string>& known_architectures() {
  static const std::vector<std::string> a = {
      "resnet18",        "resnet34",         "resnet50",         "resnet101",       "resnet152",
      "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
      "vgg11",           "vgg11_bn",         "vgg13",            "vgg13_bn",        "vgg16",
      "vgg16_bn",        "vgg19",            "vgg19_bn",         "mobilenet_v2",
      "convnext_tiny",   "convnext_small",   "convnext_base",    "convnext_large",
      "efficientnet_b0", "efficientnet_b1",  "efficientnet_b2",  "efficientnet_b3", "efficientnet_b4",
      "efficientnet_b5", "efficientnet_b6",  "efficientnet_b7",  "efficientnet_v2_s", "efficientnet_v2_m",
      "efficientnet_v2_l", "mobilenet_v3_small", "mobilenet_v3_large"};
  return a;
}

Conv2d make_conv(WeightBinder& b, const std::string& name, const std::string& bn_prefix, int in, int out,
                 int k, int stride, int pad, int groups, bool has_bias, int index, double bn_eps) {
  Conv2d c;
  c.site.name = name;
  c.site.index = index;
  c.in_channels = in;
  c.out_channels = out;
  c.kernel_h = c.kernel_w = k;
  c.stride = stride;
  c.pad = pad;
  c.groups = groups;
  c.weight = b.take(name + ".weight", {out, in / groups, k, k});
  if (has_bias) c.bias = b.take(name + ".bias", {out});
  if (!bn_prefix.empty()) {
    Tensor gamma = b.take(bn_prefix + ".weight", {out});
    Tensor beta = b.take(bn_prefix + ".bias", {out});
    Tensor mean = b.take(bn_prefix + ".running_mean", {out});
    Tensor var = b.take(bn_prefix + ".running_var", {out});
    b.ignore(bn_prefix + ".num_batches_tracked");
    c.fold_batchnorm(gamma, beta, mean, var, bn_eps);
  }
  c.bind_site();
  return c;
}

SpecFit spec_fit(const weights::StateDict& sd, const TensorList& expected) {
  SpecFit f;
  long found = 0;
  for (const auto& [name, shape] : expected) {
    auto it = sd.find(name);
    if (it == sd.end()) {
      ++f.names_differ;
    } else {
      ++found;
      if (it->second.shape() == shape) ++f.shapes_agree;
    }
  }
  f.names_differ += long(sd.size()) - found;  // tensors the spec does not expect
  return f;
}

namespace {

// The class count: the first dimension of the last Linear's weight, or 1000.
int classes_from(const weights::StateDict& sd, const char* classifier) {
  auto it = sd.find(classifier);
  if (it != sd.end() && it->second.ndim() == 2) return int(it->second.dim(0));
  return 1000;
}

// One architecture family: a spec from a torchvision name or from the weights, the tensors a
// spec expects, its builder, and the last Linear's weight (which holds the class count).
template <class Spec>
struct Family {
  using SpecType = Spec;
  bool (*from_name)(const std::string&, Spec*);
  Spec (*from_weights)(const weights::StateDict&, const std::string&);
  TensorList (*tensors)(const Spec&);
  std::unique_ptr<Model> (*build)(const Spec&, WeightBinder&);
  const char* classifier;
};

const Family<ResNetSpec> kResNet{resnet_spec_from_name, resnet_spec_from_weights, resnet_tensors, build_resnet,
                                 "fc.weight"};
const Family<VGGSpec> kVGG{vgg_spec_from_name, vgg_spec_from_weights, vgg_tensors, build_vgg, "classifier.6.weight"};
const Family<MobileNetSpec> kMobileNetV2{mobilenet_spec_from_name, mobilenet_spec_from_weights, mobilenet_tensors,
                                         build_mobilenet, "classifier.1.weight"};
const Family<ConvNeXtSpec> kConvNeXt{convnext_spec_from_name, convnext_spec_from_weights, convnext_tensors,
                                     build_convnext, "classifier.2.weight"};
const Family<EfficientNetSpec> kEfficientNet{efficientnet_spec_from_name, efficientnet_spec_from_weights,
                                             efficientnet_tensors, build_efficientnet, "classifier.1.weight"};
const Family<MobileNetV3Spec> kMobileNetV3{mobilenet_v3_spec_from_name, mobilenet_v3_spec_from_weights,
                                           mobilenet_v3_tensors, build_mobilenet_v3, "classifier.3.weight"};

// Calls f(family) for each family until one returns true; whether one did.
template <class F>
bool any_family(F&& f) {
  return f(kResNet) || f(kVGG) || f(kMobileNetV2) || f(kConvNeXt) || f(kEfficientNet) || f(kMobileNetV3);
}

template <class Spec>
std::unique_ptr<Model> build_inferred(const Family<Spec>& fam, const weights::StateDict& sd,
                                      const std::string& source) {
  Spec spec = fam.from_weights(sd, source);
  WeightBinder binder(sd, source, spec.name);
  return fam.build(spec, binder);
}

}  // namespace

std::unique_ptr<Model> build_model(const weights::StateDict& sd, const std::string& arch,
                                   const std::string& source) {
  if (!arch.empty()) {
    std::unique_ptr<Model> m;
    const bool known = any_family([&](const auto& fam) {
      typename std::decay_t<decltype(fam)>::SpecType spec;
      if (!fam.from_name(arch, &spec)) return false;
      spec.num_classes = classes_from(sd, fam.classifier);
      WeightBinder binder(sd, source, arch);
      m = fam.build(spec, binder);
      return true;
    });
    if (known) return m;
    std::string names;
    for (const auto& n : known_architectures()) names += (names.empty() ? "" : ", ") + n;
    throw Error("unknown model '" + arch + "' (known: " + names + ")");
  }
  // Inferred: the family from tensor names only it has.
  if (sd.count("conv1.weight") && sd.count("layer1.0.conv1.weight")) return build_inferred(kResNet, sd, source);
  if (sd.count("features.0.0.weight") && sd.count("features.1.0.layer_scale"))
    return build_inferred(kConvNeXt, sd, source);
  if (sd.count("features.0.0.weight") && sd.count("features.1.conv.0.0.weight"))
    return build_inferred(kMobileNetV2, sd, source);
  if (sd.count("features.0.0.weight") && sd.count("features.1.0.block.0.0.weight"))
    return build_inferred(kEfficientNet, sd, source);
  if (sd.count("features.0.0.weight") && sd.count("features.1.block.0.0.weight"))
    return build_inferred(kMobileNetV3, sd, source);
  if (sd.count("features.0.weight")) return build_inferred(kVGG, sd, source);
  throw file_error(source, "cannot tell the architecture from the tensor names (expected torchvision ResNet, "
                           "VGG, MobileNetV2/V3, EfficientNet names such as 'conv1.weight', "
                           "'features.0.weight' or 'features.0.0.weight'); pass --model");
}

std::unique_ptr<Model> load_model(const std::string& weights_path, const std::string& arch) {
  weights::StateDict sd = weights::load_state_dict(weights_path);
  return build_model(sd, arch, weights_path);
}

weights::StateDict random_state_dict(const std::string& arch, int num_classes, uint64_t seed) {
  TensorList tensors;
  const bool known = any_family([&](const auto& fam) {
    typename std::decay_t<decltype(fam)>::SpecType spec;
    if (!fam.from_name(arch, &spec)) return false;
    spec.num_classes = num_classes;
    tensors = fam.tensors(spec);
    return true;
  });
  if (!known) throw Error("unknown model '" + arch + "'");
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uni(0.f, 1.f);
  weights::StateDict sd;
  auto ends = [](const std::string& s, const char* suf) {
    const size_t n = std::char_traits<char>::length(suf);
    return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
  };
  for (const auto& [name, shape] : tensors) {
    Tensor t(shape);
    const int64_t n = t.numel();
    if (shape.size() == 4) {  // conv: Kaiming normal, fan_out
      const float sd_ = std::sqrt(2.f / float(shape[0] * shape[2] * shape[3]));
      for (int64_t i = 0; i < n; ++i) t[i] = sd_ * normal(rng);
    } else if (shape.size() == 2) {  // linear
      const float sd_ = 1.f / std::sqrt(float(shape[1]));
      for (int64_t i = 0; i < n; ++i) t[i] = sd_ * normal(rng);
    } else if (ends(name, "num_batches_tracked")) {
      t.fill(0.f);
    } else if (ends(name, "running_var")) {
      for (int64_t i = 0; i < n; ++i) t[i] = 0.5f + 1.5f * uni(rng);
    } else if (ends(name, "running_mean")) {
      for (int64_t i = 0; i < n; ++i) t[i] = 0.1f * normal(rng);
    } else if (ends(name, ".weight") || ends(name, "layer_scale")) {  // BatchNorm/LayerNorm gamma, ConvNeXt's layer scale
      for (int64_t i = 0; i < n; ++i) t[i] = 0.5f + uni(rng);
    } else {  // biases
      for (int64_t i = 0; i < n; ++i) t[i] = 0.1f * normal(rng);
    }
    sd[name] = t;
  }
  return sd;
}

std::unique_ptr<Model> random_model(const std::string& arch, int num_classes, uint64_t seed) {
  weights::StateDict sd = random_state_dict(arch, num_classes, seed);
  return build_model(sd, arch, "random " + arch);
}

}  // namespace pg::nn
