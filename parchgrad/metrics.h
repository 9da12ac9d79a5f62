// Evaluation metrics of saliency maps (docs/parchgrad-method.md section 7), plus
// the deletion / insertion areas and the pointing game. Pure functions on host arrays; the
// masked copies and model passes that feed them are parchgrad/evaluation's.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace pg::eval {

enum class Order { MoRF, LeRF };

// The map as the metrics read it: NaN -> 0, then the absolute value.
std::vector<float> clean_map(const float* map, int64_t HW);

// Pixel indices 0..HW-1 sorted by the cleaned map: descending for MoRF, ascending for LeRF.
// Ties keep ascending pixel index (a stable sort of the indices in row-major order), in both
// orders; so MoRF is not the reverse of LeRF when values tie.
std::vector<int32_t> pixel_order(const float* map, int64_t HW, Order order);

// The number of pixels a ratio removes: int(HW * ratio) (truncation, as the reference).
int64_t pixels_for_ratio(int64_t HW, double ratio);

// dst[c] = x[c] with the first `count` pixels of `order` set to 0 in all C channels
// (x and dst are C x HW; zero is the dataset mean after normalisation).
void remove_pixels(const float* x, int C, int64_t HW, const int32_t* order, int64_t count, float* dst);
// dst = 0 everywhere except the first `count` pixels of `order`, copied from x (insertion).
void keep_pixels(const float* x, int C, int64_t HW, const int32_t* order, int64_t count, float* dst);

// Section 7's per-ratio numbers for one image. p0 = softmax(f(x)), pr = softmax(f(x_r)).
struct RatioMetrics {
  double aopc = 0;      // p0[y] - pr[y]
  double lodds = 0;     // log(pr[y] / (p0[y] + 1e-10))
  int acc = 0;          // argmax pr == y
  double fracdiff = 0;  // |p0[yhat] - pr[yhat]|, yhat = argmax p0
  double prob = 0;      // pr[y]
};
RatioMetrics ratio_metrics(const float* p0, const float* pr, int K, int y);

// argmax with the lowest index winning ties.
int argmax(const float* v, int64_t n);

// Trapezoidal area under (x[i], y[i]), x increasing.
double trapezoid(const std::vector<double>& x, const std::vector<double>& y);

// Localisation against a box mask (H*W bytes, non-zero inside; the union of a sample's boxes).
struct BoxMetrics {
  bool valid = false;   // false when the mask is empty or covers the whole image, or the map is all 0
  const char* why = "";  // the reason when not valid
  int64_t area = 0;     // pixels inside
  double mu_in = 0, mu_in_w = 0, mu_out = 0, mu_out_w = 0;
  bool pointing_hit = false;  // argmax of the cleaned map (lowest index on ties) inside
};
// r_in / r_tot with the cleaned map.
BoxMetrics box_metrics(const float* map, int64_t HW, const uint8_t* mask);

// Mean and 95% confidence interval of the mean (Student t, n - 1 degrees of freedom); lo/hi
// are NaN for fewer than two values, everything NaN for none.
struct MeanCI {
  int64_t n = 0;
  double mean = 0, lo = 0, hi = 0;
};
MeanCI mean_ci95(const std::vector<double>& v);

}  // namespace pg::eval
