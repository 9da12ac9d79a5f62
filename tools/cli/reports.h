// The JSON-lines files the commands keep as they work: eval's REPORT.jsonl (one record per
// image and method, appended image by image and resumed) and saliency's results.jsonl (the
// index of a folder's maps). Reading checks every line against what the commands write, so
// that what was read can be used without further checks: a line that is not JSON, a record of
// the wrong form or one whose numbers do not fit the others is refused with a one-line error
// naming the file and the line. The fuzz target tests/fuzz/fuzz_jsonl.cpp holds them to that.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace pg::cli {

// ---- eval's REPORT.jsonl --------------------------------------------------------------------

// An image is the same image however its path was spelled (--data synth, ./synth, /abs/synth).
std::string image_key(const std::string& path);
std::string key_of(const std::string& image, const std::string& method);
// A record names its image as given ("image") and resolved ("image_path", the key: a relative
// path of an earlier run resolves against that run's folder, not this one's).
std::string record_image(const nlohmann::json& rec);
std::string record_key(const nlohmann::json& rec, const std::string& method);

// Every record of an existing report (none when there is no file), each checked: a string
// "image" (and "image_path"), a string "method" or none, "settings_id" equal to settings_id
// (else the report is another job's: refused); a record without "skipped" (the reason an
// image or map was skipped, which every record of method "*", an unreadable image, has) holds
// every number the summary reads, with one list of ratios and of fractions for the whole file. Adds each record's key to *done; cuts a partial last line (a killed
// run's), setting *dropped_partial.
std::vector<nlohmann::json> read_report(const std::string& path, const std::string& settings_id,
                                        std::set<std::string>* done, bool* dropped_partial);

// One method's numbers over the records of read_report, as the summary takes them: nulls
// (non-finite numbers) left out, one entry per record otherwise.
struct MethodNumbers {
  int64_t images = 0, skipped = 0;
  std::vector<double> ratios;  // of the first record
  // "morf.aopc", "lerf.prob", ... -> per ratio, the values over the records
  std::map<std::string, std::vector<std::vector<double>>> per_ratio;
  // "morf.aopc_mean", "morf.lodds_mean", "deletion.auc", "box.mu_in", "box.pointing", ...
  std::map<std::string, std::vector<double>> values;
  // "deletion", "insertion" -> the fractions, and the mean probability at each
  std::map<std::string, std::vector<double>> fractions, mean_prob;
  int64_t box_valid = 0, box_invalid = 0;
};
MethodNumbers method_numbers(const std::vector<nlohmann::json>& records, const std::string& method);

// ---- saliency's results.jsonl ---------------------------------------------------------------

// Every line of a results index, each a saliency record (an object with a list "outputs");
// a partial last line is dropped.
std::vector<nlohmann::json> read_results_index(const std::string& path);
// The files a record names: its outputs' maps, overlays and masks, and its compare strip.
std::vector<std::string> files_of(const nlohmann::json& record);
// Rewrites the index (through a temporary file) keeping, for each file, only the last line that
// wrote it. Returns the number of lines dropped.
size_t reindex_results(const std::string& path);

// One line of a results index as saliency's resume reads it (read_results_lines): what names
// the record's input and settings, and the files it lists; its text only when asked for.
struct ResultsLine {
  std::string input, settings_id, input_hash;  // "" where the record has none (an older run's)
  int64_t index = -1;                          // "index": the sample of a batched .npy, else -1
  int64_t target = -1;
  std::vector<std::string> files;  // files_of
  std::string text;                // the line without its newline (keep_text)
};
// The lines of an index, checked as read_results_index checks them (a partial last line is
// dropped), one ResultsLine each, in order; a missing file has none. Holds no parsed JSON, so
// that an index of millions of records fits.
std::vector<ResultsLine> read_results_lines(const std::string& path, bool keep_text);
// reindex_results, then the lines put in order: rank[i] (i: the line's position in the file,
// from 0) >= 0 marks a line of the run that finishes (a resumed record or one it wrote); those
// come after the others, ordered by rank (stable: within one rank the file's order). Lines
// beyond rank.size() and of rank -1 keep their order before them, or are dropped with
// only_ranked (a shard's index holds its run's records alone). Returns the number of lines
// dropped because a later line wrote their files.
size_t reindex_results(const std::string& path, const std::vector<int64_t>& rank, bool only_ranked);

}  // namespace pg::cli
