// libFuzzer target: PNG and JPEG decoding (io::load_image_rgb: our structural checks, the
// pixel limit, the decoder), then a small resize and centre crop of what was decoded.
//
// A PNG whose chunks carry wrong CRCs is refused before it reaches the decoder, and almost
// every mutation breaks a CRC; so for inputs that start with the PNG signature the CRCs of
// the complete chunks are recomputed before the file is written, which lets mutated chunk
// data (IHDR, PLTE, IDAT's zlib stream) reach the decoder. The CRC check itself has unit tests.
#include <cstring>
#include <vector>

#include "tests/fuzz/fuzz_common.h"
#include "tools/lib/image_io.h"

namespace {

uint32_t crc32(const uint8_t* p, size_t n) {
  static uint32_t table[256];
  static bool made = false;
  if (!made) {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    made = true;
  }
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

void fix_png_crcs(std::vector<uint8_t>& d) {
  static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (d.size() < 8 || std::memcmp(d.data(), sig, 8) != 0) return;
  size_t pos = 8;
  while (d.size() - pos >= 12) {
    const uint32_t len = (uint32_t(d[pos]) << 24) | (uint32_t(d[pos + 1]) << 16) | (uint32_t(d[pos + 2]) << 8) | d[pos + 3];
    if (len > d.size() - pos - 12) return;
    const uint32_t c = crc32(&d[pos + 4], 4 + size_t(len));
    uint8_t* out = &d[pos + 8 + len];
    out[0] = uint8_t(c >> 24);
    out[1] = uint8_t(c >> 16);
    out[2] = uint8_t(c >> 8);
    out[3] = uint8_t(c);
    pos += 12 + size_t(len);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static pg::fuzz::ScratchFile file(".img");
  std::vector<uint8_t> bytes(data, data + size);
  fix_png_crcs(bytes);
  const std::string& path = file.write(bytes.data(), bytes.size());
  pg::fuzz::expect_only_pg_errors(
      [&] {
        const pg::io::Image8 img = pg::io::load_image_rgb(path);
        if (int64_t(img.w) * img.h <= 1 << 16) (void)pg::io::imagenet_crop(img, 20, 16);
      },
      path);
  return 0;
}
