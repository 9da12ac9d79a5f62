// Labelled image folders and ParchGrad's dataset statistics over them: the ImageFolder listing
// that `parchgrad stats` and `parchgrad eval` read, the hook that hands every conv's GAP to the
// accumulator, and one statistics run (pg_stats).
#pragma once
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/hooks.h"
#include "capi/saliency.h"
#include "nn/layers.h"
#include "nn/model.h"
#include "parchgrad/dataset_stats.h"

namespace pg::api {

// An image (or .npy) of a labelled data set.
struct DatasetItem {
  std::string path;
  int label = 0;
};

// .png, .jpg, .jpeg or .npy (case-insensitive).
bool is_data_file(const std::filesystem::path& p);

// folder name -> class id, from lines "folder_name class_id"; ids checked against num_classes.
std::map<std::string, int> read_labels(const std::string& path, int num_classes);

// The ImageFolder listing: class folders sorted by name (their index is the class id, or
// labels_path maps names to ids), files below each (recursively) sorted by path, as
// torchvision's ImageFolder orders them. Throws for an empty tree or too many classes.
std::vector<DatasetItem> list_dataset(const std::string& dir, const std::string& labels_path, int num_classes);

// The statistics file's metadata for a model and its weights file.
DatasetStatsMeta stats_meta(const nn::Model& model, const std::string& weights_path, const std::string& test);
// (name, channels) of every conv, in model order.
std::vector<std::pair<std::string, int>> stats_convs(const nn::Model& model);

// Hooks every conv and hands its gap values to the accumulator. With keep, it also keeps every
// gap row, to be written as [images, channels] per conv (dump).
class GapCollector : public ag::ConvHook {
 public:
  GapCollector(DatasetStats* s, bool keep) : stats_(s), keep_(keep) {}
  // The accumulator the next batches go to (a checkpoint starts a new one).
  void set_stats(DatasetStats* s) { stats_ = s; }
  bool hooks(const ag::ConvSite&) const override { return true; }
  void on_forward(const ag::ConvSite& site, const Tensor& gap) override;
  Tensor on_backward(const ag::ConvSite&, Tensor&) override { return Tensor(); }
  // Writes the kept rows (in processing order, i.e. by image index) as a safetensors file.
  void dump(const std::string& path, const std::vector<int64_t>& index, const std::vector<int>& labels) const;

 private:
  DatasetStats* stats_;
  bool keep_;
  std::map<std::string, std::pair<int64_t, std::vector<float>>> kept_;
};

// One batch of samples x [B, 3, H, W] through the model into acc (with ctx.hook = the collector).
void stats_batch(const nn::Model& model, nn::Context& ctx, DatasetStats& acc, const Tensor& x,
                 const std::vector<int64_t>& index, const std::vector<int>& labels);

// A whole statistics run in memory (no shards, no checkpoints): every image of the folder,
// batches of equal-shaped consecutive images, the file written at the end. An unreadable image
// fails the run (the command line's --strict).
struct StatsJob {
  std::string data, labels, test = "student", out, weights_name;
  int batch = 16;
  size_t memory_limit = size_t(256) << 20;
  // The images' preprocessing (preprocess_for): only preprocess, resize, crop and interpolation
  // are read; the defaults give the model's own preset, as `parchgrad stats`.
  SaliencySettings pre;
};
void dataset_stats(const nn::Model& model, nn::Context& ctx, const StatsJob& job);

}  // namespace pg::api
