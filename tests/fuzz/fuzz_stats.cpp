// libFuzzer target: ParchGrad statistics files (pg::load_stats: a safetensors file with
// per-layer .mean/.std/.shapiro_p/.cls_p tensors and its metadata), then a layer lookup.
#include "parchgrad/stats_file.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".safetensors");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors(
      [&] {
        pg::StatsFile s = pg::load_stats(path);
        for (const auto& [name, l] : s.layers) {
          const pg::LayerStats& got = s.layer(name, l.channels());
          (void)got;
        }
      },
      path);
  return 0;
}
