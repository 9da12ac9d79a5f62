// Box mapping through the eval transform against hand-computed cases, the VOC and jsonl
// readers, and the metric helpers (tie order, ratios, areas, confidence intervals).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "parchgrad/metrics.h"
#include "tools/lib/boxes.h"

namespace fs = std::filesystem;
using namespace pg;

namespace {

int64_t mask_area(const io::Box& voc_box, int w, int h, std::vector<uint8_t>* mask_out = nullptr) {
  const io::CropGeometry g = io::eval_geometry(w, h, 256, 224);
  std::vector<uint8_t> mask;
  const int64_t a = io::rasterize_box(io::map_box(voc_box, g), g.crop_w, g.crop_h, mask);
  if (mask_out) *mask_out = mask;
  return a;
}

// Columns [c0, c1) and rows [r0, r1) set, nothing else.
bool mask_is_rect(const std::vector<uint8_t>& m, int c0, int c1, int r0, int r1) {
  for (int j = 0; j < 224; ++j)
    for (int i = 0; i < 224; ++i)
      if ((m[size_t(j) * 224 + i] != 0) != (i >= c0 && i < c1 && j >= r0 && j < r1)) return false;
  return true;
}

std::string write_tmp(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / ("pg_test_eval_" + name);
  std::ofstream(p) << text;
  return p.string();
}

}  // namespace

TEST_CASE("eval geometry: landscape 500x375 resizes to 341x256 and crops at (58, 16)") {
  const io::CropGeometry g = io::eval_geometry(500, 375, 256, 224);
  CHECK(g.resized_w == 341);
  CHECK(g.resized_h == 256);
  CHECK(g.left == 58);  // round(117 / 2) = 58 (half to even)
  CHECK(g.top == 16);
  // VOC xmin=101..xmax=300, ymin=51..ymax=250 -> [100, 300) x [50, 250).
  // x: 100 * 341/500 - 58 = 10.2, 300 * 341/500 - 58 = 146.6 -> centres 10.5 .. 146.5: columns 10..146.
  // y: 50 * 256/375 - 16 = 18.13, 250 * 256/375 - 16 = 154.67 -> rows 18..154.
  std::vector<uint8_t> m;
  CHECK(mask_area({100, 50, 300, 250}, 500, 375, &m) == 137 * 137);
  CHECK(mask_is_rect(m, 10, 147, 18, 155));
}

TEST_CASE("eval geometry: portrait 300x400 resizes to 256x341 and crops at (16, 58)") {
  const io::CropGeometry g = io::eval_geometry(300, 400, 256, 224);
  CHECK(g.resized_w == 256);
  CHECK(g.resized_h == 341);
  CHECK(g.left == 16);
  CHECK(g.top == 58);
  // [30, 150) x [100, 300): x 30*256/300-16 = 9.6 .. 150*256/300-16 = 112 -> columns 10..111 (centre 111.5 < 112).
  // y 100*341/400-58 = 27.25 .. 300*341/400-58 = 197.75 -> rows 27..197.
  std::vector<uint8_t> m;
  CHECK(mask_area({30, 100, 150, 300}, 300, 400, &m) == 102 * 171);
  CHECK(mask_is_rect(m, 10, 112, 27, 198));
  // The whole image covers the whole crop.
  CHECK(mask_area({0, 0, 300, 400}, 300, 400) == 224 * 224);
}

TEST_CASE("eval geometry: a box cut by the crop keeps its inside part; one outside is empty") {
  // [40, 200) x [0, 375) in 500x375: x -30.7 -> 0 .. 78.4 -> columns 0..77; y -16 -> 0 .. 240 -> 224.
  std::vector<uint8_t> m;
  CHECK(mask_area({40, 0, 200, 375}, 500, 375, &m) == 78 * 224);
  CHECK(mask_is_rect(m, 0, 78, 0, 224));
  // [0, 60) x [0, 375): x1 = 60 * 0.682 - 58 = -17.1, left of the crop.
  const io::CropGeometry g = io::eval_geometry(500, 375, 256, 224);
  const io::Box b = io::map_box({0, 0, 60, 375}, g);
  CHECK(!(b.x1 > b.x0));
  std::vector<uint8_t> e;
  CHECK(io::rasterize_box(b, 224, 224, e) == 0);
  CHECK(std::accumulate(e.begin(), e.end(), 0) == 0);
  // Below the crop of a portrait image: y0 = 390 * 341/400 - 58 = 274.5 > 224.
  CHECK(mask_area({0, 390, 300, 400}, 300, 400) == 0);
}

TEST_CASE("eval geometry: a small image is scaled up; .npy inputs use the identity geometry") {
  // 200x100 -> 512x256, crop at (144, 16).
  const io::CropGeometry g = io::eval_geometry(200, 100, 256, 224);
  CHECK(g.resized_w == 512);
  CHECK(g.left == 144);
  const io::CropGeometry id = io::identity_geometry(64, 48);
  CHECK(id.crop_w == 64);
  CHECK(id.crop_h == 48);
  CHECK(id.left == 0);
  std::vector<uint8_t> m;
  CHECK(io::rasterize_box(io::map_box({2.5, 3, 10, 7.5}, id), 64, 48, m) == 8 * 4);  // cols 2..9, rows 3..6
}

TEST_CASE("VOC XML: boxes become [xmin-1, xmax) and broken files are reported by name") {
  const std::string good = write_tmp(
      "good.xml",
      "<annotation><size><width>500</width><height>375</height></size>"
      "<object><name>a</name><bndbox><xmin>101</xmin><ymin>51</ymin><xmax>300</xmax><ymax>250</ymax></bndbox></object>"
      "<object><name>b</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>"
      "</annotation>");
  const io::Annotation a = io::read_voc_xml(good);
  CHECK(a.width == 500);
  CHECK(a.height == 375);
  REQUIRE(a.boxes.size() == 2);
  CHECK(a.boxes[0].x0 == 100);
  CHECK(a.boxes[0].x1 == 300);
  CHECK(a.boxes[1].y0 == 0);
  CHECK(a.boxes[1].y1 == 20);
  const std::string truncated = write_tmp("trunc.xml", "<annotation><object><bndbox><xmin>1</xmin>");
  CHECK_THROWS_WITH_AS(io::read_voc_xml(truncated), doctest::Contains("trunc.xml: broken XML"), Error);
  const std::string nonnum = write_tmp(
      "nonnum.xml", "<annotation><object><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>");
  CHECK_THROWS_WITH_AS(io::read_voc_xml(nonnum), doctest::Contains("<xmin> is not a number"), Error);
  const std::string swapped = write_tmp(
      "swapped.xml", "<annotation><object><bndbox><xmin>9</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>");
  CHECK_THROWS_WITH_AS(io::read_voc_xml(swapped), doctest::Contains("below xmin"), Error);
  const std::string other = write_tmp("other.xml", "<svg></svg>");
  CHECK_THROWS_WITH_AS(io::read_voc_xml(other), doctest::Contains("not a Pascal VOC annotation"), Error);
  CHECK_THROWS_WITH_AS(io::read_voc_xml("/nonexistent/x.xml"), doctest::Contains("cannot read"), Error);
}

TEST_CASE("boxes.jsonl: box, boxes, label; errors name the line") {
  const std::string p = write_tmp("boxes.jsonl",
                                  "{\"file\": \"a/1.png\", \"label\": 2, \"box\": [1, 2, 3, 4]}\n\n"
                                  "{\"file\": \"./b.png\", \"boxes\": [[0, 0, 1, 1], [2, 2, 5, 5]]}\n");
  const auto m = io::read_boxes_jsonl(p);
  REQUIRE(m.size() == 2);
  CHECK(m.at("a/1.png").label == 2);
  CHECK(m.at("b.png").boxes.size() == 2);
  const std::string bad = write_tmp("bad.jsonl", "{\"file\": \"a.png\", \"box\": [1, 2, 3]}\n");
  CHECK_THROWS_WITH_AS(io::read_boxes_jsonl(bad), doctest::Contains("line 1: a box is"), Error);
  const std::string garbled = write_tmp("garbled.jsonl", "{\"file\": \"a.png\"}\n{\"file\n");
  CHECK_THROWS_WITH_AS(io::read_boxes_jsonl(garbled), doctest::Contains("line 2: not valid JSON"), Error);
}

TEST_CASE("pixel order: ties keep ascending index in MoRF and LeRF; NaN counts as 0, sign ignored") {
  const float map[6] = {1.f, NAN, -3.f, 1.f, 0.f, 3.f};
  const auto morf = eval::pixel_order(map, 6, eval::Order::MoRF);
  const auto lerf = eval::pixel_order(map, 6, eval::Order::LeRF);
  CHECK(morf == std::vector<int32_t>{2, 5, 0, 3, 1, 4});
  CHECK(lerf == std::vector<int32_t>{1, 4, 0, 3, 2, 5});
  CHECK(eval::pixels_for_ratio(224 * 224, 0.1) == 5017);  // int(5017.6)
  CHECK(eval::pixels_for_ratio(10, 0.3) == 3);            // 10 * 0.3 = 3.0000000000000004
  std::vector<float> x(2 * 6), out(2 * 6);
  std::iota(x.begin(), x.end(), 1.f);
  eval::remove_pixels(x.data(), 2, 6, morf.data(), 2, out.data());
  CHECK(out == std::vector<float>{1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0});
  eval::keep_pixels(x.data(), 2, 6, morf.data(), 2, out.data());
  CHECK(out == std::vector<float>{0, 0, 3, 0, 0, 6, 0, 0, 9, 0, 0, 12});
}

TEST_CASE("ratio metrics, trapezoid, box metrics, confidence interval") {
  const float p0[3] = {0.2f, 0.7f, 0.1f}, pr[3] = {0.5f, 0.3f, 0.2f};
  const eval::RatioMetrics m = eval::ratio_metrics(p0, pr, 3, 2);
  CHECK(m.aopc == doctest::Approx(0.1f - 0.2f));
  CHECK(m.lodds == doctest::Approx(std::log(0.2 / (0.1 + 1e-10))));
  CHECK(m.acc == 0);
  CHECK(m.fracdiff == doctest::Approx(0.7f - 0.3f));  // yhat = 1
  CHECK(eval::trapezoid({0, 0.5, 1}, {1, 0.5, 0}) == doctest::Approx(0.5));
  const float map[4] = {1, 3, 0, 4};
  const uint8_t mask[4] = {0, 1, 0, 1};
  const eval::BoxMetrics b = eval::box_metrics(map, 4, mask);
  CHECK(b.valid);
  CHECK(b.mu_in == doctest::Approx(7.0 / 8));
  CHECK(b.mu_in_w == doctest::Approx(7.0 / 8 * 2));
  CHECK(b.mu_out_w == doctest::Approx(1.0 / 8 * 2));
  CHECK(b.pointing_hit);
  const uint8_t all[4] = {1, 1, 1, 1}, none[4] = {0, 0, 0, 0};
  CHECK(!eval::box_metrics(map, 4, all).valid);
  CHECK(!eval::box_metrics(map, 4, none).valid);
  const float zero[4] = {0, 0, 0, 0};
  CHECK(!eval::box_metrics(zero, 4, mask).valid);
  // t(0.975, 1 df) = 12.7062047...; mean 1, sd sqrt(2), n 2: half width = 12.7062.
  const eval::MeanCI ci = eval::mean_ci95({0.0, 2.0});
  CHECK(ci.mean == doctest::Approx(1.0));
  CHECK(ci.hi - ci.mean == doctest::Approx(12.7062047361747).epsilon(1e-10));
  CHECK(std::isnan(eval::mean_ci95({1.0}).lo));
}
