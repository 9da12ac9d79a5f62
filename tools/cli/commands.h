// Each group of `parchgrad` subcommands registers itself on the CLI11 app here.
// A subcommand's callback throws pg::Error for bad input; main() prints the one-line
// message and exits with status 1.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

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

// The merges of shards (`--shard i/N` runs, and the workers of `--gpu all`: tools/cli/gpu_all.h).
// Each checks that the shards belong together and throws a one-line pg::Error naming the file
// otherwise. quiet: no line of their own on stderr (--gpu all prints one summary).
// merge-results: the shards' results-<i>-of-<N>.jsonl (or their folder) into `out` ("": the
// folder's results.jsonl), in input order; returns the number of inputs that failed in them.
int merge_saliency_results(const std::vector<std::string>& shards, const std::string& out, bool quiet);
// eval merge: the shards' reports (PREFIX-i-of-N.json, .jsonl or the prefix) into the report of
// one run at prefix `out` ("": the shards' PREFIX), its table on stdout; returns the number of
// inputs, annotations and maps the shards skipped.
int64_t merge_eval_reports(const std::vector<std::string>& shards, const std::string& out, bool quiet);

}  // namespace pg::cli
