#include "tools/cli/common.h"

#include <unistd.h>

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "kernels/cpu/blas.h"
#include "core/error.h"
#include "weights/class_names.h"

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

bool is_data_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".npy";
}

// folder name -> class id, from lines "folder_name class_id".
std::map<std::string, int> read_labels(const std::string& path, int num_classes) {
  std::ifstream f(path);
  if (!f) throw file_error(path, "cannot open labels file");
  std::map<std::string, int> out;
  std::string line;
  int lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    std::istringstream ss(line);
    std::string name, rest;
    long id = -1;
    if (!(ss >> name)) continue;  // blank line
    if (!(ss >> id) || (ss >> rest))
      throw file_error(path, "line " + std::to_string(lineno) + ": expected \"folder_name class_id\"");
    if (id < 0 || id >= num_classes)
      throw file_error(path, "line " + std::to_string(lineno) + ": class id " + std::to_string(id) +
                                 " is out of range for a model with " + std::to_string(num_classes) + " classes");
    if (!out.emplace(name, int(id)).second)
      throw file_error(path, "line " + std::to_string(lineno) + ": folder " + name + " listed twice");
  }
  return out;
}

// The ImageFolder listing: class folders sorted by name, files below each (recursively)
// sorted by path, as torchvision's ImageFolder orders them.
std::vector<DatasetItem> list_dataset(const std::string& dir, const std::string& labels_path, int num_classes) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw file_error(dir, "not a directory");
  std::vector<std::string> folders;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) folders.push_back(e.path().filename().string());
  if (ec) throw file_error(dir, "cannot list directory (" + ec.message() + ")");
  std::sort(folders.begin(), folders.end());
  if (folders.empty()) throw file_error(dir, "no class folders (expected DIR/<class>/<image files>)");
  std::map<std::string, int> labels;
  if (!labels_path.empty()) labels = read_labels(labels_path, num_classes);
  // An ImageNet model: folders named by WordNet id give class ids by their sorted position only
  // when all 1000 are there (torchvision's ImageFolder over the full validation set); folders
  // named by ImageNet class name give that class. Anything else needs --labels: a folder `cat/`
  // silently becoming class 0 ("tench") would make every number of the run meaningless.
  std::map<std::string, int> by_name;
  if (labels_path.empty() && num_classes == 1000) {
    auto is_wnid = [](const std::string& f) {
      return f.size() == 9 && f[0] == 'n' && std::all_of(f.begin() + 1, f.end(), [](unsigned char c) { return std::isdigit(c); });
    };
    const bool all_wnids = std::all_of(folders.begin(), folders.end(), is_wnid);
    if (all_wnids && folders.size() != 1000)
      throw file_error(dir, "has " + std::to_string(folders.size()) + " WordNet-id class folders, not all 1000 of "
                            "ImageNet, so their sorted positions are not class ids; give --labels (lines \"n01440764 0\")");
    if (!all_wnids) {
      const std::vector<std::string>& names = weights::imagenet_class_names();
      std::map<std::string, int> count;
      for (size_t k = 0; k < names.size(); ++k) {
        by_name[names[k]] = int(k);
        ++count[names[k]];
      }
      for (const auto& f : folders) {
        if (!by_name.count(f))
          throw file_error(dir, "class folder '" + f + "' is neither a WordNet id nor an ImageNet class name; give "
                                "--labels (lines \"folder_name class_id\")");
        if (count[f] > 1)
          throw file_error(dir, "class folder '" + f + "' names " + std::to_string(count[f]) +
                                " ImageNet classes; give --labels (lines \"folder_name class_id\")");
      }
    }
  }
  std::vector<DatasetItem> items;
  for (size_t i = 0; i < folders.size(); ++i) {
    int label = int(i);
    if (!labels_path.empty()) {
      auto it = labels.find(folders[i]);
      if (it == labels.end()) throw file_error(dir, "class folder " + folders[i] + " is not in " + labels_path);
      label = it->second;
    } else if (!by_name.empty()) {
      label = by_name.at(folders[i]);
    } else if (label >= num_classes) {
      throw file_error(dir, "class folder " + folders[i] + " is class " + std::to_string(label) +
                                " but the model has " + std::to_string(num_classes) + " classes (" +
                                std::to_string(folders.size()) + " folders)");
    }
    std::vector<std::string> files;
    const fs::path sub = fs::path(dir) / folders[i];
    for (auto it = fs::recursive_directory_iterator(sub, fs::directory_options::follow_directory_symlink, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      if (it->is_regular_file() && is_data_file(it->path())) files.push_back(it->path().string());
    }
    if (ec) throw file_error(sub.string(), "cannot list directory (" + ec.message() + ")");
    std::sort(files.begin(), files.end());
    for (auto& f : files) items.push_back({f, label});
  }
  if (items.empty()) throw file_error(dir, "no .png, .jpg, .jpeg or .npy files in its class folders");
  return items;
}

}  // namespace pg::cli
