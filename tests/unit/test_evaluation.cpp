// parchgrad/evaluation: the plan of masked copies (deduplication by hand), the copies a model
// actually sees and the numbers made from its probabilities (a recording model whose
// probabilities of hand-made copies are known), the JSON record, and a batch on a small
// random ResNet against the library's own building blocks.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "nn/model.h"
#include "parchgrad/evaluation.h"

using namespace pg;
using eval::CopyInput;
using eval::CopyRequest;
using eval::Perturbation;

namespace {

using Kind = CopyInput::Kind;

// Three classes with logits that are fixed linear functions of the input, and a record of
// every input and batch size the model is asked about.
class RecordingModel : public nn::Model {
 public:
  RecordingModel() {
    arch_ = "recording";
    num_classes_ = 3;
  }
  ag::Var forward(nn::Context&, const ag::Var& x) const override {
    const int64_t N = x.value.dim(0), n = x.value.numel() / N;
    Tensor out({N, 3});
    batches.push_back(N);
    for (int64_t s = 0; s < N; ++s) {
      const float* v = x.value.data() + s * n;
      seen.emplace_back(v, v + n);
      double l0 = 0, l1 = 0;
      for (int64_t i = 0; i < n; ++i) {
        l0 += 0.05 * double(i + 1) * v[i];
        l1 += (i % 3 == 0 ? 0.2 : -0.1) * v[i];
      }
      out[s * 3 + 0] = float(l0);
      out[s * 3 + 1] = float(l1);
      out[s * 3 + 2] = 0.3f;
    }
    return {out, -1};
  }
  mutable std::vector<std::vector<float>> seen;
  mutable std::vector<int64_t> batches;
};

// A 3 x 2 x 4 image with distinct non-zero values.
Tensor small_image() {
  Tensor x({3, 2, 4});
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = 0.1f * float(i % 8 + 1) + float(i / 8) - 0.75f;
  return x;
}

// x with the listed pixels zeroed (keep = false) or with only them kept (keep = true).
std::vector<float> hand_copy(const Tensor& x, const std::vector<int>& pixels, bool keep) {
  std::vector<float> out(size_t(x.numel()));
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 8; ++i) {
      const bool listed = std::find(pixels.begin(), pixels.end(), i) != pixels.end();
      out[size_t(c * 8 + i)] = listed == keep ? x[c * 8 + i] : 0.f;
    }
  return out;
}

std::vector<float> probs_of(const nn::Model& model, const std::vector<float>& input) {
  Tensor t({1, 3, 2, 4});
  std::copy(input.begin(), input.end(), t.data());
  nn::Context ctx;
  const Tensor p = eval::clean_probabilities(model, ctx, t);
  return std::vector<float>(p.data(), p.data() + 3);
}

void check_same(const eval::RatioMetrics& a, const eval::RatioMetrics& b) {
  CHECK(a.aopc == b.aopc);
  CHECK(a.lodds == b.lodds);
  CHECK(a.acc == b.acc);
  CHECK(a.fracdiff == b.fracdiff);
  CHECK(a.prob == b.prob);
}

// resnet18's layout with every width divided by 8 and 6 classes (random weights).
std::unique_ptr<nn::Model> small_resnet(uint64_t seed) {
  const weights::StateDict big = nn::random_state_dict("resnet18", 6, seed);
  weights::StateDict small;
  for (const auto& [name, t] : big) {
    std::vector<int64_t> s = t.shape();
    for (size_t i = 0; i < s.size() && i < 2; ++i)
      if (!(name == "fc.weight" && i == 0) && !(name == "conv1.weight" && i == 1) && s[i] >= 64) s[i] /= 8;
    Tensor u(s);
    std::copy(t.data(), t.data() + u.numel(), u.data());
    small[name] = u;
  }
  return nn::build_model(small, "", "small resnet");
}

}  // namespace

TEST_CASE("plan_copies: the clean and all-zero inputs are shared, each copy is made once") {
  // HW = 8; the metrics of ratios {0, 0.5, 1} and curves at {0, 0.5, 1} remove or keep 0, 4, 8.
  eval::EvalConfig cfg;
  cfg.ratios = {0, 0.5, 1};
  cfg.auc_steps = 2;
  const std::vector<CopyRequest> req = eval::metric_requests(8, cfg);
  REQUIRE(req.size() == 12);
  CHECK(req[1].kind == Perturbation::RemoveMoRF);
  CHECK(req[4].kind == Perturbation::RemoveLeRF);
  CHECK(req[10].kind == Perturbation::KeepMoRF);
  CHECK(req[10].count == 4);

  const eval::CopyPlan plan = eval::plan_copies(req, 8, false);
  const std::vector<CopyInput> want = {{Kind::RemoveMoRF, 4}, {Kind::Zero, 0}, {Kind::RemoveLeRF, 4}, {Kind::KeepMoRF, 4}};
  CHECK(plan.inputs == want);
  // morf 0, 4, 8 | lerf 0, 4, 8 | deletion 0, 4, 8 | insertion keep 0, 4, 8.
  CHECK(plan.input_of == std::vector<int>{-1, 0, 1, -1, 2, 1, -1, 0, 1, 1, 3, -1});

  // Every pixel tied: LeRF removals are the MoRF ones.
  const eval::CopyPlan tied = eval::plan_copies(req, 8, true);
  CHECK(tied.inputs == std::vector<CopyInput>{{Kind::RemoveMoRF, 4}, {Kind::Zero, 0}, {Kind::KeepMoRF, 4}});
  CHECK(tied.input_of == std::vector<int>{-1, 0, 1, -1, 0, 1, -1, 0, 1, 1, 2, -1});

  // Counts beyond the image are clamped to the clean or the all-zero input.
  CHECK(eval::canonical_copy({Perturbation::RemoveLeRF, 9}, 8, false) == CopyInput{Kind::Zero, 0});
  CHECK(eval::canonical_copy({Perturbation::KeepMoRF, 9}, 8, false) == CopyInput{Kind::Clean, 0});
  CHECK(eval::canonical_copy({Perturbation::KeepMoRF, -1}, 8, false) == CopyInput{Kind::Zero, 0});
}

TEST_CASE("make_copy writes the copy of each kind") {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6};  // C = 2, HW = 3
  const std::vector<int32_t> morf = {2, 0, 1}, lerf = {1, 0, 2};
  std::vector<float> out(6, -1.f);
  eval::make_copy(x.data(), 2, 3, morf.data(), lerf.data(), {Kind::RemoveMoRF, 1}, out.data());
  CHECK(out == std::vector<float>{1, 2, 0, 4, 5, 0});
  eval::make_copy(x.data(), 2, 3, morf.data(), lerf.data(), {Kind::RemoveLeRF, 2}, out.data());
  CHECK(out == std::vector<float>{0, 0, 3, 0, 0, 6});
  eval::make_copy(x.data(), 2, 3, morf.data(), lerf.data(), {Kind::KeepMoRF, 2}, out.data());
  CHECK(out == std::vector<float>{1, 0, 3, 4, 0, 6});
  eval::make_copy(x.data(), 2, 3, morf.data(), lerf.data(), {Kind::Zero, 0}, out.data());
  CHECK(out == std::vector<float>(6, 0.f));
  eval::make_copy(x.data(), 2, 3, morf.data(), lerf.data(), {Kind::Clean, 0}, out.data());
  CHECK(out == x);
}

TEST_CASE("evaluate_image: the model sees each distinct copy once, and the numbers are metrics.* of its answers") {
  RecordingModel model;
  nn::Context ctx;
  const Tensor x = small_image();
  const std::vector<float> p0 = probs_of(model, std::vector<float>(x.data(), x.data() + x.numel()));
  // |map| with NaN as 0: {0.5, 3, 2, 0, 1, 0, 4, 0.25}. MoRF: 6 1 2 4 0 7 3 5; LeRF: 3 5 7 0 4 2 1 6.
  const float map[8] = {0.5f, -3.f, 2.f, std::numeric_limits<float>::quiet_NaN(), 1.f, 0.f, 4.f, 0.25f};
  const uint8_t mask[8] = {0, 1, 0, 0, 0, 0, 1, 0};
  eval::EvalConfig cfg;
  cfg.ratios = {0, 0.5, 1};
  cfg.auc_steps = 2;
  cfg.perturb_batch = 3;
  const int y = 1;

  model.seen.clear();
  model.batches.clear();
  const eval::ImageResult r = eval::evaluate_image(model, ctx, x, map, p0, y, cfg, mask);
  const std::vector<float> rm4 = hand_copy(x, {6, 1, 2, 4}, false), rl4 = hand_copy(x, {3, 5, 7, 0}, false),
                           k4 = hand_copy(x, {6, 1, 2, 4}, true), zero(24, 0.f);
  // Four distinct inputs (never the clean image), in order of first request, 3 per pass.
  CHECK(model.batches == std::vector<int64_t>{3, 1});
  REQUIRE(model.seen.size() == 4);
  CHECK(model.seen[0] == rm4);
  CHECK(model.seen[1] == zero);
  CHECK(model.seen[2] == rl4);
  CHECK(model.seen[3] == k4);

  const std::vector<float> p_rm4 = probs_of(model, rm4), p_rl4 = probs_of(model, rl4), p_k4 = probs_of(model, k4),
                           p_zero = probs_of(model, zero);
  CHECK(r.label == y);
  CHECK(r.pred == eval::argmax(p0.data(), 3));
  CHECK(r.p0 == double(p0[y]));
  CHECK(r.ratios == cfg.ratios);
  REQUIRE(r.morf.at.size() == 3);
  REQUIRE(r.lerf.at.size() == 3);
  check_same(r.morf.at[0], eval::ratio_metrics(p0.data(), p0.data(), 3, y));
  check_same(r.morf.at[1], eval::ratio_metrics(p0.data(), p_rm4.data(), 3, y));
  check_same(r.morf.at[2], eval::ratio_metrics(p0.data(), p_zero.data(), 3, y));
  check_same(r.lerf.at[1], eval::ratio_metrics(p0.data(), p_rl4.data(), 3, y));
  check_same(r.lerf.at[2], eval::ratio_metrics(p0.data(), p_zero.data(), 3, y));
  CHECK(r.morf.at[0].aopc == 0);
  CHECK(r.morf.aopc_mean == (r.morf.at[0].aopc + r.morf.at[1].aopc + r.morf.at[2].aopc) / 3);
  CHECK(r.morf.at[1].aopc != r.lerf.at[1].aopc);  // the two orders removed different pixels
  CHECK(r.deletion.fractions == std::vector<double>{0, 0.5, 1});
  CHECK(r.deletion.prob == std::vector<double>{p0[y], p_rm4[y], p_zero[y]});
  CHECK(r.insertion.prob == std::vector<double>{p_zero[y], p_k4[y], p0[y]});
  CHECK(r.deletion.auc == eval::trapezoid(r.deletion.fractions, r.deletion.prob));
  CHECK(r.insertion.auc == doctest::Approx(0.25 * p_zero[y] + 0.5 * p_k4[y] + 0.25 * p0[y]));
  // Box {1, 6}: r_in = 3 + 4 of r_tot = 10.75; the map's maximum (pixel 6) is inside.
  REQUIRE(r.has_box);
  CHECK(r.box.valid);
  CHECK(r.box.area == 2);
  CHECK(r.box.mu_in == doctest::Approx(7.0 / 10.75));
  CHECK(r.box.mu_in_w == doctest::Approx(7.0 / 10.75 * 4));
  CHECK(r.box.pointing_hit);

  // The record holds the same numbers.
  const nlohmann::json rec = eval::record_json(r);
  CHECK(rec["label"] == y);
  CHECK(rec["pred"] == r.pred);
  CHECK(rec["p0"].get<double>() == double(p0[y]));
  CHECK(rec["ratios"].get<std::vector<double>>() == cfg.ratios);
  CHECK(rec["morf"]["prob"][1].get<double>() == double(p_rm4[y]));
  CHECK(rec["lerf"]["aopc"][1].get<double>() == r.lerf.at[1].aopc);
  CHECK(rec["morf"]["acc"].size() == 3);
  CHECK(rec["morf"]["aopc_mean"].get<double>() == r.morf.aopc_mean);
  CHECK(rec["deletion"]["prob"].get<std::vector<double>>() == r.deletion.prob);
  CHECK(rec["insertion"]["auc"].get<double>() == r.insertion.auc);
  CHECK(rec["box"]["status"] == "ok");
  CHECK(rec["box"]["area"] == 2);
  CHECK(rec["box"]["pointing"] == true);

  // Without a mask there are no box numbers; the rest does not change.
  const eval::ImageResult nobox = eval::evaluate_image(model, ctx, x, map, p0, y, cfg, nullptr);
  CHECK(!nobox.has_box);
  CHECK(!eval::record_json(nobox).contains("box"));
  CHECK(eval::record_json(nobox)["morf"] == rec["morf"]);

  // A constant map ties every pixel: MoRF and LeRF remove the same pixels, one copy each.
  const float flat[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  model.seen.clear();
  const eval::ImageResult t = eval::evaluate_image(model, ctx, x, flat, p0, y, cfg, nullptr);
  CHECK(model.seen.size() == 3);
  CHECK(model.seen[0] == hand_copy(x, {0, 1, 2, 3}, false));
  CHECK(t.morf.at[1].prob == t.lerf.at[1].prob);
}

TEST_CASE("record_json: non-finite numbers become null; an invalid box gives its reason") {
  eval::ImageResult r;
  r.label = 0;
  r.pred = 2;
  r.p0 = 0.25;
  r.ratios = {0.5};
  r.morf.at.resize(1);
  r.morf.at[0].lodds = -std::numeric_limits<double>::infinity();
  r.lerf.at.resize(1);
  r.lerf.at[0].lodds = -0.5;
  r.has_box = true;
  r.box.valid = false;
  r.box.why = "the map is all zero";
  r.box.area = 7;
  const nlohmann::json rec = eval::record_json(r);
  CHECK(rec["morf"]["lodds"][0].is_null());
  CHECK(rec["lerf"]["lodds"][0].get<double>() == -0.5);
  CHECK(rec["box"] == nlohmann::json{{"status", "invalid"}, {"reason", "the map is all zero"}, {"area", 7}});
  CHECK(eval::json_number(std::nan("")).is_null());
  CHECK(eval::json_number(1.5).get<double>() == 1.5);
}

TEST_CASE("check_config and evaluate_image refuse bad settings and inputs with one-line errors") {
  eval::EvalConfig cfg;
  cfg.ratios = {0.2, 0.1};
  CHECK_THROWS_WITH_AS(eval::check_config(cfg), doctest::Contains("increasing"), Error);
  cfg.ratios = {0, 1.5};
  CHECK_THROWS_WITH_AS(eval::check_config(cfg), doctest::Contains("not in [0, 1]"), Error);
  cfg.ratios = {0, 0.5};
  cfg.auc_steps = 0;
  CHECK_THROWS_WITH_AS(eval::check_config(cfg), doctest::Contains("auc_steps"), Error);
  cfg.auc_steps = 4;
  cfg.perturb_batch = 0;
  CHECK_THROWS_WITH_AS(eval::check_config(cfg), doctest::Contains("perturb_batch"), Error);
  cfg.perturb_batch = 8;
  RecordingModel model;
  nn::Context ctx;
  const Tensor x = small_image();
  const float map[8] = {};
  const std::vector<float> p0 = {0.2f, 0.3f, 0.5f};
  CHECK_THROWS_WITH_AS(eval::evaluate_image(model, ctx, x, map, p0, 3, cfg, nullptr), doctest::Contains("label 3"),
                       Error);
  CHECK_THROWS_WITH_AS(eval::evaluate_image(model, ctx, x.reshape({1, 3, 2, 4}), map, p0, 0, cfg, nullptr),
                       doctest::Contains("[C, H, W]"), Error);
}

TEST_CASE("evaluate_batch on a small ResNet: its building blocks image by image, any perturb batch") {
  auto model = small_resnet(7);
  nn::Context ctx;
  const int64_t B = 2, H = 24, W = 20, HW = H * W;
  eval::EvalBatch batch;
  batch.x = Tensor({B, 3, H, W});
  for (int64_t i = 0; i < batch.x.numel(); ++i) batch.x[i] = float(std::sin(0.37 * double(i)) * 1.5);
  batch.labels = {4, 1};
  std::vector<uint8_t> mask(size_t(HW), 0);
  for (int64_t r = 3; r < 12; ++r)
    for (int64_t c = 5; c < 15; ++c) mask[size_t(r * W + c)] = 1;
  batch.masks = {mask.data(), nullptr};
  std::vector<eval::MethodConfig> methods(2);
  methods[1].options.method = Method::InputGrad;
  eval::EvalConfig cfg;
  cfg.auc_steps = 5;
  cfg.perturb_batch = 7;

  const auto results = eval::evaluate_batch(*model, ctx, batch, methods, cfg);
  REQUIRE(results.size() == 2);
  REQUIRE(results[0].size() == 2);
  CHECK(results[0][0].has_box);
  CHECK(!results[0][1].has_box);

  const Tensor P0 = eval::clean_probabilities(*model, ctx, batch.x);
  eval::EvalConfig one = cfg;
  one.perturb_batch = 1;
  for (size_t m = 0; m < methods.size(); ++m) {
    const Tensor maps = eval::method_maps(*model, ctx, batch.x, batch.labels, methods[m].options, nullptr, {});
    REQUIRE(maps.shape() == std::vector<int64_t>{B, H, W});
    for (int64_t b = 0; b < B; ++b) {
      const std::vector<float> p0(P0.data() + b * 6, P0.data() + (b + 1) * 6);
      const Tensor xb = batch.x.slice0(b, b + 1).reshape({3, H, W});
      const float* map = maps.data() + b * HW;
      const eval::ImageResult r =
          eval::evaluate_image(*model, ctx, xb, map, p0, batch.labels[size_t(b)], one, batch.masks[size_t(b)]);
      // Bitwise the same record, although the copies went through the model 1 and 7 at a time.
      CHECK(eval::record_json(r) == eval::record_json(results[m][size_t(b)]));
      // The MoRF number at ratio 0.3 is metrics.* of the model's probabilities on remove_pixels' copy.
      const auto morf = eval::pixel_order(map, HW, eval::Order::MoRF);
      Tensor copy({1, 3, H, W});
      eval::remove_pixels(xb.data(), 3, HW, morf.data(), eval::pixels_for_ratio(HW, 0.3), copy.data());
      const Tensor pr = eval::clean_probabilities(*model, ctx, copy);
      check_same(r.morf.at[3], eval::ratio_metrics(p0.data(), pr.data(), 6, batch.labels[size_t(b)]));
    }
  }
  // grad and inputgrad give different maps, so different copies and numbers.
  CHECK(eval::record_json(results[0][0])["morf"] != eval::record_json(results[1][0])["morf"]);

  eval::EvalBatch bad = batch;
  bad.labels = {4, 6};
  CHECK_THROWS_WITH_AS(eval::evaluate_batch(*model, ctx, bad, methods, cfg), doctest::Contains("label 6"), Error);
  bad.labels = {4};
  CHECK_THROWS_WITH_AS(eval::evaluate_batch(*model, ctx, bad, methods, cfg), doctest::Contains("labels has 1"), Error);
}
