// libFuzzer target: boxes.jsonl annotations (io::read_boxes_jsonl: JSON per line, repeated
// keys refused, boxes and labels checked), then each box through the eval geometry.
#include "tests/fuzz/fuzz_common.h"
#include "tools/lib/boxes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".jsonl");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors(
      [&] {
        const auto annotations = pg::io::read_boxes_jsonl(path);
        const pg::io::CropGeometry g = pg::io::eval_geometry(40, 30, 16, 12);
        std::vector<uint8_t> mask(size_t(g.crop_w) * size_t(g.crop_h), 0);
        for (const auto& [file_key, a] : annotations)
          for (const pg::io::Box& b : a.boxes)
            pg::io::rasterize_box(pg::io::map_box(b, g), g.crop_w, g.crop_h, mask);
      },
      path);
  return 0;
}
