#include "tools/cli/common.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "kernels/cpu/blas.h"
#include "nn/error.h"

namespace pg::cli {

namespace fs = std::filesystem;

void set_threads(int threads) {
  if (threads <= 0) return;
  omp_set_num_threads(threads);
  blas::set_num_threads(threads);
}

std::vector<int> parse_targets(const std::string& spec) {
  std::vector<int> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    std::string item = spec.substr(start, end - start);
    if (item == "top1") {
      out.push_back(-1);
    } else {
      if (item.empty() || !std::all_of(item.begin(), item.end(), [](unsigned char c) { return std::isdigit(c); }) ||
          item.size() > 9)
        throw Error("--target: '" + item + "' is not a class id or top1");
      out.push_back(std::stoi(item));
    }
    start = end + 1;
  }
  return out;
}

bool is_npy(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".npy";
}

namespace {
bool is_input_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".npy";
}
}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& paths) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(p, ec))
        if (e.is_regular_file() && is_input_file(e.path())) found.push_back(e.path().string());
      if (ec) throw file_error(p, "cannot list directory (" + ec.message() + ")");
      if (found.empty()) throw file_error(p, "directory has no .png, .jpg, .jpeg or .npy files");
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(p, ec)) {
      out.push_back(p);
    } else {
      throw file_error(p, "no such file or directory");
    }
  }
  if (out.empty()) throw Error("no inputs given");
  return out;
}

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw file_error(path, "cannot write");
    f << text;
    if (!f) throw file_error(path, "write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw file_error(path, "cannot rename the temporary file");
}

}  // namespace pg::cli
