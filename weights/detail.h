// Helpers shared by the weight readers (not part of the public interface).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "weights/dtype.h"

namespace pg::weights::detail {

// How the weight readers name their files in "too large for ..." errors (core/file.h).
inline constexpr const char* kFileWhat = "a weight file";

// Up to n leading bytes of a file, opened under core/file.h's rules (a regular file of at
// most limits::kWeightFileBytes). Throws "<path>: cannot open (<strerror>)", ...
std::string read_head(const std::string& path, size_t n);
// s in single quotes for an error message, control characters escaped (\xNN) and
// over-long names shortened, so that messages from hostile files stay on one line.
std::string quote(const std::string& s);

// Whole file, under the same rules. Throws "<path>: cannot open (...)" / "cannot read (...)".
std::vector<uint8_t> read_file(const std::string& path);

// First bytes of the legacy .pth stream: PROTO 2, LONG1 with torch's magic number.
bool is_legacy_magic(const std::string& head);
bool is_zip_magic(const std::string& head);

// Refuses a parameter or BatchNorm buffer ('.weight', '.bias', '.running_mean',
// '.running_var') stored as BOOL or an integer type, which no torchvision model holds:
// "<path>: tensor 'conv1.weight' is stored as BOOL, but ... must be floating point ...".
void check_float_parameter(const std::string& name, DType source, const std::string& path);

// Refuses a tensor holding NaN or Inf: "<path>: tensor '<name>' contains NaN (element i of n)".
// `source` is the file's element type (a float64 beyond float32's range reads as Inf).
void check_finite(const Tensor& t, DType source, const std::string& path, const std::string& name);

// Removes "module." from every name if every name has it (DataParallel checkpoints).
void strip_module_prefix(std::vector<std::string>& names);

// Copies a tensor (offset/size/stride in elements) out of a storage of `avail`
// elements of type t into a new float32 tensor, checking every index is in bounds.
// `what` names the tensor in errors, e.g. "tensor 'fc.weight'".
Tensor materialise(const uint8_t* storage, int64_t avail, DType t, bool big_endian,
                   int64_t offset, const std::vector<int64_t>& size,
                   const std::vector<int64_t>& stride, const std::string& path,
                   const std::string& what);

}  // namespace pg::weights::detail
