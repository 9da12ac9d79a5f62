#include "tools/lib/preprocess_presets.h"

#include <cstring>

#include "core/error.h"

namespace pg::io {

namespace {

Preprocess preset(const char* name, int resize, int crop, Interpolation interp, const float* mean = nullptr,
                  const float* std = nullptr) {
  Preprocess p;
  p.name = name;
  p.resize = resize;
  p.crop = crop;
  p.interpolation = interp;
  if (mean) std::memcpy(p.mean, mean, sizeof p.mean);
  if (std) std::memcpy(p.std, std, sizeof p.std);
  return p;
}

// Model name -> its IMAGENET1K_V1 weights name.
const std::pair<const char*, const char*> kModels[] = {
    {"resnet18", "ResNet18_Weights.IMAGENET1K_V1"},
    {"resnet34", "ResNet34_Weights.IMAGENET1K_V1"},
    {"resnet50", "ResNet50_Weights.IMAGENET1K_V1"},
    {"resnet101", "ResNet101_Weights.IMAGENET1K_V1"},
    {"resnet152", "ResNet152_Weights.IMAGENET1K_V1"},
    {"resnext50_32x4d", "ResNeXt50_32X4D_Weights.IMAGENET1K_V1"},
    {"resnext101_32x8d", "ResNeXt101_32X8D_Weights.IMAGENET1K_V1"},
    {"resnext101_64x4d", "ResNeXt101_64X4D_Weights.IMAGENET1K_V1"},
    {"wide_resnet50_2", "Wide_ResNet50_2_Weights.IMAGENET1K_V1"},
    {"wide_resnet101_2", "Wide_ResNet101_2_Weights.IMAGENET1K_V1"},
    {"vgg11", "VGG11_Weights.IMAGENET1K_V1"},
    {"vgg11_bn", "VGG11_BN_Weights.IMAGENET1K_V1"},
    {"vgg13", "VGG13_Weights.IMAGENET1K_V1"},
    {"vgg13_bn", "VGG13_BN_Weights.IMAGENET1K_V1"},
    {"vgg16", "VGG16_Weights.IMAGENET1K_V1"},
    {"vgg16_bn", "VGG16_BN_Weights.IMAGENET1K_V1"},
    {"vgg19", "VGG19_Weights.IMAGENET1K_V1"},
    {"vgg19_bn", "VGG19_BN_Weights.IMAGENET1K_V1"},
    {"mobilenet_v2", "MobileNet_V2_Weights.IMAGENET1K_V1"},
    {"mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1"},
    {"mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1"},
    {"efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1"},
    {"efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V1"},
    {"efficientnet_b2", "EfficientNet_B2_Weights.IMAGENET1K_V1"},
    {"efficientnet_b3", "EfficientNet_B3_Weights.IMAGENET1K_V1"},
    {"efficientnet_b4", "EfficientNet_B4_Weights.IMAGENET1K_V1"},
    {"efficientnet_b5", "EfficientNet_B5_Weights.IMAGENET1K_V1"},
    {"efficientnet_b6", "EfficientNet_B6_Weights.IMAGENET1K_V1"},
    {"efficientnet_b7", "EfficientNet_B7_Weights.IMAGENET1K_V1"},
    {"efficientnet_v2_s", "EfficientNet_V2_S_Weights.IMAGENET1K_V1"},
    {"efficientnet_v2_m", "EfficientNet_V2_M_Weights.IMAGENET1K_V1"},
    {"efficientnet_v2_l", "EfficientNet_V2_L_Weights.IMAGENET1K_V1"},
    {"convnext_tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1"},
    {"convnext_small", "ConvNeXt_Small_Weights.IMAGENET1K_V1"},
    {"convnext_base", "ConvNeXt_Base_Weights.IMAGENET1K_V1"},
    {"convnext_large", "ConvNeXt_Large_Weights.IMAGENET1K_V1"},
};

}  // namespace

const std::vector<std::pair<std::string, Preprocess>>& preprocess_presets() {
  // torchvision 0.14's weights enums (models/*.py: transforms=partial(ImageClassification,
  // crop_size=..., resize_size=..., interpolation=...); mean and std ImageNet's unless given).
  constexpr auto L = Interpolation::bilinear;
  constexpr auto C = Interpolation::bicubic;
  static const float kHalf[3] = {0.5f, 0.5f, 0.5f};
  static const float kFeatMean[3] = {0.48235f, 0.45882f, 0.40784f};
  static const float kFeatStd[3] = {1.0f / 255.0f, 1.0f / 255.0f, 1.0f / 255.0f};
  static const std::vector<std::pair<std::string, Preprocess>> table = [&] {
    std::vector<Preprocess> v = {
        preset("ResNet18_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("ResNet34_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("ResNet50_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("ResNet50_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("ResNet101_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("ResNet101_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("ResNet152_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("ResNet152_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("ResNeXt50_32X4D_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("ResNeXt50_32X4D_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("ResNeXt101_32X8D_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("ResNeXt101_32X8D_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("ResNeXt101_64X4D_Weights.IMAGENET1K_V1", 232, 224, L),
        preset("Wide_ResNet50_2_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("Wide_ResNet50_2_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("Wide_ResNet101_2_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("Wide_ResNet101_2_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("VGG11_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("VGG11_BN_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("VGG13_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("VGG13_BN_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("VGG16_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("VGG16_Weights.IMAGENET1K_FEATURES", 256, 224, L, kFeatMean, kFeatStd),
        preset("VGG16_BN_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("VGG19_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("VGG19_BN_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("MobileNet_V2_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("MobileNet_V2_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("MobileNet_V3_Large_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("MobileNet_V3_Large_Weights.IMAGENET1K_V2", 232, 224, L),
        preset("MobileNet_V3_Small_Weights.IMAGENET1K_V1", 256, 224, L),
        preset("EfficientNet_B0_Weights.IMAGENET1K_V1", 256, 224, C),
        preset("EfficientNet_B1_Weights.IMAGENET1K_V1", 256, 240, C),
        preset("EfficientNet_B1_Weights.IMAGENET1K_V2", 255, 240, L),
        preset("EfficientNet_B2_Weights.IMAGENET1K_V1", 288, 288, C),
        preset("EfficientNet_B3_Weights.IMAGENET1K_V1", 320, 300, C),
        preset("EfficientNet_B4_Weights.IMAGENET1K_V1", 384, 380, C),
        preset("EfficientNet_B5_Weights.IMAGENET1K_V1", 456, 456, C),
        preset("EfficientNet_B6_Weights.IMAGENET1K_V1", 528, 528, C),
        preset("EfficientNet_B7_Weights.IMAGENET1K_V1", 600, 600, C),
        preset("EfficientNet_V2_S_Weights.IMAGENET1K_V1", 384, 384, L),
        preset("EfficientNet_V2_M_Weights.IMAGENET1K_V1", 480, 480, L),
        preset("EfficientNet_V2_L_Weights.IMAGENET1K_V1", 480, 480, C, kHalf, kHalf),
        preset("ConvNeXt_Tiny_Weights.IMAGENET1K_V1", 236, 224, L),
        preset("ConvNeXt_Small_Weights.IMAGENET1K_V1", 230, 224, L),
        preset("ConvNeXt_Base_Weights.IMAGENET1K_V1", 232, 224, L),
        preset("ConvNeXt_Large_Weights.IMAGENET1K_V1", 232, 224, L),
    };
    std::vector<std::pair<std::string, Preprocess>> t;
    for (const Preprocess& p : v) t.emplace_back(p.name, p);
    return t;
  }();
  return table;
}

bool find_preprocess(const std::string& name, Preprocess* out) {
  if (name == "imagenet") {
    *out = Preprocess();
    return true;
  }
  std::string weights = name;
  for (const auto& [model, w] : kModels)
    if (name == model) weights = w;
  for (const auto& [n, p] : preprocess_presets())
    if (n == weights) {
      *out = p;
      return true;
    }
  return false;
}

Preprocess model_preprocess(const std::string& arch) {
  Preprocess p;
  if (!find_preprocess(arch, &p)) p = Preprocess();
  return p;
}

std::string preprocess_names() {
  std::string s = "imagenet";
  for (const auto& [model, w] : kModels) s += std::string(", ") + model;
  for (const auto& [n, p] : preprocess_presets()) s += ", " + n;
  return s;
}

Tensor preprocess_image(const Image8& img, const Preprocess& p) {
  return normalize_rgb(resize_and_crop(img, p.resize, p.crop, p.interpolation), p.mean, p.std);
}

Tensor load_input_tensor(const std::string& path, const Preprocess& p) {
  if (is_npy_file(path)) return load_input_tensor(path);
  return preprocess_image(load_image_rgb(path), p);
}

}  // namespace pg::io
