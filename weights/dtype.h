// Element types found in weight files and their conversion to float32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace pg::weights {

enum class DType { F32, F64, F16, BF16, I64, I32, I16, I8, U8, Bool };

size_t dtype_size(DType t);
// Safetensors spelling: "F32", "F16", "BOOL", ...
const char* dtype_name(DType t);
// Parses a safetensors dtype name; returns false if unknown.
bool dtype_from_name(const std::string& name, DType* out);

// IEEE half and bfloat16 bit patterns to float.
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);

// Converts n elements of type t starting at src, `stride` elements apart, to float32.
// The source is little-endian unless big_endian is set. src needs no alignment.
void convert_to_float(const uint8_t* src, DType t, int64_t stride, int64_t n, float* dst,
                      bool big_endian = false);

}  // namespace pg::weights
