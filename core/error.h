// Error type used across parchgrad: every message is one line that names the
// file (or object) and the problem, e.g. "weights.pth: truncated zip archive".
#pragma once
#include <cstdio>
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

// Text from a file quoted in an error message: bytes outside printable ASCII as \xNN, at most
// `max` bytes (then "..."), so that a hostile or broken file can neither break the one-line
// rule nor write control sequences to a terminal.
inline std::string printable(const std::string& s, size_t max = 300) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i == max) return out + "...";
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace pg
