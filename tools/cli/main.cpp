// The `parchgrad` command line.
#include <cstdio>
#include <exception>

#include "core/error.h"
#include "tools/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"parchgrad: saliency maps and ParchGrad for ResNet and VGG classifiers"};
  app.require_subcommand(1);
  app.set_version_flag("--version", PARCHGRAD_VERSION);
  pg::cli::register_saliency(app);
  pg::cli::register_bench(app);
  pg::cli::register_convert(app);
  pg::cli::register_preprocess(app);
  pg::cli::register_stats(app);
  pg::cli::register_eval(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
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
