// A restricted unpickler for PyTorch state dicts.
//
// It understands the opcodes that torch.save emits for state dicts (protocols 2 to 5),
// builds plain values (ints, strings, tuples, lists, dicts) and records tensors as
// descriptions (storage persistent id, offset, size, stride) without touching data.
// Only an explicit allow-list of globals is accepted, and calling one of them only
// builds a value here: nothing from the file is ever executed. Every read is bounded
// and every malformed input throws pg::Error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace pg::weights::pickle {

enum class Kind {
  None,
  Bool,
  Int,     // fits in int64
  BigInt,  // LONG1 wider than int64: raw little-endian two's complement bytes in `str`
  Float,
  Str,
  Bytes,
  Tuple,
  List,
  Dict,    // dict or collections.OrderedDict, insertion ordered
  Global,  // an allow-listed global; `str` holds "module.name"
  PersId,  // result of BINPERSID; `items[0]` is the persistent id
  Tensor,  // result of torch._utils._rebuild_tensor(_v2) / _rebuild_parameter
};

// Where a tensor's elements lie in its storage (in elements, like torch).
struct TensorDesc {
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};

struct Value {
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string str;
  // Tuple / List elements; PersId: the id; Tensor: the storage (a PersId).
  std::vector<Value*> items;
  // Dict entries in insertion order (a later SETITEM with an equal str or int key
  // replaces the value, as in Python).
  std::vector<std::pair<Value*, Value*>> entries;
  std::unique_ptr<std::unordered_map<std::string, size_t>> index;  // key -> entry
  std::unique_ptr<TensorDesc> tensor;                              // Kind::Tensor

  // Dict lookup by string key; nullptr if absent or not a dict.
  const Value* get(const std::string& key) const;
};

const char* kind_name(Kind k);

// Owns every value of one or more pickles; values point at each other, so the arena
// must outlive them. Flat ownership: cyclic or deeply nested pickles cannot leak or
// overflow the stack when freed.
class Arena {
 public:
  // Throws pg::Error (without a file name) past max_values().
  Value* make(Kind k);
  size_t size() const { return values_.size(); }
  const std::deque<Value>& values() const { return values_; }
  static constexpr size_t max_values() { return size_t(1) << 22; }

 private:
  std::deque<Value> values_;
};

// True for the globals a state dict may name ("collections.OrderedDict",
// "torch._utils._rebuild_tensor_v2", "torch.FloatStorage", ...).
bool global_allowed(const std::string& module, const std::string& name);

// Parses one pickle from data[*pos, size) and returns its object; *pos is advanced
// past STOP. Errors: "<path>: refusing pickle global 'os.system'" for a global not on
// the allow-list, "<path>: corrupt pickle in <label>: <problem> at byte N" otherwise.
Value* unpickle(const uint8_t* data, size_t size, size_t* pos, Arena& arena,
                const std::string& path, const std::string& label);

}  // namespace pg::weights::pickle
