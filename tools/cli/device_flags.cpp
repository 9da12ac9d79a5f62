#include "tools/cli/device_flags.h"

#include <cstdio>

#include "kernels/params.h"
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
  using kernels::ConvPrecision;
  // (conv_dgrad.cu's parse_conv_precision is not linked into builds without a device.)
  const ConvPrecision prec = f.precision == "fp32"   ? ConvPrecision::fp32
                             : f.precision == "tf32" ? ConvPrecision::tf32
                             : f.precision == "bf16" ? ConvPrecision::bf16
                                                     : throw Error("--precision: '" + f.precision +
                                                                   "' is not fp32, tf32 or bf16");
  if (f.dgrad != "engine" && f.dgrad != "cudnn") throw Error("--dgrad: '" + f.dgrad + "' is not engine or cudnn");
  if (f.device == "cpu") {
    if (f.precision != "fp32") throw Error("--precision " + f.precision + " needs --device cuda");
    if (f.dgrad != "engine") throw Error("--dgrad " + f.dgrad + " needs --device cuda");
    ctx.device = Device::cpu;
    return;
  }
  if (f.device != "cuda") throw Error("--device: '" + f.device + "' is not cpu or cuda");
  if (f.gpu < 0) throw Error("--gpu must be a device index >= 0");
  nn::DeviceOptions opt;
  opt.precision = prec;
  opt.dgrad_library = f.dgrad == "cudnn";
  opt.deterministic = f.deterministic;
  nn::DeviceBackend& dev = nn::device_backend();
  dev.configure(opt, f.gpu);
  std::fprintf(stderr, "device: %s\n", dev.description().c_str());
  ctx.device = Device::cuda;
  ctx.device_options = opt;
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
