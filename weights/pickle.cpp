#include "weights/pickle.h"

#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "weights/detail.h"

namespace pg::weights::pickle {

const Value* Value::get(const std::string& key) const {
  if (kind != Kind::Dict || !index) return nullptr;
  auto it = index->find("s:" + key);
  return it == index->end() ? nullptr : entries[it->second].second;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int:
    case Kind::BigInt: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::PersId: return "persistent id";
    case Kind::Tensor: return "tensor";
  }
  return "?";
}

Value* Arena::make(Kind k) {
  if (values_.size() >= max_values()) throw Error("too many objects");
  values_.emplace_back();
  values_.back().kind = k;
  return &values_.back();
}

bool global_allowed(const std::string& module, const std::string& name) {
  if (module == "collections") return name == "OrderedDict";
  if (module == "torch._utils")
    return name == "_rebuild_tensor_v2" || name == "_rebuild_tensor" ||
           name == "_rebuild_parameter" || name == "_rebuild_parameter_with_state";
  if (module == "torch" || module == "torch.cuda") {
    static const char* storages[] = {"FloatStorage", "DoubleStorage", "HalfStorage",
                                     "BFloat16Storage", "LongStorage", "IntStorage",
                                     "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage"};
    for (const char* s : storages)
      if (name == s) return true;
  }
  return false;
}

namespace {

// Opcodes (pickle protocols 0-5, the subset state dicts use).
enum : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  BINFLOAT = 'G',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINUNICODE = 'X',
  EMPTY_LIST = ']',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  SETITEMS = 'u',
  EMPTY_DICT = '}',
  EMPTY_TUPLE = ')',
  PROTO = 0x80,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
};

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, size_t pos, Arena& arena, const std::string& path,
            const std::string& label)
      : data_(data), size_(size), pos_(pos), arena_(arena), path_(path), label_(label) {}

  Value* run();
  size_t pos() const { return pos_; }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw file_error(path_, "corrupt pickle in " + label_ + ": " + what + " at byte " +
                                std::to_string(op_pos_));
  }

  Value* make(Kind k) {
    if (arena_.size() >= Arena::max_values()) fail("too many objects");
    return arena_.make(k);
  }

  const uint8_t* take(size_t n) {
    if (n > size_ - pos_) fail("unexpected end of data");
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint64_t read_le(size_t n) {
    const uint8_t* p = take(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
  }
  std::string read_string(uint64_t n) {
    if (n > size_ - pos_) fail("unexpected end of data");
    const uint8_t* p = take(static_cast<size_t>(n));
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
  }
  std::string read_line() {
    // GLOBAL arguments: "module\n" / "name\n", bounded length.
    size_t start = pos_;
    while (true) {
      if (pos_ >= size_) fail("unexpected end of data");
      if (data_[pos_] == '\n') break;
      if (pos_ - start > 256) fail("over-long GLOBAL name");
      ++pos_;
    }
    std::string s(reinterpret_cast<const char*>(data_ + start), pos_ - start);
    ++pos_;
    return s;
  }

  Value* pop() {
    if (stack_.size() <= floor()) fail("stack underflow");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.size() <= floor()) fail("stack underflow");
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  // Pops everything above the last MARK, and the mark.
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }

  Value* make_str(Kind k, std::string s) {
    Value* v = make(k);
    v->str = std::move(s);
    return v;
  }
  Value* make_int(int64_t i) {
    Value* v = make(Kind::Int);
    v->i = i;
    return v;
  }
  Value* make_tuple(std::vector<Value*> items) {
    Value* v = make(Kind::Tuple);
    v->items = std::move(items);
    return v;
  }

  void memo_put(uint64_t idx, Value* v) { memo_[idx] = v; }
  Value* memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("memo entry " + std::to_string(idx) + " missing");
    return it->second;
  }

  void set_item(Value* dict, Value* key, Value* value) {
    if (dict->kind != Kind::Dict) fail(std::string("SETITEM on a ") + kind_name(dict->kind));
    std::string k;
    if (key->kind == Kind::Str) k = "s:" + key->str;
    else if (key->kind == Kind::Int) k = "i:" + std::to_string(key->i);
    if (!k.empty()) {
      if (!dict->index) dict->index = std::make_unique<std::unordered_map<std::string, size_t>>();
      auto it = dict->index->find(k);
      if (it != dict->index->end()) {
        dict->entries[it->second].second = value;
        return;
      }
      dict->index->emplace(std::move(k), dict->entries.size());
    }
    dict->entries.emplace_back(key, value);
  }

  Value* global(const std::string& module, const std::string& name) {
    // Tensor kinds torch has but the engine does not read: named as such (they are still
    // never called), so a quantized or complex checkpoint is not mistaken for a hostile one.
    const bool torch_module = module == "torch" || module == "torch.cuda";
    if (!global_allowed(module, name) && torch_module && name.size() > 7 &&
        name.compare(name.size() - 7, 7, "Storage") == 0)
      throw file_error(path_, "unsupported tensor type " + detail::quote(module + "." + name) +
                                  " (readable: float64/32/16, bfloat16, int64/32/16/8, uint8 and bool tensors;"
                                  " quantized and complex tensors are not)");
    if (module == "torch._utils" && (name == "_rebuild_qtensor" || name == "_rebuild_sparse_tensor"))
      throw file_error(path_, std::string(name == "_rebuild_qtensor" ? "quantized" : "sparse") +
                                  " tensors are not supported (" + detail::quote(module + "." + name) + ")");
    if (!global_allowed(module, name))
      throw file_error(path_, "refusing pickle global " + detail::quote(module + "." + name));
    return make_str(Kind::Global, module + "." + name);
  }

  std::vector<int64_t> int_tuple(const Value* v, const char* what) {
    if (v->kind != Kind::Tuple && v->kind != Kind::List)
      fail(std::string("tensor ") + what + " is a " + kind_name(v->kind) + ", not a tuple");
    std::vector<int64_t> out;
    for (const Value* e : v->items) {
      if (e->kind != Kind::Int) fail(std::string("tensor ") + what + " holds a " + kind_name(e->kind));
      out.push_back(e->i);
    }
    return out;
  }

  Value* reduce(Value* callable, Value* args) {
    if (callable->kind != Kind::Global)
      fail(std::string("REDUCE on a ") + kind_name(callable->kind));
    if (args->kind != Kind::Tuple) fail("REDUCE arguments are not a tuple");
    const std::string& g = callable->str;
    const std::vector<Value*>& a = args->items;
    if (g == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict with arguments");
      return make(Kind::Dict);
    }
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      bool v2 = g == "torch._utils._rebuild_tensor_v2";
      if (v2 ? (a.size() != 6 && a.size() != 7) : a.size() != 4)
        fail(g + " with " + std::to_string(a.size()) + " arguments");
      if (a[0]->kind != Kind::PersId) fail("tensor storage is not a persistent id");
      if (a[1]->kind != Kind::Int) fail("tensor storage offset is not an int");
      auto t = std::make_unique<TensorDesc>();
      t->offset = a[1]->i;
      t->size = int_tuple(a[2], "size");
      t->stride = int_tuple(a[3], "stride");
      if (t->size.size() != t->stride.size()) fail("tensor size and stride differ in length");
      Value* v = make(Kind::Tensor);
      v->items = {a[0]};
      v->tensor = std::move(t);
      return v;
    }
    if (g == "torch._utils._rebuild_parameter" || g == "torch._utils._rebuild_parameter_with_state") {
      size_t want = g == "torch._utils._rebuild_parameter" ? 3 : 4;
      if (a.size() != want) fail(g + " with " + std::to_string(a.size()) + " arguments");
      if (a[0]->kind != Kind::Tensor) fail("parameter does not wrap a tensor");
      return a[0];
    }
    fail("global " + detail::quote(g) + " cannot be called");
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_;
  size_t op_pos_ = 0;
  Arena& arena_;
  const std::string& path_;
  const std::string& label_;
  std::vector<Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value*> memo_;
};

Value* Unpickler::run() {
  op_pos_ = pos_;
  if (pos_ >= size_) fail("empty pickle");
  while (true) {
    op_pos_ = pos_;
    uint8_t op = *take(1);
    switch (op) {
      case PROTO: {
        uint8_t v = *take(1);
        if (v > 5) fail("unsupported pickle protocol " + std::to_string(v));
        break;
      }
      case FRAME: {
        uint64_t n = read_le(8);
        if (n > size_ - pos_) fail("frame longer than the data");
        break;
      }
      case MARK: marks_.push_back(stack_.size()); break;
      case STOP: {
        if (!marks_.empty()) fail("STOP inside a MARK");
        if (stack_.size() != 1) fail("STOP with " + std::to_string(stack_.size()) + " objects on the stack");
        return stack_.back();
      }
      case POP: pop(); break;
      case POP_MARK: pop_mark(); break;
      case DUP: stack_.push_back(top()); break;
      case NONE: stack_.push_back(make(Kind::None)); break;
      case NEWTRUE:
      case NEWFALSE: {
        Value* v = make(Kind::Bool);
        v->b = op == NEWTRUE;
        stack_.push_back(v);
        break;
      }
      case BININT: stack_.push_back(make_int(static_cast<int32_t>(static_cast<uint32_t>(read_le(4))))); break;
      case BININT1: stack_.push_back(make_int(static_cast<int64_t>(read_le(1)))); break;
      case BININT2: stack_.push_back(make_int(static_cast<int64_t>(read_le(2)))); break;
      case LONG1: {
        size_t n = static_cast<size_t>(read_le(1));
        const uint8_t* p = take(n);
        if (n <= 8) {
          uint64_t u = 0;
          for (size_t k = 0; k < n; ++k) u |= static_cast<uint64_t>(p[k]) << (8 * k);
          if (n > 0 && n < 8 && (p[n - 1] & 0x80)) u |= ~uint64_t(0) << (8 * n);  // sign-extend
          stack_.push_back(make_int(static_cast<int64_t>(u)));
        } else {
          stack_.push_back(make_str(Kind::BigInt, std::string(reinterpret_cast<const char*>(p), n)));
        }
        break;
      }
      case BINFLOAT: {
        const uint8_t* p = take(8);
        uint64_t u = 0;
        for (int k = 0; k < 8; ++k) u = (u << 8) | p[k];  // big-endian
        Value* v = make(Kind::Float);
        std::memcpy(&v->f, &u, 8);
        stack_.push_back(v);
        break;
      }
      case SHORT_BINUNICODE: stack_.push_back(make_str(Kind::Str, read_string(read_le(1)))); break;
      case BINUNICODE: stack_.push_back(make_str(Kind::Str, read_string(read_le(4)))); break;
      case BINUNICODE8: stack_.push_back(make_str(Kind::Str, read_string(read_le(8)))); break;
      case SHORT_BINSTRING: stack_.push_back(make_str(Kind::Str, read_string(read_le(1)))); break;
      case BINSTRING: {
        int32_t n = static_cast<int32_t>(static_cast<uint32_t>(read_le(4)));
        if (n < 0) fail("negative BINSTRING length");
        stack_.push_back(make_str(Kind::Str, read_string(static_cast<uint64_t>(n))));
        break;
      }
      case SHORT_BINBYTES: stack_.push_back(make_str(Kind::Bytes, read_string(read_le(1)))); break;
      case BINBYTES: stack_.push_back(make_str(Kind::Bytes, read_string(read_le(4)))); break;
      case BINBYTES8: stack_.push_back(make_str(Kind::Bytes, read_string(read_le(8)))); break;
      case EMPTY_TUPLE: stack_.push_back(make(Kind::Tuple)); break;
      case EMPTY_LIST: stack_.push_back(make(Kind::List)); break;
      case EMPTY_DICT: stack_.push_back(make(Kind::Dict)); break;
      case TUPLE1:
      case TUPLE2:
      case TUPLE3: {
        size_t n = static_cast<size_t>(op - TUPLE1 + 1);
        if (stack_.size() < floor() + n) fail("stack underflow");
        std::vector<Value*> items(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
        stack_.resize(stack_.size() - n);
        stack_.push_back(make_tuple(std::move(items)));
        break;
      }
      case TUPLE: stack_.push_back(make_tuple(pop_mark())); break;
      case LIST: {
        Value* v = make(Kind::List);
        v->items = pop_mark();
        stack_.push_back(v);
        break;
      }
      case DICT: {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) fail("DICT with an odd number of items");
        Value* d = make(Kind::Dict);
        for (size_t k = 0; k < items.size(); k += 2) set_item(d, items[k], items[k + 1]);
        stack_.push_back(d);
        break;
      }
      case BINPUT: memo_put(read_le(1), top()); break;
      case LONG_BINPUT: memo_put(read_le(4), top()); break;
      case MEMOIZE: memo_put(memo_.size(), top()); break;
      case BINGET: stack_.push_back(memo_get(read_le(1))); break;
      case LONG_BINGET: stack_.push_back(memo_get(read_le(4))); break;
      case SETITEM: {
        Value* value = pop();
        Value* key = pop();
        set_item(top(), key, value);
        break;
      }
      case SETITEMS: {
        std::vector<Value*> items = pop_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        Value* d = top();
        for (size_t k = 0; k < items.size(); k += 2) set_item(d, items[k], items[k + 1]);
        break;
      }
      case APPEND: {
        Value* v = pop();
        Value* list = top();
        if (list->kind != Kind::List) fail(std::string("APPEND to a ") + kind_name(list->kind));
        list->items.push_back(v);
        break;
      }
      case APPENDS: {
        std::vector<Value*> items = pop_mark();
        Value* list = top();
        if (list->kind != Kind::List) fail(std::string("APPENDS to a ") + kind_name(list->kind));
        list->items.insert(list->items.end(), items.begin(), items.end());
        break;
      }
      case GLOBAL: {
        std::string module = read_line();
        std::string name = read_line();
        stack_.push_back(global(module, name));
        break;
      }
      case STACK_GLOBAL: {
        Value* name = pop();
        Value* module = pop();
        if (module->kind != Kind::Str || name->kind != Kind::Str) fail("STACK_GLOBAL needs two strings");
        stack_.push_back(global(module->str, name->str));
        break;
      }
      case REDUCE: {
        Value* args = pop();
        Value* callable = pop();
        stack_.push_back(reduce(callable, args));
        break;
      }
      case BUILD: {
        Value* state = pop();
        Value* obj = top();
        // Only OrderedDict state (e.g. `_metadata`, an attribute in Python) is expected;
        // it is not part of the mapping and is ignored.
        if (obj->kind != Kind::Dict) fail(std::string("BUILD on a ") + kind_name(obj->kind));
        (void)state;
        break;
      }
      case BINPERSID: {
        Value* v = make(Kind::PersId);
        v->items = {pop()};
        stack_.push_back(v);
        break;
      }
      default: {
        char buf[8];
        std::snprintf(buf, sizeof buf, "0x%02x", op);
        fail(std::string("unsupported opcode ") + buf);
      }
    }
  }
}

}  // namespace

Value* unpickle(const uint8_t* data, size_t size, size_t* pos, Arena& arena, const std::string& path,
                const std::string& label) {
  Unpickler u(data, size, *pos, arena, path, label);
  Value* v = u.run();
  *pos = u.pos();
  return v;
}

}  // namespace pg::weights::pickle
