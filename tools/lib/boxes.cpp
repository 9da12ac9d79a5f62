#include "tools/lib/boxes.h"

#include <pugixml.hpp>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/file.h"
#include "tools/lib/image_io.h"

namespace pg::io {

namespace fs = std::filesystem;

CropGeometry eval_geometry(int orig_w, int orig_h, int resize, int crop) {
  CropGeometry g;
  g.orig_w = orig_w;
  g.orig_h = orig_h;
  g.resized_w = orig_w;
  g.resized_h = orig_h;
  if (resize > 0) resize_short_side_size(orig_w, orig_h, resize, &g.resized_w, &g.resized_h);
  g.crop_w = crop > 0 ? crop : g.resized_w;
  g.crop_h = crop > 0 ? crop : g.resized_h;
  g.left = crop > 0 ? center_crop_offset(g.resized_w, crop) : 0;
  g.top = crop > 0 ? center_crop_offset(g.resized_h, crop) : 0;
  return g;
}

CropGeometry identity_geometry(int w, int h) { return eval_geometry(w, h, 0, 0); }

Box map_box(const Box& b, const CropGeometry& g) {
  // Resizing maps the image's edges onto the resized image's edges (PIL samples output pixel
  // centres at (i + 0.5) * in / out), so continuous coordinates scale by out / in.
  const double sx = double(g.resized_w) / g.orig_w, sy = double(g.resized_h) / g.orig_h;
  Box m;
  m.x0 = std::clamp(b.x0 * sx - g.left, 0.0, double(g.crop_w));
  m.x1 = std::clamp(b.x1 * sx - g.left, 0.0, double(g.crop_w));
  m.y0 = std::clamp(b.y0 * sy - g.top, 0.0, double(g.crop_h));
  m.y1 = std::clamp(b.y1 * sy - g.top, 0.0, double(g.crop_h));
  return m;
}

int64_t rasterize_box(const Box& m, int crop_w, int crop_h, std::vector<uint8_t>& mask) {
  if (mask.size() != size_t(crop_w) * crop_h) mask.assign(size_t(crop_w) * crop_h, 0);
  if (!(m.x1 > m.x0) || !(m.y1 > m.y0)) return 0;
  // First pixel whose centre is >= x0, first whose centre is >= x1.
  const int i0 = std::clamp(int(std::ceil(m.x0 - 0.5)), 0, crop_w), i1 = std::clamp(int(std::ceil(m.x1 - 0.5)), 0, crop_w);
  const int j0 = std::clamp(int(std::ceil(m.y0 - 0.5)), 0, crop_h), j1 = std::clamp(int(std::ceil(m.y1 - 0.5)), 0, crop_h);
  int64_t added = 0;
  for (int j = j0; j < j1; ++j)
    for (int i = i0; i < i1; ++i) {
      uint8_t& v = mask[size_t(j) * crop_w + i];
      if (!v) ++added;
      v = 1;
    }
  return added;
}

namespace {


double xml_number(const std::string& path, const pugi::xml_node& parent, const char* name, int object) {
  const pugi::xml_node n = parent.child(name);
  const std::string where = object >= 0 ? "object " + std::to_string(object) + ": " : "";
  if (!n) throw file_error(path, where + "missing <" + std::string(name) + ">");
  const std::string text = n.text().as_string();
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  while (used < text.size() && std::isspace(static_cast<unsigned char>(text[used]))) ++used;
  if (text.empty() || used != text.size() || !std::isfinite(v))
    throw file_error(path, where + "<" + std::string(name) + "> is not a number ('" + printable(text) + "')");
  return v;
}

}  // namespace

Annotation read_voc_xml(const std::string& path) {
  if (::access(path.c_str(), R_OK) != 0)
    throw file_error(path, std::string("cannot read annotation file (") + std::strerror(errno) + ")");
  // A regular file of at most limits::kAnnotationFileBytes (core/file.h), parsed in memory.
  const std::vector<uint8_t> bytes = read_file_limited(path, limits::kAnnotationFileBytes, "an annotation file");
  pugi::xml_document doc;
  const pugi::xml_parse_result r = doc.load_buffer(bytes.data(), bytes.size());
  if (!r) throw file_error(path, std::string("broken XML: ") + r.description() + " at byte " + std::to_string(r.offset));
  const pugi::xml_node ann = doc.child("annotation");
  if (!ann) throw file_error(path, "not a Pascal VOC annotation (no <annotation> element)");
  Annotation a;
  if (const pugi::xml_node size = ann.child("size")) {
    const double w = xml_number(path, size, "width", -1), h = xml_number(path, size, "height", -1);
    if (w < 0 || h < 0 || w > 1e6 || h > 1e6) throw file_error(path, "<size> out of range");
    a.width = int(w);
    a.height = int(h);
  }
  int k = 0;
  for (const pugi::xml_node obj : ann.children("object")) {
    const pugi::xml_node bb = obj.child("bndbox");
    if (!bb) throw file_error(path, "object " + std::to_string(k) + ": no <bndbox>");
    const double xmin = xml_number(path, bb, "xmin", k), ymin = xml_number(path, bb, "ymin", k);
    const double xmax = xml_number(path, bb, "xmax", k), ymax = xml_number(path, bb, "ymax", k);
    if (xmax < xmin || ymax < ymin)
      throw file_error(path, "object " + std::to_string(k) + ": xmax/ymax below xmin/ymin");
    if (a.width > 0 && (xmin < 0 || ymin < 0 || xmax > a.width + 1 || ymax > a.height + 1))
      throw file_error(path, "object " + std::to_string(k) + ": box outside the image size " +
                                 std::to_string(a.width) + "x" + std::to_string(a.height));
    // VOC pixels are 1-based and the maximum is inclusive.
    a.boxes.push_back({xmin - 1, ymin - 1, xmax, ymax});
    ++k;
  }
  return a;
}

std::map<std::string, JsonlAnnotation> read_boxes_jsonl(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file_limited(path, limits::kAnnotationFileBytes, "a boxes file");
  std::istringstream f(std::string(bytes.begin(), bytes.end()));
  std::map<std::string, JsonlAnnotation> out;
  std::string line;
  int lineno = 0;
  auto box_of = [&](const nlohmann::json& v) {
    if (!v.is_array() || v.size() != 4) throw std::invalid_argument("a box is [x0, y0, x1, y1]");
    Box b;
    double c[4];
    for (int i = 0; i < 4; ++i) {
      if (!v[i].is_number()) throw std::invalid_argument("box coordinates must be numbers");
      c[i] = v[i].get<double>();
      if (!std::isfinite(c[i])) throw std::invalid_argument("box coordinates must be finite");
    }
    b.x0 = c[0];
    b.y0 = c[1];
    b.x1 = c[2];
    b.y1 = c[3];
    if (b.x1 < b.x0 || b.y1 < b.y0) throw std::invalid_argument("box has x1 < x0 or y1 < y0");
    return b;
  };
  while (std::getline(f, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = "line " + std::to_string(lineno) + ": ";
    nlohmann::json j;
    std::string repeated;  // a key given twice in one object: which value is meant is a guess
    std::vector<std::set<std::string>> keys;
    nlohmann::json::parser_callback_t cb = [&](int, nlohmann::json::parse_event_t e, nlohmann::json& v) {
      using E = nlohmann::json::parse_event_t;
      if (e == E::object_start) keys.emplace_back();
      else if (e == E::object_end) keys.pop_back();
      else if (e == E::key && !keys.back().insert(v.get<std::string>()).second && repeated.empty())
        repeated = v.get<std::string>();
      return true;
    };
    try {
      j = nlohmann::json::parse(line, cb);
    } catch (const std::exception&) {
      throw file_error(path, where + "not valid JSON");
    }
    if (!repeated.empty()) {
      throw file_error(path, where + "key \"" + printable(repeated) + "\" given twice");
    }
    try {
      if (!j.is_object() || !j.contains("file") || !j["file"].is_string())
        throw std::invalid_argument("needs a \"file\" string");
      JsonlAnnotation a;
      if (j.contains("box")) a.boxes.push_back(box_of(j["box"]));
      if (j.contains("boxes")) {
        if (!j["boxes"].is_array()) throw std::invalid_argument("\"boxes\" must be a list of boxes");
        for (const auto& b : j["boxes"]) a.boxes.push_back(box_of(b));
      }
      if (j.contains("label")) {
        if (!j["label"].is_number_integer()) throw std::invalid_argument("\"label\" must be an integer");
        a.label = j["label"].get<int>();
      }
      const std::string key = fs::path(j["file"].get<std::string>()).lexically_normal().generic_string();
      if (!out.emplace(key, a).second) throw std::invalid_argument("file " + printable(key) + " listed twice");
    } catch (const std::invalid_argument& e) {
      throw file_error(path, where + e.what());
    }
  }
  return out;
}

}  // namespace pg::io
