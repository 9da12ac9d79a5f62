#include "capi/saliency.h"

#include <omp.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "core/error.h"
#include "kernels/params.h"
#include "nn/backend.h"
#include "tools/lib/image_io.h"

namespace pg::api {

namespace {

// Text to numbers as the command line reads them: the whole text must be the number.
double to_double(const std::string& name, const std::string& v) {
  const char* s = v.c_str();
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(s, &end);
  if (v.empty() || end != s + v.size() || std::isspace(static_cast<unsigned char>(v[0])))
    throw Error("--" + name + ": '" + printable(v) + "' is not a number");
  return d;
}

long long to_integer(const std::string& name, const std::string& v, long long lo, long long hi) {
  const char* s = v.c_str();
  char* end = nullptr;
  errno = 0;
  const long long i = std::strtoll(s, &end, 10);
  if (v.empty() || end != s + v.size() || std::isspace(static_cast<unsigned char>(v[0])) || errno == ERANGE)
    throw Error("--" + name + ": '" + printable(v) + "' is not an integer");
  if (i < lo || i > hi)
    throw Error("--" + name + ": " + v + " is out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return i;
}

bool to_flag(const std::string& name, const std::string& v) {
  if (v.empty() || v == "true" || v == "1") return true;
  if (v == "false" || v == "0") return false;
  throw Error("--" + name + " is a flag: '" + printable(v) + "' is not true or false");
}

std::string show_double(double d) {
  std::string s = std::to_string(d);
  // 0.100000 -> 0.1 (the command line's help shows CLI11's shortest form)
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  return s;
}

constexpr long long kIntMax = std::numeric_limits<int>::max();

}  // namespace

#define PG_STR(field) [](const auto& s) { return std::string(s.field); }, [](auto& s, const std::string& v) { s.field = v; }
#define PG_DBL(name, field)                                     \
  [](const auto& s) { return show_double(s.field); }, [](auto& s, const std::string& v) { s.field = to_double(name, v); }
#define PG_INT(name, field, lo, hi)                                 \
  [](const auto& s) { return std::to_string(s.field); }, \
      [](auto& s, const std::string& v) { s.field = decltype(s.field)(to_integer(name, v, lo, hi)); }
#define PG_FLAG(name, field) \
  [](const auto& s) { return std::string(s.field ? "true" : "false"); }, [](auto& s, const std::string& v) { s.field = to_flag(name, v); }

const std::vector<Option<MethodFlags>>& method_options() {
  static const std::vector<Option<MethodFlags>> t = {
      {"stats", "statistics file from `parchgrad stats` (for cls/ins)", false, PG_STR(stats), false},
      {"alpha", "significance level (replaces --quantile)", false, PG_DBL("alpha", alpha), false},
      {"quantile", "select the q fraction of channels with the smallest p", false, PG_DBL("quantile", quantile)},
      {"shapiro-threshold", "keep channels with Shapiro-Wilk p below this", false,
       PG_DBL("shapiro-threshold", shapiro_threshold)},
      {"gamma", "gain of the selected channels, or inf", false, PG_STR(gamma)},
      {"no-variance-conservation", "do not rescale to conserve variance", true,
       PG_FLAG("no-variance-conservation", no_variance_conservation)},
      {"exact-variance", "finite gamma: rescale to the exact pre-edit variance", true,
       PG_FLAG("exact-variance", exact_variance)},
      {"layers", "hooked convs: ratio:R, layer34 or conv names", false, PG_STR(layers)},
      {"ig-steps", "integrated gradients steps", false, PG_INT("ig-steps", ig_steps, -kIntMax, kIntMax)},
      {"ig-baseline",
       "integrated gradients baseline: zero (the normalised zero: the ImageNet mean colour), black, blurred (the input "
       "blurred, see --ig-blur-sigma), or a normalised [3, H, W] .npy",
       false, PG_STR(ig_baseline)},
      {"ig-blur-sigma", "--ig-baseline blurred: the Gaussian's standard deviation in pixels of the model's input", false,
       [](const MethodFlags& s) { return show_double(s.ig_blur_sigma); },
       [](MethodFlags& s, const std::string& v) {
         const double d = to_double("ig-blur-sigma", v);
         if (!(std::isfinite(d) && d > 0)) throw Error("--ig-blur-sigma: '" + printable(v) + "' is not a number above 0");
         s.ig_blur_sigma = d;
       }},
      {"sg-samples", "SmoothGrad noisy copies", false, PG_INT("sg-samples", sg_samples, -kIntMax, kIntMax)},
      {"sg-sigma", "SmoothGrad noise, fraction of the input range", false, PG_DBL("sg-sigma", sg_sigma)},
      {"sg-noise",
       "fixed SmoothGrad noise .npy: [M, 3, H, W] for every sample, or [M, S, 3, H, W] for the S samples of the run "
       "in input order",
       false, PG_STR(sg_noise), false},
      {"seed", "SmoothGrad noise seed", false,
       [](const MethodFlags& s) { return std::to_string(s.seed); },
       [](MethodFlags& s, const std::string& v) {
         if (!v.empty() && v[0] == '-') throw Error("--seed: '" + printable(v) + "' is not a non-negative integer");
         const char* b = v.c_str();
         char* end = nullptr;
         errno = 0;
         const unsigned long long u = std::strtoull(b, &end, 10);
         if (v.empty() || end != b + v.size() || errno == ERANGE || std::isspace(static_cast<unsigned char>(v[0])))
           throw Error("--seed: '" + printable(v) + "' is not a non-negative integer");
         s.seed = uint64_t(u);
       }},
      {"gradcam-layer",
       "Grad-CAM's target layer, a module name of the model (layer3, layer4.1, features.29, ...); default: the last "
       "block (ResNet), the last ReLU (VGG)",
       false, PG_STR(gradcam_layer), false},
  };
  return t;
}

const std::vector<Option<DeviceSettings>>& device_options() {
  static const std::vector<Option<DeviceSettings>> t = {
      {"precision",
       "operands of the data-gradient convolution on cuda: fp32, tf32 or bf16 (default: fp32); tf32 and bf16 also let "
       "the forward convolutions use TF32 tensor cores",
       false, PG_STR(precision), false},
      {"dgrad",
       "data-gradient convolution on cuda: engine (the project's kernel, ParchGrad fused) or cudnn (cuDNN plus a "
       "separate scale pass; the baseline)",
       false, PG_STR(dgrad), false},
      {"deterministic", "cuda: only bitwise-reproducible algorithms (maps identical run to run)", true,
       PG_FLAG("deterministic", deterministic)},
  };
  return t;
}

const std::vector<Option<SaliencySettings>>& saliency_options() {
  static const std::vector<Option<SaliencySettings>> t = {
      {"method", "grad, inputgrad, ig, smoothgrad or gradcam", false, PG_STR(method)},
      {"parchgrad", "ParchGrad channel selection: cls, ins or off", false, PG_STR(parchgrad)},
      {"batch", "images per batch (default: 8, or the CPU thread count when larger)", false,
       PG_INT("batch", batch, -kIntMax, kIntMax), false},
      {"threads", "CPU threads (default: all cores)", false, PG_INT("threads", threads, -kIntMax, kIntMax), false},
      {"preprocess",
       "images' preprocessing: a torchvision weights name (e.g. EfficientNet_B0_Weights.IMAGENET1K_V1), a model "
       "name (its IMAGENET1K_V1 weights' transform) or imagenet (256/224 bilinear); default: the model's own",
       false, PG_STR(preprocess), false},
      {"resize", "images: resize the short side to this (0: none; default: the preset's)", false,
       PG_INT("resize", resize, -1, 8192), false},
      {"crop", "images: centre crop to this square (0: none; default: the preset's)", false,
       PG_INT("crop", crop, -1, 8192), false},
      {"interpolation", "images: resize filter, bilinear or bicubic (default: the preset's)", false,
       PG_STR(interpolation), false},
  };
  return t;
}

#undef PG_STR
#undef PG_DBL
#undef PG_INT
#undef PG_FLAG

bool set_option(SaliencySettings& s, DeviceSettings& d, const std::string& name_in, const std::string& value) {
  const std::string name = name_in.rfind("--", 0) == 0 ? name_in.substr(2) : name_in;
  for (const auto& o : saliency_options())
    if (name == o.name) return o.set(s, value), true;
  for (const auto& o : method_options())
    if (name == o.name) return o.set(s.m, value), true;
  for (const auto& o : device_options())
    if (name == o.name) return o.set(d, value), true;
  return false;
}

void check_settings(const MethodFlags& f) {
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

void check_settings(const SaliencySettings& s) {
  check_settings(s.m);
  parchgrad_options(s.m, "off");  // --gamma
  parse_method(s.method);
  parchgrad_options(s.m, s.parchgrad);
  if (s.batch < 0) throw Error("--batch must be at least 1");
  if (s.threads < 0) throw Error("--threads must be at least 0");
  preprocess_for(s, "");  // an unknown preset or filter, refused by name
}

io::Preprocess preprocess_for(const SaliencySettings& s, const std::string& arch) {
  io::Preprocess p = io::model_preprocess(arch);
  if (!s.preprocess.empty() && !io::find_preprocess(s.preprocess, &p))
    throw Error("--preprocess: unknown preset '" + s.preprocess + "' (known: " + io::preprocess_names() + ")");
  if (s.resize >= 0) p.resize = s.resize;
  if (s.crop >= 0) p.crop = s.crop;
  if (!s.interpolation.empty() && !io::parse_interpolation(s.interpolation, &p.interpolation))
    throw Error("--interpolation: '" + s.interpolation + "' is neither bilinear nor bicubic");
  if (s.resize >= 0 || s.crop >= 0 || !s.interpolation.empty()) p.name = "custom";
  return p;
}

nlohmann::json preprocess_json(const io::Preprocess& p) {
  return {{"name", p.name},
          {"resize", p.resize},
          {"crop", p.crop},
          {"interpolation", io::interpolation_name(p.interpolation)},
          {"mean", {p.mean[0], p.mean[1], p.mean[2]}},
          {"std", {p.std[0], p.std[1], p.std[2]}}};
}

void check_settings(const DeviceSettings& d) {
  if (d.precision != "fp32" && d.precision != "tf32" && d.precision != "bf16")
    throw Error("--precision: '" + d.precision + "' is not fp32, tf32 or bf16");
  if (d.dgrad != "engine" && d.dgrad != "cudnn") throw Error("--dgrad: '" + d.dgrad + "' is not engine or cudnn");
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

void load_files(const MethodFlags& f, MethodResources& r) {
  if (r.loaded) return;
  if (!f.sg_noise.empty()) r.sg_noise = io::load_npy(f.sg_noise);
  if (f.ig_baseline == "black") {
    r.baseline = MethodOptions::Baseline::black;
  } else if (f.ig_baseline == "blurred") {
    r.baseline = MethodOptions::Baseline::blurred;
  } else if (f.ig_baseline != "zero") {
    if (!io::is_npy_file(f.ig_baseline))
      throw Error("--ig-baseline: '" + f.ig_baseline + "' is not zero, black, blurred or a .npy file");
    r.baseline = MethodOptions::Baseline::given;
    r.baseline_tensor = io::load_npy(f.ig_baseline);
    for (int64_t i = 0; i < r.baseline_tensor.numel(); ++i)
      if (!std::isfinite(r.baseline_tensor.data()[i])) throw file_error(f.ig_baseline, "holds non-finite values");
  }
  r.loaded = true;
}

void load_stats_file(const MethodFlags& f, MethodResources& r) {
  if (!r.stats && !f.stats.empty()) r.stats = std::make_shared<const StatsFile>(load_stats(f.stats));
}

MethodResources load_resources(const MethodFlags& f, bool need_stats) {
  MethodResources r;
  load_files(f, r);
  if (need_stats) load_stats_file(f, r);
  return r;
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

std::vector<Config> build_configs(const std::vector<std::string>& specs, const MethodFlags& f, MethodResources& res,
                                  const nn::Model& model, int max_batch) {
  check_settings(f);
  // Options that do nothing here are refused (as --stats without ParchGrad is).
  if (f.ig_baseline != "blurred" && f.ig_blur_sigma != MethodFlags{}.ig_blur_sigma)
    throw Error("--ig-blur-sigma does nothing without --ig-baseline blurred");
  if (!f.gradcam_layer.empty() && !uses(specs, Method::GradCAM))
    throw Error("--gradcam-layer " + f.gradcam_layer + " does nothing here: no configuration uses gradcam");
  CamLayer cam;
  if (uses(specs, Method::GradCAM)) cam = resolve_cam_layer(model, f.gradcam_layer);
  load_files(f, res);
  std::vector<Config> configs;
  bool stats_used = false;
  for (const auto& spec : specs) {
    Config c;
    c.label = spec;
    const size_t plus = spec.find('+');
    const std::string mode = plus == std::string::npos ? "off" : spec.substr(plus + 1);
    c.method.method = parse_method(spec.substr(0, plus));
    c.method.ig_steps = f.ig_steps;
    c.method.ig_baseline = res.baseline;
    c.method.ig_baseline_tensor = res.baseline_tensor;
    c.method.ig_blur_sigma = f.ig_blur_sigma;
    c.method.gradcam_layer = f.gradcam_layer;
    c.method.sg_samples = f.sg_samples;
    c.method.sg_sigma = f.sg_sigma;
    c.method.seed = f.seed;
    c.method.sg_noise = res.sg_noise;
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
      load_stats_file(f, res);
      stats_used = true;
      c.hook = std::make_unique<ParchGradHook>(model, *res.stats, po);
    }
    configs.push_back(std::move(c));
  }
  if (!f.stats.empty() && !stats_used)
    throw Error("--stats " + f.stats + " does nothing here: no configuration uses ParchGrad (add --parchgrad cls|ins, " +
                "or +cls/+ins to an entry of the list)");
  return configs;
}

std::string config_spec(const SaliencySettings& s) {
  parchgrad_options(s.m, s.parchgrad);  // rejects a bad --parchgrad mode by name
  return s.method + (s.parchgrad == "off" ? "" : "+" + s.parchgrad);
}

int default_batch() { return std::max(8, omp_get_max_threads()); }

void setup_device(const std::string& device, int gpu, const DeviceSettings& d, nn::Context& ctx) {
  using kernels::ConvPrecision;
  // (conv_dgrad.cu's parse_conv_precision is not linked into builds without a device.)
  const ConvPrecision prec = d.precision == "fp32"   ? ConvPrecision::fp32
                             : d.precision == "tf32" ? ConvPrecision::tf32
                             : d.precision == "bf16" ? ConvPrecision::bf16
                                                     : throw Error("--precision: '" + d.precision +
                                                                   "' is not fp32, tf32 or bf16");
  if (d.dgrad != "engine" && d.dgrad != "cudnn") throw Error("--dgrad: '" + d.dgrad + "' is not engine or cudnn");
  if (device == "cpu") {
    if (d.precision != "fp32") throw Error("--precision " + d.precision + " needs --device cuda");
    if (d.dgrad != "engine") throw Error("--dgrad " + d.dgrad + " needs --device cuda");
    ctx.device = Device::cpu;
    return;
  }
  if (device != "cuda") throw Error("--device: '" + device + "' is not cpu or cuda");
  if (gpu < 0) throw Error("--gpu must be a device index >= 0");
  nn::DeviceOptions opt;
  opt.precision = prec;
  opt.dgrad_library = d.dgrad == "cudnn";
  opt.deterministic = d.deterministic;
  nn::device_backend().configure(opt, gpu);
  ctx.device = Device::cuda;
  ctx.device_options = opt;
}

std::vector<Explanation> saliency_batch(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                                        const std::vector<std::vector<int>>& target_sets, Config& config,
                                        const std::vector<int64_t>& sample_ids) {
  config.method.sample_ids = sample_ids;
  return explain(model, ctx, x, target_sets, config.method, config.hook.get());
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

}  // namespace pg::api
