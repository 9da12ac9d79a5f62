// The saliency settings of `parchgrad saliency` as one table (names, values, defaults, help),
// the configurations built from them, and the saliency of one batch: what the command line and
// the C API (capi/capi.cpp, include/parchgrad/parchgrad.h) both run, so that an option means
// the same thing, and gives the same maps, in both.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "nn/layers.h"
#include "nn/model.h"
#include "parchgrad/methods.h"
#include "parchgrad/parchgrad.h"
#include "parchgrad/stats_file.h"
#include "tools/lib/preprocess_presets.h"

namespace pg::api {

// The method constants and ParchGrad settings (shared by `saliency` and `eval`).
struct MethodFlags {
  std::string stats, gamma = "inf", layers = "ratio:0.5", sg_noise, ig_baseline = "zero", gradcam_layer;
  double alpha = -1, quantile = 0.1, shapiro_threshold = 0.05, sg_sigma = 0.15, ig_blur_sigma = 10.0;
  bool no_variance_conservation = false, exact_variance = false;
  int ig_steps = 25, sg_samples = 25;
  uint64_t seed = 0;
};

// Where a model runs and how (--precision, --dgrad, --deterministic; the device itself is the
// model's: --device/--gpu, pg_model_load).
struct DeviceSettings {
  std::string precision = "fp32";  // fp32 | tf32 | bf16
  std::string dgrad = "engine";    // engine | cudnn
  bool deterministic = false;
};

// Everything `parchgrad saliency` takes that changes a map, but the device's settings.
struct SaliencySettings {
  std::string method = "grad", parchgrad = "off";
  int batch = 0;    // 0: 8, or the thread count when larger
  int threads = 0;  // 0: all cores
  // Preprocessing of images (tools/lib/preprocess_presets.h): a preset's name ("": the model's
  // own, preprocess_for), and overrides of its resize, crop and filter (-1, "": the preset's).
  std::string preprocess, interpolation;
  int resize = -1, crop = -1;
  MethodFlags m;
};

// The preprocessing of s for a model of architecture arch: s.preprocess's preset, else the
// model's own (io::model_preprocess), with s's overrides ("custom" when any is set).
io::Preprocess preprocess_for(const SaliencySettings& s, const std::string& arch);
// The preprocessing as a JSON object (results.jsonl, REPORT.jsonl).
nlohmann::json preprocess_json(const io::Preprocess& p);

// One option of the table: its flag name (without "--"), help, whether it is a flag (no value),
// its default as text, and its parser. set() throws pg::Error for a value that is not of the
// option's kind (not a number, an unknown word); ranges and finiteness are checked by
// check_settings, where the command line checks them too.
// An option whose value alone is wrong (check: set throws) is a usage error of the command line
// (exit 2); one that the model or the other options decide is refused later (exit 1).
template <class S>
struct Option {
  const char* name;
  const char* help;
  bool flag;
  std::string (*show)(const S&);
  void (*set)(S&, const std::string&);
  bool show_default = true;  // the command line's help shows the default
};

const std::vector<Option<MethodFlags>>& method_options();
const std::vector<Option<DeviceSettings>>& device_options();
// method, parchgrad, batch, threads, preprocess, resize, crop, interpolation.
const std::vector<Option<SaliencySettings>>& saliency_options();

// Sets the option `name` (with or without "--") of s or d; false when no table has that name.
// Throws pg::Error for a bad value.
bool set_option(SaliencySettings& s, DeviceSettings& d, const std::string& name, const std::string& value);

// Numbers that cannot mean anything (NaN, out of range) and unknown words, refused by name.
void check_settings(const MethodFlags& f);
void check_settings(const SaliencySettings& s);
void check_settings(const DeviceSettings& d);

// The ParchGrad options for mode "cls", "ins" or "off". Throws on a bad --gamma or mode.
ParchGradOptions parchgrad_options(const MethodFlags& f, const std::string& mode);

// The files some settings name, read once: the statistics (only when a configuration uses
// ParchGrad), the fixed SmoothGrad noise and a given IG baseline. build_configs reads what is
// not read yet (`loaded`, `stats` empty) when it needs it, in the order its checks need it; the
// C API reads them when the option is set (load_resources), so that a bad file fails there.
struct MethodResources {
  bool loaded = false;  // sg_noise and the baseline
  std::shared_ptr<const StatsFile> stats;
  Tensor sg_noise;
  MethodOptions::Baseline baseline = MethodOptions::Baseline::zero;
  Tensor baseline_tensor;
};
// Reads the files of f (the statistics only when need_stats) into res.
void load_files(const MethodFlags& f, MethodResources& res);
void load_stats_file(const MethodFlags& f, MethodResources& res);
MethodResources load_resources(const MethodFlags& f, bool need_stats);

// One configuration to explain with: a method and a ParchGrad mode ("grad+cls").
struct Config {
  std::string label;
  MethodOptions method;
  std::unique_ptr<ParchGradHook> hook;
};

// "grad,grad+cls,ig" -> {"grad", "grad+cls", "ig"} (empty entries are an error).
std::vector<std::string> split_list(const std::string& list, const std::string& flag);

// Configurations for specs "method[+cls|+ins]" from the settings and their files (read into res
// when not read yet; res must outlive the configurations). Refuses bad numbers, options that
// would do nothing (--stats without ParchGrad, --ig-blur-sigma without the blurred baseline,
// --gradcam-layer without gradcam) and ParchGrad with a Grad-CAM layer above every hooked conv.
std::vector<Config> build_configs(const std::vector<std::string>& specs, const MethodFlags& f, MethodResources& res,
                                  const nn::Model& model, int max_batch);

// The one configuration of --method and --parchgrad ("grad", "ig+cls").
std::string config_spec(const SaliencySettings& s);

// The batch size --batch 0 stands for: 8, or the thread count when larger.
int default_batch();

// Device settings into the pass context: checks them against the device and, for cuda,
// configures the device backend (device index gpu). Prints nothing.
void setup_device(const std::string& device, int gpu, const DeviceSettings& d, nn::Context& ctx);

// The saliency of one batch x [N, 3, H, W] with one configuration: explain() with the run's
// sample ids (fixed SmoothGrad noise), one Explanation per target set.
std::vector<Explanation> saliency_batch(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                                        const std::vector<std::vector<int>>& target_sets, Config& config,
                                        const std::vector<int64_t>& sample_ids);

// Every setting, for results files.
nlohmann::json settings_json(const MethodFlags& f);

}  // namespace pg::api
