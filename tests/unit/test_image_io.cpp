// Unit tests of tools/lib image and array I/O: resampling windows, torchvision's crop
// rounding, .npy round trips and errors, and overlays of degenerate maps.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>

#include "tests/unit/support.h"
#include "core/error.h"
#include "tools/lib/image_io.h"

namespace fs = std::filesystem;
using pg::Tensor;
namespace io = pg::io;

namespace {

std::string temp_path(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("parchgrad_unit_io_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

using pg::test::error_of;

io::Image8 solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  io::Image8 img;
  img.w = w;
  img.h = h;
  for (int i = 0; i < w * h; ++i) img.rgb.insert(img.rgb.end(), {r, g, b});
  return img;
}

}  // namespace

TEST_CASE("bilinear windows: downscale by 2 widens the triangle filter") {
  io::ResampleWindows w = io::bilinear_windows(4, 2);
  CHECK(w.ksize == 5);  // ceil(support 2) * 2 + 1
  REQUIRE(w.start.size() == 2);
  CHECK(w.start[0] == 0);
  CHECK(w.count[0] == 3);
  CHECK(w.coeffs[0] == doctest::Approx(3.0 / 7));
  CHECK(w.coeffs[1] == doctest::Approx(3.0 / 7));
  CHECK(w.coeffs[2] == doctest::Approx(1.0 / 7));
  CHECK(w.start[1] == 1);
  CHECK(w.count[1] == 3);
  CHECK(w.coeffs[5 + 0] == doctest::Approx(1.0 / 7));
  CHECK(w.coeffs[5 + 2] == doctest::Approx(3.0 / 7));
}

TEST_CASE("bilinear windows: upscale keeps support 1 and clamps at the edges") {
  io::ResampleWindows w = io::bilinear_windows(2, 4);
  CHECK(w.ksize == 3);
  CHECK(w.start[0] == 0);
  CHECK(w.count[0] == 1);  // centre 0.25: only input 0
  CHECK(w.coeffs[0] == doctest::Approx(1.0));
  CHECK(w.start[1] == 0);
  CHECK(w.count[1] == 2);  // centre 0.75
  CHECK(w.coeffs[3] == doctest::Approx(0.75));
  CHECK(w.coeffs[4] == doctest::Approx(0.25));
  CHECK(w.start[3] == 1);
  CHECK(w.count[3] == 1);
  // Every window's weights sum to 1 and stay inside the input.
  for (int in : {1, 3, 7, 100, 257}) {
    for (int out : {1, 2, 5, 64, 224, 300}) {
      io::ResampleWindows v = io::bilinear_windows(in, out);
      for (int i = 0; i < out; ++i) {
        CHECK(v.start[i] >= 0);
        CHECK(v.start[i] + v.count[i] <= in);
        double s = 0;
        for (int j = 0; j < v.count[i]; ++j) s += v.coeffs[size_t(i) * v.ksize + j];
        CHECK(s == doctest::Approx(1.0));
      }
    }
  }
}

TEST_CASE("fixed-point coefficients and a hand-computed resize") {
  CHECK(io::fixed_point_coeff(1.0) == (1 << 22));
  CHECK(io::fixed_point_coeff(0.5) == (1 << 21));
  CHECK(io::fixed_point_coeff(-0.25) == -(1 << 20));
  CHECK(io::fixed_point_coeff(3.0 / 7) == 1797559);

  io::Image8 row;
  row.w = 4;
  row.h = 1;
  for (uint8_t v : {0, 70, 140, 210}) row.rgb.insert(row.rgb.end(), {v, v, v});
  io::Image8 half = io::resize_bilinear_aa(row, 2, 1);
  REQUIRE(half.w == 2);
  REQUIRE(half.h == 1);
  CHECK(int(half.rgb[0]) == 50);   // (3*0 + 3*70 + 140) / 7
  CHECK(int(half.rgb[3]) == 160);  // (70 + 3*140 + 3*210) / 7

  io::Image8 c = io::resize_bilinear_aa(solid(37, 23, 10, 200, 255), 300, 7);
  CHECK(c.w == 300);
  CHECK(c.h == 7);
  for (size_t i = 0; i < c.rgb.size(); i += 3) {
    CHECK(int(c.rgb[i]) == 10);
    CHECK(int(c.rgb[i + 1]) == 200);
    CHECK(int(c.rgb[i + 2]) == 255);
  }
}

TEST_CASE("torchvision Resize(short side) output size truncates") {
  int w = 0, h = 0;
  io::resize_short_side_size(640, 427, 256, &w, &h);
  CHECK(w == 383);  // int(256 * 640 / 427) = int(383.7)
  CHECK(h == 256);
  io::resize_short_side_size(257, 333, 256, &w, &h);
  CHECK(w == 256);
  CHECK(h == 331);
  io::resize_short_side_size(300, 300, 256, &w, &h);
  CHECK(w == 256);
  CHECK(h == 256);
  io::resize_short_side_size(100, 80, 256, &w, &h);
  CHECK(w == 320);
  CHECK(h == 256);
}

TEST_CASE("center crop rounds half to even and pads with zeros") {
  CHECK(io::center_crop_offset(256, 224) == 16);
  CHECK(io::center_crop_offset(224, 224) == 0);
  CHECK(io::center_crop_offset(225, 224) == 0);  // round(0.5) = 0
  CHECK(io::center_crop_offset(227, 224) == 2);  // round(1.5) = 2
  CHECK(io::center_crop_offset(257, 224) == 16);  // round(16.5) = 16
  CHECK(io::center_crop_offset(259, 224) == 18);  // round(17.5) = 18
  CHECK(io::center_crop_offset(100, 224) == -62);  // padding (224 - 100) // 2 on the left
  CHECK(io::center_crop_offset(101, 224) == -61);

  io::Image8 img = solid(2, 1, 9, 9, 9);
  img.rgb[3] = 50;  // second pixel red 50
  io::Image8 c = io::center_crop(img, 5, 3);
  REQUIRE(c.w == 5);
  REQUIRE(c.h == 3);
  // Padding: left (5 - 2) // 2 = 1, top (3 - 1) // 2 = 1.
  auto px = [&](int x, int y) { return int(c.rgb[(size_t(y) * 5 + x) * 3]); };
  CHECK(px(0, 1) == 0);
  CHECK(px(1, 1) == 9);
  CHECK(px(2, 1) == 50);
  CHECK(px(3, 1) == 0);
  CHECK(px(1, 0) == 0);
  CHECK(px(1, 2) == 0);
}

TEST_CASE("ImageNet normalisation matches torchvision's float32 arithmetic") {
  Tensor t = io::preprocess_imagenet(solid(300, 260, 0, 128, 255), 256, 224);
  REQUIRE(t.shape() == std::vector<int64_t>{3, 224, 224});
  CHECK(t[0] == (0.0f / 255.0f - 0.485f) / 0.229f);
  CHECK(t[224 * 224] == (128.0f / 255.0f - 0.456f) / 0.224f);
  CHECK(t[2 * 224 * 224 + 5] == (255.0f / 255.0f - 0.406f) / 0.225f);
  io::Image8 back = io::denormalize_imagenet(t);
  CHECK(back.w == 224);
  CHECK(int(back.rgb[0]) == 0);
  CHECK(int(back.rgb[1]) == 128);
  CHECK(int(back.rgb[2]) == 255);
}

TEST_CASE("npy round trip, float64 input and errors") {
  Tensor t({2, 3, 4});
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = 0.25f * float(i) - 1.0f;
  const std::string p = temp_path("round.npy");
  io::save_npy(p, t);
  std::string bytes = read_bytes(p);
  CHECK((bytes.size() - 2 * 3 * 4 * 4) % 64 == 0);  // header padded to 64 bytes
  CHECK(bytes.find("'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }") != std::string::npos);
  Tensor u = io::load_npy(p);
  REQUIRE(u.shape() == t.shape());
  for (int64_t i = 0; i < t.numel(); ++i) CHECK(u[i] == t[i]);

  Tensor v({5});
  v.fill(3.5f);
  io::save_npy(p, v);
  CHECK(read_bytes(p).find("'shape': (5,), }") != std::string::npos);
  CHECK(io::load_npy(p).shape() == std::vector<int64_t>{5});

  // Hand-written float64 v2.0 file.
  std::string hdr = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  hdr.append(64 - (12 + hdr.size() + 1) % 64, ' ');
  hdr += '\n';
  std::string f64("\x93NUMPY\x02\x00", 8);
  uint32_t hl = static_cast<uint32_t>(hdr.size());
  f64.append(reinterpret_cast<const char*>(&hl), 4);
  f64 += hdr;
  const double vals[2] = {1.5, -2.25};
  f64.append(reinterpret_cast<const char*>(vals), sizeof vals);
  const std::string p64 = temp_path("f64.npy");
  write_bytes(p64, f64);
  Tensor w = io::load_npy(p64);
  REQUIRE(w.numel() == 2);
  CHECK(w[0] == 1.5f);
  CHECK(w[1] == -2.25f);

  const std::string pt = temp_path("trunc.npy");
  write_bytes(pt, bytes.substr(0, bytes.size() - 8));
  std::string e = error_of([&] { io::load_npy(pt); });
  CHECK(e.rfind(pt + ": truncated .npy data", 0) == 0);

  std::string i8 = f64;
  i8.replace(i8.find("<f8"), 3, "<i8");
  write_bytes(pt, i8);
  e = error_of([&] { io::load_npy(pt); });
  CHECK(e.rfind(pt + ": unsupported dtype '<i8'", 0) == 0);

  std::string fo = f64;
  fo.replace(fo.find("False"), 5, "True ");
  write_bytes(pt, fo);
  CHECK(error_of([&] { io::load_npy(pt); }).find("Fortran") != std::string::npos);

  write_bytes(pt, "not numpy");
  CHECK(error_of([&] { io::load_npy(pt); }) == pt + ": not a .npy file");
  const std::string missing = temp_path("missing.npy");
  CHECK(error_of([&] { io::load_npy(missing); }).rfind(missing + ": cannot open", 0) == 0);
  fs::remove_all(fs::path(p).parent_path());
}

TEST_CASE("overlay treats NaN, infinite and all-zero maps as empty") {
  io::Image8 base = solid(8, 6, 200, 100, 50);
  io::Image8 zero = io::render_overlay(base, Tensor::zeros({6, 8}));
  const int dimmed = int(std::lround(0.5f * (0.299f * 200 + 0.587f * 100 + 0.114f * 50)));
  for (uint8_t v : zero.rgb) CHECK(int(v) == dimmed);

  Tensor nan = Tensor::filled({6, 8}, std::numeric_limits<float>::quiet_NaN());
  CHECK(io::render_overlay(base, nan).rgb == zero.rgb);
  nan[3] = std::numeric_limits<float>::infinity();
  nan[4] = -std::numeric_limits<float>::infinity();
  CHECK(io::render_overlay(base, nan).rgb == zero.rgb);
  CHECK(io::render_overlay(base, Tensor::filled({6, 8}, -2.0f)).rgb == zero.rgb);

  // A single hot pixel (and NaN elsewhere) gets the top of the colour map; [1, H, W] accepted.
  Tensor hot = Tensor::filled({1, 6, 8}, std::numeric_limits<float>::quiet_NaN());
  hot[9] = 1e-30f;
  io::Image8 o = io::render_overlay(base, hot);
  uint8_t top[3];
  io::colormap_rgb(1.0f, top);
  CHECK(int(o.rgb[27]) == int(top[0]));
  CHECK(int(o.rgb[28]) == int(top[1]));
  CHECK(int(o.rgb[0]) == dimmed);

  // A smaller map is resized to the image.
  io::Image8 r = io::render_overlay(base, Tensor::filled({3, 4}, 2.0f));
  CHECK(int(r.rgb[0]) == int(top[0]));

  // The colour map gets lighter from 0 to 1, and NaN maps to the bottom.
  float prev = -1;
  for (int i = 0; i <= 20; ++i) {
    uint8_t c[3];
    io::colormap_rgb(i / 20.0f, c);
    float lum = 0.299f * c[0] + 0.587f * c[1] + 0.114f * c[2];
    CHECK(lum > prev);
    prev = lum;
  }
  uint8_t a[3], b[3];
  io::colormap_rgb(std::nanf(""), a);
  io::colormap_rgb(0.0f, b);
  CHECK(std::equal(a, a + 3, b));

  const std::string p = temp_path("overlay.png");
  io::save_overlay_png(p, base, hot);
  io::Image8 back = io::load_image_rgb(p);
  CHECK(back.w == 8);
  CHECK(back.rgb == o.rgb);
  CHECK(error_of([&] { io::render_overlay(base, Tensor::zeros({2, 3, 4})); }).find("[H, W]") != std::string::npos);
  fs::remove_all(fs::path(p).parent_path());
}

TEST_CASE("image loading errors name the file") {
  const std::string p = temp_path("bad.png");
  write_bytes(p, "hello");
  CHECK(error_of([&] { io::load_image_rgb(p); }) == p + ": not a PNG or JPEG image");
  write_bytes(p, "");
  CHECK(error_of([&] { io::load_image_rgb(p); }) == p + ": empty file");
  write_bytes(p, std::string("\xFF\xD8\xFF\xE0\x00\x10JFIF", 10));
  CHECK(error_of([&] { io::load_image_rgb(p); }).rfind(p + ": truncated JPEG", 0) == 0);
  fs::remove_all(fs::path(p).parent_path());
}
