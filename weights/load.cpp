#include "core/error.h"
#include "weights/detail.h"
#include "weights/state_dict.h"

namespace pg::weights {

std::string detect_format(const std::string& path) {
  std::string head = detail::read_head(path, 16);
  if (detail::is_zip_magic(head)) return "pt-zip";
  if (detail::is_legacy_magic(head)) return "pt-legacy";
  // safetensors: a little-endian header length (of at least "{}") followed by a JSON object;
  // the reader checks the length against its limit and the file.
  if (head.size() >= 9 && head[8] == '{') {
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(head[i])) << (8 * i);
    if (n >= 2) return "safetensors";
  }
  throw file_error(path, "not a .pth or .safetensors weight file");
}

StateDict load_state_dict(const std::string& path) {
  std::string format = detect_format(path);
  return format == "safetensors" ? load_safetensors(path) : load_pth(path);
}

}  // namespace pg::weights
