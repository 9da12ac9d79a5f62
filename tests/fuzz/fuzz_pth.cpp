// libFuzzer target: .pth weight files (the zip format and the legacy stream format) through
// the loader, weights::load_state_dict (format detection by content, the zip reader on
// libzip, the legacy reader, the restricted unpickler, storage bounds, dtype conversion).
#include "tests/fuzz/fuzz_common.h"
#include "weights/state_dict.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".pth");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors([&] { pg::weights::load_state_dict(path); }, path);
  return 0;
}
