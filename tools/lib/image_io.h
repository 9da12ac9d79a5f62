// Image and array I/O: decoding PNG/JPEG, torchvision-exact ImageNet preprocessing,
// .npy arrays, and PNG overlays of saliency maps.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

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

// The resampling filters of torchvision's presets, as PIL implements them.
enum class Interpolation { bilinear, bicubic };
// "bilinear", "bicubic".
const char* interpolation_name(Interpolation i);
// Parses one of those names; false (and *out untouched) for anything else.
bool parse_interpolation(const std::string& name, Interpolation* out);

// PIL's Image.resize(size, BILINEAR or BICUBIC) with its antialiasing, bit-exact: the same
// windows and fixed-point passes for both filters (BICUBIC: the cubic convolution kernel with
// a = -0.5, support 2, scaled by the downscale factor; negative weights clipped to 0..255 after
// each pass, as PIL does).
Image8 resize_aa(const Image8& img, int new_w, int new_h, Interpolation interp);

// torchvision Resize(short_side) output size: (w, h).
void resize_short_side_size(int w, int h, int short_side, int* new_w, int* new_h);

// torchvision CenterCrop(crop): top = round((h - crop) / 2), left likewise.
Image8 center_crop(const Image8& img, int crop_w, int crop_h);

// ImageNet eval transform: Resize(resize) -> CenterCrop(crop) -> ToTensor -> Normalize.
// Returns a [3, crop, crop] float32 tensor. Equals normalize_imagenet(imagenet_crop(img)).
Tensor preprocess_imagenet(const Image8& img, int resize = 256, int crop = 224);
// Its geometric part: the resized and cropped image (still uint8 RGB).
Image8 imagenet_crop(const Image8& img, int resize = 256, int crop = 224);
// Its arithmetic part, ToTensor + Normalize: [3, h, w] (kernels/cuda/preprocess.h does the
// same on the device, bit for bit).
Tensor normalize_imagenet(const Image8& img);
// The same steps with any short side, crop and filter (0: no resize, no crop), and any mean
// and std (torchvision's Normalize after ToTensor, in float32): what the presets of
// tools/lib/preprocess_presets.h configure.
Image8 resize_and_crop(const Image8& img, int resize, int crop, Interpolation interp);
Tensor normalize_rgb(const Image8& img, const float mean[3], const float std[3]);
// Inverse of the normalisation, for overlays of .npy inputs (values clamped to [0,255]).
Image8 denormalize_imagenet(const Tensor& chw);

// .npy (little-endian float32, C order; float64 also read and converted). Throws on
// anything else, naming the file.
Tensor load_npy(const std::string& path);
// Writes float32 C-order .npy via a temporary file and rename.
void save_npy(const std::string& path, const Tensor& t);

void save_png(const std::string& path, const Image8& img);

// ---- Lower-level pieces, exposed for the command line and the unit tests ----

// Per-output-sample input windows of PIL's antialiased bilinear (triangle) filter for
// resizing one dimension from in_size to out_size samples: output i reads inputs
// [start[i], start[i] + count[i]) with weights coeffs[i * ksize + j] (normalised to sum 1).
struct ResampleWindows {
  int ksize = 0;
  std::vector<int> start, count;
  std::vector<double> coeffs;
};
ResampleWindows bilinear_windows(int in_size, int out_size);
// The same for either filter (bilinear_windows is resample_windows(.., bilinear)).
ResampleWindows resample_windows(int in_size, int out_size, Interpolation interp);
// PIL's fixed-point form of a coefficient (PRECISION_BITS = 22, rounded half away from 0).
int32_t fixed_point_coeff(double c);

// torchvision's crop offset for one dimension: round-half-to-even((size - crop) / 2) when
// size >= crop, and -((crop - size) / 2) (the zero padding on the leading side) otherwise.
int center_crop_offset(int size, int crop);

// Loads what a model consumes: a PNG/JPEG image (preprocess_imagenet(resize, crop)) or an
// already preprocessed .npy tensor ([3, H, W] or [1, 3, H, W]; returned as [3, H, W],
// resize and crop are not applied). The file's kind is told by its content.
Tensor load_input_tensor(const std::string& path, int resize = 256, int crop = 224);
// Writes bytes to a temporary file next to path and renames it over path (so readers never
// see a partial file). Throws "<path>: cannot write (...)".
void write_file_atomically(const std::string& path, const void* data, size_t size);
// True if the file starts with the .npy magic bytes (false if it cannot be read).
bool is_npy_file(const std::string& path);

// How an overlay draws a map: its colour map (ramp: a perceptual dark-to-bright ramp; jet: the
// blue-cyan-yellow-red map of OpenCV's COLORMAP_JET that Grad-CAM figures use; gray) and its
// opacity (the weight of the colour at the map's top value; 1 by default).
struct OverlayStyle {
  enum class Colormap { ramp, jet, gray };
  Colormap colormap = Colormap::ramp;
  float opacity = 1.0f;
};
// "ramp", "jet" or "gray"; false (and *out untouched) for anything else.
bool parse_colormap(const std::string& name, OverlayStyle::Colormap* out);

// Colour of v in [0, 1] (clamped; NaN -> 0) in a colour map.
void colormap_rgb(float v, uint8_t rgb[3], OverlayStyle::Colormap map = OverlayStyle::Colormap::ramp);
// The overlay image save_overlay_png writes. Non-finite map values count as 0; the map is
// scaled by its 99th percentile (all-zero or non-positive maps give a plain dimmed image).
Image8 render_overlay(const Image8& base, const Tensor& map, const OverlayStyle& style = {});
// Saliency map [H, W] drawn as a colour overlay on the image (resized to the image
// if the sizes differ), written as PNG via a temporary file and rename.
void save_overlay_png(const std::string& path, const Image8& base, const Tensor& map, const OverlayStyle& style = {});
// Float bilinear resize of a [H, W] plane with the same (antialiased) windows as images.
Tensor resize_plane(const Tensor& plane, int new_h, int new_w);

}  // namespace pg::io
