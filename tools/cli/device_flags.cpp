#include "tools/cli/device_flags.h"

#include <cstdio>

#include "capi/saliency.h"
#include "nn/backend.h"
#include "core/error.h"

namespace pg::cli {

void add_device_flags(CLI::App* app, DeviceFlags& f) {
  app->add_option("--device", f.device, "cpu or cuda (default: cpu)");
  app->add_option("--gpu", f.gpu, "CUDA device index (default: 0)");
  app->add_option("--precision", f.precision,
                  "operands of the data-gradient convolution on cuda: fp32, tf32 or bf16 (default: fp32); "
                  "tf32 and bf16 also let the forward convolutions use TF32 tensor cores");
  app->add_option("--dgrad", f.dgrad,
                  "data-gradient convolution on cuda: engine (the project's kernel, ParchGrad fused) or cudnn "
                  "(cuDNN plus a separate scale pass; the baseline)");
  app->add_flag("--deterministic", f.deterministic,
                "cuda: only bitwise-reproducible algorithms (maps identical run to run)");
}

void setup_device(const DeviceFlags& f, nn::Context& ctx) {
  api::DeviceSettings d;
  d.precision = f.precision;
  d.dgrad = f.dgrad;
  d.deterministic = f.deterministic;
  api::setup_device(f.device, f.gpu, d, ctx);
  if (ctx.device == Device::cuda) std::fprintf(stderr, "device: %s\n", nn::device_backend().description().c_str());
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
