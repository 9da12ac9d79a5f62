// Each model's preprocessing as torchvision's weights define it (the `transforms` of every
// *_Weights enum member: ImageClassification(resize_size, crop_size, interpolation, mean, std)),
// by torchvision's weights name ("EfficientNet_B0_Weights.IMAGENET1K_V1") or the model's name
// ("efficientnet_b0": its IMAGENET1K_V1 weights, the first torchvision published), and the
// pipeline they configure: resize the short side (PIL's antialiased filter, bit-exact), centre
// crop, ToTensor, Normalize.
// defines: Preprocess, preprocess_presets, find_preprocess, model_preprocess, preprocess_image
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "tools/lib/image_io.h"

namespace pg::io {

struct Preprocess {
  std::string name = "imagenet";  // the preset's name, "imagenet" (the default) or "custom"
  int resize = 256;               // short side after resizing (0: none)
  int crop = 224;                 // centre crop, square (0: none)
  Interpolation interpolation = Interpolation::bilinear;
  float mean[3] = {0.485f, 0.456f, 0.406f};
  float std[3] = {0.229f, 0.224f, 0.225f};
};

// Every preset, by torchvision weights name, in the table's order.
const std::vector<std::pair<std::string, Preprocess>>& preprocess_presets();
// The preset of a weights name or a model name (also "imagenet": 256/224 bilinear, ImageNet's
// mean and std); false for anything else.
bool find_preprocess(const std::string& name, Preprocess* out);
// The preset of an architecture (nn::known_architectures' names), else "imagenet".
Preprocess model_preprocess(const std::string& arch);
// Every accepted name, comma-separated (for error messages and --help).
std::string preprocess_names();

// resize_and_crop then normalize_rgb with the preset's values.
Tensor preprocess_image(const Image8& img, const Preprocess& p);
// What a model consumes from a file: an image through preprocess_image, or a .npy tensor as
// load_input_tensor reads it (already preprocessed).
Tensor load_input_tensor(const std::string& path, const Preprocess& p);

}  // namespace pg::io
