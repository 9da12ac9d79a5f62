// NumPy .npy files: reading float32/float64 C-order arrays (format versions 1.0, 2.0 and
// 3.0) and writing float32 version 1.0 files.
//
// The header is a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 224, 224), }
// padded with spaces and a newline so that the data starts at a multiple of 64 bytes.
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>

#include "core/error.h"
#include "core/file.h"
#include "tools/lib/image_io.h"

namespace pg::io {

namespace {

struct HeaderValue {
  enum Kind { kString, kBool, kTuple, kOther } kind = kOther;
  std::string str;
  bool flag = false;
  std::vector<int64_t> ints;
};

// Parser for the small subset of Python literals that .npy headers use.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, const std::string& text) : path_(path), s_(text) {}

  std::map<std::string, HeaderValue> parse_dict() {
    std::map<std::string, HeaderValue> out;
    skip_ws();
    expect('{');
    for (;;) {
      skip_ws();
      if (peek() == '}') {
        ++i_;
        break;
      }
      HeaderValue key = parse_value();
      if (key.kind != HeaderValue::kString) fail("dictionary key is not a string");
      skip_ws();
      expect(':');
      skip_ws();
      out[key.str] = parse_value();
      skip_ws();
      if (peek() == ',') {
        ++i_;
      } else if (peek() != '}') {
        fail("expected ',' or '}'");
      }
    }
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw file_error(path_, "bad .npy header (" + what + ")");
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }

  HeaderValue parse_value() {
    HeaderValue v;
    char c = peek();
    if (c == '\'' || c == '"') {
      ++i_;
      size_t end = s_.find(c, i_);
      if (end == std::string::npos) fail("unterminated string");
      v.kind = HeaderValue::kString;
      v.str = s_.substr(i_, end - i_);
      i_ = end + 1;
    } else if (s_.compare(i_, 4, "True") == 0) {
      v.kind = HeaderValue::kBool;
      v.flag = true;
      i_ += 4;
    } else if (s_.compare(i_, 5, "False") == 0) {
      v.kind = HeaderValue::kBool;
      i_ += 5;
    } else if (c == '(') {
      ++i_;
      v.kind = HeaderValue::kTuple;
      for (;;) {
        skip_ws();
        if (peek() == ')') {
          ++i_;
          break;
        }
        if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("bad shape");
        int64_t n = 0;
        while (std::isdigit(static_cast<unsigned char>(peek()))) {
          n = n * 10 + (s_[i_++] - '0');
          if (n > (int64_t(1) << 48)) fail("shape dimension too large");
        }
        if (peek() == 'L') ++i_;  // Python 2 long literal
        v.ints.push_back(n);
        skip_ws();
        if (peek() == ',') ++i_;
        else if (peek() != ')') fail("bad shape");
      }
    } else if (c == '[' || c == '{') {
      // Structured dtypes and the like: skip the balanced literal, reported by the caller.
      int depth = 0;
      char quote = 0;
      do {
        if (i_ >= s_.size()) fail("unterminated literal");
        char ch = s_[i_++];
        if (quote) {
          if (ch == quote) quote = 0;
        } else if (ch == '\'' || ch == '"') {
          quote = ch;
        } else if (ch == '[' || ch == '{' || ch == '(') {
          ++depth;
        } else if (ch == ']' || ch == '}' || ch == ')') {
          --depth;
        }
      } while (depth > 0);
      v.kind = HeaderValue::kOther;
      v.str = "structured";
    } else {
      fail("unexpected character");
    }
    return v;
  }

  const std::string& path_;
  const std::string& s_;
  size_t i_ = 0;
};

uint32_t le_u32(const unsigned char* p) {
  return uint32_t(p[0]) | (uint32_t(p[1]) << 8) | (uint32_t(p[2]) << 16) | (uint32_t(p[3]) << 24);
}

bool host_is_little_endian() {
  const uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

template <size_t N>
void byteswap_each(void* data, size_t count) {
  auto* p = static_cast<unsigned char*>(data);
  for (size_t i = 0; i < count; ++i, p += N)
    for (size_t j = 0; j < N / 2; ++j) std::swap(p[j], p[N - 1 - j]);
}

// " (bool)", " (int8)", " (big-endian float32)", ... for a NumPy type string, or "".
std::string dtype_words(const std::string& dt) {
  if (dt.size() < 3) return "";
  const char order = dt[0], kind = dt[1];
  const std::string bytes = dt.substr(2);
  std::string name;
  if (kind == 'b' && bytes == "1") name = "bool";
  else if (kind == 'i' || kind == 'u' || kind == 'f' || kind == 'c') {
    int n = 0;
    for (char c : bytes) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || n > 64) return "";
      n = n * 10 + (c - '0');
    }
    const char* base = kind == 'i' ? "int" : kind == 'u' ? "uint" : kind == 'f' ? "float" : "complex";
    name = base + std::to_string(n * 8);
  } else {
    return "";
  }
  if (order == '>' && bytes != "1") name = "big-endian " + name;
  return " (" + name + ")";
}


}  // namespace

Tensor load_npy(const std::string& path) {
  // A regular file of at most limits::kNpyFileBytes (core/file.h).
  const InputFile f(path, limits::kNpyFileBytes, "a .npy file");
  unsigned char pre[12];
  size_t got = std::fread(pre, 1, 10, f.get());
  if (got == 0) {
    if (std::ferror(f.get())) throw file_error(path, std::string("cannot read (") + std::strerror(errno) + ")");
    throw file_error(path, "empty file");
  }
  if (got < 6 || std::memcmp(pre, "\x93NUMPY", 6) != 0) throw file_error(path, "not a .npy file");
  if (got < 10) throw file_error(path, "truncated .npy header");
  const int major = pre[6], minor = pre[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    throw file_error(path, "unsupported .npy version " + std::to_string(major) + "." + std::to_string(minor));
  size_t header_len = 0, prefix = 10;
  if (major == 1) {
    header_len = size_t(pre[8]) | (size_t(pre[9]) << 8);
  } else {
    if (std::fread(pre + 10, 1, 2, f.get()) != 2) throw file_error(path, "truncated .npy header");
    header_len = le_u32(pre + 8);
    prefix = 12;
  }
  if (header_len > (size_t(1) << 20)) throw file_error(path, "bad .npy header (length " + std::to_string(header_len) + ")");
  std::string header(header_len, '\0');
  if (std::fread(header.data(), 1, header_len, f.get()) != header_len)
    throw file_error(path, "truncated .npy header");

  auto dict = HeaderParser(path, header).parse_dict();
  auto descr = dict.find("descr"), fortran = dict.find("fortran_order"), shape = dict.find("shape");
  if (descr == dict.end() || fortran == dict.end() || shape == dict.end())
    throw file_error(path, "bad .npy header (missing descr, fortran_order or shape)");
  if (descr->second.kind != HeaderValue::kString)
    throw file_error(path, "unsupported dtype (structured arrays are not supported)");
  const std::string& dt = descr->second.str;
  size_t item = 0;
  if (dt == "<f4") item = 4;
  else if (dt == "<f8") item = 8;
  else throw file_error(path, "unsupported dtype '" + printable(dt) + "'" + dtype_words(dt) +
                                 " (expected float32 '<f4' or float64 '<f8')");
  if (fortran->second.kind != HeaderValue::kBool) throw file_error(path, "bad .npy header (fortran_order)");
  if (fortran->second.flag) throw file_error(path, "Fortran-order .npy arrays are not supported");
  if (shape->second.kind != HeaderValue::kTuple) throw file_error(path, "bad .npy header (shape)");

  const std::vector<int64_t>& dims = shape->second.ints;
  uint64_t numel = 1;
  for (int64_t d : dims)
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel))
      throw file_error(path, "bad .npy header (shape too large)");
  uint64_t want = 0;
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(item), &want))
    throw file_error(path, "bad .npy header (shape too large)");

  // Compare with what the file holds before allocating anything.
  const uint64_t data_start = prefix + header_len;
  const uint64_t end = f.size();
  if (end < data_start) throw file_error(path, "truncated .npy data");
  const uint64_t have = end - data_start;
  if (have < want)
    throw file_error(path, "truncated .npy data (expected " + std::to_string(want) + " bytes, found " +
                               std::to_string(have) + ")");
  // Bytes after the data are ignored, as numpy.load does (files written by repeated np.save).
  if (::fseeko(f.get(), static_cast<off_t>(data_start), SEEK_SET) != 0)
    throw file_error(path, std::string("cannot read (") + std::strerror(errno) + ")");

  Tensor t(dims);
  const bool swap = !host_is_little_endian();
  if (item == 4) {
    if (std::fread(t.data(), 4, numel, f.get()) != numel) throw file_error(path, "truncated .npy data");
    if (swap) byteswap_each<4>(t.data(), numel);
  } else {
    std::vector<double> buf(1 << 16);
    uint64_t done = 0;
    while (done < numel) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), numel - done));
      if (std::fread(buf.data(), 8, n, f.get()) != n) throw file_error(path, "truncated .npy data");
      if (swap) byteswap_each<8>(buf.data(), n);
      for (size_t i = 0; i < n; ++i) t[static_cast<int64_t>(done + i)] = static_cast<float>(buf[i]);
      done += n;
    }
  }
  return t;
}

void save_npy(const std::string& path, const Tensor& t) {
  std::string shape = "(";
  for (int i = 0; i < t.ndim(); ++i) {
    if (i) shape += ", ";
    shape += std::to_string(t.dim(i));
  }
  if (t.ndim() == 1) shape += ",";
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  // magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64.
  size_t total = 10 + header.size() + 1;
  size_t padded = (total + 63) / 64 * 64;
  header.append(padded - total, ' ');
  header += '\n';
  if (header.size() > 65535) throw file_error(path, "array has too many dimensions for a .npy v1.0 header");

  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes += static_cast<char>(header.size() & 0xFF);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  const size_t data_at = bytes.size();
  bytes.resize(data_at + static_cast<size_t>(t.numel()) * 4);
  if (t.numel()) std::memcpy(&bytes[data_at], t.data(), static_cast<size_t>(t.numel()) * 4);
  if (!host_is_little_endian()) byteswap_each<4>(&bytes[data_at], static_cast<size_t>(t.numel()));
  write_file_atomically(path, bytes.data(), bytes.size());
}

}  // namespace pg::io
