// libFuzzer target: .npy inputs, as the command line loads a model input
// (io::load_input_tensor: the .npy magic, then io::load_npy and the [3, H, W] check).
#include <cstring>

#include "tests/fuzz/fuzz_common.h"
#include "tools/lib/image_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".npy");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors([&] { pg::io::load_npy(path); }, path);
  // Only .npy files: an image here would be the image target's business (and slow).
  if (size >= 6 && std::memcmp(data, "\x93NUMPY", 6) == 0)
    pg::fuzz::expect_only_pg_errors([&] { pg::io::load_input_tensor(path); }, path);
  return 0;
}
