#include "tools/cli/device_flags.h"

#include <cstdio>
#include <mutex>

#include "capi/saliency.h"
#include "tools/cli/shard.h"
#include "tools/cli/option_table.h"
#include "nn/backend.h"
#include "core/error.h"

namespace pg::cli {

void add_device_flags(CLI::App* app, DeviceFlags& f) {
  app->add_option("--device", f.device, "cpu or cuda (default: cpu)");
  app->add_option("--gpu", f.gpu,
                  "CUDA device index, or all: one worker per visible GPU in this process (stats, saliency, gradient, eval; the "
                  "images dealt round-robin, the outputs those of one run; after a failed worker the same command "
                  "resumes stats, saliency and eval); default: the local rank of a Slurm or MPI task modulo the visible devices, "
                  "else 0");
  add_table_options<api::DeviceSettings>(app, api::device_options(), f);
}

void setup_device(const DeviceFlags& f, nn::Context& ctx) {
  // The workers of --gpu all start their devices one at a time.
  static std::mutex one_at_a_time;
  std::lock_guard<std::mutex> lock(one_at_a_time);
  int gpu = 0;
  std::string chosen;
  if (!f.gpu.empty()) {
    if (f.gpu == "all")
      throw Error("--gpu all is for stats, saliency, gradient and eval (one worker per GPU); give a device index");
    if (f.device != "cuda") throw Error("--gpu " + f.gpu + " needs --device cuda");
    const bool digits = f.gpu.size() < 9 && f.gpu.find_first_not_of("0123456789") == std::string::npos;
    if (!digits) throw Error("--gpu: '" + f.gpu + "' is not a device index");
    gpu = std::stoi(f.gpu);
    chosen = f.workers > 0 ? " (--gpu all: worker " + std::to_string(f.worker) + " of " + std::to_string(f.workers) + ")"
                           : " (--gpu " + f.gpu + ")";
  } else if (f.device == "cuda") {
    std::string source;
    const int local = local_rank_from_environment(&source);
    if (local >= 0) {
      const int visible = nn::device_backend().device_count();
      gpu = gpu_for_local_rank(local, visible);
      chosen = " (device " + std::to_string(gpu) + ": " + source + "=" + std::to_string(local) + " of " +
               std::to_string(visible) + " visible)";
    }
  }
  api::setup_device(f.device, gpu, f, ctx);
  if (ctx.device == Device::cuda)
    std::fprintf(stderr, "device: %s%s\n", nn::device_backend().description().c_str(), chosen.c_str());
}

nlohmann::json device_json(const DeviceFlags& f) {
  nlohmann::json j = {{"device", f.device}};
  if (f.device == "cuda") {
    j["precision"] = f.precision;
    j["dgrad"] = f.dgrad;
    j["deterministic"] = f.deterministic;
    j["backend"] = nn::device_backend().runtime_name();
    const std::string desc = nn::device_backend().description();
    if (!desc.empty()) j["device_name"] = desc;
  }
  return j;
}

}  // namespace pg::cli
