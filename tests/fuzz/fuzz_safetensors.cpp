// libFuzzer target: safetensors files (weights::load_safetensors and safetensors_metadata:
// the header's JSON, the layout rules, dtype conversion, the finiteness check).
#include "tests/fuzz/fuzz_common.h"
#include "weights/state_dict.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".safetensors");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors([&] { pg::weights::load_safetensors(path); }, path);
  pg::fuzz::expect_only_pg_errors([&] { pg::weights::safetensors_metadata(path); }, path);
  return 0;
}
