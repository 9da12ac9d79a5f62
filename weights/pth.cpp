// PyTorch .pth readers: the zip format of torch >= 1.6 and the legacy stream format.
#include <unistd.h>
#include <zip.h>

#include <algorithm>
#include <map>
#include <memory>

#include "core/error.h"
#include "core/file.h"
#include "weights/detail.h"
#include "weights/pickle.h"
#include "weights/state_dict.h"

namespace pg::weights {

namespace {

using pickle::Kind;
using pickle::Value;

// What a persistent id ('storage', torch.XStorage, key, location, numel[, view]) says.
struct StorageRef {
  DType dtype = DType::F32;
  std::string key;
  int64_t numel = 0;
  bool is_view = false;  // legacy storage views: elements [view_offset, +view_size) of key
  int64_t view_offset = 0, view_size = 0;
};

DType storage_dtype(const std::string& global, const std::string& path) {
  std::string name = global.substr(global.rfind('.') + 1);
  static const std::pair<const char*, DType> table[] = {
      {"FloatStorage", DType::F32}, {"DoubleStorage", DType::F64}, {"HalfStorage", DType::F16},
      {"BFloat16Storage", DType::BF16}, {"LongStorage", DType::I64}, {"IntStorage", DType::I32},
      {"ShortStorage", DType::I16}, {"CharStorage", DType::I8}, {"ByteStorage", DType::U8},
      {"BoolStorage", DType::Bool}};
  for (const auto& [n, t] : table)
    if (name == n) return t;
  throw file_error(path, detail::quote(global) + " is not a storage type");
}

StorageRef parse_pid(const Value* persid, const std::string& path) {
  const Value* pid = persid->items.at(0);
  auto bad = [&](const std::string& why) { return file_error(path, "bad storage reference: " + why); };
  if (pid->kind != Kind::Tuple) throw bad(std::string("a ") + pickle::kind_name(pid->kind));
  const auto& a = pid->items;
  if (a.size() < 5 || a.size() > 6) throw bad(std::to_string(a.size()) + " fields");
  if (a[0]->kind != Kind::Str || a[0]->str != "storage") throw bad("not a 'storage' id");
  if (a[1]->kind != Kind::Global) throw bad("no storage type");
  if (a[2]->kind != Kind::Str) throw bad("key is not a string");
  if (a[4]->kind != Kind::Int || a[4]->i < 0) throw bad("bad element count");
  StorageRef r;
  r.dtype = storage_dtype(a[1]->str, path);
  r.key = a[2]->str;
  r.numel = a[4]->i;
  if (a.size() == 6 && a[5]->kind != Kind::None) {
    const Value* v = a[5];
    if (v->kind != Kind::Tuple || v->items.size() != 3 || v->items[1]->kind != Kind::Int ||
        v->items[2]->kind != Kind::Int || v->items[1]->i < 0 || v->items[2]->i < 0)
      throw bad("bad view metadata");
    r.is_view = true;
    r.view_offset = v->items[1]->i;
    r.view_size = v->items[2]->i;
  }
  return r;
}

bool has_tensor(const Value* d) {
  for (const auto& [k, v] : d->entries)
    if (k->kind == Kind::Str && v->kind == Kind::Tensor) return true;
  return false;
}

// The tensors of a state dict, possibly wrapped in a checkpoint dict, by final name.
std::vector<std::pair<std::string, const Value*>> collect_tensors(const Value* root,
                                                                   const std::string& path) {
  if (root->kind != Kind::Dict)
    throw file_error(path, std::string("pickle holds a ") + pickle::kind_name(root->kind) +
                               ", not a dict of tensors");
  const Value* sd = root;
  for (const char* key : {"state_dict", "model"}) {
    const Value* v = root->get(key);
    if (v && v->kind == Kind::Dict && has_tensor(v)) {
      sd = v;
      break;
    }
  }
  std::vector<std::string> names;
  std::vector<const Value*> tensors;
  for (const auto& [k, v] : sd->entries) {
    if (k->kind == Kind::Str && v->kind == Kind::Tensor) {
      names.push_back(k->str);
      tensors.push_back(v);
    }
  }
  if (names.empty()) throw file_error(path, "no tensors found");
  detail::strip_module_prefix(names);
  std::vector<std::pair<std::string, const Value*>> out;
  for (size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i], tensors[i]);
  return out;
}

// ---------------------------------------------------------------------------------------
// Zip format.

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
struct ZipFileCloser {
  void operator()(zip_file_t* f) const { zip_fclose(f); }
};

std::vector<uint8_t> read_entry(zip_t* z, zip_int64_t index, const std::string& name,
                                const std::string& path, uint64_t max_size) {
  zip_stat_t st;
  zip_stat_init(&st);
  if (zip_stat_index(z, static_cast<zip_uint64_t>(index), 0, &st) != 0 ||
      !(st.valid & ZIP_STAT_SIZE) || !(st.valid & ZIP_STAT_COMP_SIZE))
    throw file_error(path, "corrupt zip entry " + detail::quote(name));
  // Reject sizes the archive cannot hold: stored entries are their own size, deflate
  // expands at most ~1032x.
  uint64_t bound = st.comp_size * 1100 + 4096;
  if (st.size > max_size || st.size > bound)
    throw file_error(path, "corrupt zip entry " + detail::quote(name) + ": implausible size " + std::to_string(st.size));
  std::unique_ptr<zip_file_t, ZipFileCloser> f(zip_fopen_index(z, static_cast<zip_uint64_t>(index), 0));
  if (!f) throw file_error(path, "cannot read zip entry " + detail::quote(name) + " (" + zip_strerror(z) + ")");
  std::vector<uint8_t> out(static_cast<size_t>(st.size));
  uint64_t got = 0;
  while (got < st.size) {
    zip_int64_t n = zip_fread(f.get(), out.data() + got, st.size - got);
    if (n < 0)
      throw file_error(path, "corrupt zip entry " + detail::quote(name) + " (" + zip_file_strerror(f.get()) + ")");
    if (n == 0) throw file_error(path, "truncated zip entry " + detail::quote(name));
    got += static_cast<uint64_t>(n);
  }
  return out;
}

StateDict load_zip(const std::string& path) {
  // Opened under core/file.h's rules (a regular file within the limit); libzip reads the
  // same open file through a descriptor of its own.
  const InputFile file(path, limits::kWeightFileBytes, detail::kFileWhat);
  const int fd = file.dup_fd();
  int err = 0;
  std::unique_ptr<zip_t, ZipCloser> z(zip_fdopen(fd, ZIP_RDONLY | ZIP_CHECKCONS, &err));
  if (!z) {
    ::close(fd);
    zip_error_t ze;
    zip_error_init_with_code(&ze, err);
    std::string msg = zip_error_strerror(&ze);
    zip_error_fini(&ze);
    throw file_error(path, "truncated or corrupt zip archive (" + msg + ")");
  }
  // <prefix>/data.pkl: the archive's single top-level folder holds everything.
  zip_int64_t n = zip_get_num_entries(z.get(), 0);
  std::string prefix;
  zip_int64_t pkl = -1;
  for (zip_int64_t i = 0; i < n && pkl < 0; ++i) {
    const char* name = zip_get_name(z.get(), static_cast<zip_uint64_t>(i), 0);
    if (!name) continue;
    std::string s = name;
    static const std::string tail = "data.pkl";
    if (s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0) {
      std::string p = s.substr(0, s.size() - tail.size());
      if (p.empty() || (p.back() == '/' && p.find('/') == p.size() - 1)) {
        prefix = p;
        pkl = i;
      }
    }
  }
  if (pkl < 0) throw file_error(path, "zip archive has no data.pkl (not a PyTorch checkpoint)");

  bool big_endian = false;
  zip_int64_t bo = zip_name_locate(z.get(), (prefix + "byteorder").c_str(), 0);
  if (bo >= 0) {
    std::vector<uint8_t> b = read_entry(z.get(), bo, "byteorder", path, 64);
    std::string s(b.begin(), b.end());
    if (s == "big") big_endian = true;
    else if (s != "little") throw file_error(path, "bad byteorder " + detail::quote(s));
  }

  std::vector<uint8_t> pkl_bytes = read_entry(z.get(), pkl, "data.pkl", path, uint64_t(1) << 30);
  pickle::Arena arena;
  size_t pos = 0;
  const Value* root = pickle::unpickle(pkl_bytes.data(), pkl_bytes.size(), &pos, arena, path, "data.pkl");
  auto tensors = collect_tensors(root, path);

  // Storages are read when first needed and dropped after their last tensor.
  std::vector<StorageRef> refs;
  std::map<std::string, int> uses;
  for (const auto& [name, t] : tensors) {
    refs.push_back(parse_pid(t->items[0], path));
    if (refs.back().is_view) throw file_error(path, "storage views are not used in zip archives");
    ++uses[refs.back().key];
  }
  std::map<std::string, std::vector<uint8_t>> cache;
  StateDict out;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const StorageRef& r = refs[i];
    const std::string entry = "data/" + r.key;
    auto it = cache.find(r.key);
    if (it == cache.end()) {
      zip_int64_t idx = zip_name_locate(z.get(), (prefix + entry).c_str(), 0);
      if (idx < 0) throw file_error(path, "storage " + detail::quote(entry) + " missing from zip archive");
      std::vector<uint8_t> bytes = read_entry(z.get(), idx, entry, path, uint64_t(1) << 40);
      uint64_t want = static_cast<uint64_t>(r.numel) * dtype_size(r.dtype);
      if (r.numel > (int64_t(1) << 40) || bytes.size() < want)
        throw file_error(path, "storage shorter than declared: " + detail::quote(entry) + " has " +
                                   std::to_string(bytes.size()) + " bytes, expected " +
                                   std::to_string(want));
      it = cache.emplace(r.key, std::move(bytes)).first;
    }
    // Bounded by the bytes actually present, whatever each reference claims.
    int64_t avail = std::min<int64_t>(r.numel, static_cast<int64_t>(it->second.size() / dtype_size(r.dtype)));
    const pickle::TensorDesc& d = *tensors[i].second->tensor;
    detail::check_float_parameter(tensors[i].first, r.dtype, path);
    Tensor t = detail::materialise(it->second.data(), avail, r.dtype, big_endian, d.offset, d.size,
                                   d.stride, path, "tensor " + detail::quote(tensors[i].first));
    detail::check_finite(t, r.dtype, path, tensors[i].first);
    out[tensors[i].first] = t;
    if (--uses[r.key] == 0) cache.erase(it);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Legacy format: magic, protocol version, sys_info, object pickles, storage key list,
// then per storage an int64 element count and the raw little-endian elements.

StateDict load_legacy(const std::string& path) {
  std::vector<uint8_t> bytes = detail::read_file(path);
  const uint8_t* data = bytes.data();
  const size_t size = bytes.size();
  pickle::Arena arena;
  size_t pos = 0;

  const Value* magic = pickle::unpickle(data, size, &pos, arena, path, "legacy header");
  if (magic->kind != Kind::BigInt || size < 14 ||
      !detail::is_legacy_magic(std::string(reinterpret_cast<const char*>(data), 14)))
    throw file_error(path, "not a legacy .pth file (bad magic number)");
  const Value* proto = pickle::unpickle(data, size, &pos, arena, path, "legacy header");
  if (proto->kind != Kind::Int || proto->i != 1001)
    throw file_error(path, "unsupported legacy .pth protocol version");
  const Value* sys_info = pickle::unpickle(data, size, &pos, arena, path, "legacy header");
  if (sys_info->kind != Kind::Dict) throw file_error(path, "bad legacy .pth header (sys_info)");
  if (const Value* le = sys_info->get("little_endian"); le && le->kind == Kind::Bool && !le->b)
    throw file_error(path, "big-endian legacy .pth files are not supported");

  const Value* root = pickle::unpickle(data, size, &pos, arena, path, "legacy object pickle");
  // Element types of every storage the pickle names (also ones outside the state dict,
  // e.g. optimizer state, which must be skipped over).
  std::map<std::string, DType> types;
  for (const Value& v : arena.values()) {
    if (v.kind != Kind::PersId) continue;
    StorageRef r = parse_pid(&v, path);
    types.emplace(r.key, r.dtype);
  }
  const Value* keys = pickle::unpickle(data, size, &pos, arena, path, "legacy storage list");
  if (keys->kind != Kind::List) throw file_error(path, "bad legacy .pth storage list");

  struct Raw {
    const uint8_t* p;
    int64_t numel;
    DType dtype;
  };
  std::map<std::string, Raw> raw;
  for (size_t i = 0; i < keys->items.size(); ++i) {
    const Value* k = keys->items[i];
    if (k->kind != Kind::Str) throw file_error(path, "bad legacy .pth storage list");
    auto t = types.find(k->str);
    if (t == types.end()) throw file_error(path, "legacy .pth stream lists unknown storage " + detail::quote(k->str));
    const std::string which = "storage " + std::to_string(i + 1) + " of " +
                              std::to_string(keys->items.size()) + " (" + detail::quote(k->str) + ")";
    if (size - pos < 8) throw file_error(path, "truncated legacy .pth stream: " + which + " missing");
    uint64_t numel = 0;
    for (int b = 0; b < 8; ++b) numel |= static_cast<uint64_t>(data[pos + b]) << (8 * b);
    pos += 8;
    const uint64_t es = dtype_size(t->second);
    if (numel > (size - pos) / es)
      throw file_error(path, "truncated legacy .pth stream: " + which + " needs " +
                                 std::to_string(numel) + " elements, " +
                                 std::to_string((size - pos) / es) + " left in the file");
    raw[k->str] = Raw{data + pos, static_cast<int64_t>(numel), t->second};
    pos += static_cast<size_t>(numel * es);
  }

  StateDict out;
  for (const auto& [name, t] : collect_tensors(root, path)) {
    StorageRef r = parse_pid(t->items[0], path);
    auto it = raw.find(r.key);
    if (it == raw.end()) throw file_error(path, "truncated legacy .pth stream: storage " + detail::quote(r.key) + " missing");
    if (it->second.dtype != r.dtype)
      throw file_error(path, "storage " + detail::quote(r.key) + " is referenced with two element types");
    const uint8_t* base = it->second.p;
    int64_t avail = it->second.numel;
    if (r.is_view) {
      if (r.view_offset > avail || r.view_size > avail - r.view_offset)
        throw file_error(path, "storage view outside storage " + detail::quote(r.key));
      base += r.view_offset * static_cast<int64_t>(dtype_size(r.dtype));
      avail = r.view_size;
    }
    const pickle::TensorDesc& d = *t->tensor;
    detail::check_float_parameter(name, r.dtype, path);
    Tensor tensor = detail::materialise(base, avail, r.dtype, false, d.offset, d.size, d.stride, path,
                                        "tensor " + detail::quote(name));
    detail::check_finite(tensor, r.dtype, path, name);
    out[name] = tensor;
  }
  return out;
}

}  // namespace

StateDict load_pth(const std::string& path) {
  std::string head = detail::read_head(path, 16);
  if (detail::is_zip_magic(head)) return load_zip(path);
  if (detail::is_legacy_magic(head)) return load_legacy(path);
  throw file_error(path, "not a .pth weight file");
}

}  // namespace pg::weights
