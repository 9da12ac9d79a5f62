// Helpers shared by the subcommands.
#pragma once
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "capi/dataset.h"
#include "core/tensor.h"

namespace pg::cli {

// Sets the OpenMP (and so OpenBLAS) thread count; 0 keeps the default (all cores).
void set_threads(int threads);

// "top1" -> {-1}; "3" -> {3}; "3,5,top1" -> {3, 5, -1}; with class names, a name stands for its
// class ("tabby" -> {281}; an exact match first, then one ignoring case). Throws, listing every
// accepted form, on anything else (and on a name that two classes share).
std::vector<int> parse_targets(const std::string& spec, const std::vector<std::string>& names = {});

// One input file and the stem its outputs are named by: a file given by itself is named by its
// stem ("a/b/cat.png" -> "cat"); a file found in a given directory by its path below that
// directory, without the extension ("dir/n01/cat.png" -> "n01/cat"), so that an ImageFolder
// tree's maps land under the same relative paths.
struct InputFile {
  std::string path, name;
};

// Files stay as given; a directory becomes the image and .npy files anywhere below it (sorted
// by path, sub-folders walked, symbolic links followed). A link whose target is missing is kept,
// so that reading it reports it. Throws for a missing path or a directory without inputs.
std::vector<InputFile> expand_inputs(const std::vector<std::string>& paths);

bool is_npy(const std::string& path);

// The ImageFolder listing (capi/dataset.h: shared with the C API's pg_stats).
using api::DatasetItem;
using api::is_data_file;
using api::list_dataset;
using api::read_labels;

// Checks, before any work, that a file can be written at `path` (its folder exists and takes a
// new file; `path` is not a folder): creates and removes a probe file beside it. Throws a
// one-line pg::Error naming `flag` and the path otherwise, so that a long run never finds an
// unwritable output only at its end.
void check_output_file(const std::string& flag, const std::string& path);

// FNV-1a (64 bits, hex) of a file's bytes, or of a string: what a file is, whatever path it was
// given by (the identity of a resumable run).
std::string content_hash(const std::string& path);
std::string text_hash(const std::string& text);

// A JSON-lines file that a command appends to as it works, so that a killed run keeps what it
// did (eval's REPORT.jsonl, saliency's results.jsonl).
struct JsonLine {
  nlohmann::json value;
  int number = 0;  // line number in the file, from 1
};
// Every complete (newline-terminated, non-empty) line, parsed. An unterminated last line is a
// killed run's partial write: it is cut from the file (*dropped_partial = true) so that the
// next append starts a line of its own. A complete line that is not JSON throws
// "<path>: line N is not valid JSON (<hint>)". A missing file has no lines.
std::vector<JsonLine> read_json_lines(const std::string& path, const std::string& hint, bool* dropped_partial);
// Appends lines in one write (one line each).
void append_json_lines(const std::string& path, const std::vector<nlohmann::json>& lines);

// Writes a text file through a temporary file and rename.
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace pg::cli
