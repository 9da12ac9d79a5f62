// `parchgrad preprocess IMAGE --out X.npy [--resize 256] [--crop 224] [--raw]`: writes the
// input tensor the engine computes from an image, for inspection and for comparing with
// torchvision.
#include <memory>
#include <string>

#include "core/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/lib/image_io.h"

namespace pg::cli {

namespace {
struct PreprocessArgs {
  std::string image, out;
  int resize = 256, crop = 224;
  bool raw = false;
};

void run_preprocess(const PreprocessArgs& a) {
  check_output_file("--out", a.out);
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
      if (a.resize > 0) {
        int w = 0, h = 0;
        io::resize_short_side_size(img.w, img.h, a.resize, &w, &h);
        img = io::resize_bilinear_aa(img, w, h);
      }
      if (a.crop > 0) img = io::center_crop(img, a.crop, a.crop);
      t = Tensor({img.h, img.w, 3});
      for (size_t i = 0; i < img.rgb.size(); ++i) t[static_cast<int64_t>(i)] = img.rgb[i];
    } else {
      t = io::preprocess_imagenet(img, a.resize, a.crop);
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
      "Resize (PIL bilinear) -> CenterCrop -> ToTensor -> Normalize(ImageNet mean/std)");
  sub->add_option("image", args->image,
                  "PNG or JPEG image (a .npy input tensor is checked and written back unchanged)")
      ->required();
  sub->add_option("-o,--out", args->out, "output .npy file")->required();
  sub->add_option("--resize", args->resize, "resize the shorter side to this many pixels (0: no resize)")
      ->default_val(256)
      ->check(CLI::Range(0, 8192));
  sub->add_option("--crop", args->crop, "centre crop to this square size, zero-padding if larger (0: none)")
      ->default_val(224)
      ->check(CLI::Range(0, 8192));
  sub->add_flag("--raw", args->raw,
                "write the resized and cropped RGB pixels as an [H, W, 3] float32 array of 0..255 "
                "values instead of the normalised tensor");
  sub->callback([args] { run_preprocess(*args); });
}

}  // namespace pg::cli
