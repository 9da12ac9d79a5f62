// Saliency overlays: the map, scaled to [0, 1] by its 99th percentile, drawn with a colour map
// (by default a perceptual dark-to-bright ramp) over a dimmed greyscale copy of the image.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "tools/lib/image_io.h"

namespace pg::io {

namespace {

// Control points of the ramp (position, r, g, b): near black through violet, crimson and
// orange to pale yellow, with lightness increasing monotonically.
struct Stop {
  float t, r, g, b;
};
const Stop kRamp[] = {
    {0.00f, 2, 2, 12},      {0.18f, 52, 12, 96},    {0.38f, 128, 28, 108},
    {0.58f, 208, 62, 64},   {0.78f, 248, 148, 28},  {1.00f, 250, 248, 170},
};

}  // namespace

bool parse_colormap(const std::string& name, OverlayStyle::Colormap* out) {
  if (name == "ramp") *out = OverlayStyle::Colormap::ramp;
  else if (name == "jet") *out = OverlayStyle::Colormap::jet;
  else if (name == "gray") *out = OverlayStyle::Colormap::gray;
  else return false;
  return true;
}

void colormap_rgb(float v, uint8_t rgb[3], OverlayStyle::Colormap map) {
  if (!(v > 0.0f)) v = 0.0f;  // NaN and negatives
  if (v > 1.0f) v = 1.0f;
  if (map == OverlayStyle::Colormap::gray) {
    rgb[0] = rgb[1] = rgb[2] = static_cast<uint8_t>(std::lround(v * 255.0f));
    return;
  }
  if (map == OverlayStyle::Colormap::jet) {
    // Piecewise linear: dark blue, blue, cyan, yellow, red, dark red.
    auto ch = [&](float centre) { return std::clamp(1.5f - std::fabs(4.0f * v - centre), 0.0f, 1.0f); };
    const float c[3] = {ch(3.0f), ch(2.0f), ch(1.0f)};
    for (int k = 0; k < 3; ++k) rgb[k] = static_cast<uint8_t>(std::lround(c[k] * 255.0f));
    return;
  }
  const int n = static_cast<int>(sizeof kRamp / sizeof kRamp[0]);
  int i = 0;
  while (i + 2 < n && v > kRamp[i + 1].t) ++i;
  const Stop& a = kRamp[i];
  const Stop& b = kRamp[i + 1];
  const float f = (v - a.t) / (b.t - a.t);
  const float c[3] = {a.r + f * (b.r - a.r), a.g + f * (b.g - a.g), a.b + f * (b.b - a.b)};
  for (int k = 0; k < 3; ++k) rgb[k] = static_cast<uint8_t>(std::lround(std::clamp(c[k], 0.0f, 255.0f)));
}

Image8 render_overlay(const Image8& base, const Tensor& map, const OverlayStyle& style) {
  if (!(style.opacity >= 0.0f && style.opacity <= 1.0f)) throw Error("overlay: opacity must be in [0, 1]");
  if (base.w < 1 || base.h < 1 || base.rgb.size() != static_cast<size_t>(base.w) * base.h * 3)
    throw Error("overlay: empty or malformed base image");
  Tensor m = map;
  while (m.ndim() > 2 && m.dim(0) == 1) m = m.reshape(std::vector<int64_t>(m.shape().begin() + 1, m.shape().end()));
  if (m.ndim() != 2 || m.dim(0) < 1 || m.dim(1) < 1)
    throw Error("overlay: expected a [H, W] map, got " + map.shape_str());

  // Non-finite values count as 0; negatives clip to 0. Gradient maps are sparse and
  // heavy-tailed, so the scale is the 99th percentile of the positive values (the largest
  // 1% saturate); a map with fewer than 100 positive values is scaled by its maximum.
  Tensor norm = m.clone();
  std::vector<float> positive;
  for (int64_t i = 0; i < norm.numel(); ++i) {
    float v = norm[i];
    if (!std::isfinite(v) || v < 0.0f) v = 0.0f;
    norm[i] = v;
    if (v > 0.0f) positive.push_back(v);
  }
  float scale = 0.0f;
  if (!positive.empty()) {
    const size_t k = positive.size() >= 100 ? positive.size() * 99 / 100 : positive.size() - 1;
    std::nth_element(positive.begin(), positive.begin() + k, positive.end());
    scale = positive[k];
  }
  for (int64_t i = 0; i < norm.numel(); ++i) norm[i] = scale > 0.0f ? std::clamp(norm[i] / scale, 0.0f, 1.0f) : 0.0f;
  if (norm.dim(0) != base.h || norm.dim(1) != base.w) norm = resize_plane(norm, base.h, base.w);

  Image8 out;
  out.w = base.w;
  out.h = base.h;
  out.rgb.resize(base.rgb.size());
  const int64_t n = static_cast<int64_t>(base.w) * base.h;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = &base.rgb[i * 3];
    const float grey = 0.5f * (0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]);
    const float m = std::clamp(norm[i], 0.0f, 1.0f);
    const float a = m * style.opacity;  // exact at the default opacity 1
    uint8_t c[3];
    colormap_rgb(m, c, style.colormap);
    for (int k = 0; k < 3; ++k) {
      const float v = (1.0f - a) * grey + a * c[k];
      out.rgb[i * 3 + k] = static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 255.0f)));
    }
  }
  return out;
}

void save_overlay_png(const std::string& path, const Image8& base, const Tensor& map, const OverlayStyle& style) {
  save_png(path, render_overlay(base, map, style));
}

}  // namespace pg::io
