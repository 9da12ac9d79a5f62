// Several classes explained from one forward pass, through parchgrad's C API from C++, linked
// statically (parchgrad::parchgrad_static).
//
//   saliency_cpp WEIGHTS STATS IMAGE
//
// Reads the image, explains its three best classes with gradient x ParchGrad (class-wise
// selection, the statistics file STATS) in one call, and prints each class with its
// probability and where its map is brightest.
#include <parchgrad/parchgrad.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// The C API's result codes as exceptions, and its objects with owners.
void check(int rc) {
  if (rc != PG_OK) throw std::runtime_error(pg_last_error());
}
struct ModelFree {
  void operator()(pg_model* m) const { pg_model_free(m); }
};
struct OptionsFree {
  void operator()(pg_saliency_options* o) const { pg_saliency_options_free(o); }
};
struct BufferFree {
  void operator()(unsigned char* p) const { pg_free(p); }
};

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s WEIGHTS STATS IMAGE\n", argv[0]);
    return 2;
  }
  pg_model* raw = nullptr;
  check(pg_model_load(argv[1], nullptr, "cpu", &raw));
  std::unique_ptr<pg_model, ModelFree> model(raw);
  std::unique_ptr<pg_saliency_options, OptionsFree> opt(pg_saliency_options_new());
  if (!opt) throw std::runtime_error("out of memory");
  check(pg_saliency_options_set(opt.get(), "method", "grad"));
  check(pg_saliency_options_set(opt.get(), "parchgrad", "cls"));
  check(pg_saliency_options_set(opt.get(), "stats", argv[2]));

  unsigned char* pixels = nullptr;
  int h = 0, w = 0;
  check(pg_image_read(argv[3], &pixels, &h, &w));
  std::unique_ptr<unsigned char, BufferFree> rgb(pixels);
  // The preprocessing of the model's torchvision weights, the command line's default: H x W of x
  // from pg_preprocess_shape.
  const char* preset = pg_model_preset(model.get());
  int H = 0, W = 0;
  check(pg_preprocess_shape(h, w, preset, -1, -1, &H, &W));
  const int K = 3, classes = pg_model_num_classes(model.get());
  const size_t plane = size_t(H) * size_t(W);
  std::vector<float> x(3 * plane), maps(K * plane), logits(static_cast<size_t>(classes));
  check(pg_preprocess_preset_u8(rgb.get(), h, w, preset, -1, -1, nullptr, x.data()));

  // Target set j: every sample's (j+1)-th ranked class (here one sample).
  std::vector<int> targets = {-1, -2, -3}, resolved(K);
  check(pg_saliency_targets(model.get(), x.data(), 1, H, W, targets.data(), K, opt.get(), maps.data(),
                            resolved.data(), logits.data()));
  double mx = *std::max_element(logits.begin(), logits.end()), sum = 0;
  for (float l : logits) sum += std::exp(double(l) - mx);
  std::printf("%s (%dx%d), %s, grad+cls\n", argv[3], w, h, pg_model_arch(model.get()));
  for (int j = 0; j < K; ++j) {
    const float* m = maps.data() + size_t(j) * plane;
    const int peak = int(std::max_element(m, m + plane) - m);
    const char* name = pg_model_class_name(model.get(), resolved[j]);
    std::printf("  rank %d: class %d (%s), p = %.4f, map peak at (%d, %d)\n", j + 1, resolved[j], name ? name : "?",
                std::exp(double(logits[resolved[j]]) - mx) / sum, peak % W, peak / W);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  return 1;
}
