// libFuzzer target: .pth weight files (the zip format and the legacy stream format) through
// the loader, weights::load_state_dict (format detection by content, the zip reader on
// libzip, the legacy reader, the restricted unpickler, storage bounds, dtype conversion).
// What it accepts is read whole (every element of every tensor, so that a view past its
// storage is an ASan report) and held to the loader's promises: a shape whose product is the
// element count, finite values (NaN and Inf are refused). Positive control (fuzz_pth_control,
// fuzz_common.h): tensors (names, shapes, values) that no seed holds, read from a zip file and
// from a legacy file, both.
#include <cmath>

#include "tests/fuzz/fuzz_common.h"
#include "weights/state_dict.h"

namespace {

// The state dict as text: every name, shape and value.
std::string content(const pg::weights::StateDict& sd) {
  std::string c;
  for (const auto& [name, t] : sd) {
    c += name + t.shape_str() + ":";
    for (int64_t i = 0; i < t.numel(); ++i) c += pg::fuzz::exact(t.data()[i]);
  }
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".pth");
  const std::string& path = file.write(data, size);
  pg::fuzz::expect_only_pg_errors(
      [&] {
        const pg::weights::StateDict sd = pg::weights::load_state_dict(path);
        for (const auto& [name, t] : sd) {
          int64_t n = 1;
          for (int64_t d : t.shape()) n *= d;
          if (n != t.numel()) pg::fuzz::broken_promise(path, "tensor '" + name + "' has shape " + t.shape_str() + " but " +
                                                                 std::to_string(t.numel()) + " elements");
          const float* p = t.data();
          for (int64_t i = 0; i < t.numel(); ++i)
            if (!std::isfinite(p[i])) pg::fuzz::broken_promise(path, "tensor '" + name + "' holds a non-finite value");
        }
        static bool zip = false, legacy = false;
        if (pg::fuzz::new_content(content(sd), [](const std::string& p) { return content(pg::weights::load_state_dict(p)); }))
          (pg::weights::detect_format(path) == "pt-zip" ? zip : legacy) = true;
        pg::fuzz::planted_defect(zip && legacy);
      },
      path);
  return 0;
}
