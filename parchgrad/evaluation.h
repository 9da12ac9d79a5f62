// Evaluation of saliency maps with a model (docs/parchgrad-method.md section 7): per image and
// map, the pixel orders, every masked copy the metrics need (deduplicated), the forward passes
// of those copies in batches, and the numbers of section 7 with the deletion / insertion
// curves and the box metrics, as plain structs or as the JSON record of REPORT.jsonl.
//
// Inputs are plain data: normalised host tensors, class ids, box masks already rasterised in
// the input's pixel coordinates. Reading images and annotations, resuming and summarising a
// report are the command line's (tools/cli/cmd_eval.cpp); the pure metric math is
// parchgrad/metrics, which this builds on.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <vector>

#include "core/tensor.h"
#include "nn/model.h"
#include "parchgrad/methods.h"
#include "parchgrad/metrics.h"
#include "parchgrad/parchgrad.h"

namespace pg::eval {

struct EvalConfig {
  // Fractions of pixels removed for MoRF and LeRF: increasing, each in [0, 1].
  std::vector<double> ratios = {0.0, 0.1, 0.2, 0.3, 0.4, 0.5};
  // The deletion and insertion curves are sampled at i / auc_steps, i = 0 .. auc_steps.
  int auc_steps = 20;
  // Masked copies of one image per forward pass (memory bound; the numbers do not depend on
  // it on the CPU, see the batch-invariance notes in ARCHITECTURE.md).
  int perturb_batch = 64;
};

// Throws pg::Error (one line) for ratios outside [0, 1] or not increasing, auc_steps outside
// [1, 1000], perturb_batch < 1.
void check_config(const EvalConfig& cfg);

// ---------------------------------------------------------------------------------------
// Masked copies.

// What one metric asks the model about: the image with the first `count` pixels of an order
// removed (set to 0 in every channel), or with only the first `count` MoRF pixels kept.
enum class Perturbation { RemoveMoRF, RemoveLeRF, KeepMoRF };
struct CopyRequest {
  Perturbation kind = Perturbation::RemoveMoRF;
  int64_t count = 0;
};

// A distinct model input. Requests that give the same input share one: removing nothing and
// keeping everything are the clean image, removing everything and keeping nothing the all-zero
// image, and when the two orders are equal (every pixel tied) a LeRF removal is the MoRF one.
struct CopyInput {
  enum class Kind { Clean, Zero, RemoveMoRF, RemoveLeRF, KeepMoRF };
  Kind kind = Kind::Clean;
  int64_t count = 0;  // pixels removed or kept; 0 for Clean and Zero
  bool operator==(const CopyInput& o) const { return kind == o.kind && count == o.count; }
  bool operator<(const CopyInput& o) const { return kind != o.kind ? kind < o.kind : count < o.count; }
};

// The canonical input of a request for an image of HW pixels.
CopyInput canonical_copy(const CopyRequest& r, int64_t HW, bool same_order);

struct CopyPlan {
  // The inputs the model must see, each once, in the order of their first request. The
  // clean image is never among them: its probabilities are known (p0).
  std::vector<CopyInput> inputs;
  // Per request: its index in `inputs`, or -1 for the clean image.
  std::vector<int> input_of;
};
// same_order: the MoRF and LeRF orders are equal.
CopyPlan plan_copies(const std::vector<CopyRequest>& requests, int64_t HW, bool same_order);

// Writes one input (C x HW floats) made from x (C x HW) and the pixel orders (HW entries each).
void make_copy(const float* x, int C, int64_t HW, const int32_t* morf, const int32_t* lerf, const CopyInput& c,
               float* dst);

// The softmax probabilities [K] of the model for every request on the image x [C, H, W]
// (normalised, on the host), given the pixel orders and the clean probabilities p0 [K]: the
// distinct inputs of plan_copies go through the model `batch` at a time.
std::vector<std::vector<float>> copy_probabilities(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                                                   const std::vector<int32_t>& morf, const std::vector<int32_t>& lerf,
                                                   const std::vector<CopyRequest>& requests,
                                                   const std::vector<float>& p0, int batch);

// ---------------------------------------------------------------------------------------
// The numbers of one image and map.

// i / auc_steps for i = 0 .. auc_steps.
std::vector<double> curve_fractions(int auc_steps);

// Every request the metrics of an image of HW pixels make, in the order image_result reads
// their probabilities: MoRF removals at each ratio, LeRF removals at each ratio, the deletion
// curve (MoRF removals at each curve fraction), the insertion curve (MoRF keeps).
std::vector<CopyRequest> metric_requests(int64_t HW, const EvalConfig& cfg);

struct OrderResult {  // MoRF or LeRF at each ratio
  std::vector<eval::RatioMetrics> at;
  double aopc_mean = 0;  // mean of the AOPCs over the ratios
};
struct CurveResult {  // deletion or insertion
  std::vector<double> fractions;
  std::vector<double> prob;  // probability of the label at each fraction
  double auc = 0;            // trapezoidal area
};
struct ImageResult {
  int label = -1;
  int pred = -1;    // argmax of p0 (lowest index on ties)
  double p0 = 0;    // clean probability of the label
  std::vector<double> ratios;
  OrderResult morf, lerf;
  CurveResult deletion, insertion;
  bool has_box = false;  // box metrics computed (a mask was given)
  BoxMetrics box;
};

// The numbers from the probabilities of metric_requests (probs[i] for request i), for map
// [HW], clean probabilities p0 [K] and the label; mask (HW bytes, non-zero inside the boxes)
// may be null.
ImageResult image_result(const float* map, int64_t HW, const std::vector<float>& p0, int label, const EvalConfig& cfg,
                         const std::vector<std::vector<float>>& probs, const uint8_t* mask);

// One image x [3, H, W] (normalised, host) and its map [H, W]: the pixel orders, the masked
// copies through the model, image_result. p0: softmax of the clean image [K]; mask may be null.
ImageResult evaluate_image(const nn::Model& model, nn::Context& ctx, const Tensor& x, const float* map,
                           const std::vector<float>& p0, int label, const EvalConfig& cfg, const uint8_t* mask);

// The JSON record of REPORT.jsonl for one image and method: label, pred, p0, ratios, morf and
// lerf (aopc, lodds, acc, fracdiff, prob per ratio; aopc_mean), deletion and insertion
// (fractions, prob, auc), box when computed. A non-finite number is written as null.
nlohmann::json record_json(const ImageResult& r);

// v as JSON, or null when it is NaN or infinite (JSON has no such numbers).
nlohmann::json json_number(double v);

// ---------------------------------------------------------------------------------------
// Batches of images.

// softmax(model(x)) [B, K] of x [B, 3, H, W] (host).
Tensor clean_probabilities(const nn::Model& model, nn::Context& ctx, const Tensor& x);

// The maps [B, H, W] of one method for x [B, 3, H, W]: one target per sample (the label, or
// -1 for the top-1 class); sample_ids: each sample's index in the whole run (SmoothGrad's fixed
// noise), or empty for 0 .. B-1. hook may be null (no ParchGrad).
Tensor method_maps(const nn::Model& model, nn::Context& ctx, const Tensor& x, const std::vector<int>& targets,
                   const MethodOptions& method, ParchGradHook* hook, const std::vector<int64_t>& sample_ids);

// A batch of labelled images.
struct EvalBatch {
  Tensor x;                          // [B, 3, H, W], normalised, host
  std::vector<int> labels;           // [B], each in [0, K)
  std::vector<int> targets;          // [B] classes the maps explain (-1: top-1); empty: the labels
  std::vector<int64_t> sample_ids;   // [B] indices in the run (SmoothGrad's fixed noise); empty: 0 .. B-1
  std::vector<const uint8_t*> masks;  // [B] box masks (H*W bytes) or null; empty: no boxes
};

// A method to evaluate: its options and, for ParchGrad, the hook (owned by the caller).
struct MethodConfig {
  MethodOptions options;
  ParchGradHook* hook = nullptr;
};

// Every image of the batch with every method: result[m][b]. The composition of
// clean_probabilities, method_maps and evaluate_image, as `parchgrad eval` does it.
std::vector<std::vector<ImageResult>> evaluate_batch(const nn::Model& model, nn::Context& ctx, const EvalBatch& batch,
                                                     const std::vector<MethodConfig>& methods, const EvalConfig& cfg);

}  // namespace pg::eval
