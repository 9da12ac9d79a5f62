// Helpers shared by the subcommands.
#pragma once
#include <string>
#include <vector>

#include "nn/tensor.h"

namespace pg::cli {

// Sets the OpenMP (and so OpenBLAS) thread count; 0 keeps the default (all cores).
void set_threads(int threads);

// "top1" -> {-1}; "3" -> {3}; "3,5,top1" -> {3, 5, -1}. Throws on anything else.
std::vector<int> parse_targets(const std::string& spec);

// Files stay as given; a directory becomes its image and .npy files, sorted by name.
// Throws for a missing path or a directory without inputs.
std::vector<std::string> expand_inputs(const std::vector<std::string>& paths);

bool is_npy(const std::string& path);

// Writes a text file through a temporary file and rename.
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace pg::cli
