// `parchgrad eval`: the paper's faithfulness and localisation metrics (method document,
// section 7) for several methods over a labelled image set, with deletion / insertion areas
// and the pointing game; REPORT.jsonl (per image and method, resumable), REPORT.json (means
// and 95% confidence intervals), REPORT.md (the table, also printed) and REPORT.png (curves).
// The numbers of an image (masked copies, forward passes, metrics, its record) are
// parchgrad/evaluation's; this file lists and reads the images, boxes and external maps,
// batches them, keeps the report file and makes the summary.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "capi/saliency.h"
#include "core/error.h"
#include "nn/model.h"
#include "parchgrad/attribution.h"
#include "parchgrad/evaluation.h"
#include "parchgrad/metrics.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/cli/device_flags.h"
#include "tools/cli/gpu_all.h"
#include "tools/cli/method_flags.h"
#include "tools/cli/reports.h"
#include "tools/cli/shard.h"
#include "tools/lib/boxes.h"
#include "tools/lib/image_io.h"
#include "tools/lib/plot.h"
#include "tools/lib/preprocess_presets.h"
#include "tools/lib/progress.h"

namespace pg::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct EvalOptions {
  DeviceFlags dev;
  std::string weights, model, data, labels, boxes, methods, ratios = "0,0.1,0.2,0.3,0.4,0.5", out = "eval_report",
                                                                target = "label";
  int limit = 0, batch = 16, perturb_batch = 64, threads = 0, auc_steps = 20;
  bool no_resume = false;
  std::string shard;  // i/N or auto: this process's share of the images (tools/cli/shard.h)
  MethodFlags m;
  api::SaliencySettings pre;  // only preprocess, resize, crop and interpolation are read
};

// ---------------------------------------------------------------------------------------
// The data set: images with labels, and where their boxes come from.

struct EvalItem {
  std::string path, rel;  // rel: relative to --data (the key into boxes.jsonl)
  int label = -1;
};

std::string rel_key(const std::string& path, const std::string& root) {
  return fs::path(path).lexically_relative(root).lexically_normal().generic_string();
}

bool has_subdirectories(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) return true;
  return false;
}

class BoxSource {
 public:
  // spec: a directory of VOC XML files, a .jsonl file, or empty (none).
  explicit BoxSource(const std::string& spec) : spec_(spec) {
    if (spec.empty()) return;
    std::error_code ec;
    if (fs::is_directory(spec, ec)) {
      xml_dir_ = true;
    } else if (fs::is_regular_file(spec, ec)) {
      jsonl_ = io::read_boxes_jsonl(spec);
    } else {
      throw file_error(spec, "--boxes is neither a directory of Pascal VOC XML files nor a boxes .jsonl file");
    }
  }
  bool enabled() const { return !spec_.empty(); }
  const std::string& spec() const { return spec_; }
  const std::map<std::string, io::JsonlAnnotation>& jsonl() const { return jsonl_; }

  // The annotation of an image, or false when it has none. Throws for a broken annotation.
  bool find(const EvalItem& it, io::Annotation* out) const {
    if (!xml_dir_) {
      auto f = jsonl_.find(it.rel);
      if (f == jsonl_.end()) return false;
      out->boxes = f->second.boxes;
      return true;
    }
    // <dir>/<stem>.xml (ImageNet's validation layout), or <dir>/<class folder>/<stem>.xml.
    const fs::path rel(it.rel);
    const std::string stem = rel.stem().string();
    std::vector<fs::path> candidates = {fs::path(spec_) / (stem + ".xml")};
    if (rel.has_parent_path()) candidates.push_back(fs::path(spec_) / rel.parent_path() / (stem + ".xml"));
    std::error_code ec;
    for (const auto& c : candidates)
      if (fs::is_regular_file(c, ec)) {
        *out = io::read_voc_xml(c.string());
        return true;
      }
    return false;
  }

 private:
  std::string spec_;
  bool xml_dir_ = false;
  std::map<std::string, io::JsonlAnnotation> jsonl_;
};

// An ImageFolder tree, or a flat folder whose boxes.jsonl gives each file's "label".
std::vector<EvalItem> list_items(const EvalOptions& o, const BoxSource& boxes, int num_classes) {
  std::vector<EvalItem> items;
  std::error_code ec;
  if (!fs::is_directory(o.data, ec)) throw file_error(o.data, "not a directory");
  if (has_subdirectories(o.data)) {
    for (const auto& d : list_dataset(o.data, o.labels, num_classes))
      items.push_back({d.path, rel_key(d.path, o.data), d.label});
    return items;
  }
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(o.data, ec))
    if (e.is_regular_file() && is_data_file(e.path())) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) throw file_error(o.data, "no .png, .jpg, .jpeg or .npy files and no class folders");
  if (boxes.jsonl().empty())
    throw file_error(o.data, "has no class folders; a flat folder needs --boxes FILE.jsonl with a \"label\" per file");
  for (const auto& f : files) {
    EvalItem it{f, rel_key(f, o.data), -1};
    auto a = boxes.jsonl().find(it.rel);
    if (a != boxes.jsonl().end()) it.label = a->second.label;
    items.push_back(it);
  }
  return items;
}

// ---------------------------------------------------------------------------------------
// The summary: means and confidence intervals per method, the table and the plots.

struct Summary {
  json report;
  std::string table;
};

json ci_json(const std::vector<double>& v) {
  const eval::MeanCI m = eval::mean_ci95(v);
  return {{"n", m.n}, {"mean", eval::json_number(m.mean)}, {"ci95", {eval::json_number(m.lo), eval::json_number(m.hi)}}};
}

std::string fmt_ci(const json& c, int digits = 3) {
  if (c["mean"].is_null()) return "-";
  char b[96];
  if (c["ci95"][0].is_null())
    std::snprintf(b, sizeof(b), "%.*f", digits, c["mean"].get<double>());
  else
    std::snprintf(b, sizeof(b), "%.*f ± %.*f", digits, c["mean"].get<double>(), digits,
                  (c["ci95"][1].get<double>() - c["ci95"][0].get<double>()) / 2);
  return b;
}

Summary summarise(const std::vector<json>& lines, const std::vector<std::string>& methods, const json& settings,
                  const json& counts, std::vector<io::Chart>* charts) {
  Summary s;
  s.report["settings"] = settings;
  s.report["counts"] = counts;
  s.report["pixel_order"] =
      "pixels sorted by |map| (NaN as 0), descending for MoRF and ascending for LeRF; ties keep ascending "
      "row-major pixel index (stable sort); int(H*W*ratio) pixels are set to 0 in every channel of the "
      "normalised input";
  s.report["boxes"] = "the union of an image's boxes (a pixel is inside when its centre is in any box)";
  json per_method = json::object();
  const char* names[4] = {"MoRF", "LeRF", "Deletion", "Insertion"};
  if (charts) {
    charts->assign(4, io::Chart{});
    for (int i = 0; i < 4; ++i) {
      (*charts)[size_t(i)].title = names[i];
      (*charts)[size_t(i)].x_label = i == 3 ? "fraction of pixels inserted (most relevant first)"
                                            : (i == 1 ? "fraction of pixels removed (least relevant first)"
                                                      : "fraction of pixels removed (most relevant first)");
      (*charts)[size_t(i)].y_label = "probability of the label";
    }
  }
  std::ostringstream t;
  t << "| method | images | MoRF AOPC (higher is better) | LeRF AOPC (lower) | MoRF LODDS (lower) | "
       "deletion AUC (lower) | insertion AUC (higher) | mu_in | mu_in_w (higher) | pointing game (higher) |\n"
    << "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& m : methods) {
    // The records' numbers (read_report checked their form).
    const MethodNumbers mn = method_numbers(lines, m);
    json out;
    out["images"] = mn.images;
    out["skipped"] = mn.skipped;
    out["ratios"] = mn.ratios;
    auto values = [&](const std::string& key) { return mn.values.count(key) ? mn.values.at(key) : std::vector<double>{}; };
    json metrics;
    for (const char* order : {"morf", "lerf"}) {
      const std::string o = order;
      for (const char* name : {"aopc", "lodds", "acc", "fracdiff", "prob"}) {
        json per_ratio = json::array();
        for (size_t i = 0; i < mn.ratios.size(); ++i) per_ratio.push_back(ci_json(mn.per_ratio.at(o + "." + name)[i]));
        metrics[order][name] = per_ratio;
      }
      metrics[order]["aopc_mean"] = ci_json(values(o + ".aopc_mean"));
      metrics[order]["lodds_mean"] = ci_json(values(o + ".lodds_mean"));
    }
    for (const char* curve : {"deletion", "insertion"}) {
      metrics[curve]["auc"] = ci_json(values(std::string(curve) + ".auc"));
      if (mn.images > 0) {
        metrics[curve]["fractions"] = mn.fractions.at(curve);
        metrics[curve]["mean_prob"] = mn.mean_prob.at(curve);
      }
    }
    for (const char* k : {"mu_in", "mu_in_w", "mu_out", "mu_out_w", "pointing"})
      metrics["box"][k] = ci_json(values(std::string("box.") + k));
    metrics["box"]["valid"] = mn.box_valid;
    metrics["box"]["invalid"] = mn.box_invalid;
    out["metrics"] = metrics;
    per_method[m] = out;

    t << "| " << m << " | " << mn.images << " | " << fmt_ci(metrics["morf"]["aopc_mean"]) << " | "
      << fmt_ci(metrics["lerf"]["aopc_mean"]) << " | " << fmt_ci(metrics["morf"]["lodds_mean"], 2) << " | "
      << fmt_ci(metrics["deletion"]["auc"]) << " | " << fmt_ci(metrics["insertion"]["auc"]) << " | "
      << fmt_ci(metrics["box"]["mu_in"]) << " | " << fmt_ci(metrics["box"]["mu_in_w"]) << " | "
      << fmt_ci(metrics["box"]["pointing"]) << " |\n";

    if (charts && mn.images > 0) {
      const char* orders[2] = {"morf", "lerf"};
      for (int i = 0; i < 2; ++i) {
        io::Series se{m, mn.ratios, {}};
        for (const auto& c : metrics[orders[i]]["prob"]) se.y.push_back(c["mean"].is_null() ? 0.0 : c["mean"].get<double>());
        (*charts)[size_t(i)].series.push_back(se);
      }
      const char* curves[2] = {"deletion", "insertion"};
      for (int i = 0; i < 2; ++i)
        (*charts)[size_t(2 + i)].series.push_back(
            {m, metrics[curves[i]]["fractions"].get<std::vector<double>>(),
             metrics[curves[i]]["mean_prob"].get<std::vector<double>>()});
    }
  }
  s.report["methods"] = per_method;
  s.table = t.str();
  if (charts) {
    for (auto& c : *charts) {
      double xmax = 0;
      for (const auto& se : c.series)
        for (double x : se.x) xmax = std::max(xmax, x);
      c.x_max = xmax > 0 ? xmax : 1;
    }
  }
  return s;
}

// What the summary's first line says about the run, kept in a shard's report for `eval merge`.
struct ReportHead {
  std::string arch, weights, data, ratios;
  bool boxes = false;
  size_t listed = 0;  // images of the report (a shard's, or all)
};

json head_json(const ReportHead& h) {
  return {{"arch", h.arch}, {"weights", h.weights}, {"data", h.data}, {"ratios", h.ratios}, {"boxes", h.boxes},
          {"listed", h.listed}};
}

// The summary of the records of the listed images (in the order given: the means sum in that
// order): PREFIX.json (with `shard` under "shard" when it is not null), .md and .png, and the
// table on stdout (not when !print: a worker of --gpu all, whose report is merged). Returns the number of inputs, annotations and maps that were skipped.
int64_t write_report_summary(const std::vector<json>& lines, const std::set<std::string>& listed,
                             const std::vector<std::string>& methods, const json& settings, const ReportHead& head,
                             const std::string& prefix, const json& shard, bool print = true) {
  std::vector<json> mine;
  json counts = {{"images_listed", head.listed}, {"images_unreadable", 0}, {"box_ok", 0}, {"box_none", 0},
                 {"box_invalid", 0}, {"box_error", 0}};
  std::set<std::string> seen_box;
  for (const auto& l : lines) {
    const std::string img = record_image(l);
    if (!listed.count(img)) continue;
    mine.push_back(l);
    if (l.value("method", std::string("*")) == "*") {
      counts["images_unreadable"] = counts["images_unreadable"].get<int>() + 1;
      continue;
    }
    if (head.boxes && l.contains("box_status") && seen_box.insert(img).second) {
      const std::string st = l["box_status"].get<std::string>();
      const std::string k = "box_" + st;
      if (counts.contains(k)) counts[k] = counts[k].get<int>() + 1;
    }
  }
  std::vector<io::Chart> charts;
  Summary s = summarise(mine, methods, settings, counts, &charts);
  if (!shard.is_null()) s.report["shard"] = shard;
  std::ostringstream md;
  md << "parchgrad eval: " << head.arch << " (" << head.weights << ") on " << head.data << ", " << head.listed
     << " images listed";
  if (!shard.is_null()) md << " (shard " << shard["shard"].get<int>() << "/" << shard["shards"].get<int>() << ")";
  md << "; unreadable " << counts["images_unreadable"].get<int>();
  if (head.boxes)
    md << "; boxes ok " << counts["box_ok"].get<int>() << ", none " << counts["box_none"].get<int>() << ", invalid "
       << counts["box_invalid"].get<int>() << ", broken " << counts["box_error"].get<int>();
  md << "\n\nMeans over images with 95% confidence intervals; AOPC and LODDS averaged over the ratios "
     << head.ratios << ".\n\n" << s.table;
  write_text_atomic(prefix + ".json", s.report.dump(1) + "\n");
  write_text_atomic(prefix + ".md", md.str());
  std::vector<io::Image8> imgs;
  for (const auto& c : charts) imgs.push_back(io::render_chart(c, 600, 400));
  io::save_png(prefix + ".png", io::tile_images(imgs, 2));
  if (print) std::printf("%s", md.str().c_str());
  int64_t bad = counts["images_unreadable"].get<int64_t>() + counts["box_error"].get<int64_t>();
  for (const auto& [m, v] : s.report["methods"].items()) bad += v["skipped"].get<int64_t>();
  return bad;
}

// ---------------------------------------------------------------------------------------

std::vector<double> parse_ratios(const std::string& spec) {
  std::vector<double> r;
  for (const auto& item : split_list(spec, "--ratios")) {
    size_t used = 0;
    double v = -1;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !(v >= 0 && v <= 1)) throw Error("--ratios: '" + item + "' is not a number in [0, 1]");
    r.push_back(v);
  }
  if (!std::is_sorted(r.begin(), r.end())) throw Error("--ratios must be increasing");
  return r;
}

// An externally made map: DIR/<stem>.npy, [H, W] or [1, H, W].
Tensor load_external_map(const std::string& dir, const EvalItem& it, int64_t H, int64_t W) {
  const std::string path = (fs::path(dir) / (fs::path(it.rel).stem().string() + ".npy")).string();
  std::error_code ec;
  if (!fs::exists(path, ec)) throw file_error(path, "no map for " + it.rel);
  Tensor m = io::load_npy(path);
  if (m.numel() != H * W || !(m.ndim() == 2 || (m.ndim() == 3 && m.dim(0) == 1)))
    throw file_error(path, "map has shape " + m.shape_str() + ", expected [" + std::to_string(H) + ", " +
                               std::to_string(W) + "]");
  return m;
}

struct Loaded {
  EvalItem item;
  Tensor x;  // [3, H, W]
  std::vector<uint8_t> mask;
  json box;  // status when there is no usable mask: none / invalid / error
  bool has_mask = false;
  int64_t index = 0;  // position in the data set's image list (fixed SmoothGrad noise)
};

void run_eval(const EvalOptions& o) {
  set_threads(o.threads);
  if (o.batch < 1) throw Error("--batch must be at least 1");
  if (o.perturb_batch < 1) throw Error("--perturb-batch must be at least 1");
  if (o.auc_steps < 1 || o.auc_steps > 1000) throw Error("--auc-steps must be in [1, 1000]");
  if (o.limit < 0) throw Error("--limit must be non-negative");
  if (o.target != "label" && o.target != "top1") throw Error("--target must be label or top1");
  eval::EvalConfig cfg;
  cfg.ratios = parse_ratios(o.ratios);
  cfg.auc_steps = o.auc_steps;
  cfg.perturb_batch = o.perturb_batch;
  auto model = nn::load_model(o.weights, o.model);
  const int K = model->num_classes();
  // Images are preprocessed as the model's weights define (or --preprocess and its overrides),
  // and their boxes mapped through the same resize and centre crop.
  const io::Preprocess pp = api::preprocess_for(o.pre, model->arch());

  std::string box_spec = o.boxes;
  std::error_code ec;
  if (box_spec.empty() && fs::is_regular_file(fs::path(o.data) / "boxes.jsonl", ec)) {
    box_spec = (fs::path(o.data) / "boxes.jsonl").string();
    std::fprintf(stderr, "parchgrad: using the boxes in %s\n", box_spec.c_str());
  }
  const BoxSource boxes(box_spec);
  std::vector<EvalItem> items = list_items(o, boxes, K);
  if (o.limit > 0 && int(items.size()) > o.limit) items.resize(size_t(o.limit));
  // A shard takes the images whose index in this listing has index % N == shard, and writes its
  // report as PREFIX-<i>-of-<N>.jsonl/.json/.md/.png (`eval merge` joins them).
  const Shard sh = command_shard(o.dev, o.shard);  // --shard's, or a --gpu all worker's
  const std::string out_prefix = sh.active ? o.out + "-" + sh.tag() : o.out;

  // Methods: "grad", "grad+cls", ..., or "maps:DIR" (maps made elsewhere, DIR/<stem>.npy).
  const std::string method_list = !o.methods.empty() ? o.methods : (o.m.stats.empty() ? "grad" : "grad,grad+cls,grad+ins");
  const std::vector<std::string> methods = split_list(method_list, "--methods");
  if (std::set<std::string>(methods.begin(), methods.end()).size() != methods.size())
    throw Error("--methods lists a method twice");
  std::vector<std::string> engine_specs;
  for (const auto& m : methods)
    if (m.rfind("maps:", 0) != 0) engine_specs.push_back(m);
  MethodResources resources;  // the files the settings name (outlives the configurations)
  std::vector<Config> configs = build_configs(engine_specs, o.m, resources, *model, o.batch);

  json settings = settings_json(o.m);
  settings.update({{"model", model->arch()}, {"weights", o.weights}, {"ratios", cfg.ratios}, {"auc_steps", o.auc_steps},
                   {"target", o.target}, {"data", o.data}, {"boxes", box_spec}, {"resize", pp.resize}, {"crop", pp.crop},
                   {"preprocess", api::preprocess_json(pp)}});
  // The report's identity, for resuming: the settings with every file named by its content and
  // the data set by its resolved folder, so that the same job resumes however its paths are
  // spelled (relative, absolute, ./), and a job with other weights or statistics does not.
  json identity = settings;
  identity["weights"] = content_hash(o.weights);
  if (!o.m.stats.empty()) identity["stats"] = content_hash(o.m.stats);
  if (!o.m.sg_noise.empty()) identity["sg_noise"] = content_hash(o.m.sg_noise);
  // (zero, black and blurred are named baselines, not files)
  if (o.m.ig_baseline != "zero" && o.m.ig_baseline != "black" && o.m.ig_baseline != "blurred")
    identity["ig_baseline"] = content_hash(o.m.ig_baseline);
  identity["data"] = image_key(o.data);
  if (!box_spec.empty() && fs::is_regular_file(box_spec, ec)) identity["boxes"] = content_hash(box_spec);
  else if (!box_spec.empty()) identity["boxes"] = image_key(box_spec);
  char idbuf[32];
  std::snprintf(idbuf, sizeof(idbuf), "%016zx", std::hash<std::string>{}(identity.dump()));
  const std::string settings_id = idbuf;
  settings["methods"] = methods;

  const fs::path out(o.out);
  if (out.has_parent_path()) {
    fs::create_directories(out.parent_path(), ec);
    if (ec) throw file_error(out.parent_path().string(), "cannot create directory (" + ec.message() + ")");
  }
  const std::string jsonl_path = out_prefix + ".jsonl";
  if (sh.active) fs::remove(out_prefix + ".json", ec);  // a shard's summary says it finished: written at its end
  std::set<std::string> done;
  if (o.no_resume) {
    fs::remove(jsonl_path, ec);
  } else {
    bool partial = false;
    read_report(jsonl_path, settings_id, &done, &partial);
    if (partial)
      std::fprintf(stderr, "parchgrad: note: %s: dropped a partial last line left by an interrupted run\n",
                   jsonl_path.c_str());
    // A worker of --gpu all also resumes from the report one run (or an earlier --gpu all) left
    // at PREFIX.jsonl: the records of its images that its own report lacks are copied into it.
    if (is_gpu_worker(o.dev) && fs::is_regular_file(o.out + ".jsonl", ec)) {
      std::set<std::string> mine, whole_done;
      for (size_t i = 0; i < items.size(); ++i)
        if (sh.owns(int64_t(i))) mine.insert(image_key(items[i].path));
      bool whole_partial = false;
      std::vector<json> carried;
      for (auto& r : read_report(o.out + ".jsonl", settings_id, &whole_done, &whole_partial)) {
        const std::string key = record_key(r, r.value("method", std::string("*")));
        if (mine.count(record_image(r)) && !done.count(key)) {
          done.insert(key);
          carried.push_back(std::move(r));
        }
      }
      if (!carried.empty()) append_json_lines(jsonl_path, carried);
    }
  }

  nn::Context ctx;
  setup_device(o.dev, ctx);
  size_t mine_count = 0;
  for (size_t i = 0; i < items.size(); ++i) mine_count += sh.owns(int64_t(i)) ? 1 : 0;
  io::Progress progress(sh.active ? "eval " + sh.text() : "eval", int64_t(mine_count));
  auto all_done = [&](const EvalItem& it) {
    if (done.count(key_of(it.path, "*"))) return true;
    for (const auto& m : methods)
      if (!done.count(key_of(it.path, m))) return false;
    return true;
  };

  size_t resumed = 0;
  for (size_t i = 0; i < items.size(); ++i) resumed += sh.owns(int64_t(i)) && all_done(items[i]) ? 1 : 0;
  if (resumed)
    std::fprintf(stderr, "parchgrad: resuming: %zu of %zu images done (%s)\n", resumed, mine_count,
                 jsonl_path.c_str());

  std::vector<Loaded> chunk;
  auto flush = [&]() {
    if (chunk.empty()) return;
    const int64_t B = int64_t(chunk.size()), H = chunk[0].x.dim(1), W = chunk[0].x.dim(2);
    Tensor X({B, 3, H, W});
    std::vector<int> targets;
    for (int64_t b = 0; b < B; ++b) {
      std::copy(chunk[size_t(b)].x.data(), chunk[size_t(b)].x.data() + 3 * H * W, X.data() + b * 3 * H * W);
      targets.push_back(o.target == "label" ? chunk[size_t(b)].item.label : -1);
    }
    const Tensor P0 = eval::clean_probabilities(*model, ctx, X);
    std::vector<std::vector<json>> records(static_cast<size_t>(B));
    size_t ci = 0;
    for (const auto& m : methods) {
      std::vector<int64_t> todo;
      for (int64_t b = 0; b < B; ++b)
        if (!done.count(key_of(chunk[size_t(b)].item.path, m))) todo.push_back(b);
      if (todo.empty()) {
        if (m.rfind("maps:", 0) != 0) ++ci;
        continue;
      }
      Tensor maps({B, H, W});
      std::vector<std::string> map_error(static_cast<size_t>(B));
      if (m.rfind("maps:", 0) == 0) {
        for (int64_t b : todo) {
          try {
            Tensor e = load_external_map(m.substr(5), chunk[size_t(b)].item, H, W);
            std::copy(e.data(), e.data() + H * W, maps.data() + b * H * W);
          } catch (const Error& e) {
            map_error[size_t(b)] = e.what();
          }
        }
      } else {
        Config& c = configs[ci++];
        std::vector<int64_t> sample_ids;
        for (const Loaded& l : chunk) sample_ids.push_back(l.index);
        maps = eval::method_maps(*model, ctx, X, targets, c.method, c.hook.get(), sample_ids);
      }
      for (int64_t b : todo) {
        const Loaded& L = chunk[size_t(b)];
        json rec;
        if (!map_error[size_t(b)].empty()) {
          rec = {{"skipped", map_error[size_t(b)]}};
          std::fprintf(stderr, "parchgrad: skipped: %s\n", map_error[size_t(b)].c_str());
        } else {
          const std::vector<float> p0(P0.data() + b * K, P0.data() + (b + 1) * K);
          rec = eval::record_json(eval::evaluate_image(*model, ctx, L.x, maps.data() + b * H * W, p0, L.item.label, cfg,
                                                       L.has_mask ? L.mask.data() : nullptr));
          if (!L.has_mask && !L.box.is_null()) rec["box"] = L.box;
        }
        if (boxes.enabled()) rec["box_status"] = L.has_mask ? std::string("ok") : L.box.value("status", std::string("none"));
        rec["image"] = L.item.path;
        rec["image_path"] = image_key(L.item.path);
        rec["method"] = m;
        rec["settings_id"] = settings_id;
        records[size_t(b)].push_back(rec);
      }
    }
    for (int64_t b = 0; b < B; ++b) {
      append_json_lines(jsonl_path, records[size_t(b)]);
      progress.advance();
    }
    chunk.clear();
  };

  for (size_t item_index = 0; item_index < items.size(); ++item_index) {
    const EvalItem& it = items[item_index];
    if (!sh.owns(int64_t(item_index))) continue;
    if (all_done(it)) {
      progress.advance();
      continue;
    }
    Loaded L;
    L.item = it;
    L.index = int64_t(item_index);
    std::string failure;
    int orig_w = 0, orig_h = 0;
    try {
      if (it.label < 0) throw file_error(it.path, "has no label in " + box_spec);
      if (it.label >= K)
        throw file_error(it.path, "label " + std::to_string(it.label) + " is out of range for a model with " +
                                      std::to_string(K) + " classes");
      if (io::is_npy_file(it.path)) {
        L.x = io::load_input_tensor(it.path);
        check_input(L.x.reshape({1, L.x.dim(0), L.x.dim(1), L.x.dim(2)}), it.path);
        orig_w = int(L.x.dim(2));
        orig_h = int(L.x.dim(1));
      } else {
        const io::Image8 img = io::load_image_rgb(it.path);
        orig_w = img.w;
        orig_h = img.h;
        L.x = io::preprocess_image(img, pp);
      }
    } catch (const Error& e) {
      failure = e.what();
    }
    if (!failure.empty()) {
      std::fprintf(stderr, "parchgrad: skipped: %s\n", failure.c_str());
      progress.skip();
      append_json_lines(jsonl_path, std::vector<json>{
          json{{"image", it.path}, {"image_path", image_key(it.path)}, {"method", "*"}, {"skipped", failure},
               {"settings_id", settings_id}}});
      continue;
    }
    if (boxes.enabled()) {
      io::Annotation a;
      try {
        if (!boxes.find(it, &a)) {
          L.box = {{"status", "none"}, {"reason", "no annotation for this image"}};
        } else {
          if (a.width > 0 && (a.width != orig_w || a.height != orig_h))
            throw Error("annotation of " + it.rel + " is for a " + std::to_string(a.width) + "x" +
                        std::to_string(a.height) + " image, the image is " + std::to_string(orig_w) + "x" +
                        std::to_string(orig_h));
          const bool npy = io::is_npy_file(it.path);
          const io::CropGeometry g = npy ? io::identity_geometry(orig_w, orig_h) : io::eval_geometry(orig_w, orig_h, pp.resize, pp.crop);
          int64_t area = 0;
          for (const auto& b : a.boxes) area += io::rasterize_box(io::map_box(b, g), g.crop_w, g.crop_h, L.mask);
          if (a.boxes.empty()) L.box = {{"status", "none"}, {"reason", "annotation has no boxes"}};
          else if (area == 0) L.box = {{"status", "invalid"}, {"reason", "every box lies outside the crop"}, {"area", 0}};
          else if (area == int64_t(g.crop_w) * g.crop_h)
            L.box = {{"status", "invalid"}, {"reason", "the boxes cover the whole input"}, {"area", area}};
          else L.has_mask = true;
        }
      } catch (const Error& e) {
        std::fprintf(stderr, "parchgrad: box skipped: %s\n", e.what());
        L.box = {{"status", "error"}, {"reason", e.what()}};
        L.mask.clear();
        L.has_mask = false;
      }
    }
    if (!chunk.empty() && chunk[0].x.shape() != L.x.shape()) flush();
    chunk.push_back(std::move(L));
    if (int(chunk.size()) >= o.batch) flush();
  }
  flush();
  progress.finish();

  // A shard without images (more shards than images) still leaves its (empty) records file,
  // which eval merge reads.
  if (sh.active && !fs::exists(jsonl_path, ec)) write_text_atomic(jsonl_path, "");
  // The summary is made from the whole report file, so a resumed run summarises everything.
  std::set<std::string> all_keys;
  bool partial = false;
  const std::vector<json> lines = read_report(jsonl_path, settings_id, &all_keys, &partial);
  std::set<std::string> listed;
  for (const auto& it : items)
    if (sh.owns(int64_t(&it - items.data()))) listed.insert(image_key(it.path));
  const ReportHead head{model->arch(), o.weights, o.data, o.ratios, boxes.enabled(), listed.size()};
  json shard_part;  // a shard's report says which images it holds, for `eval merge`
  if (sh.active) {
    json images = json::array();
    for (size_t i = 0; i < items.size(); ++i)
      if (sh.owns(int64_t(i))) images.push_back({i, image_key(items[i].path)});
    shard_part = {{"shard", sh.index},  {"shards", sh.count},       {"settings_id", settings_id},
                  {"identity", identity}, {"head", head_json(head)}, {"methods", methods},
                  {"images", images},   {"report", fs::path(jsonl_path).filename().string()}};
  }
  const int64_t bad =
      write_report_summary(lines, listed, methods, settings, head, out_prefix, shard_part, !is_gpu_worker(o.dev));
  progress.summary("report in " + out_prefix + ".jsonl, .json, .md and .png");
  // Bad input anywhere (an unreadable image, a broken annotation, a missing map) makes the exit
  // status 1, after the whole report was written (for --gpu all, after the merge).
  if (bad > 0 && !is_gpu_worker(o.dev)) {
    std::fprintf(stderr, "parchgrad: error: %lld inputs or annotations were skipped (listed above and in %s.jsonl)\n",
                 static_cast<long long>(bad), out_prefix.c_str());
    throw ExitCode(1);
  }
}

// `eval merge`: the reports of `eval --shard i/N` (PREFIX-i-of-N.json and .jsonl) into the report
// one run gives. The shards must be of one job (the same settings identity: weights, statistics
// and boxes by content, the data folder, every setting; the same methods and shard count), each
// shard once, none missing, and together hold every image of the listing once; each shard's
// records are complete. Records are put in image order, so the means sum as in one run.
struct EvalMergeOptions {
  std::vector<std::string> shards;
  std::string out;
};

int64_t run_eval_merge(const EvalMergeOptions& o, bool quiet) {
  struct Part {
    std::string prefix, summary;
    json shard;
  };
  std::vector<Part> parts;
  auto ends_with = [](const std::string& a, const std::string& b) {
    return a.size() >= b.size() && a.compare(a.size() - b.size(), b.size(), b) == 0;
  };
  for (const auto& given : o.shards) {
    Part p;
    p.prefix = given;
    for (const char* ext : {".jsonl", ".json", ".md", ".png"})
      if (ends_with(p.prefix, ext)) {
        p.prefix.resize(p.prefix.size() - std::string(ext).size());
        break;
      }
    p.summary = p.prefix + ".json";
    std::error_code ec;
    if (!fs::is_regular_file(p.summary, ec))
      throw file_error(p.summary, "is missing: that shard has not finished (rerun it alone; its report resumes)");
    std::ifstream f(p.summary);
    const json j = json::parse(f, nullptr, false);
    const json* sh = j.is_object() && j.contains("shard") ? &j["shard"] : nullptr;
    bool ok = sh && sh->is_object();
    for (const char* k : {"shard", "shards"}) ok = ok && sh->contains(k) && (*sh)[k].is_number_integer();
    for (const char* k : {"settings_id", "report"}) ok = ok && sh->contains(k) && (*sh)[k].is_string();
    for (const char* k : {"identity", "head"}) ok = ok && sh->contains(k) && (*sh)[k].is_object();
    for (const char* k : {"methods", "images"}) ok = ok && sh->contains(k) && (*sh)[k].is_array();
    ok = ok && j.contains("settings") && j["settings"].is_object();
    if (ok)
      for (const auto& im : (*sh)["images"])
        ok = ok && im.is_array() && im.size() == 2 && im[0].is_number_unsigned() && im[1].is_string();
    if (!ok) throw file_error(p.summary, "is not the report of a shard (written by `parchgrad eval --shard i/N`)");
    p.shard = *sh;
    p.shard["settings"] = j["settings"];
    parts.push_back(std::move(p));
  }
  const Part& first = parts.at(0);
  const int N = first.shard["shards"].get<int>();
  std::map<int, const Part*> by_index;
  for (const Part& p : parts) {
    const int i = p.shard["shard"].get<int>(), n = p.shard["shards"].get<int>();
    if (n != N)
      throw file_error(p.summary, "is shard " + std::to_string(i) + "/" + std::to_string(n) + ", " + first.summary +
                                      " is one of " + std::to_string(N) + " shards");
    if (i < 0 || i >= N) throw file_error(p.summary, "is not the report of a shard (shard index out of range)");
    for (const auto& [key, value] : first.shard["identity"].items())
      if (p.shard["identity"].value(key, json()) != value)
        throw file_error(p.summary, "differs from " + first.summary + " in " + key + " (" +
                                        p.shard["identity"].value(key, json()).dump() + " vs " + value.dump() +
                                        "): not a shard of the same job");
    for (const char* key : {"methods", "settings_id", "settings"})
      if (p.shard[key] != first.shard[key])
        throw file_error(p.summary, "differs from " + first.summary + " in " + key + ": not a shard of the same job");
    const auto [it, fresh] = by_index.emplace(i, &p);
    if (!fresh)
      throw file_error(p.summary, "is shard " + std::to_string(i) + "/" + std::to_string(N) + ", given twice (also " +
                                      it->second->summary + ")");
  }
  for (int i = 0; i < N; ++i)
    if (!by_index.count(i))
      throw Error("eval merge: shard " + std::to_string(i) + "/" + std::to_string(N) + " is missing (" +
                  std::to_string(parts.size()) + " of " + std::to_string(N) + " given)");
  // Every image of the listing in exactly one shard, the one its index says.
  std::map<std::string, size_t> index_of;
  size_t total = 0;
  for (const Part& p : parts) total += p.shard["images"].size();
  std::vector<int> owner(total, -1);
  for (const Part& p : parts) {
    const int i = p.shard["shard"].get<int>();
    for (const auto& im : p.shard["images"]) {
      const size_t k = im[0].get<size_t>();
      if (k >= total || size_t(k) % size_t(N) != size_t(i) || owner[k] >= 0)
        throw file_error(p.summary, "lists image " + std::to_string(k) + " (" + im[1].get<std::string>() +
                                        "), which is not shard " + std::to_string(i) + "'s of " + std::to_string(total) +
                                        " images");
      owner[k] = i;
      index_of[im[1].get<std::string>()] = k;
    }
  }
  // The records, each shard's complete, in image order.
  const std::vector<std::string> methods = first.shard["methods"].get<std::vector<std::string>>();
  const std::string settings_id = first.shard["settings_id"].get<std::string>();
  std::vector<std::pair<size_t, json>> records;
  for (const Part& p : parts) {
    const std::string jsonl = p.prefix + ".jsonl";
    std::error_code ec;
    if (!fs::is_regular_file(jsonl, ec)) throw file_error(jsonl, "is missing (the records of " + p.summary + ")");
    std::set<std::string> done;
    bool partial = false;
    std::vector<json> lines = read_report(jsonl, settings_id, &done, &partial);
    for (const auto& im : p.shard["images"]) {
      const std::string key = im[1].get<std::string>();
      if (done.count(key + "\t*")) continue;
      for (const auto& m : methods)
        if (!done.count(key + "\t" + m))
          throw file_error(jsonl, "has no record of " + m + " for " + key + ": the shard did not finish; rerun it");
    }
    for (auto& l : lines) {
      const auto k = index_of.find(record_image(l));
      if (k != index_of.end() && owner[k->second] == p.shard["shard"].get<int>()) records.emplace_back(k->second, std::move(l));
    }
  }
  std::stable_sort(records.begin(), records.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::string prefix = o.out;
  if (prefix.empty()) {
    const std::string tag = "-" + std::to_string(first.shard["shard"].get<int>()) + "-of-" + std::to_string(N);
    prefix = ends_with(first.prefix, tag) ? first.prefix.substr(0, first.prefix.size() - tag.size()) : first.prefix + "-merged";
  }
  std::vector<json> lines;
  std::string text;
  for (auto& [k, l] : records) {
    text += l.dump() + "\n";
    lines.push_back(std::move(l));
  }
  std::set<std::string> listed;
  for (const auto& [key, k] : index_of) listed.insert(key);
  const json& h = first.shard["head"];
  const ReportHead head{h.value("arch", ""), h.value("weights", ""), h.value("data", ""), h.value("ratios", ""),
                        h.value("boxes", false), total};
  write_text_atomic(prefix + ".jsonl", text);
  const int64_t bad = write_report_summary(lines, listed, methods, first.shard["settings"], head, prefix, json());
  if (quiet) return bad;
  std::fprintf(stderr, "eval merge: %d shards, %zu images: report in %s.jsonl, .json, .md and .png\n", N, total,
               prefix.c_str());
  if (bad > 0)
    std::fprintf(stderr, "parchgrad: note: %lld inputs or annotations were skipped by the shards (in %s.jsonl)\n",
                 static_cast<long long>(bad), prefix.c_str());
  return bad;
}

// `eval --gpu all` (tools/cli/gpu_all.h): worker k of G evaluates the images k, k + G, ... on
// device k into PREFIX-k-of-G.* (a shard's report, which resumes); eval merge then writes the
// report of one run at PREFIX, and the shard reports are removed.
void run_eval_all(const EvalOptions& opts) {
  GpuAllJob job;
  job.command = "eval";
  job.threads = opts.threads;
  job.work = worker_body(opts, run_eval);
  job.merge = [&](int G) {
    std::vector<std::string> prefixes;
    for (int k = 0; k < G; ++k) prefixes.push_back(opts.out + "-" + worker_shard(k, G).tag());
    const int64_t bad = run_eval_merge(EvalMergeOptions{prefixes, opts.out}, true);
    std::error_code ec;
    for (const auto& p : prefixes)
      for (const char* ext : {".jsonl", ".json", ".md", ".png"}) fs::remove(p + ext, ec);
    GpuAllMerged m;
    m.outputs = "report in " + opts.out + ".jsonl, .json, .md and .png";
    if (bad > 0)
      m.error = std::to_string(bad) + " inputs or annotations were skipped (listed above and in " + opts.out + ".jsonl)";
    return m;
  };
  run_on_all_gpus(job);
}

}  // namespace

int64_t merge_eval_reports(const std::vector<std::string>& shards, const std::string& out, bool quiet) {
  return run_eval_merge(EvalMergeOptions{shards, out}, quiet);
}

void register_eval(CLI::App& app) {
  auto eo = std::make_shared<EvalOptions>();
  CLI::App* e = app.add_subcommand("eval", "Faithfulness and localisation metrics of saliency methods over a data set");
  e->add_option("--weights", eo->weights, "torchvision state dict (.pth or .safetensors)");
  e->add_option("--model", eo->model, "architecture (inferred from the weights when omitted)");
  e->add_option("--data", eo->data,
                "ImageFolder directory (sorted class folders give ids), or a flat folder with a labelled boxes.jsonl");
  e->add_option("--labels", eo->labels, "file of lines \"folder_name class_id\" mapping folders to classes");
  e->add_option("--boxes", eo->boxes,
                "directory of Pascal VOC XML files (<stem>.xml), or a boxes .jsonl (default: DIR/boxes.jsonl if present)");
  e->add_option("--methods", eo->methods,
                "comma-separated: grad, inputgrad, ig, smoothgrad, gradcam, each optionally +cls or +ins, or maps:DIR "
                "(DIR/<stem>.npy); default grad,grad+cls,grad+ins with --stats, else grad");
  e->add_option("--ratios", eo->ratios, "fractions of pixels removed for MoRF/LeRF")->capture_default_str();
  e->add_option("--auc-steps", eo->auc_steps, "steps of the deletion and insertion curves")->capture_default_str();
  e->add_option("--limit", eo->limit, "evaluate only the first N images (0: all)");
  e->add_option("--target", eo->target, "class the maps explain: label or top1")->capture_default_str();
  e->add_option("-o,--out", eo->out, "report path prefix: writes PREFIX.jsonl, .json, .md, .png")->capture_default_str();
  e->add_option("--batch", eo->batch, "images per batch for the maps")->capture_default_str();
  e->add_option("--perturb-batch", eo->perturb_batch,
                "masked copies of one image per forward pass (the default holds all copies of the default settings)")
      ->capture_default_str();
  e->add_option("--threads", eo->threads, "CPU threads (default: all cores)");
  for (const char* name : {"preprocess", "resize", "crop", "interpolation"})
    for (const auto& opt : api::saliency_options())
      if (std::string(opt.name) == name)
        e->add_option_function<std::string>(std::string("--") + name, [eo, set = opt.set](const std::string& v) { set(eo->pre, v); },
                                            opt.help);
  add_device_flags(e, eo->dev);
  e->add_flag("--no-resume", eo->no_resume, "start over instead of continuing PREFIX.jsonl");
  e->add_option("--shard", eo->shard,
                "i/N: evaluate the images whose index % N == i into PREFIX-i-of-N.* (see `eval merge`); auto: i and N "
                "from the launcher (Slurm, Open MPI, PMI)");
  add_method_flags(e, eo->m);
  auto mo = std::make_shared<EvalMergeOptions>();
  CLI::App* m = e->add_subcommand("merge", "Join the reports of `eval --shard i/N` into the report of one run");
  m->add_option("shards", mo->shards, "the shards' reports (PREFIX-i-of-N.json, .jsonl or the prefix)")->required();
  m->add_option("-o,--out", mo->out, "report path prefix (default: the shards' PREFIX)");
  m->callback([mo]() { run_eval_merge(*mo, false); });
  e->callback([eo, m]() {
    if (m->parsed()) return;
    // (Not CLI11-required, so that `eval merge` needs neither; still a usage error, status 2.)
    for (const auto& [name, value] :
         {std::pair<const char*, const std::string*>{"--weights", &eo->weights}, {"--data", &eo->data}})
      if (value->empty()) throw CLI::RequiredError(name);
    if (gpu_all_requested(eo->dev, eo->shard))
      run_eval_all(*eo);
    else
      run_eval(*eo);
  });
}

}  // namespace pg::cli
