// --device, --gpu, --precision, --dgrad, --deterministic: where the model runs, shared by
// every subcommand that runs one.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "nn/layers.h"
#include "core/tensor.h"

namespace pg::cli {

struct DeviceFlags {
  std::string device = "cpu";  // cpu | cuda
  int gpu = 0;                 // device index
  std::string precision = "fp32";
  std::string dgrad = "engine";  // engine | cudnn
  bool deterministic = false;
};

void add_device_flags(CLI::App* app, DeviceFlags& f);

// Checks the flags and, for cuda, starts the device with them (one line on stderr names the
// device); sets ctx.device and ctx.device_options. Throws pg::Error for an unknown device or
// precision, device flags given with --device cpu, or a build/machine without a usable
// device.
void setup_device(const DeviceFlags& f, nn::Context& ctx);

// The settings and the device's description, for results files and benchmarks.
nlohmann::json device_json(const DeviceFlags& f);

}  // namespace pg::cli
