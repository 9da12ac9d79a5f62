// Image and array I/O: decoding PNG/JPEG, torchvision-exact ImageNet preprocessing,
// .npy arrays, and PNG overlays of saliency maps.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace pg::io {

// 8-bit RGB image, interleaved, row-major (h rows of w*3 bytes).
struct Image8 {
  int w = 0, h = 0;
  std::vector<uint8_t> rgb;
};

// Decodes PNG or JPEG and converts to RGB as PIL's Image.convert("RGB") does
// (greyscale replicated, alpha dropped). Throws pg::Error "<path>: <problem>".
Image8 load_image_rgb(const std::string& path);

// PIL's Image.resize(size, Image.BILINEAR) with its antialiasing (support scaled by the
// downscale factor), bit-exact with PIL's fixed-point, two-pass implementation.
Image8 resize_bilinear_aa(const Image8& img, int new_w, int new_h);

// torchvision Resize(short_side) output size: (w, h).
void resize_short_side_size(int w, int h, int short_side, int* new_w, int* new_h);

// torchvision CenterCrop(crop): top = round((h - crop) / 2), left likewise.
Image8 center_crop(const Image8& img, int crop_w, int crop_h);

// ImageNet eval transform: Resize(resize) -> CenterCrop(crop) -> ToTensor -> Normalize.
// Returns a [3, crop, crop] float32 tensor.
Tensor preprocess_imagenet(const Image8& img, int resize = 256, int crop = 224);
// Inverse of the normalisation, for overlays of .npy inputs (values clamped to [0,255]).
Image8 denormalize_imagenet(const Tensor& chw);

// .npy (little-endian float32, C order; float64 also read and converted). Throws on
// anything else, naming the file.
Tensor load_npy(const std::string& path);
// Writes float32 C-order .npy via a temporary file and rename.
void save_npy(const std::string& path, const Tensor& t);

// Saliency map [H, W] drawn as a colour overlay on the image (resized to the image
// if the sizes differ), written as PNG via a temporary file and rename.
void save_overlay_png(const std::string& path, const Image8& base, const Tensor& map);
void save_png(const std::string& path, const Image8& img);

}  // namespace pg::io
