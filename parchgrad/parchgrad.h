// ParchGrad (Park, Jeon, Choi 2023) as a conv hook: class-wise or instance-wise channel
// selection at each hooked conv, and the per-(sample, channel) gradient scale that the
// data-gradient convolution applies (see docs/parchgrad-method.md, 1-5).
#pragma once
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "autograd/hooks.h"
#include "nn/model.h"
#include "parchgrad/stats_file.h"

namespace pg {

struct ParchGradOptions {
  enum class Mode { Off, Cls, Ins };
  Mode mode = Mode::Off;
  double alpha = -1;           // used when >= 0; otherwise the quantile
  double quantile = 0.1;
  double shapiro_threshold = 0.05;
  double gamma = std::numeric_limits<double>::infinity();
  bool variance_conservation = true;
  bool exact_variance = false;  // finite gamma only
  std::string layers = "ratio:0.5";
};

// The names of the hooked convs for a --layers spec ("ratio:R", "layer34", or
// comma-separated conv names), in the model's conv order. Throws on unknown names.
std::vector<std::string> hooked_layers(const nn::Model& model, const std::string& spec);

// What the edit did to one sample at one layer (for --explain-masks).
struct LayerExplain {
  std::string name;
  int channels = 0;
  std::vector<int> kept;  // H, sorted channel indices
  double M = 0, N = 0, beta = 1;
  bool edited = false;    // false when H or L was empty (sample left unchanged)
};

class ParchGradHook : public ag::ConvHook {
 public:
  // Validates the options, the hooked layers and the statistics against the model.
  ParchGradHook(const nn::Model& model, const StatsFile& stats, const ParchGradOptions& opt);

  // Targets of the samples in the next backward pass (resolved class ids).
  void set_targets(const std::vector<int>& targets);
  void set_explain(bool on) { explain_on_ = on; }
  // Per sample, per hooked layer (in backward order reversed to the hooked-layer order).
  const std::vector<std::vector<LayerExplain>>& explain() const { return explain_; }
  const std::vector<std::string>& layers() const { return layers_; }

  bool hooks(const ag::ConvSite& site) const override;
  void on_forward(const ag::ConvSite& site, const Tensor& gap) override;
  Tensor on_backward(const ag::ConvSite& site, Tensor& grad) override;

 private:
  const StatsFile& stats_;
  ParchGradOptions opt_;
  std::vector<std::string> layers_;
  std::set<std::string> hooked_;
  std::map<std::string, Tensor> gap_;  // per hooked layer, [N, C] from the last forward
  std::vector<int> targets_;
  bool explain_on_ = false;
  std::vector<std::vector<LayerExplain>> explain_;
};

}  // namespace pg
