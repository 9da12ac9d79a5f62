// `parchgrad bench`: forward and saliency (forward + input gradient) throughput on random
// weights and random inputs.
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "kernels/cpu/blas.h"
#include "nn/layers.h"
#include <random>

#include "core/error.h"
#include "nn/model.h"
#include "nn/profile.h"
#include "parchgrad/attribution.h"
#include "parchgrad/parchgrad.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/cli/device_flags.h"

namespace pg::cli {

namespace {

struct BenchOptions {
  DeviceFlags dev;
  std::string model = "resnet50";
  int batch = 8, size = 224, iters = 5, warmup = 1, threads = 0, classes = 1000;
  bool json = false, profile = false, winograd = false;
  std::string parchgrad;  // "cls", "ins" or "cls,ins": also time ParchGrad saliency
};

template <class F>
double images_per_second(int batch, int warmup, int iters, F run) {
  for (int i = 0; i < warmup; ++i) run();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) run();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(batch) * iters / secs;
}

void run_bench(const BenchOptions& o) {
  set_threads(o.threads);
  if (o.batch < 1 || o.iters < 1 || o.size < 32) throw Error("bench: need --batch >= 1, --iters >= 1, --size >= 32");
  auto model = nn::random_model(o.model, o.classes, 1);
  Tensor x({o.batch, 3, o.size, o.size});
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = normal(rng);
  nn::Context ctx;
  if (o.winograd) ctx.winograd = true;
  setup_device(o.dev, ctx);
  // On the device the batch is uploaded once and only the maps come back, as a pipeline
  // that decodes the next batch while this one runs would see it.
  const Tensor xin = ctx.device == Device::cuda ? x.to(Device::cuda) : x;
  nn::profile::enable(o.profile);
  BackwardOptions plain;
  plain.map = BackwardOptions::Map::grad;
  plain.keep_grad = false;
  const double fwd = images_per_second(o.batch, o.warmup, o.iters, [&] { forward_logits(*model, ctx, xin); });
  const double sal = images_per_second(o.batch, o.warmup, o.iters, [&] {
    GradientResult r = input_gradient(*model, ctx, xin, {-1}, plain);
  });
  if (o.profile) nn::profile::report(stderr);
  // ParchGrad with random statistics (quantile 0.1, the last half of the convs hooked).
  std::vector<std::pair<std::string, double>> pg_ips;
  if (!o.parchgrad.empty()) {
    StatsFile stats;
    stats.path = "random statistics";
    stats.model = model->arch();
    stats.num_classes = model->num_classes();
    std::uniform_real_distribution<float> uni(0.f, 1.f);
    for (const auto* c : model->convs()) {
      LayerStats l;
      const int C = c->out_channels;
      l.mean = Tensor({C});
      l.std = Tensor({C});
      l.shapiro_p = Tensor({C});
      l.cls_p = Tensor({C, stats.num_classes});
      for (int i = 0; i < C; ++i) {
        l.mean[i] = uni(rng);
        l.std[i] = 0.1f + uni(rng);
        l.shapiro_p[i] = 0.1f * uni(rng);
      }
      for (int64_t i = 0; i < l.cls_p.numel(); ++i) l.cls_p[i] = uni(rng);
      stats.layers[c->site.name] = l;
    }
    for (const std::string mode : {"cls", "ins"}) {
      if (o.parchgrad.find(mode) == std::string::npos) continue;
      ParchGradOptions po;
      po.mode = mode == "cls" ? ParchGradOptions::Mode::Cls : ParchGradOptions::Mode::Ins;
      ParchGradHook hook(*model, stats, po);
      BackwardOptions b = plain;
      b.hook = &hook;
      b.on_targets = [&hook](const std::vector<int>& t) { hook.set_targets(t); };
      const double ips = images_per_second(o.batch, o.warmup, o.iters, [&] {
        GradientResult r = input_gradient(*model, ctx, xin, {-1}, b);
      });
      pg_ips.push_back({mode, ips});
    }
    if (o.profile) nn::profile::report(stderr);
  }
  const int threads = omp_get_max_threads();
  if (o.json) {
    nlohmann::json j = {{"model", o.model}, {"batch", o.batch}, {"size", o.size}, {"threads", threads},
                        {"iters", o.iters}, {"forward_ips", fwd}, {"saliency_ips", sal},
                        {"blas_core", blas::core_name()}, {"blas_core_choice", blas::core_choice()},
                        {"winograd", ctx.winograd}};
    j.update(device_json(o.dev));
    for (const auto& [mode, ips] : pg_ips) j["parchgrad_" + mode + "_ips"] = ips;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s  batch %d  %dx%d  %d threads  OpenBLAS %s (%s)\n  forward   %8.2f images/s\n"
                "  saliency  %8.2f images/s\n",
                o.model.c_str(), o.batch, o.size, o.size, threads, blas::core_name().c_str(),
                blas::core_choice().c_str(), fwd, sal);
    for (const auto& [mode, ips] : pg_ips) std::printf("  parchgrad %s %6.2f images/s\n", mode.c_str(), ips);
  }
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* b = app.add_subcommand("bench", "Forward and saliency images/s on random weights");
  b->add_option("--model", o->model, "architecture")->capture_default_str();
  b->add_option("--batch", o->batch, "images per batch")->capture_default_str();
  b->add_option("--size", o->size, "input height and width")->capture_default_str();
  b->add_option("--iters", o->iters, "timed iterations")->capture_default_str();
  b->add_option("--warmup", o->warmup, "untimed iterations first")->capture_default_str();
  b->add_option("--threads", o->threads, "CPU threads (default: all cores)");
  add_device_flags(b, o->dev);
  b->add_flag("--json", o->json, "print one JSON line");
  b->add_flag("--profile", o->profile, "print time per op kind (stderr)");
  b->add_flag("--winograd", o->winograd, "3x3 stride-1 convs by Winograd F(2x2,3x3) (also PARCHGRAD_WINOGRAD=1)");
  b->add_option("--parchgrad", o->parchgrad, "also time ParchGrad saliency: cls, ins or cls,ins (random statistics)");
  b->callback([o]() { run_bench(*o); });
}

}  // namespace pg::cli
