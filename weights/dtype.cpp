#include "weights/dtype.h"

#include <cstring>

namespace pg::weights {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::I8:
    case DType::U8:
    case DType::Bool: return 1;
  }
  return 1;
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F64: return "F64";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::Bool: return "BOOL";
  }
  return "?";
}

bool dtype_from_name(const std::string& name, DType* out) {
  static const DType all[] = {DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64,
                              DType::I32, DType::I16, DType::I8,  DType::U8,   DType::Bool};
  for (DType t : all) {
    if (name == dtype_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal half: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      mant &= 0x3ffu;
      bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / nan
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace {

template <typename U>
U load_le(const uint8_t* p, bool big_endian) {
  U v = 0;
  if (!big_endian) {
    for (size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(p[i]) << (8 * i);
  } else {
    for (size_t i = 0; i < sizeof(U); ++i) v = static_cast<U>((v << 8) | p[i]);
  }
  return v;
}

template <typename F>
void run(const uint8_t* src, int64_t step, int64_t n, float* dst, F f) {
  for (int64_t i = 0; i < n; ++i, src += step) dst[i] = f(src);
}

}  // namespace

void convert_to_float(const uint8_t* src, DType t, int64_t stride, int64_t n, float* dst,
                      bool be) {
  const int64_t step = stride * static_cast<int64_t>(dtype_size(t));
  switch (t) {
    case DType::F32:
      if (stride == 1 && !be) {
        std::memcpy(dst, src, static_cast<size_t>(n) * 4);
        return;
      }
      run(src, step, n, dst, [be](const uint8_t* p) {
        uint32_t u = load_le<uint32_t>(p, be);
        float f;
        std::memcpy(&f, &u, 4);
        return f;
      });
      return;
    case DType::F64:
      run(src, step, n, dst, [be](const uint8_t* p) {
        uint64_t u = load_le<uint64_t>(p, be);
        double d;
        std::memcpy(&d, &u, 8);
        return static_cast<float>(d);
      });
      return;
    case DType::F16:
      run(src, step, n, dst, [be](const uint8_t* p) { return half_to_float(load_le<uint16_t>(p, be)); });
      return;
    case DType::BF16:
      run(src, step, n, dst, [be](const uint8_t* p) { return bf16_to_float(load_le<uint16_t>(p, be)); });
      return;
    case DType::I64:
      run(src, step, n, dst, [be](const uint8_t* p) {
        return static_cast<float>(static_cast<int64_t>(load_le<uint64_t>(p, be)));
      });
      return;
    case DType::I32:
      run(src, step, n, dst, [be](const uint8_t* p) {
        return static_cast<float>(static_cast<int32_t>(load_le<uint32_t>(p, be)));
      });
      return;
    case DType::I16:
      run(src, step, n, dst, [be](const uint8_t* p) {
        return static_cast<float>(static_cast<int16_t>(load_le<uint16_t>(p, be)));
      });
      return;
    case DType::I8:
      run(src, step, n, dst, [](const uint8_t* p) { return static_cast<float>(static_cast<int8_t>(*p)); });
      return;
    case DType::U8:
      run(src, step, n, dst, [](const uint8_t* p) { return static_cast<float>(*p); });
      return;
    case DType::Bool:
      run(src, step, n, dst, [](const uint8_t* p) { return *p ? 1.0f : 0.0f; });
      return;
  }
}

}  // namespace pg::weights
