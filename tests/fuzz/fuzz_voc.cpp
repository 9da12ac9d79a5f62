// libFuzzer target: Pascal VOC XML annotations (io::read_voc_xml, on pugixml), then each
// box through the eval geometry and rasterised, as eval does.
#include "tests/fuzz/fuzz_common.h"
#include "tools/lib/boxes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".xml");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors(
      [&] {
        pg::io::Annotation a = pg::io::read_voc_xml(path);
        const int w = a.width > 0 ? a.width : 64, h = a.height > 0 ? a.height : 48;
        const pg::io::CropGeometry g = pg::io::eval_geometry(w, h, 16, 12);
        std::vector<uint8_t> mask(size_t(g.crop_w) * size_t(g.crop_h), 0);
        for (const pg::io::Box& b : a.boxes) pg::io::rasterize_box(pg::io::map_box(b, g), g.crop_w, g.crop_h, mask);
      },
      path);
  return 0;
}
