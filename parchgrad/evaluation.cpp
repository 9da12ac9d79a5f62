#include "parchgrad/evaluation.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "parchgrad/attribution.h"

namespace pg::eval {

using nlohmann::json;

void check_config(const EvalConfig& cfg) {
  for (size_t i = 0; i < cfg.ratios.size(); ++i) {
    if (!(cfg.ratios[i] >= 0 && cfg.ratios[i] <= 1))
      throw Error("evaluation: ratio " + std::to_string(cfg.ratios[i]) + " is not in [0, 1]");
    if (i > 0 && cfg.ratios[i] < cfg.ratios[i - 1]) throw Error("evaluation: the ratios must be increasing");
  }
  if (cfg.auc_steps < 1 || cfg.auc_steps > 1000) throw Error("evaluation: auc_steps must be in [1, 1000]");
  if (cfg.perturb_batch < 1) throw Error("evaluation: perturb_batch must be at least 1");
}

// ---------------------------------------------------------------------------------------
// Masked copies.

CopyInput canonical_copy(const CopyRequest& r, int64_t HW, bool same_order) {
  using K = CopyInput::Kind;
  // Every pixel tied: the two orders are the same and so are their copies.
  const Perturbation kind = same_order && r.kind == Perturbation::RemoveLeRF ? Perturbation::RemoveMoRF : r.kind;
  if (kind == Perturbation::KeepMoRF) {
    if (r.count >= HW) return {K::Clean, 0};
    if (r.count <= 0) return {K::Zero, 0};
    return {K::KeepMoRF, r.count};
  }
  if (r.count <= 0) return {K::Clean, 0};
  if (r.count >= HW) return {K::Zero, 0};
  return {kind == Perturbation::RemoveMoRF ? K::RemoveMoRF : K::RemoveLeRF, r.count};
}

CopyPlan plan_copies(const std::vector<CopyRequest>& requests, int64_t HW, bool same_order) {
  CopyPlan plan;
  std::map<CopyInput, int> index;
  for (const CopyRequest& r : requests) {
    const CopyInput c = canonical_copy(r, HW, same_order);
    if (c.kind == CopyInput::Kind::Clean) {
      plan.input_of.push_back(-1);
      continue;
    }
    auto [it, added] = index.emplace(c, int(plan.inputs.size()));
    if (added) plan.inputs.push_back(c);
    plan.input_of.push_back(it->second);
  }
  return plan;
}

void make_copy(const float* x, int C, int64_t HW, const int32_t* morf, const int32_t* lerf, const CopyInput& c,
               float* dst) {
  switch (c.kind) {
    case CopyInput::Kind::Clean: std::copy(x, x + C * HW, dst); break;
    case CopyInput::Kind::Zero: std::fill(dst, dst + C * HW, 0.f); break;
    case CopyInput::Kind::RemoveMoRF: remove_pixels(x, C, HW, morf, c.count, dst); break;
    case CopyInput::Kind::RemoveLeRF: remove_pixels(x, C, HW, lerf, c.count, dst); break;
    case CopyInput::Kind::KeepMoRF: keep_pixels(x, C, HW, morf, c.count, dst); break;
  }
}

namespace {

// x must be one normalised host image [C, H, W] whose pixels an int32 order can index.
void check_image(const Tensor& x, const char* what) {
  if (x.ndim() != 3 || x.is_cuda())
    throw Error(std::string(what) + ": the image must be a host tensor [C, H, W], got " + x.shape_str());
  if (x.dim(1) * x.dim(2) > INT32_MAX) throw Error(std::string(what) + ": the image has too many pixels");
}

}  // namespace

std::vector<std::vector<float>> copy_probabilities(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                                                   const std::vector<int32_t>& morf, const std::vector<int32_t>& lerf,
                                                   const std::vector<CopyRequest>& requests,
                                                   const std::vector<float>& p0, int batch) {
  check_image(x, "copy_probabilities");
  if (batch < 1) throw Error("copy_probabilities: the batch must be at least 1");
  const int C = int(x.dim(0));
  const int64_t HW = x.dim(1) * x.dim(2);
  if (int64_t(morf.size()) != HW || int64_t(lerf.size()) != HW)
    throw Error("copy_probabilities: the pixel orders must have one entry per pixel (" + std::to_string(HW) + ")");
  const CopyPlan plan = plan_copies(requests, HW, morf == lerf);
  std::vector<std::vector<float>> probs(plan.inputs.size());
  for (size_t b0 = 0; b0 < plan.inputs.size(); b0 += size_t(batch)) {
    const size_t b1 = std::min(plan.inputs.size(), b0 + size_t(batch));
    Tensor xb({int64_t(b1 - b0), C, x.dim(1), x.dim(2)});
    for (size_t i = b0; i < b1; ++i)
      make_copy(x.data(), C, HW, morf.data(), lerf.data(), plan.inputs[i], xb.data() + int64_t(i - b0) * C * HW);
    const Tensor p = softmax(forward_logits(model, ctx, xb));
    const int64_t K = p.dim(1);
    for (size_t i = b0; i < b1; ++i)
      probs[i] = std::vector<float>(p.data() + int64_t(i - b0) * K, p.data() + int64_t(i - b0 + 1) * K);
  }
  std::vector<std::vector<float>> out;
  out.reserve(requests.size());
  for (int i : plan.input_of) out.push_back(i < 0 ? p0 : probs[size_t(i)]);
  return out;
}

// ---------------------------------------------------------------------------------------
// The numbers of one image and map.

std::vector<double> curve_fractions(int auc_steps) {
  std::vector<double> f;
  for (int i = 0; i <= auc_steps; ++i) f.push_back(double(i) / auc_steps);
  return f;
}

std::vector<CopyRequest> metric_requests(int64_t HW, const EvalConfig& cfg) {
  std::vector<CopyRequest> req;
  for (double r : cfg.ratios) req.push_back({Perturbation::RemoveMoRF, pixels_for_ratio(HW, r)});
  for (double r : cfg.ratios) req.push_back({Perturbation::RemoveLeRF, pixels_for_ratio(HW, r)});
  const std::vector<double> fractions = curve_fractions(cfg.auc_steps);
  for (double f : fractions) req.push_back({Perturbation::RemoveMoRF, pixels_for_ratio(HW, f)});
  for (double f : fractions) req.push_back({Perturbation::KeepMoRF, pixels_for_ratio(HW, f)});
  return req;
}

ImageResult image_result(const float* map, int64_t HW, const std::vector<float>& p0, int label, const EvalConfig& cfg,
                         const std::vector<std::vector<float>>& probs, const uint8_t* mask) {
  const int K = int(p0.size());
  if (label < 0 || label >= K)
    throw Error("image_result: label " + std::to_string(label) + " is out of range for " + std::to_string(K) +
                " classes");
  const std::vector<double> fractions = curve_fractions(cfg.auc_steps);
  const size_t needed = 2 * cfg.ratios.size() + 2 * fractions.size();
  if (probs.size() != needed)
    throw Error("image_result: " + std::to_string(probs.size()) + " probability rows for " + std::to_string(needed) +
                " requests");
  for (const auto& p : probs)
    if (int(p.size()) != K) throw Error("image_result: a probability row does not have " + std::to_string(K) + " classes");
  ImageResult r;
  r.label = label;
  r.pred = argmax(p0.data(), K);
  r.p0 = p0[size_t(label)];
  r.ratios = cfg.ratios;
  size_t at = 0;  // probs are read in metric_requests' order
  for (OrderResult* o : {&r.morf, &r.lerf}) {
    double aopc_sum = 0;
    for (size_t i = 0; i < cfg.ratios.size(); ++i, ++at) {
      o->at.push_back(ratio_metrics(p0.data(), probs[at].data(), K, label));
      aopc_sum += o->at.back().aopc;
    }
    o->aopc_mean = aopc_sum / double(cfg.ratios.size());
  }
  for (CurveResult* c : {&r.deletion, &r.insertion}) {
    c->fractions = fractions;
    for (size_t i = 0; i < fractions.size(); ++i, ++at) c->prob.push_back(probs[at][size_t(label)]);
    c->auc = trapezoid(fractions, c->prob);
  }
  if (mask) {
    r.has_box = true;
    r.box = box_metrics(map, HW, mask);
  }
  return r;
}

ImageResult evaluate_image(const nn::Model& model, nn::Context& ctx, const Tensor& x, const float* map,
                           const std::vector<float>& p0, int label, const EvalConfig& cfg, const uint8_t* mask) {
  check_config(cfg);
  check_image(x, "evaluate_image");
  if (!map) throw Error("evaluate_image: no map");
  const int64_t HW = x.dim(1) * x.dim(2);
  const std::vector<int32_t> morf = pixel_order(map, HW, Order::MoRF);
  const std::vector<int32_t> lerf = pixel_order(map, HW, Order::LeRF);
  const auto probs = copy_probabilities(model, ctx, x, morf, lerf, metric_requests(HW, cfg), p0, cfg.perturb_batch);
  return image_result(map, HW, p0, label, cfg, probs, mask);
}

json json_number(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

json record_json(const ImageResult& r) {
  json rec;
  rec["label"] = r.label;
  rec["pred"] = r.pred;
  rec["p0"] = r.p0;
  rec["ratios"] = r.ratios;
  const std::pair<const char*, const OrderResult*> orders[2] = {{"morf", &r.morf}, {"lerf", &r.lerf}};
  for (const auto& [name, res] : orders) {
    json o = {{"aopc", json::array()}, {"lodds", json::array()}, {"acc", json::array()},
              {"fracdiff", json::array()}, {"prob", json::array()}};
    for (const RatioMetrics& m : res->at) {
      o["aopc"].push_back(m.aopc);
      o["lodds"].push_back(json_number(m.lodds));  // log(0) when a probability underflows
      o["acc"].push_back(m.acc);
      o["fracdiff"].push_back(m.fracdiff);
      o["prob"].push_back(m.prob);
    }
    o["aopc_mean"] = res->aopc_mean;
    rec[name] = o;
  }
  const std::pair<const char*, const CurveResult*> curves[2] = {{"deletion", &r.deletion}, {"insertion", &r.insertion}};
  for (const auto& [name, c] : curves) rec[name] = {{"fractions", c->fractions}, {"prob", c->prob}, {"auc", c->auc}};
  if (r.has_box) {
    const BoxMetrics& b = r.box;
    if (b.valid)
      rec["box"] = {{"status", "ok"},       {"area", b.area},     {"mu_in", b.mu_in},
                    {"mu_in_w", b.mu_in_w}, {"mu_out", b.mu_out}, {"mu_out_w", b.mu_out_w},
                    {"pointing", b.pointing_hit}};
    else
      rec["box"] = {{"status", "invalid"}, {"reason", b.why}, {"area", b.area}};
  }
  return rec;
}

// ---------------------------------------------------------------------------------------
// Batches of images.

Tensor clean_probabilities(const nn::Model& model, nn::Context& ctx, const Tensor& x) {
  return softmax(forward_logits(model, ctx, x));
}

Tensor method_maps(const nn::Model& model, nn::Context& ctx, const Tensor& x, const std::vector<int>& targets,
                   const MethodOptions& method, ParchGradHook* hook, const std::vector<int64_t>& sample_ids) {
  MethodOptions opt = method;
  opt.sample_ids = sample_ids;
  return explain(model, ctx, x, {targets}, opt, hook)[0].maps;
}

std::vector<std::vector<ImageResult>> evaluate_batch(const nn::Model& model, nn::Context& ctx, const EvalBatch& batch,
                                                     const std::vector<MethodConfig>& methods, const EvalConfig& cfg) {
  check_config(cfg);
  const Tensor& X = batch.x;
  if (X.ndim() != 4 || X.is_cuda()) throw Error("evaluate_batch: x must be a host tensor [B, 3, H, W], got " + X.shape_str());
  const int64_t B = X.dim(0), C = X.dim(1), H = X.dim(2), W = X.dim(3);
  const int K = model.num_classes();
  auto check_size = [&](size_t n, bool may_be_empty, const char* what) {
    if (n != size_t(B) && !(may_be_empty && n == 0))
      throw Error(std::string("evaluate_batch: ") + what + " has " + std::to_string(n) + " entries for " +
                  std::to_string(B) + " images");
  };
  check_size(batch.labels.size(), false, "labels");
  check_size(batch.targets.size(), true, "targets");
  check_size(batch.sample_ids.size(), true, "sample_ids");
  check_size(batch.masks.size(), true, "masks");
  for (int y : batch.labels)
    if (y < 0 || y >= K)
      throw Error("evaluate_batch: label " + std::to_string(y) + " is out of range for a model with " +
                  std::to_string(K) + " classes");
  const Tensor P0 = clean_probabilities(model, ctx, X);
  const std::vector<int>& targets = batch.targets.empty() ? batch.labels : batch.targets;
  std::vector<std::vector<ImageResult>> out;
  for (const MethodConfig& m : methods) {
    const Tensor maps = method_maps(model, ctx, X, targets, m.options, m.hook, batch.sample_ids);
    std::vector<ImageResult> results;
    for (int64_t b = 0; b < B; ++b) {
      const std::vector<float> p0(P0.data() + b * K, P0.data() + (b + 1) * K);
      const Tensor xb = X.slice0(b, b + 1).reshape({C, H, W});
      const uint8_t* mask = batch.masks.empty() ? nullptr : batch.masks[size_t(b)];
      results.push_back(evaluate_image(model, ctx, xb, maps.data() + b * H * W, p0, batch.labels[size_t(b)], cfg, mask));
    }
    out.push_back(std::move(results));
  }
  return out;
}

}  // namespace pg::eval
