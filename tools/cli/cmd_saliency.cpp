// `parchgrad saliency` (maps, overlays and JSON lines for images and .npy inputs) and
// `parchgrad gradient` (the exact-tensor path: logits and input gradient as .npy).
#include <algorithm>
#include <limits>
#include <memory>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <cctype>
#include <map>
#include <mutex>


#include "core/error.h"
#include "nn/model.h"
#include "parchgrad/attribution.h"
#include "parchgrad/methods.h"
#include "parchgrad/parchgrad.h"
#include "tools/cli/commands.h"
#include "nn/backend.h"
#include "tools/cli/common.h"
#include "tools/cli/device_flags.h"
#include "tools/cli/gpu_all.h"
#include "tools/cli/method_flags.h"
#include "tools/cli/reports.h"
#include "tools/cli/shard.h"
#include "tools/lib/image_io.h"
#include "tools/lib/plot.h"
#include "tools/lib/prefetch.h"
#include "tools/lib/progress.h"
#include "weights/class_names.h"

namespace pg::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The saliency settings (method, parchgrad, batch, threads and the method constants m: the
// option table the C API reads, capi/saliency.h) and the command line's own: inputs, outputs,
// targets, the device.
struct SaliencyOptions : api::SaliencySettings {
  DeviceFlags dev;
  std::string weights, model, target = "top1", out = "saliency_out", classes;
  std::vector<std::string> inputs;
  std::string compare;
  std::string shard;  // i/N or auto: this process's share of the inputs (tools/cli/shard.h)
  bool explain_masks = false;
  bool all_targets = false;
  bool no_resume = false;
  std::string colormap = "ramp";
  double overlay_opacity = 1.0;
};

// One sample to explain: where it came from and the tensor the model sees.
struct Sample {
  std::string input;  // file path
  int index = -1;     // sample index inside a batched .npy, else -1
  int64_t run_index = 0;  // position among all samples of the run (fixed SmoothGrad noise)
  std::string name;   // output file stem
  std::string input_hash;  // content_hash of the input file (the records say it: resume)
  size_t pos = 0;          // the input's position among this process's inputs (the index's order)
  std::vector<std::string> names;  // per target set, the output name reserved (not with topK)
  Tensor x;           // [3, H, W]; empty for an image left to the device to normalise
  io::Image8 crop;    // images: the resized and cropped pixels (overlays; device input)
  int target = -1;
  std::vector<int64_t> shape() const {
    return x.empty() ? std::vector<int64_t>{3, crop.h, crop.w} : x.shape();
  }
};

// Loads one input file into samples (a batched .npy gives several). Images are normalised
// here unless device_normalise (then the device does it from the uint8 crop).
std::vector<Sample> load_input(const InputFile& file, bool device_normalise, const io::Preprocess& pp) {
  std::vector<Sample> out;
  const std::string& path = file.path;
  const std::string& stem = file.name;
  std::error_code ec;
  if (fs::is_symlink(path, ec) && !fs::exists(path, ec))
    throw file_error(path, "dangling symbolic link (its target does not exist)");
  if (is_npy(path)) {
    Tensor t = io::load_npy(path);
    if (t.ndim() == 3) t = t.reshape({1, t.dim(0), t.dim(1), t.dim(2)});
    check_input(t, path);
    for (int64_t n = 0; n < t.dim(0); ++n) {
      Sample s;
      s.input = path;
      s.index = t.dim(0) > 1 ? int(n) : -1;
      s.name = t.dim(0) > 1 ? stem + "_" + std::to_string(n) : stem;
      s.x = t.slice0(n, n + 1).reshape({t.dim(1), t.dim(2), t.dim(3)});
      out.push_back(s);
    }
  } else {
    Sample s;
    s.input = path;
    s.name = stem;
    s.crop = io::resize_and_crop(io::load_image_rgb(path), pp.resize, pp.crop, pp.interpolation);
    if (!device_normalise) s.x = io::normalize_rgb(s.crop, pp.mean, pp.std);
    out.push_back(s);
  }
  const std::string hash = content_hash(path);
  for (Sample& s : out) s.input_hash = hash;
  return out;
}

// Appends lines of text (each without its newline) in one write.
void append_text_lines(const std::string& path, const std::vector<std::string>& lines) {
  if (lines.empty()) return;
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  std::ofstream f(path, std::ios::binary | std::ios::app);
  if (!f) throw file_error(path, "cannot append");
  f.write(text.data(), std::streamsize(text.size()));
  f.flush();
  if (!f) throw file_error(path, "write failed");
}

json top_k(const Tensor& probs, int64_t n, int k, const std::vector<std::string>& names) {
  const int64_t K = probs.dim(1);
  std::vector<int> idx(K);
  std::iota(idx.begin(), idx.end(), 0);
  const float* p = probs.data() + n * K;
  k = int(std::min<int64_t>(k, K));
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
  json arr = json::array();
  for (int i = 0; i < k; ++i) {
    json e = {{"class", idx[i]}, {"prob", p[idx[i]]}};
    if (!names.empty()) e["name"] = names[idx[i]];
    arr.push_back(e);
  }
  return arr;
}

// Target sets for a batch: topK gives K sets; otherwise one set with one target per sample.
std::vector<std::vector<int>> target_sets_for(const std::string& spec, const std::vector<int>& per_sample) {
  if (spec.size() > 3 && spec.compare(0, 3, "top") == 0 && spec != "top1") {
    int k = 0;
    try {
      k = std::stoi(spec.substr(3));
    } catch (const std::exception&) {
    }
    std::vector<std::vector<int>> sets;
    for (int r = 1; r <= k; ++r) sets.push_back({-r});
    return sets;
  }
  return {per_sample};
}

json layers_json(const std::vector<LayerExplain>& layers) {
  json arr = json::array();
  // Recorded in backward order; written in the model's forward order.
  for (auto it = layers.rbegin(); it != layers.rend(); ++it)
    arr.push_back({{"name", it->name}, {"channels", it->channels}, {"kept", it->kept.size()}, {"H", it->kept},
                   {"M", it->M}, {"N", it->N}, {"beta", it->beta}, {"edited", it->edited}});
  return arr;
}

// Composes [image | overlay 1 | overlay 2 | ...] side by side under a band that names each
// panel ("input", then the configurations).
io::Image8 strip(const io::Image8& base, const std::vector<io::Image8>& overlays, const std::vector<std::string>& labels) {
  io::Image8 out;
  const int gap = 4, band = 22;
  out.h = base.h + band;
  out.w = base.w * int(1 + overlays.size()) + gap * int(overlays.size());
  out.rgb.assign(size_t(out.w) * out.h * 3, 255);
  auto blit = [&](const io::Image8& img, int x0) {
    for (int y = 0; y < img.h; ++y)
      std::copy(img.rgb.begin() + size_t(y) * img.w * 3, img.rgb.begin() + size_t(y + 1) * img.w * 3,
                out.rgb.begin() + (size_t(y + band) * out.w + x0) * 3);
  };
  const uint8_t ink[3] = {20, 20, 20};
  auto label = [&](const std::string& text, int x0) {
    const int scale = io::text_width(text, 2) <= base.w - 4 ? 2 : 1;  // a long name gets the small font
    const int w = io::text_width(text, scale);
    io::draw_text(out, x0 + std::max(2, (base.w - w) / 2), (band - 7 * scale) / 2, text, scale, ink);
  };
  blit(base, 0);
  label("input", 0);
  for (size_t i = 0; i < overlays.size(); ++i) {
    const int x0 = int(i + 1) * (base.w + gap);
    blit(overlays[i], x0);
    if (i < labels.size()) label(labels[i], x0);
  }
  return out;
}

// results.jsonl is the index of the maps in its folder: one line per image and target, naming
// the files written for it. A run appends its lines as it goes (a killed run keeps what it
// did), and at its end rewrites the index through a temporary file: a line whose files a later
// line rewrote is dropped, so two runs into one folder never leave two lines pointing at the
// same .npy (reindex_results, tools/cli/reports), and this run's lines (resumed or written) are
// put in input order after any other run's. Lines that are not records of this command are
// refused before any work (the folder holds something else); a partial last line, left by a
// killed run, is dropped. A rerun of the same command resumes: it skips the inputs whose
// records and files are all there (see "Resumption" below), so that a killed run and its rerun
// leave what one run leaves. Maps are batch invariant (on the CPU, and on the device with
// --deterministic), so the other batches a resumed run makes do not change them.
void run_saliency(const SaliencyOptions& opts) {
  set_threads(opts.threads);
  SaliencyOptions o = opts;
  // A sample is one work unit of a late layer's convolution (batch invariance), so a batch
  // smaller than the thread count leaves threads idle there.
  if (o.batch == 0) o.batch = api::default_batch();
  if (o.batch < 1) throw Error("--batch must be at least 1");
  const bool topk = o.target.size() > 3 && o.target.compare(0, 3, "top") == 0 && o.target != "top1";
  if (topk) {
    const std::string k = o.target.substr(3);
    if (k.empty() || k.size() > 4 || !std::all_of(k.begin(), k.end(), [](unsigned char c) { return std::isdigit(c); }) ||
        std::stoi(k) < 1)
      throw Error("--target: '" + o.target + "' is not topK with K >= 1");
  }
  const std::vector<InputFile> inputs = expand_inputs(o.inputs);
  const Shard sh = command_shard(o.dev, o.shard);  // --shard's, or a --gpu all worker's
  auto model = nn::load_model(o.weights, o.model);
  // Images are preprocessed as the model's weights define (or --preprocess and its overrides).
  const io::Preprocess pp = api::preprocess_for(o, model->arch());
  const auto names = weights::class_names_for(o.weights, o.classes, model->num_classes());
  const std::vector<int> targets = topk ? std::vector<int>{-1} : parse_targets(o.target, names);
  for (int t : targets)
    if (t >= model->num_classes())
      throw Error("--target " + std::to_string(t) + " is out of range for " + o.weights + " (" +
                  std::to_string(model->num_classes()) + " classes)");
  if (topk && std::stoi(o.target.substr(3)) > model->num_classes())
    throw Error("--target " + o.target + " asks for more classes than " + o.weights + " has");

  // Configurations: one, or one per --compare entry ("grad", "grad+cls", "ig+ins", ...).
  std::vector<std::string> specs;
  if (o.compare.empty()) {
    specs.push_back(api::config_spec(o));  // (a bad --parchgrad mode is refused by name)
  } else {
    specs = split_list(o.compare, "--compare");
  }
  MethodResources resources;  // the files the settings name (outlives the configurations)
  std::vector<Config> configs = build_configs(specs, o.m, resources, *model, o.batch);
  const bool host_input = std::any_of(configs.begin(), configs.end(), [](const Config& c) {
    return c.method.method == Method::IG || c.method.method == Method::SmoothGrad;
  });
  (void)host_input;  // read only by the device path

  // A list of targets means one class per sample, or, with --all-targets, every listed class
  // for every sample: said by a flag, never guessed from the number of inputs.
  if (o.all_targets && (topk || targets.size() < 2))
    throw Error("--all-targets needs a list of classes in --target (e.g. --target 3,5 --all-targets)");
  if (targets.size() > 1 && !o.all_targets) {
    int64_t total_samples = 0;
    for (const auto& in : inputs) {
      if (!is_npy(in.path)) {
        ++total_samples;
        continue;
      }
      Tensor t = io::load_npy(in.path);
      total_samples += t.ndim() == 4 ? t.dim(0) : 1;
    }
    if (int64_t(targets.size()) != total_samples)
      throw Error("--target lists " + std::to_string(targets.size()) + " classes for " + std::to_string(total_samples) +
                  " input samples: give one class for all, one per sample, or --all-targets to explain every sample "
                  "for each listed class");
  }

  io::OverlayStyle style;
  if (!io::parse_colormap(o.colormap, &style.colormap))
    throw Error("--colormap: '" + o.colormap + "' is not ramp, jet or gray");
  if (!(o.overlay_opacity >= 0 && o.overlay_opacity <= 1)) throw Error("--overlay-opacity must be in [0, 1]");
  style.opacity = float(o.overlay_opacity);
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) throw file_error(o.out, "cannot create output directory (" + ec.message() + ")");

  nn::Context ctx;
  setup_device(o.dev, ctx);
  // A shard takes the inputs whose index in the expanded list has index % N == shard, writes its
  // index as results-<i>-of-<N>.jsonl and, when it has finished, results-<i>-of-<N>.json (its
  // inputs and settings), which `parchgrad merge-results` checks and joins in input order.
  std::vector<size_t> mine;
  for (size_t i = 0; i < inputs.size(); ++i)
    if (sh.owns(int64_t(i))) mine.push_back(i);
  // Per-sample lists (--target, --sg-noise [M, S, ...]) are indexed by the sample's position in
  // the whole run: the samples of the inputs before it (a .npy's rows; an unreadable input
  // counts one), in a whole run as in a shard.
  const bool numbered = (targets.size() > 1 && !o.all_targets) || !o.m.sg_noise.empty();
  std::vector<int64_t> first_sample(inputs.size() + 1, 0);
  if (numbered)
    for (size_t i = 0; i < inputs.size(); ++i) {
      int64_t n = 1;
      if (is_npy(inputs[i].path)) {
        try {
          const Tensor t = io::load_npy(inputs[i].path);
          n = t.ndim() == 4 ? t.dim(0) : 1;
        } catch (const Error&) {
        }
      }
      first_sample[i + 1] = first_sample[i] + n;
    }
  // Target sets per sample: every listed class (--all-targets), K (topK), else one.
  const int64_t nsets = o.all_targets ? int64_t(targets.size()) : topk ? int64_t(std::stoi(o.target.substr(3))) : 1;

  // Resumption. Every record carries "settings_id", the hash of this identity: every setting
  // that changes a record or an output file (the settings the records list, the files they
  // name as given and by content, --compare, --target, --all-targets, --explain-masks, the
  // class names, the device and its settings; with per-sample lists, the inputs and their
  // sample counts, which give each sample its place in the run), and "input_hash", the
  // content_hash of its input file. An input is skipped (resumed) when the folder's index (a
  // shard's own, then results.jsonl) holds all its records (samples x target sets, in order,
  // of the targets this run would explain) with this settings_id and its input's content,
  // every file they list exists, and they name the files this run would write (the same
  // names: the inputs before it reserved theirs). Anything else is computed and replaces its
  // earlier entries; a record without settings_id (an older version's) is never resumed.
  json identity = settings_json(o.m);
  identity.update({{"format", "parchgrad saliency resume 1"}, {"method", o.method}, {"parchgrad", o.parchgrad},
                   {"compare", o.compare}, {"target", o.target}, {"all_targets", o.all_targets},
                   {"explain_masks", o.explain_masks}, {"model", model->arch()}, {"weights", o.weights},
                   {"weights_hash", content_hash(o.weights)}, {"batch", o.batch}, {"colormap", o.colormap},
                   {"overlay_opacity", o.overlay_opacity}, {"preprocess", api::preprocess_json(pp)},
                   {"device", o.dev.device}});
  if (o.dev.device == "cuda")
    identity.update({{"precision", o.dev.precision}, {"dgrad", o.dev.dgrad}, {"deterministic", o.dev.deterministic}});
  auto hash_if_file = [](const std::string& path) {
    std::error_code e;
    return !path.empty() && fs::is_regular_file(path, e) ? content_hash(path) : std::string();
  };
  identity["stats_hash"] = hash_if_file(o.m.stats);
  identity["sg_noise_hash"] = hash_if_file(o.m.sg_noise);
  if (o.m.ig_baseline != "zero" && o.m.ig_baseline != "black" && o.m.ig_baseline != "blurred")
    identity["ig_baseline_hash"] = hash_if_file(o.m.ig_baseline);
  {
    std::string joined;
    for (const auto& n : names) joined += n + "\n";
    identity["class_names"] = text_hash(joined);
    if (numbered) {
      std::string list;
      for (size_t i = 0; i < inputs.size(); ++i)
        list += inputs[i].path + "\t" + std::to_string(first_sample[i + 1] - first_sample[i]) + "\n";
      identity["samples"] = text_hash(list);
    }
  }
  const std::string settings_id = text_hash(identity.dump());

  io::Progress progress(sh.active ? "saliency " + sh.text() : "saliency", int64_t(mine.size()));
  std::set<std::string> used_names;
  int failed = 0;
  std::vector<Sample> pending;
  const std::string results_name = sh.active ? "results-" + sh.tag() : "results";
  const std::string results_path = (fs::path(o.out) / (results_name + ".jsonl")).string();
  const std::string folder_path = (fs::path(o.out) / "results.jsonl").string();
  const std::string manifest_path = (fs::path(o.out) / (results_name + ".json")).string();
  if (sh.active) fs::remove(manifest_path, ec);  // written again when this shard has finished
  if (sh.active && o.no_resume) fs::remove(results_path, ec);  // a shard's index is its job's alone
  // Before any work: refuses a foreign file, and drops a partial last line a killed run left
  // (this run's lines are appended after it).
  if (fs::exists(results_path)) reindex_results(results_path);
  const std::vector<ResultsLine> own = read_results_lines(results_path, false);
  std::vector<ResultsLine> folder;  // a shard's: the folder's index (an earlier whole or merged run)
  // input path -> its records of this settings_id, in the index's order
  std::map<std::string, std::vector<size_t>> earlier_own, earlier_folder;
  if (!o.no_resume) {
    std::set<std::string> my_paths;
    for (size_t i : mine) my_paths.insert(inputs[i].path);
    if (sh.active && fs::exists(folder_path, ec)) folder = read_results_lines(folder_path, true);
    for (int from = 0; from < 2; ++from) {
      const std::vector<ResultsLine>& lines = from ? folder : own;
      auto& by_input = from ? earlier_folder : earlier_own;
      for (size_t n = 0; n < lines.size(); ++n)
        if (lines[n].settings_id == settings_id && my_paths.count(lines[n].input)) by_input[lines[n].input].push_back(n);
    }
  }
  // The files a record of output name `name` lists (files_of's order).
  auto files_for = [&](const std::string& name) {
    std::vector<std::string> f;
    for (size_t ci = 0; ci < configs.size(); ++ci) {
      const std::string suffix = configs.size() > 1 ? "." + configs[ci].label : "";
      f.push_back((fs::path(o.out) / (name + suffix + ".npy")).string());
      if (configs.size() == 1) f.push_back((fs::path(o.out) / (name + ".png")).string());
      if (o.explain_masks && configs[ci].hook) f.push_back((fs::path(o.out) / (name + suffix + ".masks.json")).string());
    }
    if (configs.size() > 1) f.push_back((fs::path(o.out) / (name + ".compare.png")).string());
    return f;
  };
  // An earlier run's records of one input that pass the checks needing no output names.
  struct Resumable {
    std::vector<const ResultsLine*> recs;
    bool carried = false;  // from the folder's results.jsonl into a shard's index
    int64_t samples = 0;
  };
  // Reads the input (its content hash, a .npy's sample count): thread-safe, run by the loader.
  auto precheck = [&](size_t i, Resumable* r) {
    const std::string& path = inputs[i].path;
    const auto in_own = earlier_own.find(path), in_folder = earlier_folder.find(path);
    if (in_own == earlier_own.end() && in_folder == earlier_folder.end()) return false;
    std::string hash;
    int64_t S = 1;
    try {
      if (is_npy(path)) {
        const Tensor t = io::load_npy(path);
        S = t.ndim() == 4 ? t.dim(0) : 1;
      }
      hash = content_hash(path);
    } catch (const Error&) {
      return false;  // (computed: loading it says what is wrong)
    }
    for (int from = 0; from < 2; ++from) {
      const auto it = from ? in_folder : in_own;
      if (it == (from ? earlier_folder.end() : earlier_own.end())) continue;
      const std::vector<ResultsLine>& lines = from ? folder : own;
      if (int64_t(it->second.size()) != S * nsets) continue;  // a killed run's part of the input
      bool ok = true;
      for (size_t k = 0; k < it->second.size() && ok; ++k) {
        const ResultsLine& l = lines[it->second[k]];
        const int64_t n = int64_t(k) / nsets, j = int64_t(k) % nsets;
        const int want = o.all_targets           ? targets[size_t(j)]
                         : topk                  ? -1
                         : targets.size() == 1   ? targets[0]
                                                 : targets[size_t(first_sample[i] + n)];
        ok = l.input_hash == hash && l.index == (S > 1 ? n : -1) && l.target >= 0 && (want < 0 || l.target == want) &&
             !l.files.empty();
        for (const auto& f : l.files) {
          std::error_code e;
          ok = ok && fs::is_regular_file(f, e);
        }
      }
      if (!ok) continue;
      r->recs.clear();
      for (size_t n : it->second) r->recs.push_back(&lines[n]);
      r->carried = from == 1;
      r->samples = S;
      return true;
    }
    return false;
  };
  // The output names the records of r have, when they are the ones this run would give them
  // (in order, after the names the inputs before it took); false otherwise.
  auto names_match = [&](size_t i, const Resumable& r, std::vector<std::string>* got) {
    for (size_t k = 0; k < r.recs.size(); ++k) {
      const ResultsLine& l = *r.recs[k];
      const int64_t n = int64_t(k) / nsets;
      const std::string sample = r.samples > 1 ? inputs[i].name + "_" + std::to_string(n) : inputs[i].name;
      const std::string stem = nsets > 1 ? sample + "_c" + std::to_string(l.target) : sample;
      std::string name = stem;
      for (int c = 2; used_names.count(name) || std::count(got->begin(), got->end(), name); ++c)
        name = stem + "_" + std::to_string(c);
      if (files_for(name) != l.files) return false;
      got->push_back(name);
    }
    return true;
  };
  // An output name for stem: the first of stem, stem_2, stem_3, ... no earlier record took.
  auto reserve = [&](const std::string& stem) {
    std::string name = stem;
    for (int k = 2; used_names.count(name); ++k) name = stem + "_" + std::to_string(k);
    used_names.insert(name);
    return name;
  };
  // The index's final order (reindex_results): the resumed lines and those this run appends,
  // ranked by their input's position.
  std::map<size_t, int64_t> resumed_rank;  // line of `own` -> rank
  std::vector<int64_t> appended_rank;      // per line appended, in order
  int64_t sample_counter = 0;

  auto flush = [&]() {
    if (pending.empty()) return;
    const int64_t B = int64_t(pending.size());
    const auto s0 = pending[0].shape();
    std::vector<int> tg;
    for (const Sample& s : pending) tg.push_back(s.target);
    // A batch of images goes to the device as uint8 and is normalised there; the host copy is
    // made only for the methods that build their inputs on the host (IG, SmoothGrad).
    const bool u8_batch = std::all_of(pending.begin(), pending.end(), [](const Sample& s) { return s.x.empty(); });
    Tensor x, xdev;
    if (u8_batch) {
      std::vector<uint8_t> rgb;
      rgb.reserve(size_t(B) * s0[1] * s0[2] * 3);
      for (const Sample& s : pending) rgb.insert(rgb.end(), s.crop.rgb.begin(), s.crop.rgb.end());
      xdev = nn::device_backend().normalize_u8(rgb.data(), int(B), int(s0[1]), int(s0[2]), pp.mean, pp.std);
      if (host_input) x = xdev.to(Device::cpu);
    } else {
      x = Tensor({B, s0[0], s0[1], s0[2]});
      for (int64_t b = 0; b < B; ++b) {
        Sample& s = pending[b];
        if (s.x.empty()) s.x = io::normalize_rgb(s.crop, pp.mean, pp.std);
        std::copy(s.x.data(), s.x.data() + s.x.numel(), x.data() + b * s.x.numel());
      }
    }
    const Tensor& xin = x.empty() ? xdev : x;
    std::vector<std::vector<int>> sets;
    if (o.all_targets) {
      for (int t : targets) sets.push_back({t});
    } else {
      sets = target_sets_for(o.target, tg);
    }
    // explanations[config][set]
    std::vector<std::vector<Explanation>> exps;
    std::vector<int64_t> ids;
    for (const Sample& s : pending) ids.push_back(s.run_index);
    for (auto& c : configs) exps.push_back(api::saliency_batch(*model, ctx, xin, sets, c, ids));
    const int64_t H = xin.dim(2), W = xin.dim(3);
    std::vector<json> records;
    for (int64_t b = 0; b < B; ++b) {
      Sample& s = pending[b];
      const io::Image8 base = s.crop.rgb.empty() ? io::denormalize_imagenet(s.x) : s.crop;
      for (size_t j = 0; j < sets.size(); ++j) {
        const int t = exps[0][j].targets[b];
        // (Names are reserved as the samples are queued, but topK's, which its targets give.)
        const std::string name = topk ? reserve(s.name + "_c" + std::to_string(t)) : s.names.at(j);
        // A file of a sub-folder of a given directory: its outputs go to the same sub-folder.
        if (name.find('/') != std::string::npos) {
          std::error_code ec;
          const fs::path dir = (fs::path(o.out) / name).parent_path();
          fs::create_directories(dir, ec);
          if (ec) throw file_error(dir.string(), "cannot create output directory (" + ec.message() + ")");
        }
        json line = {{"input", s.input}, {"target", t}, {"target_prob", exps[0][j].probs[b * exps[0][j].probs.dim(1) + t]},
                     {"top5", top_k(exps[0][j].probs, b, 5, names)}};
        if (s.index >= 0) line["index"] = s.index;
        if (!names.empty()) line["target_name"] = names[t];
        std::vector<io::Image8> overlays;
        std::vector<std::string> labels;
        json outputs = json::array();
        for (size_t ci = 0; ci < configs.size(); ++ci) {
          const Explanation& e = exps[ci][j];
          Tensor map = e.maps.slice0(b, b + 1).reshape({H, W});
          const std::string suffix = configs.size() > 1 ? "." + configs[ci].label : "";
          const std::string npy = (fs::path(o.out) / (name + suffix + ".npy")).string();
          io::save_npy(npy, map);
          json out = {{"config", configs[ci].label}, {"map", npy}};
          if (configs.size() == 1) {
            const std::string png = (fs::path(o.out) / (name + ".png")).string();
            io::save_overlay_png(png, base, map, style);
            out["overlay"] = png;
          } else {
            overlays.push_back(io::render_overlay(base, map, style));
            labels.push_back(configs[ci].label);
          }
          if (o.explain_masks && configs[ci].hook) {
            const std::string mj = (fs::path(o.out) / (name + suffix + ".masks.json")).string();
            write_text_atomic(mj, json({{"input", s.input}, {"target", t}, {"config", configs[ci].label},
                                        {"layers", layers_json(e.layers.empty() ? std::vector<LayerExplain>{} : e.layers[b])}})
                                      .dump() + "\n");
            out["masks"] = mj;
          }
          outputs.push_back(out);
        }
        if (!overlays.empty()) {
          const std::string png = (fs::path(o.out) / (name + ".compare.png")).string();
          io::save_png(png, strip(base, overlays, labels));
          line["compare"] = png;
        }
        line["outputs"] = outputs;
        json settings = settings_json(o.m);
        settings.update({{"method", o.method}, {"parchgrad", o.parchgrad}, {"model", model->arch()},
                         {"weights", o.weights}, {"input_size", {H, W}}, {"batch", o.batch},
                         {"colormap", o.colormap}, {"overlay_opacity", o.overlay_opacity}});
        if (s.index < 0 && !s.crop.rgb.empty()) settings["preprocess"] = api::preprocess_json(pp);
        line["settings"] = settings;
        line["settings_id"] = settings_id;
        line["input_hash"] = s.input_hash;
        records.push_back(std::move(line));
        appended_rank.push_back(int64_t(s.pos));
      }
    }
    append_json_lines(results_path, records);
    pending.clear();
  };

  // On the device, the next inputs are decoded on two CPU threads while a batch runs; the loader
  // also makes the checks of a resume that need no output names.
  struct LoadedInput {
    std::vector<Sample> samples;
    Resumable resume;
    bool resumable = false;
  };
  const bool prefetch = ctx.device == Device::cuda;
  io::Prefetcher<LoadedInput> loader(
      mine.size(),
      [&](size_t k) {
        LoadedInput l;
        if (!o.no_resume && precheck(mine[k], &l.resume)) l.resumable = true;
        else l.samples = load_input(inputs[mine[k]], prefetch, pp);
        return l;
      },
      prefetch ? size_t(2 * o.batch) : 1, prefetch ? 2 : 0);
  for (size_t k = 0; k < mine.size(); ++k) {
    const size_t i = mine[k];
    if (numbered) sample_counter = first_sample[i];
    LoadedInput l;
    auto failed_input = [&](const Error& e) {
      std::fprintf(stderr, "parchgrad: error: %s\n", e.what());
      ++failed;
      progress.skip();
    };
    try {
      l = loader.next();
    } catch (const Error& e) {
      failed_input(e);
      continue;
    }
    if (l.resumable) {
      if (topk) flush();  // the queued samples' names are known once they are explained
      std::vector<std::string> got;
      if (names_match(i, l.resume, &got)) {
        used_names.insert(got.begin(), got.end());
        if (l.resume.carried) {  // into the shard's own index
          std::vector<std::string> texts;
          for (const ResultsLine* r : l.resume.recs) texts.push_back(r->text);
          append_text_lines(results_path, texts);
          appended_rank.insert(appended_rank.end(), texts.size(), int64_t(k));
        } else {
          for (const ResultsLine* r : l.resume.recs) resumed_rank[size_t(r - own.data())] = int64_t(k);
        }
        sample_counter += l.resume.samples;
        progress.resume();
        continue;
      }
      try {
        l.samples = load_input(inputs[i], prefetch, pp);
      } catch (const Error& e) {
        failed_input(e);
        continue;
      }
    }
    for (auto& s : l.samples) {
      s.target = (targets.size() == 1 || o.all_targets) ? targets[0] : targets[sample_counter];
      s.run_index = sample_counter;
      s.pos = k;
      ++sample_counter;
      if (!topk)
        for (int64_t j = 0; j < nsets; ++j)
          s.names.push_back(reserve(nsets > 1 ? s.name + "_c" + std::to_string(targets[size_t(j)]) : s.name));
      if (!pending.empty() && (pending[0].shape() != s.shape() || int(pending.size()) >= o.batch)) flush();
      pending.push_back(std::move(s));
    }
    if (int(pending.size()) >= o.batch) flush();
    progress.advance();
  }
  flush();
  // The index in input order: the lines of other runs that stay (none in a shard's index), then
  // this run's, resumed or written, by input.
  std::vector<int64_t> rank(own.size() + appended_rank.size(), -1);
  for (const auto& [line, r] : resumed_rank) rank[line] = r;
  std::copy(appended_rank.begin(), appended_rank.end(), rank.begin() + std::ptrdiff_t(own.size()));
  const size_t replaced = reindex_results(results_path, rank, sh.active);
  if (sh.active) {
    json listed = json::array();
    for (size_t i : mine) listed.push_back({i, inputs[i].path});
    json settings = settings_json(o.m);
    settings.update({{"method", o.method}, {"parchgrad", o.parchgrad}, {"compare", o.compare}, {"target", o.target},
                     {"all_targets", o.all_targets}, {"model", model->arch()}, {"batch", o.batch},
                     {"colormap", o.colormap}, {"overlay_opacity", o.overlay_opacity}});
    write_text_atomic(manifest_path, json({{"parchgrad", "saliency shard"}, {"shard", sh.index}, {"shards", sh.count},
                                           {"weights_hash", content_hash(o.weights)}, {"settings", settings},
                                           {"inputs_total", inputs.size()}, {"inputs", listed}, {"failed", failed},
                                           {"results", results_name + ".jsonl"}})
                                          .dump(1) + "\n");
  }
  progress.summary("outputs and " + results_name + ".jsonl in " + o.out +
                   (replaced ? " (" + std::to_string(replaced) + (replaced == 1 ? " entry" : " entries") +
                                " of an earlier run replaced)"
                              : ""));
  if (failed && !is_gpu_worker(o.dev)) {  // (a worker's failures are counted in its manifest, for the merge)
    if (mine.size() > 1)
      std::fprintf(stderr, "parchgrad: error: %d of %zu inputs failed\n", failed, mine.size());
    throw ExitCode(1);
  }
}

// `saliency --gpu all` (tools/cli/gpu_all.h): worker k of G explains the inputs k, k + G, ...
// on device k into results-k-of-G.jsonl/.json (and the maps into the folder, as a shard does);
// merge-results then joins the indexes into results.jsonl, and the shard indexes are removed.
void run_saliency_all(const SaliencyOptions& opts) {
  const size_t inputs = expand_inputs(opts.inputs).size();
  GpuAllJob job;
  job.command = "saliency";
  job.threads = opts.threads;
  job.work = worker_body(opts, run_saliency);
  job.merge = [&](int G) {
    std::vector<std::string> shards;
    for (int k = 0; k < G; ++k)
      shards.push_back((fs::path(opts.out) / ("results-" + worker_shard(k, G).tag() + ".jsonl")).string());
    const int failed = merge_saliency_results(shards, "", true);
    std::error_code ec;
    for (const auto& jsonl : shards) {
      fs::remove(jsonl, ec);
      fs::remove(jsonl.substr(0, jsonl.size() - 1), ec);  // its .json
    }
    GpuAllMerged m;
    m.outputs = "outputs and results.jsonl in " + opts.out;
    if (failed) m.error = std::to_string(failed) + " of " + std::to_string(inputs) + " inputs failed";
    return m;
  };
  run_on_all_gpus(job);
}

struct GradientOptions {
  DeviceFlags dev;
  std::string weights, model, input, target = "top1", logits_out, grad_out;
  std::string shard;  // i/N or auto: the batch's rows n with n % N == i
  int threads = 0;
};

void run_gradient(const GradientOptions& opts) {
  GradientOptions o = opts;
  set_threads(o.threads);
  const Shard sh = parse_shard(o.shard);
  // Every process of `--shard auto` is given the same outputs: its shard's tag names its files.
  for (std::string* out : {&o.logits_out, &o.grad_out})
    if (sh.active && !out->empty()) *out = shard_file_name(*out, sh, o.shard == "auto");
  // Outputs are checked before any work; when the second cannot be written the first is
  // removed, so a failed run leaves neither.
  if (!o.logits_out.empty()) check_output_file("--logits-out", o.logits_out);
  if (!o.grad_out.empty()) check_output_file("--grad-out", o.grad_out);
  Tensor x = io::load_npy(o.input);
  if (x.ndim() == 3) x = x.reshape({1, x.dim(0), x.dim(1), x.dim(2)});
  check_input(x, o.input);
  auto model = nn::load_model(o.weights, o.model);
  std::vector<int> targets = parse_targets(o.target, weights::class_names_for(o.weights, "", model->num_classes()));
  // A shard: the rows n % N == i of the batch, in order (the outputs hold those rows; stdout
  // names them), with their own entries of a per-sample --target list.
  std::vector<int64_t> rows;
  if (sh.active) {
    for (int64_t n = 0; n < x.dim(0); ++n)
      if (sh.owns(n)) rows.push_back(n);
    if (rows.empty())
      throw file_error(o.input, "has " + std::to_string(x.dim(0)) + " samples, none of them in shard " + sh.text());
    const int64_t per = x.numel() / x.dim(0);
    Tensor mine({int64_t(rows.size()), x.dim(1), x.dim(2), x.dim(3)});
    std::vector<int> mine_targets;
    for (size_t k = 0; k < rows.size(); ++k) {
      std::copy(x.data() + rows[k] * per, x.data() + (rows[k] + 1) * per, mine.data() + int64_t(k) * per);
      if (targets.size() > 1 && int64_t(targets.size()) == x.dim(0)) mine_targets.push_back(targets[size_t(rows[k])]);
    }
    x = mine;
    if (!mine_targets.empty()) targets = mine_targets;
  }
  for (int t : targets)
    if (t >= model->num_classes())
      throw Error("--target " + std::to_string(t) + " is out of range for " + o.weights + " (" +
                  std::to_string(model->num_classes()) + " classes)");
  nn::Context ctx;
  setup_device(o.dev, ctx);
  GradientResult r = input_gradient(*model, ctx, x, targets);
  if (!o.logits_out.empty()) io::save_npy(o.logits_out, r.logits);
  try {
    if (!o.grad_out.empty()) io::save_npy(o.grad_out, r.grad);
  } catch (...) {
    std::error_code ec;
    if (!o.logits_out.empty()) fs::remove(o.logits_out, ec);
    throw;
  }
  json line = {{"model", model->arch()}, {"targets", r.targets}};
  if (sh.active) line.update({{"shard", sh.text()}, {"samples", rows}});
  std::printf("%s", line.dump().append("\n").c_str());
}

// `gradient --gpu all`: worker k of G computes the rows n with n % G == k on device k (with its
// own model); the rows are put back in order into the outputs one run writes, and the line on
// stdout is one run's.
void run_gradient_all(const GradientOptions& opts) {
  const GradientOptions& o = opts;
  if (!o.logits_out.empty()) check_output_file("--logits-out", o.logits_out);
  if (!o.grad_out.empty()) check_output_file("--grad-out", o.grad_out);
  Tensor x = io::load_npy(o.input);
  if (x.ndim() == 3) x = x.reshape({1, x.dim(0), x.dim(1), x.dim(2)});
  check_input(x, o.input);
  const int64_t N = x.dim(0), per = x.numel() / N;
  struct Part {
    std::vector<int64_t> rows;
    Tensor logits, grad;  // on the host
    std::vector<int> targets;
    std::string arch;
  };
  std::mutex mu;
  std::map<int, Part> parts;
  GpuAllJob job;
  job.command = "gradient";
  job.threads = o.threads;
  job.work = [&](int k, int G) {
    Part p;
    for (int64_t n = k; n < N; n += G) p.rows.push_back(n);
    if (p.rows.empty()) return;  // more devices than rows
    auto model = nn::load_model(o.weights, o.model);
    std::vector<int> targets = parse_targets(o.target, weights::class_names_for(o.weights, "", model->num_classes()));
    Tensor mine({int64_t(p.rows.size()), x.dim(1), x.dim(2), x.dim(3)});
    std::vector<int> mine_targets;
    for (size_t j = 0; j < p.rows.size(); ++j) {
      std::copy(x.data() + p.rows[j] * per, x.data() + (p.rows[j] + 1) * per, mine.data() + int64_t(j) * per);
      if (targets.size() > 1 && int64_t(targets.size()) == N) mine_targets.push_back(targets[size_t(p.rows[j])]);
    }
    if (!mine_targets.empty()) targets = mine_targets;
    for (int t : targets)
      if (t >= model->num_classes())
        throw Error("--target " + std::to_string(t) + " is out of range for " + o.weights + " (" +
                    std::to_string(model->num_classes()) + " classes)");
    DeviceFlags dev = o.dev;
    dev.worker = k;
    dev.workers = G;
    dev.gpu = std::to_string(k);
    nn::Context ctx;
    setup_device(dev, ctx);
    GradientResult r = input_gradient(*model, ctx, mine, targets);
    // Brought to the host here: the device's tensors stay in the thread of their device.
    p.logits = r.logits.to(Device::cpu);
    if (!o.grad_out.empty()) p.grad = r.grad.to(Device::cpu);
    p.targets = r.targets;
    p.arch = model->arch();
    std::lock_guard<std::mutex> lk(mu);
    parts[k] = std::move(p);
  };
  job.merge = [&](int) {
    const int64_t K = parts.begin()->second.logits.dim(1);
    Tensor logits({N, K}), grad;
    if (!o.grad_out.empty()) grad = Tensor(x.shape());
    std::vector<int> targets(size_t(N), -1);
    for (const auto& [k, p] : parts)
      for (size_t j = 0; j < p.rows.size(); ++j) {
        const int64_t n = p.rows[j];
        std::copy(p.logits.data() + int64_t(j) * K, p.logits.data() + int64_t(j + 1) * K, logits.data() + n * K);
        if (!grad.empty())
          std::copy(p.grad.data() + int64_t(j) * per, p.grad.data() + int64_t(j + 1) * per, grad.data() + n * per);
        targets[size_t(n)] = p.targets.at(j);
      }
    if (!o.logits_out.empty()) io::save_npy(o.logits_out, logits);
    try {
      if (!o.grad_out.empty()) io::save_npy(o.grad_out, grad);
    } catch (...) {
      std::error_code ec;
      if (!o.logits_out.empty()) fs::remove(o.logits_out, ec);
      throw;
    }
    std::printf("%s", json({{"model", parts.begin()->second.arch}, {"targets", targets}}).dump().append("\n").c_str());
    return GpuAllMerged{};
  };
  job.summary = false;  // one run prints no progress either
  run_on_all_gpus(job);
}

}  // namespace

void register_saliency(CLI::App& app) {
  auto so = std::make_shared<SaliencyOptions>();
  CLI::App* s = app.add_subcommand("saliency", "Gradient saliency maps for images or .npy tensors");
  s->add_option("--weights", so->weights, "torchvision state dict (.pth or .safetensors)")->required();
  s->add_option("--model", so->model, "architecture (inferred from the weights when omitted)");
  s->add_option("--target", so->target,
                "class id or name, top1, topK, or a comma-separated list: one class per sample (or every listed class "
                "for every sample with --all-targets)");
  s->add_option("--colormap", so->colormap, "overlay colour map: ramp, jet or gray")->capture_default_str();
  s->add_option("--overlay-opacity", so->overlay_opacity, "weight of the colour where the map is at its top, in [0, 1]")
      ->capture_default_str();
  s->add_flag("--all-targets", so->all_targets, "explain every input for each class of the --target list (<name>_c<class>)");
  s->add_option("-o,--out", so->out, "output directory")->capture_default_str();
  s->add_option("--classes", so->classes, "class names file, one per line");
  add_device_flags(s, so->dev);
  add_saliency_flags(s, *so);  // --method, --parchgrad, --batch, --threads
  add_method_flags(s, so->m);
  s->add_flag("--no-resume", so->no_resume,
              "recompute every input instead of skipping those whose records and files an earlier run of the same "
              "settings left in the folder");
  s->add_flag("--explain-masks", so->explain_masks, "write <name>.masks.json: kept channels, M, N, beta per layer");
  s->add_option("--compare", so->compare, "methods side by side, e.g. grad,grad+cls,grad+ins,ig (one PNG strip each)");
  s->add_option("--shard", so->shard,
                "i/N: explain the inputs whose index % N == i (results-i-of-N.jsonl; see merge-results); auto: i and "
                "N from the launcher (Slurm, Open MPI, PMI)");
  s->add_option("inputs", so->inputs, "images (.png, .jpg), .npy tensors or directories")->required();
  s->callback([so, s]() {
    // Options that would do nothing are errors, not silently ignored.
    if (s->count("--compare") && so->compare.empty()) throw Error("--compare: empty list");
    if (!so->compare.empty() && (s->count("--method") || s->count("--parchgrad")))
      throw Error("--method and --parchgrad do nothing with --compare: name each configuration in the list "
                  "(e.g. --compare grad,grad+cls,ig+ins)");
    if (gpu_all_requested(so->dev, so->shard))
      run_saliency_all(*so);
    else
      run_saliency(*so);
  });

  auto go = std::make_shared<GradientOptions>();
  CLI::App* g = app.add_subcommand("gradient", "Logits and input gradient of a .npy input, as .npy");
  g->add_option("--weights", go->weights, "torchvision state dict (.pth or .safetensors)")->required();
  g->add_option("--model", go->model, "architecture (inferred from the weights when omitted)");
  g->add_option("--input", go->input, "float32 .npy, [3,H,W] or [N,3,H,W], already normalised")->required();
  g->add_option("--target", go->target, "class id, top1, or one per sample (comma-separated)");
  g->add_option("--logits-out", go->logits_out, "write logits [N,K] here");
  g->add_option("--grad-out", go->grad_out, "write dL/dx [N,3,H,W] here");
  g->add_option("--threads", go->threads, "CPU threads (default: all cores)");
  g->add_option("--shard", go->shard,
                "i/N: only the samples n with n % N == i (the outputs hold those rows; stdout lists them); auto: i "
                "and N from the launcher (Slurm, Open MPI, PMI)");
  add_device_flags(g, go->dev);
  g->callback([go]() {
    if (gpu_all_requested(go->dev, go->shard))
      run_gradient_all(*go);
    else
      run_gradient(*go);
  });
}

}  // namespace pg::cli
