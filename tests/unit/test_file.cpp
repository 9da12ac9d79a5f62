// Unit tests of the shared input-file rules (core/file.h) and of the malformed-file refusals
// built on them: safetensors layouts, non-finite tensors, declared image sizes.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>

#include "tests/unit/support.h"
#include "core/error.h"
#include "core/file.h"
#include "tools/lib/boxes.h"
#include "tools/lib/image_io.h"
#include "weights/class_names.h"
#include "weights/state_dict.h"

namespace {

std::string temp(const std::string& name) {
  return "/tmp/pg_unit_file_" + std::to_string(::getpid()) + "_" + name;
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

using pg::test::error_of;

// A safetensors file from a header text and data bytes (no checks: the point is bad files).
std::string safetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string floats(std::initializer_list<float> v) {
  std::string s;
  for (float f : v) s.append(reinterpret_cast<const char*>(&f), 4);
  return s;
}

}  // namespace

TEST_CASE("input files: regular files only, never blocking, within the limit") {
  const std::string f = temp("plain.bin");
  write(f, "0123456789");
  CHECK(pg::read_file_limited(f, 10, "a test file").size() == 10);
  CHECK(pg::read_file_head(f, 4, 10, "a test file") == "0123");
  CHECK(pg::read_file_head(f, 40, 10, "a test file") == "0123456789");
  CHECK(error_of([&] { pg::read_file_limited(f, 9, "a test file"); }) ==
        f + ": too large for a test file (10 bytes, at most 9)");
  {
    pg::InputFile in(f, 100, "a test file");
    CHECK(in.size() == 10);
    char buf[3];
    in.read_at(7, buf, 3, "test file");
    CHECK(std::string(buf, 3) == "789");
    CHECK(error_of([&] { in.read_at(8, buf, 3, "test file"); }).rfind(f + ": truncated test file", 0) == 0);
  }
  std::remove(f.c_str());

  CHECK(error_of([&] { pg::read_file_limited("/dev/zero", 100, "an image"); }) ==
        "/dev/zero: not a regular file (a character device)");
  CHECK(error_of([&] { pg::read_file_limited("/tmp", 100, "an image"); }) ==
        "/tmp: not a regular file (a directory)");
  CHECK(error_of([&] { pg::read_file_limited(temp("missing"), 100, "an image"); }) ==
        temp("missing") + ": cannot open (No such file or directory)");

  // A FIFO without a writer: refused at once (opening it for reading would wait forever).
  const std::string fifo = temp("fifo");
  std::remove(fifo.c_str());
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(error_of([&] { pg::InputFile in(fifo, 100, "a weight file"); }) == fifo + ": not a regular file (a FIFO)");
  CHECK(error_of([&] { pg::weights::load_state_dict(fifo); }) == fifo + ": not a regular file (a FIFO)");
  CHECK(error_of([&] { pg::io::load_image_rgb(fifo); }) == fifo + ": not a regular file (a FIFO)");
  CHECK(error_of([&] { pg::io::load_npy(fifo); }) == fifo + ": not a regular file (a FIFO)");
  CHECK_FALSE(pg::io::is_npy_file(fifo));
  CHECK(error_of([&] { pg::io::read_boxes_jsonl(fifo); }) == fifo + ": not a regular file (a FIFO)");
  CHECK(error_of([&] { pg::io::read_voc_xml(fifo); }) == fifo + ": not a regular file (a FIFO)");
  CHECK(error_of([&] { pg::weights::class_names_for("", fifo, 3); }) == fifo + ": not a regular file (a FIFO)");
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  std::remove(fifo.c_str());
}

TEST_CASE("safetensors: the data layout must be exact (reference rules)") {
  const std::string p = temp("layout.safetensors");
  auto err = [&](const std::string& header, const std::string& data) {
    write(p, safetensors(header, data));
    return error_of([&] { pg::weights::load_safetensors(p); });
  };
  const std::string d8 = floats({1, 2, 3, 4, 5, 6, 7, 8});
  // Valid: offsets in any key order, contiguous from 0 to the end.
  CHECK(err(R"({"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})",
            d8) == "");
  write(p, safetensors(R"({"b":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                       R"("a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})",
                       d8));
  CHECK(pg::weights::load_safetensors(p).at("a")[0] == 5.0f);

  CHECK(err(R"({"conv1.weight":{"dtype":"F32","shape":[8],"data_offsets":[0,32]},)"
            R"("bn1.weight":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
            d8)
            .find("tensor 'conv1.weight' (data bytes 0-32) overlaps tensor 'bn1.weight' (data bytes 0-16)") !=
        std::string::npos);
  CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})",
            d8)
            .find("data bytes 8-16 belong to no tensor") != std::string::npos);
  CHECK(err(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", d8)
            .find("16 data bytes after the last tensor") != std::string::npos);
  CHECK(err(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}})", d8).find("data_offsets decreasing") !=
        std::string::npos);
  CHECK(err(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
            R"("a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})",
            d8)
            .find("key 'a' occurs twice") != std::string::npos);
  CHECK(err(R"({"__metadata__":{"k":["x"]},"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", d8)
            .find("'__metadata__' value of 'k' is not a string") != std::string::npos);
  CHECK(err(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,32]}})", d8).find("32 bytes for shape [3]") !=
        std::string::npos);
  CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", floats({1, NAN})) ==
        p + ": tensor 'a' contains NaN (element 1 of 2)");
  CHECK(err(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", floats({-INFINITY, 1})) ==
        p + ": tensor 'a' contains Inf (element 0 of 2)");
  CHECK(err(R"({"x.weight":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\1\0", 2))
            .find("tensor 'x.weight' is stored as BOOL") != std::string::npos);
  // Not a parameter name: BOOL and I8 tensors are read (e.g. by `convert`).
  CHECK(err(R"({"mask":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", std::string("\1\0", 2)) == "");
  std::remove(p.c_str());
}

TEST_CASE("images: a declared size beyond the pixel limit is refused before decoding") {
  // PNG signature and an IHDR of 20000 x 20000 RGB with its CRC (no image data at all).
  auto be32 = [](uint32_t v) {
    return std::string{char(v >> 24), char((v >> 16) & 0xff), char((v >> 8) & 0xff), char(v & 0xff)};
  };
  std::string ihdr = "IHDR" + be32(20000) + be32(20000) + std::string("\x08\x02\x00\x00\x00", 5);
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : ihdr) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc & 1) ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
  }
  const std::string png = std::string("\x89PNG\r\n\x1a\n", 8) + be32(13) + ihdr + be32(crc ^ 0xffffffffu);
  const std::string p = temp("huge.png");
  write(p, png);
  CHECK(error_of([&] { pg::io::load_image_rgb(p); }) ==
        p + ": image too large (20000x20000, at most " + std::to_string(pg::limits::kImagePixels) + " pixels)");
  std::remove(p.c_str());
}

TEST_CASE("boxes.jsonl: a key given twice in one object is refused") {
  const std::string p = temp("boxes.jsonl");
  write(p, "{\"file\": \"a.png\", \"box\": [0, 0, 1, 1]}\n{\"file\": \"b.png\", \"file\": \"c.png\"}\n");
  CHECK(error_of([&] { pg::io::read_boxes_jsonl(p); }) == p + ": line 2: key \"file\" given twice");
  write(p, "{\"file\": \"a.png\", \"box\": [0, 0, 1, 1], \"x\": {\"file\": 1}}\n");
  CHECK(pg::io::read_boxes_jsonl(p).size() == 1);  // the same key in another object is fine
  std::remove(p.c_str());
}
