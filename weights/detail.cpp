#include "weights/detail.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "core/error.h"
#include "core/file.h"

namespace pg::weights::detail {

namespace {

// a * b with overflow detection (both non-negative).
bool mul_ok(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }
bool add_ok(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }

}  // namespace

std::string read_head(const std::string& path, size_t n) {
  return read_file_head(path, n, limits::kWeightFileBytes, kFileWhat);
}

std::vector<uint8_t> read_file(const std::string& path) {
  return read_file_limited(path, limits::kWeightFileBytes, kFileWhat);
}

void check_float_parameter(const std::string& name, DType source, const std::string& path) {
  if (source == DType::F32 || source == DType::F64 || source == DType::F16 || source == DType::BF16) return;
  for (const char* suffix : {".weight", ".bias", ".running_mean", ".running_var"}) {
    const size_t n = std::strlen(suffix);
    if (name.size() > n && name.compare(name.size() - n, n, suffix) == 0)
      throw file_error(path, "tensor " + quote(name) + " is stored as " + dtype_name(source) + ", but a '" + suffix +
                                 "' tensor is a model parameter and must be floating point (F32, F64, F16 or BF16)");
  }
}

void check_finite(const Tensor& t, DType source, const std::string& path, const std::string& name) {
  const float* p = t.data();
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(p[i])) continue;
    const std::string where = " (element " + std::to_string(i) + " of " + std::to_string(n) + ")";
    if (std::isnan(p[i])) throw file_error(path, "tensor " + quote(name) + " contains NaN" + where);
    if (source == DType::F64)
      throw file_error(path, "tensor " + quote(name) + " contains Inf or a float64 value beyond float32's range" + where);
    throw file_error(path, "tensor " + quote(name) + " contains Inf" + where);
  }
}

std::string quote(const std::string& s) { return "'" + printable(s, 200) + "'"; }

bool is_zip_magic(const std::string& head) { return head.compare(0, 4, std::string("PK\x03\x04", 4)) == 0; }

bool is_legacy_magic(const std::string& head) {
  // \x80\x02 PROTO 2, \x8a\x0a LONG1 of 10 bytes: 0x1950a86a20f9469cfc6c little-endian.
  static const unsigned char magic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c,
                                        0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  return head.size() >= sizeof magic && std::memcmp(head.data(), magic, sizeof magic) == 0;
}

void strip_module_prefix(std::vector<std::string>& names) {
  static const std::string prefix = "module.";
  if (names.empty()) return;
  for (const std::string& n : names)
    if (n.size() <= prefix.size() || n.compare(0, prefix.size(), prefix) != 0) return;
  for (std::string& n : names) n.erase(0, prefix.size());
}

Tensor materialise(const uint8_t* storage, int64_t avail, DType t, bool big_endian, int64_t offset,
                   const std::vector<int64_t>& size, const std::vector<int64_t>& stride,
                   const std::string& path, const std::string& what) {
  if (size.size() != stride.size()) throw file_error(path, what + ": size and stride differ in length");
  if (size.size() > 64) throw file_error(path, what + ": too many dimensions");
  if (offset < 0) throw file_error(path, what + ": negative storage offset");
  int64_t numel = 1, last = offset;  // last: highest element index touched
  for (size_t d = 0; d < size.size(); ++d) {
    if (size[d] < 0) throw file_error(path, what + ": negative size " + shape_str(size));
    if (stride[d] < 0) throw file_error(path, what + ": negative stride");
    if (!mul_ok(numel, size[d], &numel)) throw file_error(path, what + ": size overflows");
  }
  if (numel == 0) return Tensor(size);
  for (size_t d = 0; d < size.size(); ++d) {
    int64_t span;
    if (!mul_ok(size[d] - 1, stride[d], &span) || !add_ok(last, span, &last))
      throw file_error(path, what + ": stride overflows");
  }
  if (last >= avail)
    throw file_error(path, "storage shorter than tensor: " + what + " needs element " +
                               std::to_string(last) + " but the storage holds " +
                               std::to_string(avail) + " elements");
  // Overlapping (expanded) tensors may legitimately hold more elements than their
  // storage; bound them so a tiny file cannot request an enormous allocation.
  if (numel > avail && numel > (int64_t(1) << 28))
    throw file_error(path, what + ": " + std::to_string(numel) + " elements from a storage of " +
                               std::to_string(avail));
  Tensor out(size);
  float* dst = out.data();
  const int64_t es = static_cast<int64_t>(dtype_size(t));
  const int nd = static_cast<int>(size.size());
  if (nd == 0) {
    convert_to_float(storage + offset * es, t, 1, 1, dst, big_endian);
    return out;
  }
  // Row-major contiguous: one run.
  bool contiguous = true;
  int64_t expect = 1;
  for (int d = nd - 1; d >= 0; --d) {
    if (size[d] != 1 && stride[d] != expect) contiguous = false;
    expect *= size[d];
  }
  if (contiguous) {
    convert_to_float(storage + offset * es, t, 1, numel, dst, big_endian);
    return out;
  }
  // General case: walk the outer dimensions, convert the innermost as a strided run.
  const int64_t inner = size[nd - 1], inner_stride = stride[nd - 1];
  std::vector<int64_t> idx(static_cast<size_t>(nd - 1), 0);
  int64_t src = offset;
  for (int64_t done = 0; done < numel; done += inner) {
    convert_to_float(storage + src * es, t, inner_stride, inner, dst + done, big_endian);
    for (int d = nd - 2; d >= 0; --d) {
      if (++idx[d] < size[d]) {
        src += stride[d];
        break;
      }
      src -= (size[d] - 1) * stride[d];
      idx[d] = 0;
    }
  }
  return out;
}

}  // namespace pg::weights::detail
