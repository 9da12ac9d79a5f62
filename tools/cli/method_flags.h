// The flags that choose an attribution method and its ParchGrad settings, shared by
// `parchgrad saliency` and `parchgrad eval`, and the configurations built from them.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/model.h"
#include "parchgrad/methods.h"
#include "parchgrad/parchgrad.h"
#include "parchgrad/stats_file.h"

namespace pg::cli {

struct MethodFlags {
  std::string stats, gamma = "inf", layers = "ratio:0.5", sg_noise, ig_baseline = "zero", gradcam_layer;
  double alpha = -1, quantile = 0.1, shapiro_threshold = 0.05, sg_sigma = 0.15, ig_blur_sigma = 10.0;
  bool no_variance_conservation = false, exact_variance = false;
  int ig_steps = 25, sg_samples = 25;
  uint64_t seed = 0;
};

// --stats, --alpha, --quantile, --shapiro-threshold, --gamma, --no-variance-conservation,
// --exact-variance, --layers, --ig-steps, --ig-baseline, --ig-blur-sigma, --sg-samples,
// --sg-sigma, --sg-noise, --seed, --gradcam-layer.
void add_method_flags(CLI::App* app, MethodFlags& f);

// The ParchGrad options for mode "cls", "ins" or "off". Throws on a bad --gamma or mode.
ParchGradOptions parchgrad_options(const MethodFlags& f, const std::string& mode);

// One configuration to explain with: a method and a ParchGrad mode ("grad+cls").
struct Config {
  std::string label;
  MethodOptions method;
  std::unique_ptr<ParchGradHook> hook;
};

// "grad,grad+cls,ig" -> {"grad", "grad+cls", "ig"} (empty entries are an error).
std::vector<std::string> split_list(const std::string& list, const std::string& flag);

// Configurations for specs "method[+cls|+ins]". The stats file is loaded once into `stats`
// when a spec needs it (it must outlive the configurations).
std::vector<Config> build_configs(const std::vector<std::string>& specs, const MethodFlags& f, const nn::Model& model,
                                  int max_batch, std::unique_ptr<StatsFile>& stats);

// Every setting, for results files (--ig-blur-sigma and --gradcam-layer only where they
// apply, so that an eval report of earlier settings keeps its identity).
nlohmann::json settings_json(const MethodFlags& f);

}  // namespace pg::cli
