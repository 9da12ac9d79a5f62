// Engine-level tests: the conv hook (ParchGrad's insertion point) on a random ResNet, and
// the architecture builders' checks of a state dict.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <random>

#include "kernels/cpu/conv2d.h"
#include "core/error.h"
#include "nn/model.h"
#include "parchgrad/attribution.h"

using namespace pg;

namespace {

Tensor random_input(int N, int H, int W, uint64_t seed) {
  Tensor x({N, 3, H, W});
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d;
  for (int64_t i = 0; i < x.numel(); ++i) x[i] = d(rng);
  return x;
}

double rel(const Tensor& a, const Tensor& b) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    num += double(a[i] - b[i]) * (a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// Scales one named conv's output gradient by fixed per-(sample, channel) factors, either
// through the fused scale or by editing the gradient in place; records the forward GAP.
struct TestHook : ag::ConvHook {
  std::string target;
  Tensor factors;  // [N, K]
  bool in_place = false;
  Tensor gap;
  bool hooks(const ag::ConvSite& s) const override { return s.name == target; }
  void on_forward(const ag::ConvSite&, const Tensor& g) override { gap = g.clone(); }
  Tensor on_backward(const ag::ConvSite& s, Tensor& grad) override {
    if (!in_place) return factors;
    const int64_t N = grad.dim(0), K = grad.dim(1), PQ = grad.dim(2) * grad.dim(3);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < PQ; ++i) grad[(n * K + k) * PQ + i] *= factors[n * K + k];
    return Tensor();
  }
};

}  // namespace

TEST_CASE("a conv hook's fused scale equals editing the gradient in place") {
  auto model = nn::random_model("resnet18", 10, 5);
  Tensor x = random_input(2, 64, 48, 6);
  nn::Context ctx;
  for (const char* name : {"layer3.0.conv1", "layer2.1.conv2", "layer4.0.downsample.0", "conv1"}) {
    CAPTURE(name);
    const nn::Conv2d* conv = nullptr;
    for (auto* c : model->convs())
      if (c->site.name == name) conv = c;
    REQUIRE(conv != nullptr);
    TestHook fused, edited;
    fused.target = edited.target = name;
    Tensor f({2, conv->out_channels});
    std::mt19937 rng(1);
    for (int64_t i = 0; i < f.numel(); ++i) f[i] = (i % 4 == 0) ? 0.f : float(rng() % 100) / 50.f;
    fused.factors = edited.factors = f;
    edited.in_place = true;
    auto a = input_gradient(*model, ctx, x, {3, 7}, {&fused});
    auto b = input_gradient(*model, ctx, x, {3, 7}, {&edited});
    auto plain = input_gradient(*model, ctx, x, {3, 7});
    CHECK(rel(a.grad, b.grad) < 1e-6);
    CHECK(rel(a.grad, plain.grad) > 1e-3);  // the edit really changed the result
    CHECK(rel(a.logits, plain.logits) == 0.0);
  }
}

TEST_CASE("the hook sees the raw conv output's GAP although BatchNorm is folded") {
  auto sd = nn::random_state_dict("resnet18", 10, 9);
  auto model = nn::build_model(sd, "", "random");
  Tensor x = random_input(2, 40, 40, 10);
  TestHook hook;
  hook.target = "conv1";
  hook.factors = Tensor::filled({2, 64}, 1.f);
  nn::Context ctx;
  input_gradient(*model, ctx, x, {-1}, {&hook});
  REQUIRE(hook.gap.numel() == 2 * 64);
  // Raw stem conv from the unfolded weights.
  kernels::Conv2dParams p;
  p.N = 2; p.C = 3; p.H = 40; p.W = 40; p.K = 64; p.R = p.S = 7;
  p.stride_h = p.stride_w = 2; p.pad_h = p.pad_w = 3;
  kernels::conv2d_output_size(p);
  Tensor y({2, 64, p.P, p.Q});
  std::vector<float> ws(kernels::cpu::conv2d_workspace_floats(p, 8));
  kernels::cpu::conv2d_forward(p, x.data(), sd.at("conv1.weight").data(), {}, y.data(), ws.data());
  Tensor ref({2, 64});
  const int64_t PQ = int64_t(p.P) * p.Q;
  for (int64_t i = 0; i < 2 * 64; ++i) {
    double s = 0;
    for (int64_t j = 0; j < PQ; ++j) s += std::max(0.f, y[i * PQ + j]);
    ref[i] = float(s / PQ);
  }
  CHECK(rel(hook.gap, ref) < 1e-5);
}

TEST_CASE("zeroing a block's conv leaves the skip path; zeroing the stem stops everything") {
  auto model = nn::random_model("resnet18", 10, 5);
  Tensor x = random_input(1, 32, 32, 6);
  nn::Context ctx;
  TestHook hook;
  hook.target = "layer1.0.conv1";
  hook.factors = Tensor::zeros({1, 64});
  auto r = input_gradient(*model, ctx, x, {1}, {&hook});
  double norm = 0;
  for (int64_t i = 0; i < r.grad.numel(); ++i) norm += std::fabs(r.grad[i]);
  CHECK(norm > 0);
  hook.target = "conv1";
  r = input_gradient(*model, ctx, x, {1}, {&hook});
  norm = 0;
  for (int64_t i = 0; i < r.grad.numel(); ++i) norm += std::fabs(r.grad[i]);
  CHECK(norm == 0);
}

TEST_CASE("the builders infer every architecture and name bad tensors") {
  for (const auto& arch : nn::known_architectures()) {
    if (arch.rfind("vgg", 0) == 0 && arch != "vgg11" && arch != "vgg11_bn") continue;  // keep it quick
    CAPTURE(arch);
    auto sd = nn::random_state_dict(arch, 7, 1);
    auto m = nn::build_model(sd, "", "w");
    CHECK(m->arch() == arch);
    CHECK(m->num_classes() == 7);
  }
  auto sd = nn::random_state_dict("resnet18", 10, 1);
  sd["layer2.1.conv1.weight"] = Tensor::zeros({128, 128, 3, 1});
  CHECK_THROWS_WITH_AS(nn::build_model(sd, "", "w.pth"),
                       doctest::Contains("'layer2.1.conv1.weight' is [128, 128, 3, 1], expected [128, 128, 3, 3]"),
                       Error);
  sd = nn::random_state_dict("resnet18", 10, 1);
  sd.erase("layer3.1.bn2.running_var");
  sd["extra.weight"] = Tensor::zeros({3});
  CHECK_THROWS_WITH_AS(nn::build_model(sd, "", "w.pth"), doctest::Contains("missing tensor 'layer3.1.bn2.running_var'"), Error);
  CHECK_THROWS_WITH_AS(nn::build_model(sd, "", "w.pth"), doctest::Contains("unexpected tensor 'extra.weight'"), Error);
  sd = nn::random_state_dict("resnet18", 10, 1);
  CHECK_THROWS_WITH_AS(nn::build_model(sd, "resnet50", "w.pth"), doctest::Contains("missing tensor 'layer1.0.conv3.weight'"), Error);
  CHECK_THROWS_WITH_AS(nn::build_model(sd, "resnet7", "w.pth"), doctest::Contains("unknown model 'resnet7'"), Error);
  weights::StateDict junk;
  junk["foo"] = Tensor::zeros({1});
  CHECK_THROWS_WITH_AS(nn::build_model(junk, "", "w.pth"), doctest::Contains("cannot tell the architecture"), Error);
}

TEST_CASE("a small torchvision-shaped ResNet and VGG load with widths taken from the weights") {
  // Custom widths: build a state dict by hand from a spec-shaped random resnet18 scaled down.
  auto big = nn::random_state_dict("resnet18", 6, 2);
  weights::StateDict small;
  for (const auto& [name, t] : big) {
    std::vector<int64_t> s = t.shape();
    for (size_t i = 0; i < s.size() && i < 2; ++i)
      if (!(name == "fc.weight" && i == 0) && !(name == "conv1.weight" && i == 1) && s[i] >= 64) s[i] /= 4;
    if (name == "fc.bias") s = {6};
    small[name] = Tensor::filled(s, 0.01f);
  }
  auto m = nn::build_model(small, "", "small.pth");
  CHECK(m->arch() == "resnet (custom)");
  nn::Context ctx;
  auto r = input_gradient(*m, ctx, random_input(2, 50, 70, 3), {0, 5});
  CHECK(r.logits.dim(1) == 6);
  CHECK(r.grad.shape() == std::vector<int64_t>{2, 3, 50, 70});
}
