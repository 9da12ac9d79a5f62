// Line charts as images (the evaluation's probability curves): axes, ticks, a legend, one
// coloured polyline per series. Text is drawn with stb_easy_font (no font files needed).
#pragma once
#include <string>
#include <vector>

#include "tools/lib/image_io.h"

namespace pg::io {

struct Series {
  std::string label;
  std::vector<double> x, y;
};

struct Chart {
  std::string title, x_label, y_label;
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  std::vector<Series> series;
};

// One chart of w x h pixels.
Image8 render_chart(const Chart& c, int w = 520, int h = 400);
// Charts side by side in a grid of `columns` columns.
Image8 tile_images(const std::vector<Image8>& images, int columns);
// The colour of series i (a fixed, distinguishable palette).
void series_colour(size_t i, uint8_t rgb[3]);
// Text drawn into img with its top-left corner at (x, y), each font pixel scale x scale
// (stb_easy_font: letters, digits, punctuation; about 6 x 8 pixels a character at scale 1).
void draw_text(Image8& img, int x, int y, const std::string& s, int scale, const uint8_t rgb[3]);
// Width in pixels of s drawn at that scale.
int text_width(const std::string& s, int scale);

}  // namespace pg::io
