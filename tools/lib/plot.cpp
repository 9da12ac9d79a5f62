#include "tools/lib/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <stb_easy_font.h>

namespace pg::io {

namespace {

struct Canvas {
  Image8& img;
  void pixel(int x, int y, const uint8_t c[3], double alpha = 1.0) {
    if (x < 0 || y < 0 || x >= img.w || y >= img.h) return;
    uint8_t* p = &img.rgb[(size_t(y) * img.w + x) * 3];
    for (int k = 0; k < 3; ++k) p[k] = uint8_t(std::lround(p[k] * (1 - alpha) + c[k] * alpha));
  }
  void rect(int x0, int y0, int x1, int y1, const uint8_t c[3]) {
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) pixel(x, y, c);
  }
  // A line of the given width: every pixel within width/2 of the segment, with a soft edge.
  void line(double x0, double y0, double x1, double y1, double width, const uint8_t c[3]) {
    const double r = width / 2;
    const int xa = int(std::floor(std::min(x0, x1) - r - 1)), xb = int(std::ceil(std::max(x0, x1) + r + 1));
    const int ya = int(std::floor(std::min(y0, y1) - r - 1)), yb = int(std::ceil(std::max(y0, y1) + r + 1));
    const double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int y = ya; y <= yb; ++y)
      for (int x = xa; x <= xb; ++x) {
        const double px = x + 0.5, py = y + 0.5;
        double t = len2 > 0 ? ((px - x0) * dx + (py - y0) * dy) / len2 : 0;
        t = std::clamp(t, 0.0, 1.0);
        const double ex = px - (x0 + t * dx), ey = py - (y0 + t * dy);
        const double d = std::sqrt(ex * ex + ey * ey);
        if (d <= r + 0.5) pixel(x, y, c, std::clamp(r + 0.5 - d, 0.0, 1.0));
      }
  }
  // Text at (x, y) (top-left), scaled by an integer factor.
  void text(int x, int y, const std::string& s, int scale, const uint8_t c[3]) {
    static char buf[60000];
    const int quads = stb_easy_font_print(0, 0, const_cast<char*>(s.c_str()), nullptr, buf, sizeof(buf));
    for (int q = 0; q < quads; ++q) {
      const float* v = reinterpret_cast<const float*>(buf + q * 4 * 16);
      // Quad corners: vertex 0 and vertex 2 are opposite (16 bytes a vertex: x, y, z, rgba).
      const float qx0 = v[0], qy0 = v[1], qx1 = v[8], qy1 = v[9];
      rect(x + int(qx0 * scale), y + int(qy0 * scale), x + int(qx1 * scale), y + int(qy1 * scale), c);
    }
  }
};


std::string tick_label(double v) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.2g", std::fabs(v) < 1e-12 ? 0.0 : v);
  return b;
}

// About five round tick positions in [lo, hi].
std::vector<double> ticks(double lo, double hi) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  const double raw = span / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) t.push_back(v);
  return t;
}

}  // namespace

void series_colour(size_t i, uint8_t rgb[3]) {
  static const uint8_t palette[][3] = {{31, 119, 180}, {214, 39, 40},  {44, 160, 44},   {255, 127, 14},
                                       {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127},
                                       {188, 189, 34},  {23, 190, 207}};
  const size_t n = sizeof(palette) / sizeof(palette[0]);
  for (int k = 0; k < 3; ++k) rgb[k] = palette[i % n][k];
}

Image8 render_chart(const Chart& c, int w, int h) {
  Image8 img;
  img.w = w;
  img.h = h;
  img.rgb.assign(size_t(w) * h * 3, 255);
  Canvas cv{img};
  const uint8_t black[3] = {0, 0, 0}, grey[3] = {225, 225, 225}, dark[3] = {90, 90, 90};
  int legend_w = 0;
  for (const auto& s : c.series) legend_w = std::max(legend_w, text_width(s.label, 1));
  const int left = 58, right = legend_w + 48, top = 34, bottom = 46;
  const int pw = w - left - right, ph = h - top - bottom;
  auto X = [&](double x) { return left + (x - c.x_min) / (c.x_max - c.x_min) * pw; };
  auto Y = [&](double y) { return top + ph - (y - c.y_min) / (c.y_max - c.y_min) * ph; };
  // Grid and ticks.
  for (double t : ticks(c.x_min, c.x_max)) {
    const int x = int(std::lround(X(t)));
    cv.rect(x, top, x + 1, top + ph, grey);
    const std::string s = tick_label(t);
    cv.text(x - text_width(s, 1) / 2, top + ph + 6, s, 1, dark);
  }
  for (double t : ticks(c.y_min, c.y_max)) {
    const int y = int(std::lround(Y(t)));
    cv.rect(left, y, left + pw, y + 1, grey);
    const std::string s = tick_label(t);
    cv.text(left - 6 - text_width(s, 1), y - 3, s, 1, dark);
  }
  // Axes.
  cv.rect(left, top, left + 1, top + ph + 1, black);
  cv.rect(left, top + ph, left + pw + 1, top + ph + 1, black);
  // Title and axis labels.
  cv.text(left + (pw - text_width(c.title, 2)) / 2, 8, c.title, 2, black);
  cv.text(left + (pw - text_width(c.x_label, 1)) / 2, h - 18, c.x_label, 1, black);
  cv.text(6, top - 14, c.y_label, 1, black);
  // Series, clipped to the plot area by construction of the ranges.
  for (size_t s = 0; s < c.series.size(); ++s) {
    uint8_t col[3];
    series_colour(s, col);
    const Series& sr = c.series[s];
    for (size_t i = 1; i < sr.x.size() && i < sr.y.size(); ++i)
      cv.line(X(sr.x[i - 1]), Y(sr.y[i - 1]), X(sr.x[i]), Y(sr.y[i]), 2.2, col);
    for (size_t i = 0; i < sr.x.size() && i < sr.y.size(); ++i) {
      const int px = int(std::lround(X(sr.x[i]))), py = int(std::lround(Y(sr.y[i])));
      cv.rect(px - 2, py - 2, px + 3, py + 3, col);
    }
  }
  // Legend, in the right margin.
  const int lx = left + pw + 14, ly = top + 8;
  for (size_t s = 0; s < c.series.size(); ++s) {
    uint8_t col[3];
    series_colour(s, col);
    const int y = ly + int(s) * 14;
    cv.line(lx, y + 4, lx + 18, y + 4, 2.2, col);
    cv.text(lx + 24, y, c.series[s].label, 1, black);
  }
  return img;
}

Image8 tile_images(const std::vector<Image8>& images, int columns) {
  Image8 out;
  if (images.empty()) return out;
  columns = std::max(1, std::min(columns, int(images.size())));
  const int rows = int((images.size() + columns - 1) / columns);
  int cw = 0, ch = 0;
  for (const auto& im : images) {
    cw = std::max(cw, im.w);
    ch = std::max(ch, im.h);
  }
  out.w = cw * columns;
  out.h = ch * rows;
  out.rgb.assign(size_t(out.w) * out.h * 3, 255);
  for (size_t i = 0; i < images.size(); ++i) {
    const int ox = int(i % columns) * cw, oy = int(i / columns) * ch;
    const Image8& im = images[i];
    for (int y = 0; y < im.h; ++y)
      std::copy(im.rgb.begin() + size_t(y) * im.w * 3, im.rgb.begin() + size_t(y + 1) * im.w * 3,
                out.rgb.begin() + (size_t(oy + y) * out.w + ox) * 3);
  }
  return out;
}

int text_width(const std::string& s, int scale) { return stb_easy_font_width(const_cast<char*>(s.c_str())) * scale; }

void draw_text(Image8& img, int x, int y, const std::string& s, int scale, const uint8_t rgb[3]) {
  Canvas{img}.text(x, y, s, scale, rgb);
}

}  // namespace pg::io
