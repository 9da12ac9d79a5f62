#include "tools/cli/common.h"

#include <unistd.h>

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "kernels/cpu/blas.h"
#include "core/error.h"

namespace pg::cli {

namespace fs = std::filesystem;

void set_threads(int threads) {
  if (threads <= 0) return;
  omp_set_num_threads(threads);
  blas::set_num_threads(threads);
}

std::vector<int> parse_targets(const std::string& spec, const std::vector<std::string>& names) {
  auto lower = [](std::string t) {
    std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return t;
  };
  // A name: the classes called exactly that, else those called that ignoring case.
  auto by_name = [&](const std::string& item) {
    std::vector<int> exact, folded;
    for (size_t k = 0; k < names.size(); ++k) {
      if (names[k] == item) exact.push_back(int(k));
      if (lower(names[k]) == lower(item)) folded.push_back(int(k));
    }
    return exact.empty() ? folded : exact;
  };
  std::vector<int> out;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    std::string item = spec.substr(start, end - start);
    const bool digits = !item.empty() && item.size() <= 9 &&
                        std::all_of(item.begin(), item.end(), [](unsigned char c) { return std::isdigit(c); });
    if (item == "top1") {
      out.push_back(-1);
    } else if (digits) {
      out.push_back(std::stoi(item));
    } else {
      const std::vector<int> found = item.empty() ? std::vector<int>{} : by_name(item);
      if (found.size() > 1)
        throw Error("--target: '" + item + "' names " + std::to_string(found.size()) + " classes (" +
                    std::to_string(found[0]) + ", " + std::to_string(found[1]) + "); give the class id");
      if (found.empty())
        throw Error("--target: '" + item + "' is not a class id, " +
                    (names.empty() ? std::string("") : "a class name of this model, ") +
                    "top1 or topK (or a comma-separated list of ids" + (names.empty() ? "" : " and names") + ")");
      out.push_back(found[0]);
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


std::vector<InputFile> expand_inputs(const std::vector<std::string>& paths) {
  std::vector<InputFile> out;
  for (const auto& p : paths) {
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      std::vector<InputFile> found;
      const auto opts = fs::directory_options::follow_directory_symlink;
      fs::recursive_directory_iterator it(p, opts, ec), end;
      for (; !ec && it != end; it.increment(ec)) {
        const fs::directory_entry& e = *it;
        if (!is_data_file(e.path())) continue;
        std::error_code ec2;
        const bool dangling = e.is_symlink(ec2) && !fs::exists(e.path(), ec2);
        if (!dangling && !e.is_regular_file(ec2)) continue;
        const fs::path rel = e.path().lexically_relative(p);
        found.push_back({e.path().string(), (rel.parent_path() / rel.stem()).generic_string()});
      }
      if (ec) throw file_error(p, "cannot list directory (" + ec.message() + ")");
      if (found.empty()) throw file_error(p, "directory has no .png, .jpg, .jpeg or .npy files");
      std::sort(found.begin(), found.end(), [](const InputFile& a, const InputFile& b) { return a.path < b.path; });
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(p, ec)) {
      out.push_back({p, fs::path(p).stem().string()});
    } else {
      throw file_error(p, "no such file or directory");
    }
  }
  if (out.empty()) throw Error("no inputs given");
  return out;
}

void check_output_file(const std::string& flag, const std::string& path) {
  if (path.empty()) throw Error(flag + ": empty path");
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw file_error(path, flag + " names a folder, not a file");
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec)) throw file_error(path, flag + ": folder " + dir.string() + " does not exist");
  const fs::path probe = dir / (".parchgrad-probe." + std::to_string(::getpid()));
  {
    std::ofstream f(probe, std::ios::binary);
    if (!f) throw file_error(path, flag + ": cannot write in " + dir.string());
  }
  fs::remove(probe, ec);
}

namespace {
constexpr uint64_t kFnvOffset = 1469598103934665603ull, kFnvPrime = 1099511628211ull;
std::string hex64(uint64_t h) {
  char out[24];
  std::snprintf(out, sizeof out, "%016llx", (unsigned long long)h);
  return out;
}
}  // namespace

std::string content_hash(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw file_error(path, "cannot open");
  uint64_t h = kFnvOffset;
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), std::streamsize(buf.size()));
    for (std::streamsize i = 0; i < f.gcount(); ++i) h = (h ^ uint8_t(buf[size_t(i)])) * kFnvPrime;
  }
  return hex64(h);
}

std::string text_hash(const std::string& text) {
  uint64_t h = kFnvOffset;
  for (char c : text) h = (h ^ uint8_t(c)) * kFnvPrime;
  return hex64(h);
}

std::vector<JsonLine> read_json_lines(const std::string& path, const std::string& hint, bool* dropped_partial) {
  *dropped_partial = false;
  std::vector<JsonLine> lines;
  std::ifstream f(path, std::ios::binary);
  if (!f) return lines;
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  f.close();
  size_t pos = 0;
  int number = 0;
  for (size_t nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
    ++number;
    if (nl == pos) continue;
    nlohmann::json j = nlohmann::json::parse(text.begin() + std::ptrdiff_t(pos), text.begin() + std::ptrdiff_t(nl),
                                             nullptr, false);
    if (j.is_discarded()) throw file_error(path, "line " + std::to_string(number) + " is not valid JSON (" + hint + ")");
    lines.push_back({std::move(j), number});
  }
  if (pos < text.size()) {
    std::error_code ec;
    fs::resize_file(path, pos, ec);
    if (ec) throw file_error(path, "cannot drop its partial last line (" + ec.message() + ")");
    *dropped_partial = true;
  }
  return lines;
}

void append_json_lines(const std::string& path, const std::vector<nlohmann::json>& lines) {
  if (lines.empty()) return;
  std::string text;
  for (const auto& l : lines) text += l.dump() + "\n";
  std::ofstream f(path, std::ios::binary | std::ios::app);
  if (!f) throw file_error(path, "cannot append");
  f.write(text.data(), std::streamsize(text.size()));
  f.flush();
  if (!f) throw file_error(path, "write failed");
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
