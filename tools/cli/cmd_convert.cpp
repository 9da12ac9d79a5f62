// `parchgrad convert IN OUT.safetensors` and `parchgrad inspect W`.
#include <cstdio>
#include <memory>
#include <string>

#include "core/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "weights/state_dict.h"

namespace pg::cli {

namespace {

std::string basename_of(const std::string& path) {
  size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

void register_convert(CLI::App& app) {
  struct ConvertArgs {
    std::string in, out;
  };
  auto conv = std::make_shared<ConvertArgs>();
  CLI::App* c = app.add_subcommand(
      "convert", "Convert weights (.pth zip or legacy, .safetensors) to float32 .safetensors");
  c->add_option("input", conv->in, "Weight file to read")->required();
  c->add_option("output", conv->out, "safetensors file to write (or -o)");
  c->add_option("-o,--out", conv->out, "safetensors file to write");
  c->callback([conv]() {
    if (conv->out.empty()) throw Error("convert: give the output file (OUTPUT or -o/--out)");
    check_output_file("output", conv->out);
    const std::string format = weights::detect_format(conv->in);
    weights::StateDict sd = weights::load_state_dict(conv->in);
    weights::save_safetensors(conv->out, sd, {{"source", basename_of(conv->in)}, {"format", format}});
    std::printf("wrote %zu tensors to %s\n", sd.size(), conv->out.c_str());
  });

  auto file = std::make_shared<std::string>();
  CLI::App* i = app.add_subcommand("inspect", "List the tensors of a weight file");
  i->add_option("weights", *file, "Weight file (.pth or .safetensors)")->required();
  i->callback([file]() {
    const std::string format = weights::detect_format(*file);
    weights::StateDict sd = weights::load_state_dict(*file);
    std::printf("format: %s (%zu tensors)\n", format.c_str(), sd.size());
    for (const auto& [name, t] : sd) std::printf("%s %s\n", name.c_str(), t.shape_str().c_str());
  });
}

}  // namespace pg::cli
