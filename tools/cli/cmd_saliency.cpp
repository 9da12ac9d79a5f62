// `parchgrad saliency` (maps, overlays and JSON lines for images and .npy inputs) and
// `parchgrad gradient` (the exact-tensor path: logits and input gradient as .npy).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "nn/error.h"
#include "nn/model.h"
#include "parchgrad/attribution.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/lib/image_io.h"
#include "tools/lib/progress.h"
#include "weights/class_names.h"

namespace pg::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct SaliencyOptions {
  std::string weights, model, target = "top1", out = "saliency_out", classes;
  std::vector<std::string> inputs;
  int batch = 8, threads = 0;
};

// One sample to explain: where it came from and the tensor the model sees.
struct Sample {
  std::string input;  // file path
  int index = -1;     // sample index inside a batched .npy, else -1
  std::string name;   // output file stem
  Tensor x;           // [3, H, W]
  int target = -1;
};

// Loads one input file into samples (a batched .npy gives several).
std::vector<Sample> load_input(const std::string& path) {
  std::vector<Sample> out;
  const std::string stem = fs::path(path).stem().string();
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
    s.x = io::preprocess_imagenet(io::load_image_rgb(path));
    out.push_back(s);
  }
  return out;
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

void run_saliency(const SaliencyOptions& o) {
  set_threads(o.threads);
  if (o.batch < 1) throw Error("--batch must be at least 1");
  const std::vector<int> targets = parse_targets(o.target);
  const std::vector<std::string> inputs = expand_inputs(o.inputs);
  auto model = nn::load_model(o.weights, o.model);
  for (int t : targets)
    if (t >= model->num_classes())
      throw Error("--target " + std::to_string(t) + " is out of range for " + o.weights + " (" +
                  std::to_string(model->num_classes()) + " classes)");
  if (targets.size() > 1 && targets.size() != inputs.size())
    throw Error("--target lists " + std::to_string(targets.size()) + " classes for " + std::to_string(inputs.size()) +
                " inputs (give one, or one per input)");
  const auto names = weights::class_names_for(o.weights, o.classes, model->num_classes());
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec) throw file_error(o.out, "cannot create output directory (" + ec.message() + ")");

  nn::Context ctx;
  io::Progress progress("saliency", int64_t(inputs.size()));
  std::set<std::string> used_names;
  int failed = 0;
  std::vector<Sample> pending;
  const std::string results_path = (fs::path(o.out) / "results.jsonl").string();

  auto flush = [&]() {
    if (pending.empty()) return;
    const int64_t B = int64_t(pending.size());
    const auto& s0 = pending[0].x.shape();
    Tensor x({B, s0[0], s0[1], s0[2]});
    std::vector<int> tg;
    for (int64_t b = 0; b < B; ++b) {
      std::copy(pending[b].x.data(), pending[b].x.data() + pending[b].x.numel(), x.data() + b * pending[b].x.numel());
      tg.push_back(pending[b].target);
    }
    GradientResult r = input_gradient(*model, ctx, x, tg);
    Tensor maps = gradient_map(r.grad);
    const int64_t H = maps.dim(1), W = maps.dim(2);
    std::ofstream results(results_path, std::ios::app);
    if (!results) throw file_error(results_path, "cannot append");
    for (int64_t b = 0; b < B; ++b) {
      Sample& s = pending[b];
      std::string name = s.name;
      for (int k = 2; used_names.count(name); ++k) name = s.name + "_" + std::to_string(k);
      used_names.insert(name);
      Tensor map = maps.slice0(b, b + 1).reshape({H, W});
      const std::string npy = (fs::path(o.out) / (name + ".npy")).string();
      const std::string png = (fs::path(o.out) / (name + ".png")).string();
      io::save_npy(npy, map);
      io::save_overlay_png(png, io::denormalize_imagenet(s.x), map);
      const int t = r.targets[b];
      json line = {{"input", s.input},
                   {"target", t},
                   {"target_prob", r.probs[b * r.probs.dim(1) + t]},
                   {"top5", top_k(r.probs, b, 5, names)},
                   {"map", npy},
                   {"overlay", png},
                   {"settings", {{"method", "grad"}, {"model", model->arch()}, {"weights", o.weights},
                                 {"input_size", {H, W}}, {"batch", o.batch}}}};
      if (s.index >= 0) line["index"] = s.index;
      if (!names.empty()) line["target_name"] = names[t];
      results << line.dump() << "\n";
    }
    results.flush();
    if (!results) throw file_error(results_path, "write failed");
    pending.clear();
  };

  for (size_t i = 0; i < inputs.size(); ++i) {
    std::vector<Sample> samples;
    try {
      samples = load_input(inputs[i]);
    } catch (const Error& e) {
      std::fprintf(stderr, "parchgrad: error: %s\n", e.what());
      ++failed;
      progress.advance();
      continue;
    }
    for (auto& s : samples) {
      s.target = targets.size() == 1 ? targets[0] : targets[i];
      if (!pending.empty() && (pending[0].x.shape() != s.x.shape() || int(pending.size()) >= o.batch)) flush();
      pending.push_back(std::move(s));
    }
    if (int(pending.size()) >= o.batch) flush();
    progress.advance();
  }
  flush();
  progress.finish();
  if (failed) {
    if (inputs.size() > 1)
      std::fprintf(stderr, "parchgrad: error: %d of %zu inputs failed\n", failed, inputs.size());
    throw ExitCode(1);
  }
}

struct GradientOptions {
  std::string weights, model, input, target = "top1", logits_out, grad_out;
  int threads = 0;
};

void run_gradient(const GradientOptions& o) {
  set_threads(o.threads);
  const std::vector<int> targets = parse_targets(o.target);
  Tensor x = io::load_npy(o.input);
  if (x.ndim() == 3) x = x.reshape({1, x.dim(0), x.dim(1), x.dim(2)});
  check_input(x, o.input);
  auto model = nn::load_model(o.weights, o.model);
  for (int t : targets)
    if (t >= model->num_classes())
      throw Error("--target " + std::to_string(t) + " is out of range for " + o.weights + " (" +
                  std::to_string(model->num_classes()) + " classes)");
  nn::Context ctx;
  GradientResult r = input_gradient(*model, ctx, x, targets);
  if (!o.logits_out.empty()) io::save_npy(o.logits_out, r.logits);
  if (!o.grad_out.empty()) io::save_npy(o.grad_out, r.grad);
  std::printf("%s", json({{"model", model->arch()}, {"targets", r.targets}}).dump().append("\n").c_str());
}

}  // namespace

void register_saliency(CLI::App& app) {
  auto so = std::make_shared<SaliencyOptions>();
  CLI::App* s = app.add_subcommand("saliency", "Gradient saliency maps for images or .npy tensors");
  s->add_option("--weights", so->weights, "torchvision state dict (.pth or .safetensors)")->required();
  s->add_option("--model", so->model, "architecture (inferred from the weights when omitted)");
  s->add_option("--target", so->target, "class id, top1, or one per input (comma-separated)");
  s->add_option("--out", so->out, "output directory")->capture_default_str();
  s->add_option("--batch", so->batch, "images per batch")->capture_default_str();
  s->add_option("--classes", so->classes, "class names file, one per line");
  s->add_option("--threads", so->threads, "CPU threads (default: all cores)");
  s->add_option("inputs", so->inputs, "images (.png, .jpg), .npy tensors or directories")->required();
  s->callback([so]() { run_saliency(*so); });

  auto go = std::make_shared<GradientOptions>();
  CLI::App* g = app.add_subcommand("gradient", "Logits and input gradient of a .npy input, as .npy");
  g->add_option("--weights", go->weights, "torchvision state dict (.pth or .safetensors)")->required();
  g->add_option("--model", go->model, "architecture (inferred from the weights when omitted)");
  g->add_option("--input", go->input, "float32 .npy, [3,H,W] or [N,3,H,W], already normalised")->required();
  g->add_option("--target", go->target, "class id, top1, or one per sample (comma-separated)");
  g->add_option("--logits-out", go->logits_out, "write logits [N,K] here");
  g->add_option("--grad-out", go->grad_out, "write dL/dx [N,3,H,W] here");
  g->add_option("--threads", go->threads, "CPU threads (default: all cores)");
  g->callback([go]() { run_gradient(*go); });
}

}  // namespace pg::cli
