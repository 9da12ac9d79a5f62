// A ParchGrad statistics file: per conv and channel, the dataset mean, std and
// Shapiro-Wilk p-value of gap = mean_hw relu(raw conv output), and per class the one-sided
// t-test p-value (safetensors: `<conv>.mean`, `.std`, `.shapiro_p` [C], `.cls_p` [C, K]).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pg {

struct LayerStats {
  Tensor mean, std, shapiro_p;  // [C]
  Tensor cls_p;                 // [C, classes]
  int channels() const { return int(mean.numel()); }
};

struct StatsFile {
  std::string path;
  std::string model;                  // metadata "model"
  std::string test;                   // "student" or "welch"
  std::string preprocess;             // metadata "preprocess": the images' preprocessing (JSON), or ""
  int num_classes = 0;
  std::vector<long> images_per_class;  // may be empty if not recorded
  std::map<std::string, LayerStats> layers;

  // The layer's statistics, checked against the conv's channel count; throws naming the
  // file and the layer.
  const LayerStats& layer(const std::string& name, int channels) const;
};

StatsFile load_stats(const std::string& path);

}  // namespace pg
