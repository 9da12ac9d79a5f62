// libFuzzer target: boxes.jsonl annotations (io::read_boxes_jsonl: JSON per line, repeated
// keys refused, boxes and labels checked), then each box through the eval geometry. What it
// accepts is held to the reader's promises: finite boxes with x0 <= x1 and y0 <= y1, mapped
// inside the crop. Positive control (fuzz_boxes_control, fuzz_common.h): files, labels and
// boxes that no seed holds.
#include <cmath>

#include "tests/fuzz/fuzz_common.h"
#include "tools/lib/boxes.h"

namespace {

std::string content(const std::map<std::string, pg::io::JsonlAnnotation>& annotations) {
  std::string c;
  for (const auto& [file_key, a] : annotations) {
    c += file_key + ":" + std::to_string(a.label) + ":";
    for (const pg::io::Box& b : a.boxes) c += pg::fuzz::exact(b.x0) + pg::fuzz::exact(b.y0) + pg::fuzz::exact(b.x1) + pg::fuzz::exact(b.y1);
  }
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".jsonl");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors(
      [&] {
        const auto annotations = pg::io::read_boxes_jsonl(path);
        const pg::io::CropGeometry g = pg::io::eval_geometry(40, 30, 16, 12);
        std::vector<uint8_t> mask(size_t(g.crop_w) * size_t(g.crop_h), 0);
        for (const auto& [file_key, a] : annotations) {
          for (const pg::io::Box& b : a.boxes) {
            if (!std::isfinite(b.x0) || !std::isfinite(b.y0) || !std::isfinite(b.x1) || !std::isfinite(b.y1))
              pg::fuzz::broken_promise(path, "a box of " + file_key + " is not finite");
            if (b.x1 < b.x0 || b.y1 < b.y0) pg::fuzz::broken_promise(path, "a box of " + file_key + " ends before it starts");
            const pg::io::Box m = pg::io::map_box(b, g);
            if (m.x0 < 0 || m.y0 < 0 || m.x1 > g.crop_w || m.y1 > g.crop_h)
              pg::fuzz::broken_promise(path, "a mapped box leaves the crop");
            pg::io::rasterize_box(m, g.crop_w, g.crop_h, mask);
          }
        }
        pg::fuzz::planted_defect(pg::fuzz::new_content(content(annotations), [](const std::string& p) { return content(pg::io::read_boxes_jsonl(p)); }));
      },
      path);
  return 0;
}
