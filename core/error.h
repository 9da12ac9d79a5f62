// Error type used across parchgrad: every message is one line that names the
// file (or object) and the problem, e.g. "weights.pth: truncated zip archive".
#pragma once
#include <stdexcept>
#include <string>

namespace pg {

struct Error : std::runtime_error {
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Error about a file: "<path>: <what>".
inline Error file_error(const std::string& path, const std::string& what) {
  return Error(path + ": " + what);
}

}  // namespace pg
