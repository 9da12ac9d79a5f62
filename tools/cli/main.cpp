// The `parchgrad` command line.
#include <malloc.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "core/error.h"
#include "tools/cli/commands.h"

int main(int argc, char** argv) {
  // Tensor storage is allocated and freed layer by layer, in blocks of megabytes. glibc serves
  // such blocks by mmap and gives them back at free, so every new tensor starts with page faults
  // on first touch (measured: efficientnet_b0's forward on 2 cores 30 -> 54 images/s, saliency
  // about 10% faster, when freed blocks stay in the heap). The process keeps its peak instead.
  // Only here: the C API leaves its host program's allocator alone (README: the C API).
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"parchgrad: saliency maps and ParchGrad for torchvision CNN classifiers (ResNet, VGG, MobileNet, EfficientNet, ConvNeXt)", "parchgrad"};
  app.require_subcommand(1);
  app.set_version_flag("--version", PARCHGRAD_VERSION);
  pg::cli::register_saliency(app);
  pg::cli::register_bench(app);
  pg::cli::register_convert(app);
  pg::cli::register_preprocess(app);
  pg::cli::register_stats(app);
  pg::cli::register_eval(app);
  pg::cli::register_merge_results(app);
  // Bare `parchgrad`: the help. An unknown command is named (CLI11 alone would only say that
  // a subcommand is required).
  if (argc < 2) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  }
  if (argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
      known += (known.empty() ? "" : ", ") + sub->get_name();
      found = found || sub->get_name() == argv[1];
    }
    if (!found) {
      std::fprintf(stderr, "parchgrad: error: unknown command '%s' (commands: %s)\n", argv[1], known.c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "errors" with status 0; the real ones get the program's own
    // one-line style and status 2 (a usage error, as distinct from a failed run's 1).
    if (e.get_exit_code() == 0) return app.exit(e);
    std::string what = e.what();
    for (char& c : what)
      if (c == '\n') c = ' ';
    const CLI::App* sub = nullptr;
    for (const CLI::App* s : app.get_subcommands([](CLI::App*) { return true; }))
      if (s->parsed()) sub = s;
    std::fprintf(stderr, "parchgrad: error: %s (see: parchgrad %s--help)\n", what.c_str(),
                 sub ? (sub->get_name() + " ").c_str() : "");
    return 2;
  } catch (const pg::cli::ExitCode& e) {
    return e.code;
  } catch (const pg::Error& e) {
    std::fprintf(stderr, "parchgrad: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "parchgrad: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "parchgrad: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
