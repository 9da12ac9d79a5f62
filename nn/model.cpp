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

namespace {
int classes_from(const weights::StateDict& sd, const char* a, const char* b) {
  for (const char* k : {a, b}) {
    auto it = sd.find(k);
    if (it != sd.end() && it->second.ndim() == 2) return int(it->second.dim(0));
  }
  return 1000;
}
}  // namespace

std::unique_ptr<Model> build_model(const weights::StateDict& sd, const std::string& arch,
                                   const std::string& source) {
  if (!arch.empty()) {
    ResNetSpec r;
    VGGSpec v;
    if (resnet_spec_from_name(arch, &r)) {
      r.num_classes = classes_from(sd, "fc.weight", "fc.weight");
      WeightBinder binder(sd, source, arch);
      return build_resnet(r, binder);
    }
    if (vgg_spec_from_name(arch, &v)) {
      v.num_classes = classes_from(sd, "classifier.6.weight", "classifier.6.weight");
      WeightBinder binder(sd, source, arch);
      return build_vgg(v, binder);
    }
    MobileNetSpec mb;
    if (mobilenet_spec_from_name(arch, &mb)) {
      mb.num_classes = classes_from(sd, "classifier.1.weight", "classifier.1.weight");
      WeightBinder binder(sd, source, arch);
      return build_mobilenet(mb, binder);
    }
    ConvNeXtSpec cn;
    if (convnext_spec_from_name(arch, &cn)) {
      cn.num_classes = classes_from(sd, "classifier.2.weight", "classifier.2.weight");
      WeightBinder binder(sd, source, arch);
      return build_convnext(cn, binder);
    }
    EfficientNetSpec ef;
    if (efficientnet_spec_from_name(arch, &ef)) {
      ef.num_classes = classes_from(sd, "classifier.1.weight", "classifier.1.weight");
      WeightBinder binder(sd, source, arch);
      return build_efficientnet(ef, binder);
    }
    MobileNetV3Spec m3;
    if (mobilenet_v3_spec_from_name(arch, &m3)) {
      m3.num_classes = classes_from(sd, "classifier.3.weight", "classifier.3.weight");
      WeightBinder binder(sd, source, arch);
      return build_mobilenet_v3(m3, binder);
    }
    std::string names;
    for (const auto& n : known_architectures()) names += (names.empty() ? "" : ", ") + n;
    throw Error("unknown model '" + arch + "' (known: " + names + ")");
  }
  if (sd.count("conv1.weight") && sd.count("layer1.0.conv1.weight")) {
    ResNetSpec r = resnet_spec_from_weights(sd, source);
    WeightBinder binder(sd, source, r.name);
    return build_resnet(r, binder);
  }
  if (sd.count("features.0.0.weight") && sd.count("features.1.0.layer_scale")) {
    ConvNeXtSpec cn = convnext_spec_from_weights(sd, source);
    WeightBinder binder(sd, source, cn.name);
    return build_convnext(cn, binder);
  }
  if (sd.count("features.0.0.weight") && sd.count("features.1.conv.0.0.weight")) {
    MobileNetSpec mb = mobilenet_spec_from_weights(sd, source);
    WeightBinder binder(sd, source, mb.name);
    return build_mobilenet(mb, binder);
  }
  if (sd.count("features.0.0.weight") && sd.count("features.1.0.block.0.0.weight")) {
    EfficientNetSpec ef = efficientnet_spec_from_weights(sd, source);
    WeightBinder binder(sd, source, ef.name);
    return build_efficientnet(ef, binder);
  }
  if (sd.count("features.0.0.weight") && sd.count("features.1.block.0.0.weight")) {
    MobileNetV3Spec m3 = mobilenet_v3_spec_from_weights(sd, source);
    WeightBinder binder(sd, source, m3.name);
    return build_mobilenet_v3(m3, binder);
  }
  if (sd.count("features.0.weight")) {
    VGGSpec v = vgg_spec_from_weights(sd, source);
    WeightBinder binder(sd, source, v.name);
    return build_vgg(v, binder);
  }
  throw file_error(source, "cannot tell the architecture from the tensor names (expected torchvision ResNet, "
                           "VGG, MobileNetV2/V3, EfficientNet names such as 'conv1.weight', "
                           "'features.0.weight' or 'features.0.0.weight'); pass --model");
}

std::unique_ptr<Model> load_model(const std::string& weights_path, const std::string& arch) {
  weights::StateDict sd = weights::load_state_dict(weights_path);
  return build_model(sd, arch, weights_path);
}

weights::StateDict random_state_dict(const std::string& arch, int num_classes, uint64_t seed) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;
  ResNetSpec r;
  VGGSpec v;
  MobileNetSpec mb;
  ConvNeXtSpec cn;
  if (resnet_spec_from_name(arch, &r)) {
    r.num_classes = num_classes;
    tensors = resnet_tensors(r);
  } else if (convnext_spec_from_name(arch, &cn)) {
    cn.num_classes = num_classes;
    tensors = convnext_tensors(cn);
  } else if (mobilenet_spec_from_name(arch, &mb)) {
    mb.num_classes = num_classes;
    tensors = mobilenet_tensors(mb);
  } else if (vgg_spec_from_name(arch, &v)) {
    v.num_classes = num_classes;
    tensors = vgg_tensors(v);
  } else if (EfficientNetSpec ef; efficientnet_spec_from_name(arch, &ef)) {
    ef.num_classes = num_classes;
    tensors = efficientnet_tensors(ef);
  } else if (MobileNetV3Spec m3; mobilenet_v3_spec_from_name(arch, &m3)) {
    m3.num_classes = num_classes;
    tensors = mobilenet_v3_tensors(m3);
  } else {
    throw Error("unknown model '" + arch + "'");
  }
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
