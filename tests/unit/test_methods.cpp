// The attribution methods' building blocks: Grad-CAM at any layer (the forward walked up to
// it against the models' own capture and the conv hooks' view of the gradient, the layer names
// and what lies above each), and integrated gradients' blurred baseline.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "core/error.h"
#include "nn/builders.h"
#include "nn/model.h"
#include "parchgrad/methods.h"
#include "tests/unit/support.h"

using namespace pg;

namespace {

Tensor normal_tensor(std::vector<int64_t> shape, uint64_t seed, float scale = 1.f) {
  Tensor t(std::move(shape));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  for (int64_t i = 0; i < t.numel(); ++i) t[i] = scale * d(rng);
  return t;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), size_t(a.numel()) * sizeof(float)) == 0;
}

// Random tensors for the names and shapes of a spec, filled as nn::random_state_dict fills
// them (Kaiming-normal convs, random BatchNorm statistics).
weights::StateDict fill(const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uni;
  auto ends = [](const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  weights::StateDict sd;
  for (const auto& [name, shape] : tensors) {
    Tensor t(shape);
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (shape.size() == 4) t[i] = std::sqrt(2.f / float(shape[0] * shape[2] * shape[3])) * normal(rng);
      else if (shape.size() == 2) t[i] = normal(rng) / std::sqrt(float(shape[1]));
      else if (ends(name, "num_batches_tracked")) t[i] = 0.f;
      else if (ends(name, "running_var")) t[i] = 0.5f + 1.5f * uni(rng);
      else if (ends(name, "running_mean")) t[i] = 0.1f * normal(rng);
      else if (ends(name, ".weight")) t[i] = 0.5f + uni(rng);
      else t[i] = 0.1f * normal(rng);
    }
    sd[name] = t;
  }
  return sd;
}

// Small torchvision-shaped ResNets (stem 8; basic blocks 2, 2, 2, 2 of widths 8 ... 64, the
// layout of resnet18; bottleneck blocks 1, 1, 1, 3) and a small VGG: conv(8) [bn] relu, pool,
// conv(16) [bn] relu, conv(16) [bn] relu, pool, classifier 64 -> 12 -> 12 -> 5.
std::unique_ptr<nn::Model> small_resnet(bool bottleneck, uint64_t seed) {
  nn::ResNetSpec s;
  s.bottleneck = bottleneck;
  s.stem = 8;
  s.blocks = bottleneck ? std::vector<int>{1, 1, 1, 3} : std::vector<int>{2, 2, 2, 2};
  s.mid = {8, 16, 32, 64};
  s.out = bottleneck ? std::vector<int>{32, 64, 128, 256} : s.mid;
  s.groups = {1, 1, 1, 1};
  s.num_classes = 10;
  return nn::build_model(fill(nn::resnet_tensors(s), seed), "", "small_resnet");
}

std::unique_ptr<nn::Model> small_vgg(bool bn, uint64_t seed) {
  nn::VGGSpec s;
  s.cfg = {8, -1, 16, 16, -1};
  s.batch_norm = bn;
  s.pool = 2;
  s.hidden = {12, 12};
  s.num_classes = 5;
  return nn::build_model(fill(nn::vgg_tensors(s), seed), "", "small_vgg");
}

// Records one conv's output gradient (before any edit) and its raw output's GAP.
struct CaptureHook : ag::ConvHook {
  std::string target;
  Tensor grad, gap;
  bool hooks(const ag::ConvSite& s) const override { return s.name == target; }
  void on_forward(const ag::ConvSite&, const Tensor& g) override { gap = g.clone(); }
  Tensor on_backward(const ag::ConvSite&, Tensor& g) override {
    grad = g.clone();
    return Tensor();
  }
};

const nn::Conv2d* conv_named(const nn::Model& m, const std::string& name) {
  for (const auto* c : m.convs())
    if (c->site.name == name) return c;
  return nullptr;
}

}  // namespace

TEST_CASE("Grad-CAM: walking the forward to the default layer gives the model's own capture, bit for bit") {
  struct Case {
    std::string what;
    std::unique_ptr<nn::Model> model;
    int size;
  };
  std::vector<Case> cases;
  cases.push_back({"basic", small_resnet(false, 3), 48});
  cases.push_back({"bottleneck", small_resnet(true, 4), 40});
  cases.push_back({"vgg", small_vgg(false, 5), 20});
  cases.push_back({"vgg_bn", small_vgg(true, 6), 20});
  for (const auto& c : cases) {
    CAPTURE(c.what);
    nn::Context ctx;
    const Tensor x = normal_tensor({2, 3, c.size, c.size + 4}, 7);
    const CamInputs own = gradcam_inputs(*c.model, ctx, x, {1, -1}, "");
    const CamInputs walked = gradcam_inputs(*c.model, ctx, x, {1, -1}, "", nullptr, true);
    REQUIRE(own.value.ndim() == 4);
    CHECK(same_bits(own.value, walked.value));
    CHECK(same_bits(own.grad, walked.grad));
    double norm = 0;
    for (int64_t i = 0; i < own.grad.numel(); ++i) norm += std::fabs(own.grad[i]);
    CHECK(norm > 0);
  }
}

TEST_CASE("Grad-CAM at a conv: the gradient its hook sees, and the raw output its GAP is made of") {
  auto resnet = small_resnet(false, 8);
  auto vgg = small_vgg(true, 9);
  struct Case {
    const nn::Model* model;
    std::string conv, bn;
  };
  const std::vector<Case> cases = {{resnet.get(), "conv1", "bn1"},
                                   {resnet.get(), "layer2.0.conv2", "layer2.0.bn2"},
                                   {resnet.get(), "layer3.0.downsample.0", "layer3.0.downsample.1"},
                                   {resnet.get(), "layer4.1.conv1", "layer4.1.bn1"},
                                   {vgg.get(), "features.0", "features.1"},
                                   {vgg.get(), "features.7", "features.8"}};
  const Tensor x = normal_tensor({2, 3, 40, 36}, 11);
  for (const auto& c : cases) {
    CAPTURE(c.conv);
    nn::Context ctx;
    CaptureHook hook;
    hook.target = c.conv;
    const CamInputs bn = gradcam_inputs(*c.model, ctx, x, {2, 3}, c.bn, &hook);
    CHECK(same_bits(bn.grad, hook.grad));  // the folded conv's output is its BatchNorm's
    const CamInputs raw = gradcam_inputs(*c.model, ctx, x, {2, 3}, c.conv, &hook);
    const nn::Conv2d* conv = conv_named(*c.model, c.conv);
    REQUIRE(conv != nullptr);
    REQUIRE(raw.value.shape() == bn.value.shape());
    const int64_t N = raw.value.dim(0), K = raw.value.dim(1), PQ = raw.value.dim(2) * raw.value.dim(3);
    REQUIRE(hook.gap.numel() == N * K);
    bool gap_same = true, grad_same = true;
    for (int64_t nk = 0; nk < N * K; ++nk) {
      const int64_t k = nk % K;
      double acc = 0;
      for (int64_t i = 0; i < PQ; ++i) {
        acc += std::max(raw.value[nk * PQ + i], 0.f);
        grad_same = grad_same && raw.grad[nk * PQ + i] == bn.grad[nk * PQ + i] * conv->site.bn_scale[k];
      }
      gap_same = gap_same && float(acc / double(PQ)) == hook.gap[nk];
    }
    CHECK(gap_same);
    CHECK(grad_same);
  }
}

TEST_CASE("Grad-CAM layers: torchvision's module names, aliases, and the convs above each") {
  auto m = small_resnet(false, 1);
  CamLayer d = resolve_cam_layer(*m, "");
  CHECK(d.name == "layer4.1");
  CHECK(d.is_default);
  CHECK(d.above.empty());
  CHECK(resolve_cam_layer(*m, "layer4").is_default);
  CHECK(resolve_cam_layer(*m, "layer4").name == "layer4");
  CamLayer l = resolve_cam_layer(*m, "layer4.0");
  CHECK(!l.is_default);
  CHECK(l.above == std::vector<std::string>{"layer4.1.conv1", "layer4.1.conv2"});
  // Inside a block: the rest of the block's path and the later blocks, not the downsample.
  l = resolve_cam_layer(*m, "layer4.0.bn1");
  CHECK(l.above == std::vector<std::string>{"layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"});
  CHECK(resolve_cam_layer(*m, "layer4.0.conv1").above == l.above);
  CHECK(resolve_cam_layer(*m, "layer4.0.downsample.1").above ==
        std::vector<std::string>{"layer4.1.conv1", "layer4.1.conv2"});
  CHECK(resolve_cam_layer(*m, "layer3").above.size() == 5);
  CHECK(resolve_cam_layer(*m, "layer3").above.front() == "layer4.0.conv1");
  for (const char* n : {"conv1", "bn1", "relu", "maxpool"}) CHECK(resolve_cam_layer(*m, n).above.size() == 19);
  for (const char* n : {"layer5", "layer4.2", "layer4.0.relu", "fc", "features.3", "layer4.1.bn3", "avgpool"}) {
    CAPTURE(n);
    const std::string e = test::error_of([&] { resolve_cam_layer(*m, n); });
    CHECK(e.find("--gradcam-layer: '" + std::string(n) + "' is not a layer of " + m->arch()) == 0);
    CHECK(e.find("default: layer4.1") != std::string::npos);
  }
  // Bottleneck blocks: conv3/bn3 exist.
  auto r50 = small_resnet(true, 1);
  CHECK(resolve_cam_layer(*r50, "layer4.2.conv2").above == std::vector<std::string>{"layer4.2.conv3"});
  CHECK(resolve_cam_layer(*r50, "layer4.2.bn3").above.empty());
  CHECK(!resolve_cam_layer(*r50, "layer4.2.bn3").is_default);
  // VGG: every index of features: conv, BatchNorm, ReLU, max-pool; the default is the last ReLU.
  auto v = small_vgg(true, 2);  // conv0 bn1 relu2 pool3 conv4 bn5 relu6 conv7 bn8 relu9 pool10
  CHECK(resolve_cam_layer(*v, "").name == "features.9");
  for (int i = 0; i <= 10; ++i) {
    CAPTURE(i);
    const CamLayer c = resolve_cam_layer(*v, "features." + std::to_string(i));
    CHECK(c.is_default == (i == 9));
    CHECK(c.above.size() == size_t(i < 4 ? 2 : i < 7 ? 1 : 0));
  }
  CHECK(test::error_of([&] { resolve_cam_layer(*v, "features.11"); }).find("features.0 ... features.10") !=
        std::string::npos);
  auto v0 = small_vgg(false, 2);  // conv0 relu1 pool2 conv3 relu4 conv5 relu6 pool7
  CHECK(resolve_cam_layer(*v0, "").name == "features.6");
  CHECK(resolve_cam_layer(*v0, "features.2").above == std::vector<std::string>{"features.3", "features.5"});
}

TEST_CASE("Grad-CAM at a layer that is not the default: a map from that layer, refused names named") {
  auto m = small_resnet(false, 12);
  nn::Context ctx;
  const Tensor x = normal_tensor({2, 3, 64, 64}, 13);
  MethodOptions opt;
  opt.method = Method::GradCAM;
  const Tensor dflt = explain(*m, ctx, x, {{1, 2}}, opt, nullptr)[0].maps;
  opt.gradcam_layer = "layer4";
  CHECK(same_bits(explain(*m, ctx, x, {{1, 2}}, opt, nullptr)[0].maps, dflt));
  opt.gradcam_layer = "layer3";
  const Tensor l3 = explain(*m, ctx, x, {{1, 2}}, opt, nullptr)[0].maps;
  REQUIRE(l3.shape() == dflt.shape());
  CHECK(!same_bits(l3, dflt));
  // The map is ReLU(sum_k mean(dA_k) A_k), upsampled: from gradcam_inputs by hand.
  const CamInputs in = gradcam_inputs(*m, ctx, x, {1, 2}, "layer3");
  const int64_t K = in.value.dim(1), hw = in.value.dim(2) * in.value.dim(3);
  Tensor cam = Tensor::zeros({2, in.value.dim(2), in.value.dim(3)});
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t k = 0; k < K; ++k) {
      double w = 0;
      for (int64_t i = 0; i < hw; ++i) w += in.grad[(n * K + k) * hw + i];
      w /= double(hw);
      for (int64_t i = 0; i < hw; ++i) cam[n * hw + i] += float(w) * in.value[(n * K + k) * hw + i];
    }
  for (int64_t i = 0; i < cam.numel(); ++i) cam[i] = std::max(cam[i], 0.f);
  CHECK(same_bits(upsample_bilinear(cam, 64, 64), l3));
  opt.gradcam_layer = "layer3.9";
  CHECK(test::error_of([&] { explain(*m, ctx, x, {{1, 2}}, opt, nullptr); }).find("--gradcam-layer: 'layer3.9'") == 0);
}

TEST_CASE("blur_baseline: a separable Gaussian, mirrored at the border, equal on pixels and normalised values") {
  // A point in the middle spreads into the outer product of the 1-d kernel: symmetric, summing
  // to one, its peak in the middle.
  Tensor x = Tensor::zeros({1, 1, 33, 31});
  x[16 * 31 + 15] = 1.f;
  Tensor b = blur_baseline(x, 2.0);
  double sum = 0;
  for (int64_t i = 0; i < b.numel(); ++i) sum += b[i];
  CHECK(std::fabs(sum - 1.0) < 1e-6);
  CHECK(std::max_element(b.data(), b.data() + b.numel()) - b.data() == 16 * 31 + 15);
  CHECK(b[15 * 31 + 15] == b[17 * 31 + 15]);
  CHECK(b[16 * 31 + 14] == b[16 * 31 + 16]);
  CHECK(b[0] == 0.f);  // 8 sigma reach less than the 15 pixels to the corner: nothing arrives
  // Each value is a weighted mean: within the input's range, also with a kernel longer than the
  // plane (sigma 20 on 5 x 7: the border is mirrored again and again).
  const Tensor r = normal_tensor({2, 3, 5, 7}, 3);
  const Tensor rb = blur_baseline(r, 20.0);
  for (int64_t p = 0; p < 6; ++p) {
    const float* in = r.data() + p * 35;
    const auto mm = std::minmax_element(in, in + 35);
    for (int64_t i = 0; i < 35; ++i) {
      CHECK(rb[p * 35 + i] >= *mm.first);
      CHECK(rb[p * 35 + i] <= *mm.second);
    }
  }
  // A constant plane stays constant (the mirrored border adds no edge).
  const Tensor c = blur_baseline(Tensor::filled({1, 3, 9, 12}, 0.75f), 3.0);
  for (int64_t i = 0; i < c.numel(); ++i) CHECK(std::fabs(c[i] - 0.75f) <= 1e-6f);
  // Blurring the normalised image equals normalising the blurred pixels (the weights sum to one),
  // up to float rounding.
  Tensor px({1, 3, 24, 20}), nx({1, 3, 24, 20});
  std::mt19937 rng(4);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
  for (int64_t i = 0; i < px.numel(); ++i) {
    const int ch = int(i / (24 * 20));
    px[i] = float(rng() % 256) / 255.f;
    nx[i] = (px[i] - mean[ch]) / sd[ch];
  }
  const Tensor bp = blur_baseline(px, 4.0), bn = blur_baseline(nx, 4.0);
  for (int64_t i = 0; i < px.numel(); ++i) {
    const int ch = int(i / (24 * 20));
    CHECK(std::fabs((bp[i] - mean[ch]) / sd[ch] - bn[i]) <= 2e-6f);
  }
  CHECK(same_bits(blur_baseline(r, 1e-16), r));
  CHECK(test::error_of([&] { blur_baseline(r, -1.0); }).find("--ig-blur-sigma") == 0);
  CHECK(test::error_of([&] { blur_baseline(r, std::nan("")); }).find("--ig-blur-sigma") == 0);
}
