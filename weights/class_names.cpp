#include "weights/class_names.h"

#include <filesystem>
#include <sstream>

#include "core/error.h"
#include "core/file.h"

namespace pg::weights {

namespace {
std::vector<std::string> read_lines(const std::string& path) {
  // Under core/file.h's rules: a regular file (a FIFO would block) of a text file's size.
  const std::vector<uint8_t> bytes = read_file_limited(path, limits::kTextFileBytes, "a class names file");
  std::istringstream f(std::string(bytes.begin(), bytes.end()));
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  return out;
}
}  // namespace

std::vector<std::string> class_names_for(const std::string& weights_path, const std::string& classes_file,
                                         int num_classes) {
  if (!classes_file.empty()) {
    auto names = read_lines(classes_file);
    if (int(names.size()) != num_classes)
      throw file_error(classes_file, "has " + std::to_string(names.size()) + " class names, the model has " +
                                         std::to_string(num_classes) + " classes");
    return names;
  }
  const auto beside = std::filesystem::path(weights_path).parent_path() / "classes.txt";
  std::error_code ec;
  if (std::filesystem::is_regular_file(beside, ec)) {
    auto names = read_lines(beside.string());
    if (int(names.size()) == num_classes) return names;
  }
  if (num_classes == 1000) return imagenet_class_names();
  return {};
}

}  // namespace pg::weights
