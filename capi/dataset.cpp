#include "capi/dataset.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <fstream>
#include <sstream>

#include "capi/saliency.h"
#include "core/error.h"
#include "parchgrad/attribution.h"
#include "tools/lib/image_io.h"
#include "tools/lib/preprocess_presets.h"
#include "weights/class_names.h"
#include "weights/state_dict.h"

namespace pg::api {

namespace fs = std::filesystem;

bool is_data_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".npy";
}

// folder name -> class id, from lines "folder_name class_id".
std::map<std::string, int> read_labels(const std::string& path, int num_classes) {
  std::ifstream f(path);
  if (!f) throw file_error(path, "cannot open labels file");
  std::map<std::string, int> out;
  std::string line;
  int lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    std::istringstream ss(line);
    std::string name, rest;
    long id = -1;
    if (!(ss >> name)) continue;  // blank line
    if (!(ss >> id) || (ss >> rest))
      throw file_error(path, "line " + std::to_string(lineno) + ": expected \"folder_name class_id\"");
    if (id < 0 || id >= num_classes)
      throw file_error(path, "line " + std::to_string(lineno) + ": class id " + std::to_string(id) +
                                 " is out of range for a model with " + std::to_string(num_classes) + " classes");
    if (!out.emplace(name, int(id)).second)
      throw file_error(path, "line " + std::to_string(lineno) + ": folder " + name + " listed twice");
  }
  return out;
}

// The ImageFolder listing: class folders sorted by name, files below each (recursively)
// sorted by path, as torchvision's ImageFolder orders them.
std::vector<DatasetItem> list_dataset(const std::string& dir, const std::string& labels_path, int num_classes) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw file_error(dir, "not a directory");
  std::vector<std::string> folders;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) folders.push_back(e.path().filename().string());
  if (ec) throw file_error(dir, "cannot list directory (" + ec.message() + ")");
  std::sort(folders.begin(), folders.end());
  if (folders.empty()) throw file_error(dir, "no class folders (expected DIR/<class>/<image files>)");
  std::map<std::string, int> labels;
  if (!labels_path.empty()) labels = read_labels(labels_path, num_classes);
  // An ImageNet model: folders named by WordNet id give class ids by their sorted position only
  // when all 1000 are there (torchvision's ImageFolder over the full validation set); folders
  // named by ImageNet class name give that class. Anything else needs --labels: a folder `cat/`
  // silently becoming class 0 ("tench") would make every number of the run meaningless.
  std::map<std::string, int> by_name;
  if (labels_path.empty() && num_classes == 1000) {
    auto is_wnid = [](const std::string& f) {
      return f.size() == 9 && f[0] == 'n' && std::all_of(f.begin() + 1, f.end(), [](unsigned char c) { return std::isdigit(c); });
    };
    const bool all_wnids = std::all_of(folders.begin(), folders.end(), is_wnid);
    if (all_wnids && folders.size() != 1000)
      throw file_error(dir, "has " + std::to_string(folders.size()) + " WordNet-id class folders, not all 1000 of "
                            "ImageNet, so their sorted positions are not class ids; give --labels (lines \"n01440764 0\")");
    if (!all_wnids) {
      const std::vector<std::string>& names = weights::imagenet_class_names();
      std::map<std::string, int> count;
      for (size_t k = 0; k < names.size(); ++k) {
        by_name[names[k]] = int(k);
        ++count[names[k]];
      }
      for (const auto& f : folders) {
        if (!by_name.count(f))
          throw file_error(dir, "class folder '" + f + "' is neither a WordNet id nor an ImageNet class name; give "
                                "--labels (lines \"folder_name class_id\")");
        if (count[f] > 1)
          throw file_error(dir, "class folder '" + f + "' names " + std::to_string(count[f]) +
                                " ImageNet classes; give --labels (lines \"folder_name class_id\")");
      }
    }
  }
  std::vector<DatasetItem> items;
  for (size_t i = 0; i < folders.size(); ++i) {
    int label = int(i);
    if (!labels_path.empty()) {
      auto it = labels.find(folders[i]);
      if (it == labels.end()) throw file_error(dir, "class folder " + folders[i] + " is not in " + labels_path);
      label = it->second;
    } else if (!by_name.empty()) {
      label = by_name.at(folders[i]);
    } else if (label >= num_classes) {
      throw file_error(dir, "class folder " + folders[i] + " is class " + std::to_string(label) +
                                " but the model has " + std::to_string(num_classes) + " classes (" +
                                std::to_string(folders.size()) + " folders)");
    }
    std::vector<std::string> files;
    const fs::path sub = fs::path(dir) / folders[i];
    for (auto it = fs::recursive_directory_iterator(sub, fs::directory_options::follow_directory_symlink, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (it->is_regular_file() && is_data_file(it->path())) files.push_back(it->path().string());
    }
    if (ec) throw file_error(sub.string(), "cannot list directory (" + ec.message() + ")");
    std::sort(files.begin(), files.end());
    for (auto& f : files) items.push_back({f, label});
  }
  if (items.empty()) throw file_error(dir, "no .png, .jpg, .jpeg or .npy files in its class folders");
  return items;
}

DatasetStatsMeta stats_meta(const nn::Model& model, const std::string& weights_path, const std::string& test) {
  DatasetStatsMeta meta;
  meta.model = model.arch();
  meta.test = test;
  meta.weights = fs::path(weights_path).filename().string();
  meta.num_classes = model.num_classes();
  return meta;
}

std::vector<std::pair<std::string, int>> stats_convs(const nn::Model& model) {
  std::vector<std::pair<std::string, int>> convs;
  for (const auto* c : model.convs()) convs.emplace_back(c->site.name, c->out_channels);
  return convs;
}

void GapCollector::on_forward(const ag::ConvSite& site, const Tensor& gap) {
  stats_->add(site.name, gap);
  if (keep_) {
    auto& rows = kept_[site.name];
    rows.first = gap.dim(1);
    rows.second.insert(rows.second.end(), gap.data(), gap.data() + gap.numel());
  }
}

void GapCollector::dump(const std::string& path, const std::vector<int64_t>& index, const std::vector<int>& labels) const {
  weights::StateDict t;
  for (const auto& [name, rows] : kept_) {
    const int64_t C = rows.first, n = int64_t(rows.second.size()) / C;
    Tensor m({n, C});
    std::copy(rows.second.begin(), rows.second.end(), m.data());
    t[name] = m;
  }
  Tensor lab({int64_t(labels.size())}), idx({int64_t(index.size())});
  for (size_t i = 0; i < labels.size(); ++i) lab[int64_t(i)] = float(labels[i]);
  for (size_t i = 0; i < index.size(); ++i) idx[int64_t(i)] = float(index[i]);
  t["__labels__"] = lab;
  t["__image_index__"] = idx;
  weights::save_safetensors(path, t);
}

void stats_batch(const nn::Model& model, nn::Context& ctx, DatasetStats& acc, const Tensor& x,
                 const std::vector<int64_t>& index, const std::vector<int>& labels) {
  acc.begin_batch(index, labels);
  model.forward(ctx, ag::Var{x, -1});
  acc.end_batch();
}

void dataset_stats(const nn::Model& model, nn::Context& ctx, const StatsJob& job) {
  if (job.batch < 1) throw Error("--batch must be at least 1");
  if (job.test != "student" && job.test != "welch") throw Error("--test: '" + job.test + "' is not student or welch");
  const std::vector<DatasetItem> all = list_dataset(job.data, job.labels, model.num_classes());
  // The spill file: one per run, also when several threads run statistics at once.
  static std::atomic<long> runs{0};
  const std::string spill = job.out + ".samples." + std::to_string(getpid()) + "." + std::to_string(runs++) + ".tmp";
  // Images are preprocessed as the model's weights define, or as job.pre says (as `parchgrad stats`).
  const io::Preprocess pp = preprocess_for(job.pre, model.arch());
  DatasetStatsMeta meta = stats_meta(model, job.weights_name, job.test);
  meta.preprocess = preprocess_json(pp).dump();
  DatasetStats acc(meta, stats_convs(model), job.memory_limit, spill);
  GapCollector hook(&acc, false);
  ctx.hook = &hook;
  struct Unhook {
    nn::Context& c;
    ~Unhook() { c.hook = nullptr; }
  } unhook{ctx};
  std::vector<Tensor> xs;
  std::vector<int64_t> idx;
  std::vector<int> labels;
  auto flush = [&]() {
    if (xs.empty()) return;
    const Tensor x = stack(xs);
    check_input(x, all[size_t(idx[0])].path);
    stats_batch(model, ctx, acc, x, idx, labels);
    xs.clear();
    idx.clear();
    labels.clear();
  };
  for (size_t i = 0; i < all.size(); ++i) {
    Tensor t = io::load_input_tensor(all[i].path, pp);
    if (t.ndim() != 3) throw file_error(all[i].path, "expected one [3, H, W] sample, got " + t.shape_str());
    if (!xs.empty() && xs[0].shape() != t.shape()) flush();
    xs.push_back(t);
    idx.push_back(int64_t(i));
    labels.push_back(all[i].label);
    if (int(xs.size()) >= job.batch) flush();
  }
  flush();
  acc.finalize(job.out);
}

}  // namespace pg::api
