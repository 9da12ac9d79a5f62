// libFuzzer target: the restricted unpickler (weights/pickle.h) on bytes in memory, the way
// the legacy .pth reader uses it: pickles one after another until the bytes run out.
#include "tests/fuzz/fuzz_common.h"
#include "weights/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace pk = pg::weights::pickle;
  const std::string path = "fuzz.pkl";
  pg::fuzz::expect_only_pg_errors(
      [&] {
        pk::Arena arena;
        size_t pos = 0;
        for (int i = 0; i < 8 && pos < size; ++i) {
          const pk::Value* v = pk::unpickle(data, size, &pos, arena, path, "fuzz");
          // Touch what the .pth readers look at: kinds, dict lookups, tensor descriptions.
          if (v->kind == pk::Kind::Dict) (void)v->get("state_dict");
          for (const pk::Value& x : arena.values())
            if (x.kind == pk::Kind::Tensor && x.tensor) (void)x.tensor->size.size();
        }
      },
      path);
  return 0;
}
