#include "weights/class_names.h"

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace pg::weights {

namespace {
std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw file_error(path, "cannot open class names file");
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
