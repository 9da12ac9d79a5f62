// libFuzzer target: Pascal VOC XML annotations (io::read_voc_xml, on pugixml), then each
// box through the eval geometry and rasterised, as eval does. What it accepts is held to the
// reader's promises: finite boxes with x0 <= x1 and y0 <= y1 (VOC's 1-based inclusive maximum
// made 0-based exclusive), inside <size> when it is given; mapped boxes inside the crop, and no
// more pixels marked than the crop has. Positive control (fuzz_voc_control, fuzz_common.h):
// a size and boxes that no seed holds.
#include <cmath>

#include "tests/fuzz/fuzz_common.h"
#include "tools/lib/boxes.h"

namespace {

std::string content(const pg::io::Annotation& a) {
  std::string c = std::to_string(a.width) + "x" + std::to_string(a.height) + ":";
  for (const pg::io::Box& b : a.boxes) c += pg::fuzz::exact(b.x0) + pg::fuzz::exact(b.y0) + pg::fuzz::exact(b.x1) + pg::fuzz::exact(b.y1);
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".xml");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors(
      [&] {
        pg::io::Annotation a = pg::io::read_voc_xml(path);
        const int w = a.width > 0 ? a.width : 64, h = a.height > 0 ? a.height : 48;
        const pg::io::CropGeometry g = pg::io::eval_geometry(w, h, 16, 12);
        std::vector<uint8_t> mask(size_t(g.crop_w) * size_t(g.crop_h), 0);
        int64_t marked = 0;
        for (const pg::io::Box& b : a.boxes) {
          if (!std::isfinite(b.x0) || !std::isfinite(b.y0) || !std::isfinite(b.x1) || !std::isfinite(b.y1))
            pg::fuzz::broken_promise(path, "a box is not finite");
          if (b.x1 < b.x0 || b.y1 < b.y0) pg::fuzz::broken_promise(path, "a box ends before it starts");
          if (a.width > 0 && (b.x0 < -1 || b.y0 < -1 || b.x1 > a.width + 1 || b.y1 > a.height + 1))
            pg::fuzz::broken_promise(path, "a box lies outside the stated size");
          const pg::io::Box m = pg::io::map_box(b, g);
          if (m.x0 < 0 || m.y0 < 0 || m.x1 > g.crop_w || m.y1 > g.crop_h) pg::fuzz::broken_promise(path, "a mapped box leaves the crop");
          marked += pg::io::rasterize_box(m, g.crop_w, g.crop_h, mask);
        }
        if (marked > int64_t(g.crop_w) * g.crop_h) pg::fuzz::broken_promise(path, "more pixels marked than the crop has");
        pg::fuzz::planted_defect(pg::fuzz::new_content(content(a), [](const std::string& p) { return content(pg::io::read_voc_xml(p)); }));
      },
      path);
  return 0;
}
