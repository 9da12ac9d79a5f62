// safetensors: 8-byte little-endian header length, a JSON header, then the raw data.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "weights/detail.h"
#include "weights/state_dict.h"

namespace pg::weights {

namespace {

using json = nlohmann::json;

// The header's length limit of the reference implementation (huggingface/safetensors).
constexpr uint64_t kMaxHeader = 100000000;
constexpr const char* kWhat = "a safetensors file";

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

struct Parsed {
  std::unique_ptr<InputFile> file;
  uint64_t data_start = 0;
  std::vector<Entry> entries;
  std::map<std::string, std::string> metadata;
};


// A key that occurs twice in one JSON object (nlohmann keeps the last silently).
struct DuplicateKey {
  std::string key;
};

// Parses the header, refusing a key repeated within an object.
json parse_header_json(const std::string& text) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  json::parser_callback_t cb = [&keys](int, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: keys.emplace_back(); break;
      case json::parse_event_t::object_end: keys.pop_back(); break;
      case json::parse_event_t::key: {
        std::string k = parsed.get<std::string>();
        if (!keys.back().insert(k).second) throw DuplicateKey{k};
        break;
      }
      default: break;
    }
    return true;
  };
  return json::parse(text, cb);
}

// The rules of the format as the reference implementation enforces them: an 8-byte
// little-endian header length N with 8 + N within the file; a header of UTF-8 JSON that is
// an object (its first byte '{'), no key twice; an optional "__metadata__" map of strings to
// strings; every other entry a tensor with a known "dtype", a "shape" of non-negative
// integers and "data_offsets" [begin, end], begin <= end, end - begin = the shape's element
// count times the dtype's size; the tensors, ordered by offsets, cover the data that
// follows the header exactly: from 0, no hole, no overlap, the last ending at the file's end.
Parsed parse(const std::string& path) {
  Parsed p;
  p.file = std::make_unique<InputFile>(path, limits::kWeightFileBytes, kWhat);
  const InputFile& f = *p.file;
  const uint64_t file_size = f.size();
  if (file_size < 8) throw file_error(path, "truncated safetensors file (" + std::to_string(file_size) + " bytes)");
  unsigned char lenb[8];
  f.read_at(0, lenb, 8, "safetensors file");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(lenb[i]) << (8 * i);
  if (n > kMaxHeader)
    throw file_error(path, "bad safetensors header: length " + std::to_string(n) + " too large (at most " +
                               std::to_string(kMaxHeader) + ")");
  if (n > file_size - 8)
    throw file_error(path, "truncated safetensors file: header of " + std::to_string(n) +
                               " bytes but the file has " + std::to_string(file_size) + " bytes");
  std::string text(static_cast<size_t>(n), '\0');
  f.read_at(8, text.data(), text.size(), "safetensors file");
  if (text.empty() || text[0] != '{')
    throw file_error(path, "bad safetensors header: not a JSON object (does not start with '{')");
  json h;
  try {
    h = parse_header_json(text);
  } catch (const DuplicateKey& d) {
    throw file_error(path, "bad safetensors header: key " + detail::quote(d.key) + " occurs twice");
  } catch (const json::exception& e) {
    throw file_error(path, "bad safetensors header: " + printable(e.what()));
  }
  if (!h.is_object()) throw file_error(path, "bad safetensors header: not a JSON object");
  p.data_start = 8 + n;
  const uint64_t data_size = file_size - p.data_start;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    auto bad = [&](const std::string& why) {
      return file_error(path, "bad safetensors header: tensor " + detail::quote(name) + ": " + why);
    };
    if (name == "__metadata__") {
      if (v.is_null()) continue;
      if (!v.is_object()) throw file_error(path, "bad safetensors header: '__metadata__' is not a map of strings to strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw file_error(path, "bad safetensors header: '__metadata__' value of " + detail::quote(m.key()) +
                                     " is not a string");
        p.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) throw bad("not an object");
    Entry e;
    e.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) throw bad("no dtype");
    if (!dtype_from_name(dt->get<std::string>(), &e.dtype))
      throw bad("unsupported dtype " + detail::quote(dt->get<std::string>()) +
                " (readable: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array() || sh->size() > 64) throw bad("no shape");
    int64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned()) throw bad("bad shape");
      uint64_t u = d.get<uint64_t>();
      if (u > (uint64_t(1) << 62) || __builtin_mul_overflow(numel, static_cast<int64_t>(u), &numel))
        throw bad("shape overflows");
      e.shape.push_back(static_cast<int64_t>(u));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      throw bad("bad data_offsets");
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.begin > e.end) throw bad("data_offsets decreasing");
    if (e.end > data_size)
      throw file_error(path, "truncated safetensors file: tensor " + detail::quote(name) + " ends at data byte " +
                                 std::to_string(e.end) + " but only " + std::to_string(data_size) +
                                 " data bytes are present");
    uint64_t want;
    if (__builtin_mul_overflow(static_cast<uint64_t>(numel), dtype_size(e.dtype), &want) ||
        want != e.end - e.begin)
      throw bad(std::to_string(e.end - e.begin) + " bytes for shape " + shape_str(e.shape) + " of " +
                dtype_name(e.dtype) + " (which needs " + std::to_string(want) + ")");
    p.entries.push_back(std::move(e));
  }
  // The data layout: every byte belongs to exactly one tensor.
  std::vector<const Entry*> order;
  for (const Entry& e : p.entries) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t at = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    if (e->begin < at)
      throw file_error(path, "bad safetensors file: tensor " + detail::quote(e->name) + " (data bytes " +
                                 std::to_string(e->begin) + "-" + std::to_string(e->end) + ") overlaps tensor " +
                                 detail::quote(prev->name) + " (data bytes " + std::to_string(prev->begin) +
                                 "-" + std::to_string(prev->end) + ")");
    if (e->begin > at)
      throw file_error(path, "bad safetensors file: data bytes " + std::to_string(at) + "-" +
                                 std::to_string(e->begin) + " belong to no tensor (a hole before tensor " +
                                 detail::quote(e->name) + ")");
    at = e->end;
    prev = e;
  }
  if (at != data_size)
    throw file_error(path, "bad safetensors file: " + std::to_string(data_size - at) +
                               " data bytes after the last tensor belong to no tensor");
  return p;
}

}  // namespace

StateDict load_safetensors(const std::string& path) {
  Parsed p = parse(path);
  std::vector<std::string> names;
  for (const Entry& e : p.entries) names.push_back(e.name);
  detail::strip_module_prefix(names);
  StateDict out;
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < p.entries.size(); ++i) {
    const Entry& e = p.entries[i];
    detail::check_float_parameter(e.name, e.dtype, path);
    Tensor t(e.shape);
    const uint64_t nbytes = e.end - e.begin;
    if (nbytes) {
      buf.resize(static_cast<size_t>(nbytes));
      p.file->read_at(p.data_start + e.begin, buf.data(), buf.size(), "safetensors file");
      convert_to_float(buf.data(), e.dtype, 1, t.numel(), t.data());
      detail::check_finite(t, e.dtype, path, e.name);
    }
    out[names[i]] = t;
  }
  return out;
}

std::map<std::string, std::string> safetensors_metadata(const std::string& path) {
  return parse(path).metadata;
}

void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata) {
  json h = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {  // std::map: sorted names
    if (name == "__metadata__") throw file_error(path, "tensor name '__metadata__' is reserved");
    if (t.ndim() == 0 && t.numel() == 0) throw file_error(path, "tensor " + detail::quote(name) + " has no storage");
    uint64_t nbytes = static_cast<uint64_t>(t.numel()) * sizeof(float);
    h[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) h["__metadata__"] = metadata;
  std::string text = h.dump();
  while ((8 + text.size()) % 8) text += ' ';

  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  auto fail = [&](const std::string& what) {
    int e = errno;
    std::remove(tmp.c_str());
    return file_error(path, what + " (" + std::strerror(e) + ")");
  };
  {
    File f(std::fopen(tmp.c_str(), "wb"));
    if (!f) throw fail("cannot write");
    unsigned char lenb[8];
    for (int i = 0; i < 8; ++i) lenb[i] = static_cast<unsigned char>(static_cast<uint64_t>(text.size()) >> (8 * i));
    bool ok = std::fwrite(lenb, 1, 8, f.get()) == 8 &&
              std::fwrite(text.data(), 1, text.size(), f.get()) == text.size();
    for (auto it = tensors.begin(); ok && it != tensors.end(); ++it) {
      const Tensor& t = it->second;
      // float32 is stored little-endian; this host is little-endian (x86-64 / arm64).
      size_t n = static_cast<size_t>(t.numel());
      if (n) ok = std::fwrite(t.data(), sizeof(float), n, f.get()) == n;
    }
    if (!ok || std::fflush(f.get()) != 0) throw fail("cannot write");
    if (std::fclose(f.release()) != 0) throw fail("cannot write");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw fail("cannot write");
}

}  // namespace pg::weights
