#include "parchgrad/parchgrad.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "nn/backend.h"

namespace pg {

std::vector<std::string> hooked_layers(const nn::Model& model, const std::string& spec) {
  std::vector<std::string> all;
  for (const auto* c : model.convs()) all.push_back(c->site.name);
  if (spec.rfind("ratio:", 0) == 0) {
    double r;
    try {
      size_t used = 0;
      r = std::stod(spec.substr(6), &used);
      if (used != spec.size() - 6) throw std::invalid_argument("");
    } catch (const std::exception&) {
      throw Error("--layers: '" + spec + "' is not ratio:R with a number R");
    }
    if (!(r >= 0 && r <= 1)) throw Error("--layers: the ratio must be in [0, 1], got " + spec.substr(6));
    const int k = int(r * double(all.size()));
    return std::vector<std::string>(all.end() - k, all.end());
  }
  if (spec == "layer34") {
    auto names = model.preset("layer34");
    if (names.empty()) throw Error("--layers: the preset layer34 needs a ResNet; " + model.arch() + " has none");
    return names;
  }
  std::set<std::string> wanted;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t end = spec.find(',', start);
    if (end == std::string::npos) end = spec.size();
    const std::string name = spec.substr(start, end - start);
    if (std::find(all.begin(), all.end(), name) == all.end())
      throw Error("--layers: '" + name + "' is not a conv of " + model.arch() + " (e.g. '" + all.back() + "')");
    wanted.insert(name);
    start = end + 1;
  }
  std::vector<std::string> out;
  for (const auto& n : all)
    if (wanted.count(n)) out.push_back(n);
  return out;
}

ParchGradHook::ParchGradHook(const nn::Model& model, const StatsFile& stats, const ParchGradOptions& opt)
    : stats_(stats), opt_(opt) {
  if (opt.mode == ParchGradOptions::Mode::Off) throw Error("ParchGrad hook built with --parchgrad off");
  if (opt.alpha < 0 && !(opt.quantile > 0 && opt.quantile <= 1))
    throw Error("--quantile must be in (0, 1], got " + std::to_string(opt.quantile));
  if (!(opt.gamma > 0)) throw Error("--gamma must be positive or inf");
  if (opt.exact_variance && std::isinf(opt.gamma)) throw Error("--exact-variance needs a finite --gamma");
  if (!stats.model.empty() && stats.model != model.arch())
    throw file_error(stats.path, "holds statistics of model '" + stats.model + "', not '" + model.arch() + "'");
  if (stats.num_classes != model.num_classes())
    throw file_error(stats.path, "has statistics for " + std::to_string(stats.num_classes) + " classes, the model has " +
                                     std::to_string(model.num_classes()));
  layers_ = hooked_layers(model, opt.layers);
  for (const auto* c : model.convs())
    if (std::find(layers_.begin(), layers_.end(), c->site.name) != layers_.end()) stats.layer(c->site.name, c->out_channels);
  hooked_.insert(layers_.begin(), layers_.end());
}

void ParchGradHook::set_targets(const std::vector<int>& targets) {
  for (int t : targets) {
    if (t < 0 || t >= stats_.num_classes) throw Error("target class " + std::to_string(t) + " is out of range");
    if (opt_.mode == ParchGradOptions::Mode::Cls && !stats_.images_per_class.empty() && stats_.images_per_class[t] <= 0)
      throw file_error(stats_.path, "has no class statistics for target class " + std::to_string(t));
  }
  targets_ = targets;
  explain_.assign(targets.size(), {});
}

bool ParchGradHook::hooks(const ag::ConvSite& site) const { return hooked_.count(site.name) > 0; }

void ParchGradHook::on_forward(const ag::ConvSite& site, const Tensor& gap) { gap_[site.name] = gap; }

namespace {
// Unbiased variance of v[0..n).
double variance(const std::vector<double>& v) {
  const size_t n = v.size();
  if (n < 2) return 0.0;
  double mean = 0;
  for (double x : v) mean += x;
  mean /= double(n);
  double s = 0;
  for (double x : v) s += (x - mean) * (x - mean);
  return s / double(n - 1);
}
}  // namespace

Tensor ParchGradHook::on_backward(const ag::ConvSite& site, Tensor& grad) {
  const int64_t N = grad.dim(0), C = grad.dim(1), HW = grad.dim(2) * grad.dim(3);
  if (int64_t(targets_.size()) != N)
    throw Error("ParchGrad: " + std::to_string(targets_.size()) + " targets for a batch of " + std::to_string(N));
  const LayerStats& st = stats_.layer(site.name, int(C));
  const bool cls = opt_.mode == ParchGradOptions::Mode::Cls;
  const Tensor* gap = nullptr;
  if (!cls) {
    auto it = gap_.find(site.name);
    if (it == gap_.end() || it->second.dim(0) != N) throw Error("ParchGrad: no forward statistic for " + site.name);
    gap = &it->second;
  }
  const int K = int(st.cls_p.dim(1));
  // Section 4: the p-value of every channel for each sample, then H (select[n*C + c]).
  std::vector<uint8_t> select(size_t(N * C));
  std::vector<int64_t> kept(N);
  std::vector<double> p(C), sorted;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      if (cls) {
        p[c] = st.cls_p[c * K + targets_[n]];
      } else {
        const double z = (double((*gap)[n * C + c]) - double(st.mean[c])) / double(st.std[c]);
        p[c] = 0.5 * std::erfc(z / std::sqrt(2.0));  // normal survival function
      }
    }
    double alpha = opt_.alpha;
    if (alpha < 0) {
      const int64_t k = std::max<int64_t>(1, int64_t(double(C) * opt_.quantile));
      sorted.assign(p.begin(), p.end());
      std::nth_element(sorted.begin(), sorted.begin() + (k - 1), sorted.end());
      alpha = sorted[k - 1];
    }
    for (int64_t c = 0; c < C; ++c) {
      const bool sig = cls ? (p[c] <= alpha) : (p[c] < alpha);
      select[n * C + c] = sig && double(st.shapiro_p[c]) < opt_.shapiro_threshold;
      kept[n] += select[n * C + c];
    }
  }
  // Section 5: the spatial variances of S_H and S_L of the raw conv output gradient, M and N,
  // from the fused reduction of the gradient's own backend (the kernels/cpu twin on the host,
  // kernels/cuda on the device). The exact-variance option needs S_H and S_L themselves and
  // computes them here, from a host copy of a device gradient.
  const bool exact = !std::isinf(opt_.gamma) && opt_.exact_variance;
  std::vector<double> bM, bN;
  Tensor host_grad;
  const Tensor* g_host = &grad;
  bool any = false;
  for (int64_t n = 0; n < N; ++n) any = any || (kept[n] != 0 && kept[n] != C);
  if (any && !exact) {
    nn::backend(grad.device()).spatial_variances(grad, site.bn_scale, select, bM, bN);
  } else if (any && grad.is_cuda()) {
    host_grad = grad.to(Device::cpu);
    g_host = &host_grad;
  }
  Tensor scale({N, C});
  std::vector<double> sh(HW), sl(HW), sall(HW);
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* inH = select.data() + n * C;
    LayerExplain ex;
    ex.name = site.name;
    ex.channels = int(C);
    for (int64_t c = 0; c < C; ++c)
      if (inH[c]) ex.kept.push_back(int(c));
    float* s = scale.data() + n * C;
    if (kept[n] == 0 || kept[n] == C) {  // H or L empty: the sample is left unchanged
      std::fill(s, s + C, 1.f);
      if (explain_on_) explain_[n].push_back(ex);
      continue;
    }
    double M, Nv;
    if (!bM.empty()) {
      M = bM[n];
      Nv = bN[n];
    } else {
      // S_H and S_L in one pass over the sample's gradient.
      std::fill(sh.begin(), sh.end(), 0.0);
      std::fill(sl.begin(), sl.end(), 0.0);
      for (int64_t c = 0; c < C; ++c) {
        const float* g = g_host->data() + (n * C + c) * HW;
        const double b = site.bn_scale ? double(site.bn_scale[c]) : 1.0;
        std::vector<double>& dst = inH[c] ? sh : sl;
        for (int64_t i = 0; i < HW; ++i) dst[i] += b * double(g[i]);
      }
      M = variance(sh) + 1e-7;
      Nv = variance(sl) + 1e-7;
    }
    double fh, fl, beta;
    if (std::isinf(opt_.gamma)) {
      beta = opt_.variance_conservation ? std::sqrt((M + Nv) / M) : 1.0;
      fh = beta;
      fl = 0.0;
    } else {
      const double gh = opt_.gamma * std::sqrt(Nv / M);
      if (exact) {
        for (int64_t i = 0; i < HW; ++i) sall[i] = gh * sh[i] + sl[i];
        const double after = variance(sall);
        for (int64_t i = 0; i < HW; ++i) sall[i] = sh[i] + sl[i];
        const double before = variance(sall);
        beta = after > 0 ? std::sqrt(before / after) : 1.0;
      } else {
        beta = opt_.variance_conservation ? std::sqrt((M + Nv) / (M * gh * gh + Nv)) : 1.0;
      }
      fh = gh * beta;
      fl = beta;
    }
    for (int64_t c = 0; c < C; ++c) s[c] = float(inH[c] ? fh : fl);
    ex.M = M;
    ex.N = Nv;
    ex.beta = beta;
    ex.edited = true;
    if (explain_on_) explain_[n].push_back(ex);
  }
  return scale;
}

}  // namespace pg
