// `parchgrad stats` (dataset statistics for ParchGrad over an ImageFolder tree, optionally
// one shard of it) and `parchgrad stats merge` (shards -> one stats file).
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <unistd.h>

#include "autograd/hooks.h"
#include "capi/dataset.h"
#include "capi/saliency.h"
#include "core/error.h"
#include "nn/model.h"
#include "parchgrad/attribution.h"
#include "parchgrad/dataset_stats.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/cli/device_flags.h"
#include "tools/cli/gpu_all.h"
#include "tools/cli/shard.h"
#include "tools/lib/image_io.h"
#include "tools/lib/preprocess_presets.h"
#include "tools/lib/progress.h"
#include "weights/state_dict.h"

namespace pg::cli {

namespace fs = std::filesystem;

namespace {

struct StatsOptions {
  DeviceFlags dev;
  std::string weights, model, data, out, test = "student", shard, labels, dump_gap;
  int batch = 16, threads = 0;
  double memory_mb = 256;
  bool strict = false, no_resume = false;
  int64_t checkpoint = 2000;
  api::SaliencySettings pre;  // only preprocess, resize, crop and interpolation are read
};

struct MergeOptions {
  std::vector<std::string> shards;
  std::string out;
  double memory_mb = 256;
};

size_t memory_bytes(double mb) {
  if (!(mb >= 0)) throw Error("--memory-mb must be a non-negative number");
  return size_t(mb * 1024.0 * 1024.0);
}

using api::GapCollector;

void run_stats(const StatsOptions& opts) {
  StatsOptions o = opts;
  set_threads(o.threads);
  if (o.batch < 1) throw Error("--batch must be at least 1");
  if (o.test != "student" && o.test != "welch") throw Error("--test: '" + o.test + "' is not student or welch");
  // i/N or auto (the launcher's environment), or worker k of G of --gpu all (as --shard k/G)
  const Shard sh = command_shard(o.dev, o.shard);
  const int shard = sh.index, shards = sh.count;
  // Every process of `--shard auto` (every worker) is given the same --out: its shard's tag names its file.
  if (sh.active) o.out = shard_file_name(o.out, sh, o.shard == "auto" || is_gpu_worker(o.dev));
  const size_t limit = memory_bytes(o.memory_mb);
  check_output_file("--out", o.out);
  if (!o.dump_gap.empty()) check_output_file("--dump-gap", o.dump_gap);
  auto model = nn::load_model(o.weights, o.model);
  // Images are preprocessed as the model's weights define (or --preprocess and its overrides).
  const io::Preprocess pp = api::preprocess_for(o.pre, model->arch());
  const std::vector<DatasetItem> all = list_dataset(o.data, o.labels, model->num_classes());
  std::vector<int64_t> mine;
  for (size_t i = 0; i < all.size(); ++i)
    if (int64_t(i) % shards == shard) mine.push_back(int64_t(i));

  DatasetStatsMeta meta = api::stats_meta(*model, o.weights, o.test);
  meta.preprocess = api::preprocess_json(pp).dump();  // recorded in the file; part of a checkpoint's identity
  if (sh.active) meta.weights_hash = content_hash(o.weights);  // `stats merge` checks that shards agree
  const std::vector<std::pair<std::string, int>> convs = api::stats_convs(*model);
  // Checkpoints: every --checkpoint images the accumulators so far go to a part file beside
  // the output (a shard file of this run, written atomically) and a new accumulator starts,
  // so a killed run loses at most that many images. A part's name carries the run's identity:
  // the weights' and labels' content, the resolved data folder and its listing, the test and
  // the shard, so that only the same job resumes from it. Parts merge exactly (the moments are
  // error-free double-double sums, the samples are sorted by image index), so a resumed run
  // writes the same file as one run; they are removed once the output is written. --dump-gap
  // keeps every gap row in memory for its own file, so it runs without checkpoints.
  const bool checkpoints = o.dump_gap.empty() && o.checkpoint > 0;
  std::error_code ec;
  // (Hashing the weights reads them once more: only a run that checkpoints needs its identity.)
  auto job_identity = [&]() {
    std::string listing;
    for (const auto& it : all)
      listing += fs::relative(it.path, o.data).generic_string() + "\t" + std::to_string(it.label) + "\n";
    return text_hash(content_hash(o.weights) + "|" + (o.labels.empty() ? "" : content_hash(o.labels)) + "|" +
                     fs::weakly_canonical(fs::absolute(o.data), ec).generic_string() + "|" + text_hash(listing) + "|" +
                     o.test + "|" + std::to_string(shard) + "/" + std::to_string(shards) + "|" + meta.model + "|" + meta.preprocess);
  };
  const std::string identity = checkpoints ? job_identity() : std::string();
  const fs::path out_path(o.out);
  const std::string part_stem = out_path.filename().string() + ".part-" + identity + "-";
  const fs::path out_dir = out_path.has_parent_path() ? out_path.parent_path() : fs::path(".");
  std::vector<std::string> parts;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(out_path.filename().string() + ".part-", 0) != 0 || e.path().extension() != ".pgpart") continue;
    if (o.no_resume || !checkpoints || name.rfind(part_stem, 0) != 0) {
      // Another job's checkpoint (other weights, data or settings), or a fresh start: not ours
      // to use; refused rather than silently deleted, unless --no-resume says to start over.
      if (!o.no_resume)
        throw file_error(e.path().string(), "is a checkpoint of another `parchgrad stats` run into " + o.out +
                                                " (other weights, data or settings); remove it, or --no-resume");
      fs::remove(e.path(), ec);
      continue;
    }
    parts.push_back(e.path().string());
  }
  std::sort(parts.begin(), parts.end());
  std::set<int64_t> done;
  if (!parts.empty()) {
    const auto resumed = DatasetStats::merge_shards(parts, limit);
    done.insert(resumed->image_indices().begin(), resumed->image_indices().end());
    std::fprintf(stderr, "parchgrad: resuming: %zu of %zu images done (%zu checkpoints of %s)\n", done.size(),
                 mine.size(), parts.size(), o.out.c_str());
  }
  int part_no = int(parts.size());
  auto new_accumulator = [&]() {
    const std::string spill =
        o.out + ".samples." + std::to_string(getpid()) + "." + std::to_string(part_no) + ".tmp";
    return std::make_unique<DatasetStats>(meta, convs, limit, spill);
  };
  std::unique_ptr<DatasetStats> acc = new_accumulator();
  GapCollector hook(acc.get(), !o.dump_gap.empty());
  auto write_part = [&]() {
    if (acc->images() == 0) return;
    char num[16];
    std::snprintf(num, sizeof num, "%06d", part_no);
    const std::string part = (out_dir / (part_stem + num + ".pgpart")).string();
    acc->write_shard(part, part_no, 0);
    parts.push_back(part);
    ++part_no;
    acc = new_accumulator();
    hook.set_stats(acc.get());
  };
  std::vector<int64_t> all_idx;
  std::vector<int> all_labels;
  nn::Context ctx;
  setup_device(o.dev, ctx);
  ctx.hook = &hook;

  io::Progress progress(sh.active ? "stats " + sh.text() : "stats", int64_t(mine.size()));
  if (!done.empty()) progress.advance(int64_t(done.size()));
  std::vector<Tensor> xs;
  std::vector<int64_t> idx;
  std::vector<int> labels;
  auto flush = [&]() {
    if (xs.empty()) return;
    const int64_t B = int64_t(xs.size());
    const Tensor x = stack(xs);
    check_input(x, all[size_t(idx[0])].path);
    all_idx.insert(all_idx.end(), idx.begin(), idx.end());
    all_labels.insert(all_labels.end(), labels.begin(), labels.end());
    api::stats_batch(*model, ctx, *acc, x, idx, labels);
    progress.advance(B);
    xs.clear();
    idx.clear();
    labels.clear();
    if (checkpoints && acc->images() >= o.checkpoint) write_part();
  };
  for (int64_t i : mine) {
    if (done.count(i)) continue;
    const DatasetItem& it = all[size_t(i)];
    // An unreadable image is skipped and counted (as saliency and eval do), unless --strict.
    Tensor t;
    try {
      t = io::load_input_tensor(it.path, pp);
      if (t.ndim() != 3) throw file_error(it.path, "expected one [3, H, W] sample, got " + t.shape_str());
    } catch (const Error& e) {
      if (o.strict) throw;
      std::fprintf(stderr, "parchgrad: skipped: %s\n", e.what());
      progress.skip();
      continue;
    }
    if (!xs.empty() && xs[0].shape() != t.shape()) flush();
    xs.push_back(t);
    idx.push_back(i);
    labels.push_back(it.label);
    if (int(xs.size()) >= o.batch) flush();
  }
  flush();
  progress.finish();
  if (all_idx.empty() && done.empty() && !(is_gpu_worker(o.dev) && mine.empty()))  // (a worker may get none)
    throw Error("stats: no readable image in " + o.data + " (" + std::to_string(progress.skipped()) + " skipped)");
  if (!o.dump_gap.empty()) hook.dump(o.dump_gap, all_idx, all_labels);
  // With checkpoints written, the result is the merge of every part (the last one included).
  std::unique_ptr<DatasetStats> merged;
  DatasetStats* result = acc.get();
  if (!parts.empty()) {
    write_part();
    merged = DatasetStats::merge_shards(parts, limit);
    result = merged.get();
  }
  if (!sh.active) {
    result->finalize(o.out);
  } else {
    result->write_shard(o.out, shard, shards);
  }
  merged.reset();
  for (const auto& p : parts) fs::remove(p, ec);
  progress.summary((sh.active ? "shard " + sh.text() + " in " : "statistics in ") + o.out);
}

// `stats --gpu all` (tools/cli/gpu_all.h): worker k of G writes the shard file of `--shard k/G`
// (OUT-k-of-G.ext, checkpointing as a shard does); stats merge then writes --out, and the shard
// files are removed.
void run_stats_all(const StatsOptions& opts) {
  if (!opts.dump_gap.empty()) throw Error("--dump-gap does not go with --gpu all (its rows are not merged); give --gpu k");
  GpuAllJob job;
  job.command = "stats";
  job.threads = opts.threads;
  job.work = worker_body(opts, run_stats);
  job.merge = [&](int G) {
    std::vector<std::string> files;
    for (int k = 0; k < G; ++k) files.push_back(shard_file_name(opts.out, worker_shard(k, G), true));
    DatasetStats::merge_shards(files, memory_bytes(opts.memory_mb))->finalize(opts.out);
    std::error_code ec;
    for (const auto& f : files) fs::remove(f, ec);
    return GpuAllMerged{"statistics in " + opts.out, ""};
  };
  run_on_all_gpus(job);
}

void run_merge(const MergeOptions& o) {
  auto acc = DatasetStats::merge_shards(o.shards, memory_bytes(o.memory_mb));
  acc->finalize(o.out);
}

}  // namespace

void register_stats(CLI::App& app) {
  auto so = std::make_shared<StatsOptions>();
  auto mo = std::make_shared<MergeOptions>();
  CLI::App* s = app.add_subcommand(
      "stats", "Dataset statistics for ParchGrad over an ImageFolder tree (or one shard of it; see `stats merge`)");
  s->add_option("--weights", so->weights, "torchvision state dict (.pth or .safetensors)");
  s->add_option("--model", so->model, "architecture (inferred from the weights when omitted)");
  s->add_option("--data", so->data, "ImageFolder directory: one sub-folder per class (sorted names give class ids)");
  s->add_option("-o,--out", so->out, "stats file (.safetensors), or the shard file with --shard");
  s->add_option("--test", so->test, "class-vs-rest t-test: student (pooled) or welch")->capture_default_str();
  s->add_option("--shard", so->shard,
                "i/N: process the images whose index % N == i and write a shard file; auto: i and N from the "
                "launcher (Slurm, Open MPI, PMI)");
  s->add_option("--batch", so->batch, "images per forward pass")->capture_default_str();
  s->add_option("--labels", so->labels, "file of lines \"folder_name class_id\" mapping folders to classes");
  for (const char* name : {"preprocess", "resize", "crop", "interpolation"})
    for (const auto& opt : api::saliency_options())
      if (std::string(opt.name) == name)
        s->add_option_function<std::string>(std::string("--") + name, [so, set = opt.set](const std::string& v) { set(so->pre, v); },
                                            opt.help);
  s->add_option("--threads", so->threads, "CPU threads (default: all cores)");
  add_device_flags(s, so->dev);
  s->add_option("--dump-gap", so->dump_gap, "also write every gap value: one [images, channels] tensor per conv (.safetensors)");
  s->add_option("--memory-mb", so->memory_mb, "gap samples kept in memory before spilling to a temporary file")
      ->capture_default_str();
  s->add_flag("--strict", so->strict, "stop at the first unreadable image instead of skipping it");
  s->add_option("--checkpoint", so->checkpoint,
                "images between checkpoints (part files beside --out; a killed run resumes from them; 0: none)")
      ->capture_default_str();
  s->add_flag("--no-resume", so->no_resume, "start over: remove the checkpoints of an earlier run into --out");

  CLI::App* m = s->add_subcommand("merge", "Combine shard files of `parchgrad stats --shard` into a stats file");
  m->add_option("shards", mo->shards, "shard files")->required();
  m->add_option("-o,--out", mo->out, "stats file (.safetensors)")->required();
  m->add_option("--memory-mb", mo->memory_mb, "memory for the Shapiro-Wilk samples")->capture_default_str();
  m->callback([mo]() { run_merge(*mo); });

  s->callback([so, m]() {
    if (m->parsed()) return;
    for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"--weights", &so->weights},
                                      {"--data", &so->data}, {"--out", &so->out}})
      if (value->empty()) throw Error(std::string("stats: ") + name + " is required");
    if (gpu_all_requested(so->dev, so->shard))
      run_stats_all(*so);
    else
      run_stats(*so);
  });
}

}  // namespace pg::cli
