// `parchgrad preprocess IMAGE --out X.npy [--preprocess NAME] [--resize N] [--crop N]
// [--interpolation bilinear|bicubic] [--raw]`: writes the input tensor the engine computes from an
// image, for inspection and for comparing with torchvision.
#include <memory>
#include <string>

#include "core/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/lib/image_io.h"
#include "tools/lib/preprocess_presets.h"

namespace pg::cli {

namespace {
struct PreprocessArgs {
  std::string image, out;
  std::string preset = "imagenet", interpolation;
  int resize = -1, crop = -1;  // -1: the preset's
  bool raw = false;
};

// The preset named by --preprocess with the --resize/--crop/--interpolation overrides.
io::Preprocess resolve(const PreprocessArgs& a) {
  io::Preprocess p;
  if (!io::find_preprocess(a.preset, &p))
    throw Error("--preprocess: unknown preset '" + a.preset + "' (known: " + io::preprocess_names() + ")");
  if (a.resize >= 0) p.resize = a.resize;
  if (a.crop >= 0) p.crop = a.crop;
  if (!a.interpolation.empty() && !io::parse_interpolation(a.interpolation, &p.interpolation))
    throw Error("--interpolation: '" + a.interpolation + "' is neither bilinear nor bicubic");
  if (a.resize >= 0 || a.crop >= 0 || !a.interpolation.empty()) p.name = "custom";
  return p;
}

void run_preprocess(const PreprocessArgs& a) {
  check_output_file("--out", a.out);
  const io::Preprocess pp = resolve(a);
  Tensor t;
  if (io::is_npy_file(a.image)) {
    // An already preprocessed tensor: validated and written back out.
    Tensor chw = io::load_input_tensor(a.image);
    if (a.raw) {
      io::Image8 img = io::denormalize_imagenet(chw);
      t = Tensor({img.h, img.w, 3});
      for (size_t i = 0; i < img.rgb.size(); ++i) t[static_cast<int64_t>(i)] = img.rgb[i];
    } else {
      t = chw;
    }
  } else {
    io::Image8 img = io::load_image_rgb(a.image);
    if (a.raw) {
      img = io::resize_and_crop(img, pp.resize, pp.crop, pp.interpolation);
      t = Tensor({img.h, img.w, 3});
      for (size_t i = 0; i < img.rgb.size(); ++i) t[static_cast<int64_t>(i)] = img.rgb[i];
    } else {
      t = io::preprocess_image(img, pp);
    }
  }
  io::save_npy(a.out, t);
}
}  // namespace

void register_preprocess(CLI::App& app) {
  auto args = std::make_shared<PreprocessArgs>();
  CLI::App* sub = app.add_subcommand(
      "preprocess",
      "Write the [3, H, W] float32 tensor the engine feeds the model for an image: torchvision's "
      "Resize (PIL, antialiased) -> CenterCrop -> ToTensor -> Normalize, with a model's preset "
      "(default: ImageNet's 256/224 bilinear)");
  sub->add_option("image", args->image,
                  "PNG or JPEG image (a .npy input tensor is checked and written back unchanged)")
      ->required();
  sub->add_option("-o,--out", args->out, "output .npy file")->required();
  sub->add_option("--preprocess", args->preset,
                  "a torchvision weights name (e.g. EfficientNet_B0_Weights.IMAGENET1K_V1) or a model name "
                  "(its IMAGENET1K_V1 weights' transform), or imagenet (256/224 bilinear)")
      ->default_val("imagenet");
  sub->add_option("--resize", args->resize,
                  "resize the shorter side to this many pixels (0: no resize; default: the preset's)")
      ->check(CLI::Range(0, 8192));
  sub->add_option("--crop", args->crop,
                  "centre crop to this square size, zero-padding if larger (0: none; default: the preset's)")
      ->check(CLI::Range(0, 8192));
  sub->add_option("--interpolation", args->interpolation, "bilinear or bicubic (default: the preset's)");
  sub->add_flag("--raw", args->raw,
                "write the resized and cropped RGB pixels as an [H, W, 3] float32 array of 0..255 "
                "values instead of the normalised tensor");
  sub->callback([args] { run_preprocess(*args); });
}

}  // namespace pg::cli
