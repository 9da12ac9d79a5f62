// --device, --gpu, --precision, --dgrad, --deterministic: where the model runs, shared by
// every subcommand that runs one.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "capi/saliency.h"
#include "nn/layers.h"
#include "core/tensor.h"

namespace pg::cli {

// --precision, --dgrad and --deterministic are capi/saliency.h's device options (one table with
// the C API's); the device itself is chosen here (the C API: pg_model_load).
struct DeviceFlags : api::DeviceSettings {
  std::string device = "cpu";  // cpu | cuda
  // A device index, "all" (one worker per visible device: tools/cli/gpu_all.h), or "" (not
  // given): the process's local rank on its node modulo the visible devices (tools/cli/shard.h),
  // device 0 outside a launcher.
  std::string gpu;
  // Set by `--gpu all`'s runner in the options a worker runs with: worker k of G (gpu is "k").
  int worker = -1, workers = 0;
};

void add_device_flags(CLI::App* app, DeviceFlags& f);

// Checks the flags and, for cuda, starts the device with them (one line on stderr names the
// device, and the local rank that chose it when --gpu was not given); sets ctx.device and
// ctx.device_options. The calling thread is then bound to that device (each worker of --gpu all
// calls it in its own thread; calls are serialised). Throws pg::Error for an unknown device or
// precision, device flags given with --device cpu, --gpu all in a command without workers, or a
// build/machine without a usable device.
void setup_device(const DeviceFlags& f, nn::Context& ctx);

// The settings and the device's description, for results files and benchmarks.
nlohmann::json device_json(const DeviceFlags& f);

}  // namespace pg::cli
