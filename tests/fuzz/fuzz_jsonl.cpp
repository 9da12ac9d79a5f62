// libFuzzer target: the JSON-lines files the commands keep (tools/cli/reports, on
// read_json_lines of tools/cli/common): eval's REPORT.jsonl (read_report: every line parsed,
// every record checked, a partial last line cut; then every method's numbers taken as the
// summary takes them) and saliency's results.jsonl (read_results_index, then reindex_results
// on a copy). What they accept is held to their promises: after a read the file ends at a
// line's end; a method's numbers have one list per ratio; a re-indexed index reads back, has
// lost exactly the lines it reported dropped, and names no file twice. The settings id of the
// reports is "fuzz" (the seeds': tests/fuzz/make_corpus.py). Positive control
// (fuzz_jsonl_control, fuzz_common.h): numbers of a method that no seed holds.
#include <fstream>
#include <set>

#include "tests/fuzz/fuzz_common.h"
#include "tools/cli/reports.h"

namespace {

namespace cli = pg::cli;

// Every method's numbers as text.
std::string content(const std::vector<nlohmann::json>& records) {
  std::set<std::string> methods;
  for (const auto& r : records) methods.insert(r.value("method", std::string("*")));
  std::string c;
  for (const auto& m : methods) {
    const cli::MethodNumbers n = cli::method_numbers(records, m);
    if (n.images == 0) continue;
    c += m + ":";
    for (const auto& [key, per] : n.per_ratio)
      for (const auto& v : per)
        for (double x : v) c += pg::fuzz::exact(x);
    for (const auto& [key, v] : n.values)
      for (double x : v) c += pg::fuzz::exact(x);
  }
  return c;
}

// Whether the file ends at a line's end.
bool ends_at_line_end(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  const std::streamoff n = f.tellg();
  if (n <= 0) return true;
  f.seekg(n - 1);
  return f.get() == '\n';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".jsonl");
  const std::string* path = &file.write(data, size);
  pg::fuzz::expect_only_pg_errors(
      [&] {
        std::set<std::string> done;
        bool partial = false;
        const std::vector<nlohmann::json> records = cli::read_report(*path, "fuzz", &done, &partial);
        if (!ends_at_line_end(*path)) pg::fuzz::broken_promise(*path, "its partial last line was not cut");
        std::set<std::string> methods;
        for (const auto& r : records) methods.insert(r.value("method", std::string("*")));
        for (const auto& m : methods) {
          const cli::MethodNumbers n = cli::method_numbers(records, m);
          for (const auto& [key, per] : n.per_ratio)
            if (per.size() != n.ratios.size()) pg::fuzz::broken_promise(*path, key + " is not one list per ratio");
          for (const auto& [curve, fr] : n.fractions)
            if (n.mean_prob.at(curve).size() != fr.size()) pg::fuzz::broken_promise(*path, curve + ": a mean per fraction");
        }
        pg::fuzz::planted_defect(pg::fuzz::new_content(content(records), [](const std::string& p) {
          std::set<std::string> d;
          bool cut = false;
          return content(cli::read_report(p, "fuzz", &d, &cut));
        }));
      },
      *path);
  path = &file.write(data, size);  // read_report may have cut the last line
  bool index_read = false;
  pg::fuzz::expect_only_pg_errors(
      [&] {
        cli::read_results_index(*path);
        index_read = true;
      },
      *path);
  if (!index_read) return 0;
  // Re-indexing replaces the file (a temporary file renamed over it): a copy of its own.
  static const std::string index = *path + ".index.jsonl";
  {
    std::ofstream f(index, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  }
  pg::fuzz::expect_only_pg_errors(
      [&] {
        const size_t before = cli::read_results_index(index).size();
        const size_t dropped = cli::reindex_results(index);
        const std::vector<nlohmann::json> after = cli::read_results_index(index);
        if (after.size() + dropped != before) pg::fuzz::broken_promise(index, "re-indexing lost other lines than it dropped");
        std::set<std::string> named;
        for (const auto& line : after) {
          const std::vector<std::string> files = cli::files_of(line);
          for (const auto& f : std::set<std::string>(files.begin(), files.end()))
            if (!named.insert(f).second) pg::fuzz::broken_promise(index, "two lines of the re-indexed file name " + f);
        }
      },
      index);
  return 0;
}
