#include "parchgrad/stats_file.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "weights/state_dict.h"

namespace pg {

const LayerStats& StatsFile::layer(const std::string& name, int channels) const {
  auto it = layers.find(name);
  if (it == layers.end()) throw file_error(path, "has no statistics for layer '" + name + "'");
  if (it->second.channels() != channels)
    throw file_error(path, "layer '" + name + "' has statistics for " + std::to_string(it->second.channels()) +
                               " channels, the model's conv has " + std::to_string(channels));
  return it->second;
}

StatsFile load_stats(const std::string& path) {
  StatsFile s;
  s.path = path;
  // A weight file (or anything else) given as --stats: say what it is rather than what a
  // statistics file would hold.
  const std::string head = read_file_head(path, 9, limits::kWeightFileBytes, "a statistics file");
  if (head.size() < 9 || head[8] != '{') {
    std::string format;
    try {
      format = weights::detect_format(path);
    } catch (const Error&) {
      throw file_error(path, "is not a statistics file (not a safetensors file, which `parchgrad stats` writes)");
    }
    throw file_error(path, "is a weight file (" + format + "), not a statistics file (`parchgrad stats` writes one)");
  }
  weights::StateDict t = weights::load_safetensors(path);
  auto meta = weights::safetensors_metadata(path);
  s.model = meta.count("model") ? meta["model"] : "";
  s.test = meta.count("test") ? meta["test"] : "";
  s.preprocess = meta.count("preprocess") ? meta["preprocess"] : "";
  if (meta.count("images_per_class")) {
    try {
      for (const auto& v : nlohmann::json::parse(meta["images_per_class"])) s.images_per_class.push_back(v.get<long>());
    } catch (const std::exception&) {
      throw file_error(path, "metadata 'images_per_class' is not a JSON list of counts");
    }
  }
  auto strip = [](const std::string& key, const std::string& suffix, std::string* base) {
    if (key.size() <= suffix.size() || key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    *base = key.substr(0, key.size() - suffix.size());
    return true;
  };
  for (const auto& [key, tensor] : t) {
    std::string base;
    if (strip(key, ".mean", &base)) s.layers[base].mean = tensor;
    else if (strip(key, ".std", &base)) s.layers[base].std = tensor;
    else if (strip(key, ".shapiro_p", &base)) s.layers[base].shapiro_p = tensor;
    else if (strip(key, ".cls_p", &base)) s.layers[base].cls_p = tensor;
  }
  if (s.layers.empty()) {
    for (const char* suffix : {".weight", ".running_mean"}) {
      for (const auto& [key, tensor] : t) {
        std::string base;
        if (strip(key, suffix, &base))
          throw file_error(path, std::string("is a weight file ('") + suffix +
                                     "' tensors), not a statistics file (`parchgrad stats` writes one)");
      }
    }
    throw file_error(path, "is not a statistics file (no '<layer>.mean' tensors)");
  }
  for (const auto& [name, l] : s.layers) {
    const int64_t C = l.mean.numel();
    if (l.std.numel() != C || l.shapiro_p.numel() != C || l.cls_p.ndim() != 2 || l.cls_p.dim(0) != C)
      throw file_error(path, "layer '" + name + "' lacks consistent .mean, .std, .shapiro_p [C] and .cls_p [C, classes]");
    const int K = int(l.cls_p.dim(1));
    if (s.num_classes == 0) s.num_classes = K;
    if (K != s.num_classes) throw file_error(path, "layer '" + name + "' has a different class count");
  }
  if (!s.images_per_class.empty() && int(s.images_per_class.size()) != s.num_classes)
    throw file_error(path, "metadata 'images_per_class' lists " + std::to_string(s.images_per_class.size()) +
                               " classes, the tensors have " + std::to_string(s.num_classes));
  return s;
}

}  // namespace pg
