#include "tools/cli/device_flags.h"

#include <cstdio>

#include "capi/saliency.h"
#include "tools/cli/option_table.h"
#include "nn/backend.h"
#include "core/error.h"

namespace pg::cli {

void add_device_flags(CLI::App* app, DeviceFlags& f) {
  app->add_option("--device", f.device, "cpu or cuda (default: cpu)");
  app->add_option("--gpu", f.gpu, "CUDA device index (default: 0)");
  add_table_options<api::DeviceSettings>(app, api::device_options(), f);
}

void setup_device(const DeviceFlags& f, nn::Context& ctx) {
  api::setup_device(f.device, f.gpu, f, ctx);
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
