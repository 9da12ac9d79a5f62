// Reading and writing model weights as users have them: torchvision .pth files
// (zip format of torch >= 1.6 and the legacy format) and .safetensors.
// The .pth reader understands only the pickle subset that state dicts use; it
// never executes anything from the file and refuses any other global.
#pragma once
#include <map>
#include <string>

#include "core/tensor.h"

namespace pg::weights {

// Tensor name -> float32 tensor. Every numeric dtype is converted to float32
// (num_batches_tracked, an int64 scalar, becomes a 0-d tensor).
using StateDict = std::map<std::string, Tensor>;

// Detects the format from the file's bytes (zip magic, legacy pickle magic, safetensors
// header), not its extension. A checkpoint dict holding the state dict under "state_dict"
// or "model" is unwrapped, and a "module." prefix on every key (DataParallel) is stripped.
// Throws pg::Error "<path>: <problem>" on anything it cannot read.
StateDict load_state_dict(const std::string& path);

StateDict load_pth(const std::string& path);

// The format load_state_dict reads a file as: "pt-zip", "pt-legacy" or "safetensors".
// Throws pg::Error for a missing, unreadable or unrecognised file.
std::string detect_format(const std::string& path);
StateDict load_safetensors(const std::string& path);

// Metadata ("__metadata__" string map) of a safetensors file.
std::map<std::string, std::string> safetensors_metadata(const std::string& path);

// Writes float32 tensors (0-d tensors too); written to a temporary file and renamed,
// so a failure never leaves a partial file.
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace pg::weights
