// Each group of `parchgrad` subcommands registers itself on the CLI11 app here.
// A subcommand's callback throws pg::Error for bad input; main() prints the one-line
// message and exits with status 1.
#pragma once
#include <CLI/CLI.hpp>

namespace pg::cli {

// Thrown after the errors were already reported, to exit with this status.
struct ExitCode {
  int code;
  explicit ExitCode(int c) : code(c) {}
};

void register_saliency(CLI::App& app);     // saliency, gradient   (cmd_saliency.cpp)
void register_bench(CLI::App& app);        // bench                (cmd_bench.cpp)
void register_convert(CLI::App& app);      // convert, inspect     (cmd_convert.cpp)
void register_preprocess(CLI::App& app);   // preprocess           (cmd_preprocess.cpp)
void register_stats(CLI::App& app);        // stats, stats merge   (cmd_stats.cpp)
void register_eval(CLI::App& app);         // eval, eval merge     (cmd_eval.cpp)
void register_merge_results(CLI::App& app);  // merge-results     (cmd_merge.cpp)

}  // namespace pg::cli
