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

}  // namespace pg::io
