#include "tools/cli/method_flags.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "tools/lib/image_io.h"

namespace pg::cli {

void add_method_flags(CLI::App* s, MethodFlags& f) {
  s->add_option("--stats", f.stats, "statistics file from `parchgrad stats` (for cls/ins)");
  s->add_option("--alpha", f.alpha, "significance level (replaces --quantile)");
  s->add_option("--quantile", f.quantile, "select the q fraction of channels with the smallest p")->capture_default_str();
  s->add_option("--shapiro-threshold", f.shapiro_threshold, "keep channels with Shapiro-Wilk p below this")
      ->capture_default_str();
  s->add_option("--gamma", f.gamma, "gain of the selected channels, or inf")->capture_default_str();
  s->add_flag("--no-variance-conservation", f.no_variance_conservation, "do not rescale to conserve variance");
  s->add_flag("--exact-variance", f.exact_variance, "finite gamma: rescale to the exact pre-edit variance");
  s->add_option("--layers", f.layers, "hooked convs: ratio:R, layer34 or conv names")->capture_default_str();
  s->add_option("--ig-steps", f.ig_steps, "integrated gradients steps")->capture_default_str();
  s->add_option("--ig-baseline", f.ig_baseline,
                "integrated gradients baseline: zero (the normalised zero: the ImageNet mean colour), black, blurred "
                "(the input blurred, see --ig-blur-sigma), or a normalised [3, H, W] .npy")
      ->capture_default_str();
  s->add_option("--ig-blur-sigma", f.ig_blur_sigma,
                "--ig-baseline blurred: the Gaussian's standard deviation in pixels of the model's input")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) {
            double d = 0;
            size_t used = 0;
            try {
              d = std::stod(v, &used);
            } catch (const std::exception&) {
              used = 0;
            }
            return used == v.size() && std::isfinite(d) && d > 0 ? std::string()
                                                                 : "'" + v + "' is not a number above 0";
          },
          "SIGMA > 0"));
  s->add_option("--sg-samples", f.sg_samples, "SmoothGrad noisy copies")->capture_default_str();
  s->add_option("--sg-sigma", f.sg_sigma, "SmoothGrad noise, fraction of the input range")->capture_default_str();
  s->add_option("--sg-noise", f.sg_noise, "fixed SmoothGrad noise .npy: [M, 3, H, W] for every sample, or [M, S, 3, H, W] for the S samples of the run in input order");
  s->add_option("--seed", f.seed, "SmoothGrad noise seed")->capture_default_str();
  s->add_option("--gradcam-layer", f.gradcam_layer,
                "Grad-CAM's target layer, a module name of the model (layer3, layer4.1, features.29, ...); default: "
                "the last block (ResNet), the last ReLU (VGG)");
}

ParchGradOptions parchgrad_options(const MethodFlags& f, const std::string& mode) {
  ParchGradOptions p;
  if (mode == "cls") p.mode = ParchGradOptions::Mode::Cls;
  else if (mode == "ins") p.mode = ParchGradOptions::Mode::Ins;
  else if (mode == "off") p.mode = ParchGradOptions::Mode::Off;
  else throw Error("--parchgrad: '" + mode + "' is not cls, ins or off");
  p.alpha = f.alpha;
  p.quantile = f.quantile;
  p.shapiro_threshold = f.shapiro_threshold;
  if (f.gamma == "inf") {
    p.gamma = std::numeric_limits<double>::infinity();
  } else {
    try {
      size_t used = 0;
      p.gamma = std::stod(f.gamma, &used);
      // Only "inf" spells the infinite gain; "infinity", "nan" and the like are not numbers here.
      if (used != f.gamma.size() || !std::isfinite(p.gamma)) throw std::invalid_argument("");
    } catch (const std::exception&) {
      throw Error("--gamma: '" + f.gamma + "' is not a number or inf");
    }
  }
  p.variance_conservation = !f.no_variance_conservation;
  p.exact_variance = f.exact_variance;
  p.layers = f.layers;
  return p;
}

std::vector<std::string> split_list(const std::string& list, const std::string& flag) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(start, end - start);
    if (item.empty()) throw Error(flag + ": empty entry in '" + list + "'");
    out.push_back(item);
    start = end + 1;
  }
  return out;
}

namespace {

// Numbers that cannot mean anything are refused by name rather than carried into the maps
// (a NaN --sg-sigma would make every SmoothGrad map NaN).
void check_numbers(const MethodFlags& f) {
  auto finite = [](const char* flag, double v) {
    if (!std::isfinite(v)) throw Error(std::string(flag) + ": '" + std::to_string(v) + "' is not a finite number");
  };
  finite("--alpha", f.alpha);
  finite("--quantile", f.quantile);
  finite("--shapiro-threshold", f.shapiro_threshold);
  finite("--sg-sigma", f.sg_sigma);
  finite("--ig-blur-sigma", f.ig_blur_sigma);
  if (f.alpha != -1 && !(f.alpha > 0 && f.alpha < 1)) throw Error("--alpha must be in (0, 1)");
  if (!(f.shapiro_threshold >= 0 && f.shapiro_threshold <= 1)) throw Error("--shapiro-threshold must be in [0, 1]");
  if (!(f.sg_sigma >= 0)) throw Error("--sg-sigma must be at least 0");
  if (!(f.ig_blur_sigma > 0)) throw Error("--ig-blur-sigma must be above 0");
}

bool uses(const std::vector<std::string>& specs, Method m) {
  for (const auto& spec : specs)
    if (parse_method(spec.substr(0, spec.find('+'))) == m) return true;
  return false;
}

// "first ... last" of the hooked convs, for messages.
std::string hooked_range(const std::vector<std::string>& layers) {
  if (layers.empty()) return "none";
  return layers.size() == 1 ? layers[0] : layers.front() + " ... " + layers.back();
}

}  // namespace

std::vector<Config> build_configs(const std::vector<std::string>& specs, const MethodFlags& f, const nn::Model& model,
                                  int max_batch, std::unique_ptr<StatsFile>& stats) {
  check_numbers(f);
  Tensor sg_noise;
  if (!f.sg_noise.empty()) sg_noise = io::load_npy(f.sg_noise);
  // Options that do nothing here are refused (as --stats without ParchGrad is).
  if (f.ig_baseline != "blurred" && f.ig_blur_sigma != MethodFlags{}.ig_blur_sigma)
    throw Error("--ig-blur-sigma does nothing without --ig-baseline blurred");
  if (!f.gradcam_layer.empty() && !uses(specs, Method::GradCAM))
    throw Error("--gradcam-layer " + f.gradcam_layer + " does nothing here: no configuration uses gradcam");
  CamLayer cam;
  if (uses(specs, Method::GradCAM)) cam = resolve_cam_layer(model, f.gradcam_layer);
  MethodOptions::Baseline baseline = MethodOptions::Baseline::zero;
  Tensor baseline_tensor;
  if (f.ig_baseline == "black") {
    baseline = MethodOptions::Baseline::black;
  } else if (f.ig_baseline == "blurred") {
    baseline = MethodOptions::Baseline::blurred;
  } else if (f.ig_baseline != "zero") {
    if (!io::is_npy_file(f.ig_baseline))
      throw Error("--ig-baseline: '" + f.ig_baseline + "' is not zero, black, blurred or a .npy file");
    baseline = MethodOptions::Baseline::given;
    baseline_tensor = io::load_npy(f.ig_baseline);
    for (int64_t i = 0; i < baseline_tensor.numel(); ++i)
      if (!std::isfinite(baseline_tensor.data()[i])) throw file_error(f.ig_baseline, "holds non-finite values");
  }
  std::vector<Config> configs;
  for (const auto& spec : specs) {
    Config c;
    c.label = spec;
    const size_t plus = spec.find('+');
    const std::string mode = plus == std::string::npos ? "off" : spec.substr(plus + 1);
    c.method.method = parse_method(spec.substr(0, plus));
    c.method.ig_steps = f.ig_steps;
    c.method.ig_baseline = baseline;
    c.method.ig_baseline_tensor = baseline_tensor;
    c.method.ig_blur_sigma = f.ig_blur_sigma;
    c.method.gradcam_layer = f.gradcam_layer;
    c.method.sg_samples = f.sg_samples;
    c.method.sg_sigma = f.sg_sigma;
    c.method.seed = f.seed;
    c.method.sg_noise = sg_noise;
    c.method.max_batch = std::max(max_batch, 1);
    ParchGradOptions po = parchgrad_options(f, mode);
    if (po.mode != ParchGradOptions::Mode::Off) {
      // ParchGrad edits the gradient where it enters a hooked convolution; Grad-CAM reads the
      // gradient that reaches its target layer, which only the convolutions above that layer
      // (between it and the logits) can change. With none of them hooked (the default layer,
      // the last block, lies above every conv) the map would be plain Grad-CAM's: refused
      // rather than run silently.
      const std::vector<std::string> hooked = hooked_layers(model, po.layers);
      if (c.method.method == Method::GradCAM &&
          std::none_of(hooked.begin(), hooked.end(), [&](const std::string& h) {
            return std::find(cam.above.begin(), cam.above.end(), h) != cam.above.end();
          }))
        throw Error("'" + spec + "': ParchGrad does not change Grad-CAM at " + cam.name + ": every hooked convolution (" +
                    hooked_range(hooked) + ") lies below it, so the map would equal plain gradcam; choose an earlier " +
                    "--gradcam-layer, hook later convolutions (--layers), or use gradcam without +" + mode);
      if (f.stats.empty()) throw Error("'" + spec + "' needs --stats (a file from `parchgrad stats`)");
      if (!stats) stats = std::make_unique<StatsFile>(load_stats(f.stats));
      c.hook = std::make_unique<ParchGradHook>(model, *stats, po);
    }
    configs.push_back(std::move(c));
  }
  if (!f.stats.empty() && !stats)
    throw Error("--stats " + f.stats + " does nothing here: no configuration uses ParchGrad (add --parchgrad cls|ins, " +
                "or +cls/+ins to an entry of the list)");
  return configs;
}

nlohmann::json settings_json(const MethodFlags& f) {
  nlohmann::json j = {{"stats", f.stats},
          {"alpha", f.alpha},
          {"quantile", f.quantile},
          {"shapiro_threshold", f.shapiro_threshold},
          {"gamma", f.gamma},
          {"variance_conservation", !f.no_variance_conservation},
          {"exact_variance", f.exact_variance},
          {"layers", f.layers},
          {"ig_steps", f.ig_steps},
          {"ig_baseline", f.ig_baseline},
          {"sg_samples", f.sg_samples},
          {"sg_sigma", f.sg_sigma},
          {"sg_noise", f.sg_noise},
          {"seed", f.seed}};
  if (f.ig_baseline == "blurred") j["ig_blur_sigma"] = f.ig_blur_sigma;
  if (!f.gradcam_layer.empty()) j["gradcam_layer"] = f.gradcam_layer;
  return j;
}

}  // namespace pg::cli
