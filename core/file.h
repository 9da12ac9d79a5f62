// Opening input files under one set of rules for every reader (weights, statistics, images,
// .npy, annotations): only a regular file is read (a FIFO, a device, a socket or a
// directory is refused before it is opened, and again on the opened descriptor, so a
// reader never blocks on a FIFO nor reads /dev/zero until memory runs out), and never more
// than the byte limit of its format. Errors are one line, "<path>: <problem>".
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace pg {

// The largest file each reader accepts, in bytes. A limit is what its format can need for
// anything the engine can use, with room to spare; beyond it a file is refused before a
// byte of it is read.
namespace limits {
// Weight and statistics files (.pth zip or legacy, .safetensors). The largest model the
// engine builds, vgg19_bn, has 143.7M parameters: 575 MB in float32, 1.15 GB in float64;
// a training checkpoint that also holds Adam's two moments is 3.5 GB in float64.
// 8 GiB holds all of these.
inline constexpr uint64_t kWeightFileBytes = uint64_t(8) << 30;
// PNG / JPEG: stb_image takes the length as an int; a PNG of the pixel limit below stored
// without compression at 16-bit RGBA (1.43 GB) fits.
inline constexpr uint64_t kImageFileBytes = uint64_t(0x7fffffff);
// Decoded image size, the order of PIL's decompression-bomb limit (2 * 89478485 pixels).
inline constexpr int64_t kImagePixels = 178956970;
// .npy inputs: a float64 [3, H, W] tensor of the pixel limit (4.3 GB) and its header.
inline constexpr uint64_t kNpyFileBytes = uint64_t(kImagePixels) * 3 * 8 + (uint64_t(1) << 20);
// Box annotations (Pascal VOC XML, boxes.jsonl). A VOC file is a few kB; a boxes.jsonl of
// ImageNet's 1.28M training images at ~200 bytes a line is about 260 MB.
inline constexpr uint64_t kAnnotationFileBytes = uint64_t(1) << 30;
// Small text files (class names, one a line): ImageNet's 1000 names are 31 kB.
inline constexpr uint64_t kTextFileBytes = uint64_t(64) << 20;
}  // namespace limits

// An input file opened for reading (binary), closed when this goes out of scope.
class InputFile {
 public:
  // Throws "<path>: cannot open (<strerror>)", "<path>: not a regular file (a FIFO)" (a
  // directory, a character device, ...), or "<path>: too large for <what> (N bytes, at
  // most M)" when the file is larger than max_bytes.
  InputFile(const std::string& path, uint64_t max_bytes, const std::string& what);
  ~InputFile();
  InputFile(InputFile&& other) noexcept;
  InputFile& operator=(InputFile&&) = delete;
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  std::FILE* get() const { return f_; }
  // Size in bytes when it was opened.
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // A new descriptor of the same open file (for libraries that take one); the caller owns it.
  int dup_fd() const;
  // Reads exactly n bytes at `offset`; throws "<path>: truncated <what>: ..." otherwise.
  void read_at(uint64_t offset, void* dst, size_t n, const std::string& what) const;

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  uint64_t size_ = 0;
};

// The whole file (same rules), refused before reading when larger than max_bytes; a file
// that grows past the limit while it is read is refused too.
std::vector<uint8_t> read_file_limited(const std::string& path, uint64_t max_bytes, const std::string& what);

// Up to n leading bytes (same rules and limit); fewer if the file is shorter.
std::string read_file_head(const std::string& path, size_t n, uint64_t max_bytes, const std::string& what);

// "a FIFO", "a directory", "a character device", ... for a st_mode (used in messages).
std::string file_kind(unsigned mode);

}  // namespace pg
