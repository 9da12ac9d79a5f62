// `parchgrad merge-results`: the indexes of `saliency --shard i/N` (results-<i>-of-<N>.jsonl, with
// results-<i>-of-<N>.json, written when the shard has finished) joined into the folder's
// results.jsonl, in input order, as one run writes it. The maps are already in place: every
// shard writes its own files into the shared output folder.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "tools/cli/commands.h"
#include "tools/cli/common.h"
#include "tools/cli/reports.h"
#include "tools/cli/shard.h"

namespace pg::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct MergeResultsOptions {
  std::vector<std::string> shards;  // a folder, or shard index files
  std::string out;
};

struct ShardIndex {
  std::string jsonl, manifest;
  json m;
};

// "DIR/results-2-of-4.jsonl" or its .json: the pair; false for any other name.
bool shard_paths(const fs::path& p, ShardIndex* s) {
  std::string name = p.filename().string();
  for (const char* ext : {".jsonl", ".json"}) {
    const std::string e = ext;
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0) {
      name.resize(name.size() - e.size());
      break;
    }
  }
  int i = 0, n = 0;
  if (name.rfind("results-", 0) != 0 || !parse_shard_tag(name.substr(8), &i, &n)) return false;
  s->jsonl = (p.parent_path() / (name + ".jsonl")).string();
  s->manifest = (p.parent_path() / (name + ".json")).string();
  return true;
}

}  // namespace

int merge_saliency_results(const std::vector<std::string>& given_shards, const std::string& given_out, bool quiet) {
  MergeResultsOptions o;
  o.shards = given_shards;
  o.out = given_out;
  std::vector<ShardIndex> shards;
  std::error_code ec;
  for (const auto& given : o.shards) {
    if (fs::is_directory(given, ec)) {
      std::vector<std::string> names;
      for (const auto& e : fs::directory_iterator(given, ec)) {
        ShardIndex s;
        if (e.path().extension() == ".jsonl" && shard_paths(e.path(), &s)) names.push_back(e.path().string());
      }
      std::sort(names.begin(), names.end());
      if (names.empty()) throw file_error(given, "holds no results-<i>-of-<N>.jsonl (written by `saliency --shard i/N`)");
      for (const auto& n : names) {
        ShardIndex s;
        shard_paths(n, &s);
        shards.push_back(s);
      }
      continue;
    }
    ShardIndex s;
    if (!shard_paths(given, &s))
      throw file_error(given, "is neither a folder nor a results-<i>-of-<N>.jsonl of `saliency --shard i/N`");
    shards.push_back(s);
  }
  for (ShardIndex& s : shards) {
    if (!fs::is_regular_file(s.jsonl, ec)) throw file_error(s.jsonl, "is missing");
    if (!fs::is_regular_file(s.manifest, ec))
      throw file_error(s.manifest, "is missing: that shard has not finished (rerun it alone with the same --shard)");
    std::ifstream f(s.manifest);
    s.m = json::parse(f, nullptr, false);
    bool ok = s.m.is_object() && s.m.value("parchgrad", "") == "saliency shard";
    for (const char* k : {"shard", "shards", "inputs_total", "failed"}) ok = ok && s.m.contains(k) && s.m[k].is_number_integer();
    ok = ok && s.m.contains("inputs") && s.m["inputs"].is_array() && s.m.contains("settings") &&
         s.m.contains("weights_hash");
    if (ok)
      for (const auto& in : s.m["inputs"])
        ok = ok && in.is_array() && in.size() == 2 && in[0].is_number_unsigned() && in[1].is_string();
    if (!ok) throw file_error(s.manifest, "is not the record of a finished `saliency --shard` run");
  }
  // One job: the same shard count, weights, settings and input list length; each shard once.
  const ShardIndex& first = shards.at(0);
  const int N = first.m["shards"].get<int>();
  const size_t total = first.m["inputs_total"].get<size_t>();
  std::map<int, const ShardIndex*> by_index;
  for (const ShardIndex& s : shards) {
    const int i = s.m["shard"].get<int>();
    if (s.m["shards"].get<int>() != N)
      throw file_error(s.manifest, "is shard " + std::to_string(i) + "/" + std::to_string(s.m["shards"].get<int>()) +
                                       ", " + first.manifest + " is one of " + std::to_string(N) + " shards");
    for (const char* key : {"weights_hash", "settings", "inputs_total"})
      if (s.m[key] != first.m[key])
        throw file_error(s.manifest, std::string("differs from ") + first.manifest + " in " + key + " (" +
                                         s.m[key].dump() + " vs " + first.m[key].dump() + "): not a shard of the same job");
    const auto [it, fresh] = by_index.emplace(i, &s);
    if (!fresh)
      throw file_error(s.manifest, "is shard " + std::to_string(i) + "/" + std::to_string(N) + ", given twice (also " +
                                       it->second->manifest + ")");
  }
  for (int i = 0; i < N; ++i)
    if (!by_index.count(i))
      throw Error("merge-results: shard " + std::to_string(i) + "/" + std::to_string(N) + " is missing (no results-" +
                  std::to_string(i) + "-of-" + std::to_string(N) + ".json among the " + std::to_string(shards.size()) +
                  " given)");
  std::vector<int> owner(total, -1);
  for (const ShardIndex& s : shards)
    for (const auto& in : s.m["inputs"]) {
      const size_t k = in[0].get<size_t>();
      if (k >= total || k % size_t(N) != size_t(s.m["shard"].get<int>()) || owner[k] >= 0)
        throw file_error(s.manifest, "lists input " + std::to_string(k) + ", which is not this shard's");
      owner[k] = s.m["shard"].get<int>();
    }
  for (size_t k = 0; k < total; ++k)
    if (owner[k] < 0) throw Error("merge-results: input " + std::to_string(k) + " is in no shard's list");
  // Each record goes with its input: the shard's records follow its inputs in order (an input
  // may give several records, a failed one none), so they are matched in order.
  std::vector<std::pair<size_t, json>> records;
  for (const ShardIndex& s : shards) {
    const json& inputs = s.m["inputs"];
    size_t at = 0;
    for (auto& r : read_results_index(s.jsonl)) {
      const std::string input = r.value("input", "");
      while (at < inputs.size() && inputs[at][1].get<std::string>() != input) ++at;
      if (at == inputs.size())
        throw file_error(s.jsonl, "names input '" + input + "', which is not in " + s.manifest + " (or out of order)");
      records.emplace_back(inputs[at][0].get<size_t>(), std::move(r));
    }
  }
  std::stable_sort(records.begin(), records.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  // Two shards naming one file (two inputs of one stem in different shards) would overwrite
  // each other's maps: refused, as one run would have named the second <stem>_2.
  std::map<std::string, size_t> claimed;
  for (const auto& [k, r] : records)
    for (const auto& f : files_of(r)) {
      const auto [it, fresh] = claimed.emplace(f, k);
      if (!fresh && owner[it->second] != owner[k])
        throw file_error(f, "is written by two shards (inputs " + std::to_string(it->second) + " and " +
                                std::to_string(k) + " share an output name); run them in one process or rename one");
    }
  const std::string out =
      !o.out.empty() ? o.out : (fs::path(first.jsonl).parent_path() / "results.jsonl").string();
  // Appended to the folder's index (a map made again replaces its earlier line, as one run does).
  std::string text;
  if (fs::exists(out, ec))
    for (const auto& r : read_results_index(out)) text += r.dump() + "\n";
  for (const auto& [k, r] : records) text += r.dump() + "\n";
  write_text_atomic(out, text);
  const size_t replaced = reindex_results(out);
  int failed = 0;
  for (const ShardIndex& s : shards) failed += s.m["failed"].get<int>();
  if (!quiet)
    std::fprintf(stderr, "merge-results: %d shards, %zu inputs, %zu records into %s%s%s\n", N, total, records.size(),
                 out.c_str(), replaced ? (" (" + std::to_string(replaced) + " earlier entries replaced)").c_str() : "",
                 failed ? (", " + std::to_string(failed) + " inputs failed in the shards").c_str() : "");
  return failed;
}

void register_merge_results(CLI::App& app) {
  auto mo = std::make_shared<MergeResultsOptions>();
  CLI::App* m = app.add_subcommand(
      "merge-results", "Join the results-<i>-of-<N>.jsonl of `saliency --shard i/N` into results.jsonl, in input order");
  m->add_option("shards", mo->shards, "the output folder, or its results-<i>-of-<N>.jsonl files")->required();
  m->add_option("-o,--out", mo->out, "the merged index (default: results.jsonl in the shards' folder)");
  m->callback([mo]() { merge_saliency_results(mo->shards, mo->out, false); });
}

}  // namespace pg::cli
