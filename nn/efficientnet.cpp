// torchvision EfficientNet (efficientnet_b0 .. b7, efficientnet_v2_s/m/l) built from a state
// dict: features.0 (3x3 stride-2 conv, BatchNorm, SiLU), the stages features.1 .. features.S of
// blocks features.<s>.<i>.block, features.S+1 (1x1 conv, BatchNorm, SiLU), global average pool,
// classifier (Dropout: the identity in evaluation, then Linear).
//   MBConv       [1x1 expansion conv, BN, SiLU] (when the expanded width differs), kxk depthwise
//                conv (stride), BN, SiLU, SqueezeExcitation (SiLU, sigmoid), 1x1 projection, BN
//   FusedMBConv  kxk conv (stride) to the expanded width, BN, SiLU, then 1x1 projection, BN; or,
//                when the width does not expand, one kxk conv, BN, SiLU
// The input is added back when the stride is 1 and the widths agree (stochastic depth is the
// identity in evaluation). BatchNorm eps: 1e-5 (B0-B4), 1e-3 (B5-B7, V2), as torchvision.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "nn/builders.h"
#include "nn/model.h"

namespace pg::nn {

namespace {

using kernels::Activation;

struct Block {
  bool fused = false, has_expand = false, residual = false;
  Conv2d expand, depthwise, project;  // fused: expand is the kxk conv (or the only conv in `expand`)
  SqueezeExcitation se;
};

class EfficientNet : public Model {
 public:
  Conv2d stem, last;
  std::vector<Block> blocks;
  Linear classifier;

  // The convs in torchvision's module order (ParchGrad's ratio counts in it): features.0.0,
  // then per MBConv block the expansion, the depthwise conv, the SE's fc1 and fc2, the
  // projection (per FusedMBConv block its kxk conv and its projection), then the last conv.
  void finalize(const std::string& arch, int classes) {
    begin_convs(arch, classes);
    auto push = [&](Conv2d& c) { push_conv(c); };
    push(stem);
    for (Block& b : blocks) {
      if (b.fused) {
        push(b.expand);
        if (b.has_expand) push(b.project);
        continue;
      }
      if (b.has_expand) push(b.expand);
      push(b.depthwise);
      push(b.se.fc1);
      push(b.se.fc2);
      push(b.project);
    }
    push(last);
  }

  ag::Var forward(Context& ctx, const ag::Var& x) const override {
    auto silu = [&](const ag::Var& v) { return activation(ctx, Activation::silu, v); };
    ag::Var h = silu(stem.forward(ctx, x));
    for (const Block& b : blocks) {
      ag::Var o;
      if (b.fused) {
        o = silu(b.expand.forward(ctx, h));
        if (b.has_expand) o = b.project.forward(ctx, o);
      } else {
        o = b.has_expand ? silu(b.expand.forward(ctx, h)) : h;
        o = silu(b.depthwise.forward(ctx, o));
        o = b.se.forward(ctx, o);
        o = b.project.forward(ctx, o);
      }
      h = b.residual ? add(ctx, o, h) : o;
    }
    h = silu(last.forward(ctx, h));
    // Grad-CAM's default layer, as pytorch-grad-cam takes it for torchvision models with
    // `features`: model.features[-1] (the last conv's BatchNorm and SiLU output).
    if (ctx.capture_feature) ctx.feature = h;
    h = adaptive_avgpool(ctx, h, 1, 1);
    return classifier.forward(ctx, flatten(ctx, h));
  }
};

// torchvision's _make_divisible(v, 8): the nearest multiple of 8 (at least 8), not below 90% of v.
int make_divisible(double v) {
  int n = std::max(8, int(v + 4.0) / 8 * 8);
  if (double(n) < 0.9 * v) n += 8;
  return n;
}

struct Stage {
  bool fused;
  double expand;
  int kernel, stride, in, out, layers;
};

// _efficientnet_conf's settings.
const Stage kV1[] = {{false, 1, 3, 1, 32, 16, 1},  {false, 6, 3, 2, 16, 24, 2},  {false, 6, 5, 2, 24, 40, 2},
                     {false, 6, 3, 2, 40, 80, 3},  {false, 6, 5, 1, 80, 112, 3}, {false, 6, 5, 2, 112, 192, 4},
                     {false, 6, 3, 1, 192, 320, 1}};
const Stage kV2S[] = {{true, 1, 3, 1, 24, 24, 2},    {true, 4, 3, 2, 24, 48, 4},     {true, 4, 3, 2, 48, 64, 4},
                      {false, 4, 3, 2, 64, 128, 6},  {false, 6, 3, 1, 128, 160, 9},  {false, 6, 3, 2, 160, 256, 15}};
const Stage kV2M[] = {{true, 1, 3, 1, 24, 24, 3},    {true, 4, 3, 2, 24, 48, 5},      {true, 4, 3, 2, 48, 80, 5},
                      {false, 4, 3, 2, 80, 160, 7},  {false, 6, 3, 1, 160, 176, 14},  {false, 6, 3, 2, 176, 304, 18},
                      {false, 6, 3, 1, 304, 512, 5}};
const Stage kV2L[] = {{true, 1, 3, 1, 32, 32, 4},    {true, 4, 3, 2, 32, 64, 7},      {true, 4, 3, 2, 64, 96, 7},
                      {false, 4, 3, 2, 96, 192, 10}, {false, 6, 3, 1, 192, 224, 19},  {false, 6, 3, 2, 224, 384, 25},
                      {false, 6, 3, 1, 384, 640, 7}};

struct Variant {
  const char* name;
  double width, depth;  // V1 multipliers
  const Stage* stages;
  int n_stages;
  double eps;
};
const Variant kVariants[] = {
    {"efficientnet_b0", 1.0, 1.0, kV1, 7, 1e-5},      {"efficientnet_b1", 1.0, 1.1, kV1, 7, 1e-5},
    {"efficientnet_b2", 1.1, 1.2, kV1, 7, 1e-5},      {"efficientnet_b3", 1.2, 1.4, kV1, 7, 1e-5},
    {"efficientnet_b4", 1.4, 1.8, kV1, 7, 1e-5},      {"efficientnet_b5", 1.6, 2.2, kV1, 7, 1e-3},
    {"efficientnet_b6", 1.8, 2.6, kV1, 7, 1e-3},      {"efficientnet_b7", 2.0, 3.1, kV1, 7, 1e-3},
    {"efficientnet_v2_s", 0, 0, kV2S, 6, 1e-3},       {"efficientnet_v2_m", 0, 0, kV2M, 7, 1e-3},
    {"efficientnet_v2_l", 0, 0, kV2L, 7, 1e-3}};

std::string block_prefix(const EfficientNetSpec::Block& b) {
  return "features." + std::to_string(b.stage) + "." + std::to_string(b.index) + ".block.";
}
std::string last_name(const EfficientNetSpec& s) {
  return "features." + std::to_string(s.blocks.empty() ? 1 : s.blocks.back().stage + 1);
}

}  // namespace

bool efficientnet_spec_from_name(const std::string& name, EfficientNetSpec* spec) {
  const Variant* v = nullptr;
  for (const Variant& c : kVariants)
    if (name == c.name) v = &c;
  if (!v) return false;
  const bool v1 = v->width > 0;
  auto ch = [&](int c) { return v1 ? make_divisible(c * v->width) : c; };
  spec->name = name;
  spec->bn_eps = v->eps;
  spec->blocks.clear();
  spec->stem = ch(v->stages[0].in);
  for (int si = 0; si < v->n_stages; ++si) {
    const Stage& st = v->stages[si];
    const int layers = v1 ? int(std::ceil(st.layers * v->depth)) : st.layers;
    for (int i = 0; i < layers; ++i) {
      EfficientNetSpec::Block b;
      b.fused = st.fused;
      b.stage = si + 1;
      b.index = i;
      b.in = i == 0 ? ch(st.in) : ch(st.out);
      b.out = ch(st.out);
      b.expanded = make_divisible(b.in * st.expand);
      b.kernel = st.kernel;
      b.stride = i == 0 ? st.stride : 1;
      b.squeeze = st.fused ? 0 : std::max(1, b.in / 4);
      spec->blocks.push_back(b);
    }
  }
  spec->last = v1 ? 4 * spec->blocks.back().out : 1280;
  return true;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> efficientnet_tensors(const EfficientNetSpec& s) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> t;
  auto conv_bn = [&](const std::string& p, int out, int in_per_group, int k) {
    t.push_back({p + ".0.weight", {out, in_per_group, k, k}});
    for (const char* f : {".weight", ".bias", ".running_mean", ".running_var"}) t.push_back({p + ".1" + f, {out}});
    t.push_back({p + ".1.num_batches_tracked", {}});
  };
  conv_bn("features.0", s.stem, 3, 3);
  for (const EfficientNetSpec::Block& b : s.blocks) {
    const std::string P = block_prefix(b);
    const bool expand = b.expanded != b.in;
    if (b.fused) {
      if (expand) {
        conv_bn(P + "0", b.expanded, b.in, b.kernel);
        conv_bn(P + "1", b.out, b.expanded, 1);
      } else {
        conv_bn(P + "0", b.out, b.in, b.kernel);
      }
      continue;
    }
    int j = 0;
    if (expand) conv_bn(P + std::to_string(j++), b.expanded, b.in, 1);
    conv_bn(P + std::to_string(j++), b.expanded, 1, b.kernel);
    const std::string se = P + std::to_string(j++);
    t.push_back({se + ".fc1.weight", {b.squeeze, b.expanded, 1, 1}});
    t.push_back({se + ".fc1.bias", {b.squeeze}});
    t.push_back({se + ".fc2.weight", {b.expanded, b.squeeze, 1, 1}});
    t.push_back({se + ".fc2.bias", {b.expanded}});
    conv_bn(P + std::to_string(j), b.out, b.expanded, 1);
  }
  conv_bn(last_name(s), s.last, s.blocks.empty() ? s.stem : s.blocks.back().out, 1);
  t.push_back({"classifier.1.weight", {s.num_classes, s.last}});
  t.push_back({"classifier.1.bias", {s.num_classes}});
  return t;
}

EfficientNetSpec efficientnet_spec_from_weights(const weights::StateDict& sd, const std::string& source) {
  // Neither the strides nor the BatchNorm eps are in the weights: the weights are taken to be
  // one of torchvision's EfficientNets, the one whose tensor names agree best (then the most
  // shapes), and every tensor is then checked against it by the binder.
  int classes = 1000;
  auto it = sd.find("classifier.1.weight");
  if (it != sd.end() && it->second.ndim() == 2) classes = int(it->second.dim(0));
  EfficientNetSpec best;
  SpecFit best_fit{std::numeric_limits<long>::max(), -1};
  for (const Variant& v : kVariants) {
    EfficientNetSpec s;
    efficientnet_spec_from_name(v.name, &s);
    s.num_classes = classes;
    const SpecFit fit = spec_fit(sd, efficientnet_tensors(s));
    if (fit.better_than(best_fit)) {
      best = s;
      best_fit = fit;
    }
  }
  (void)source;
  return best;
}

std::unique_ptr<Model> build_efficientnet(const EfficientNetSpec& s, WeightBinder& binder) {
  auto m = std::make_unique<EfficientNet>();
  const double eps = s.bn_eps;
  auto conv = [&](const std::string& p, int in, int out, int k, int stride, int groups) {
    return make_conv(binder, p + ".0", p + ".1", in, out, k, stride, (k - 1) / 2, groups, false, 0, eps);
  };
  m->stem = conv("features.0", 3, s.stem, 3, 2, 1);
  for (const EfficientNetSpec::Block& b : s.blocks) {
    const std::string P = block_prefix(b);
    Block blk;
    blk.fused = b.fused;
    blk.has_expand = b.expanded != b.in;
    blk.residual = b.stride == 1 && b.in == b.out;
    if (b.fused) {
      if (blk.has_expand) {
        blk.expand = conv(P + "0", b.in, b.expanded, b.kernel, b.stride, 1);
        blk.project = conv(P + "1", b.expanded, b.out, 1, 1, 1);
      } else {
        blk.expand = conv(P + "0", b.in, b.out, b.kernel, b.stride, 1);
      }
    } else {
      int j = 0;
      if (blk.has_expand) blk.expand = conv(P + std::to_string(j++), b.in, b.expanded, 1, 1, 1);
      blk.depthwise = conv(P + std::to_string(j++), b.expanded, b.expanded, b.kernel, b.stride, b.expanded);
      const std::string se = P + std::to_string(j++);
      blk.se.fc1 = make_conv(binder, se + ".fc1", "", b.expanded, b.squeeze, 1, 1, 0, 1, true, 0);
      blk.se.fc2 = make_conv(binder, se + ".fc2", "", b.squeeze, b.expanded, 1, 1, 0, 1, true, 0);
      blk.project = conv(P + std::to_string(j), b.expanded, b.out, 1, 1, 1);
    }
    m->blocks.push_back(std::move(blk));
  }
  m->last = conv(last_name(s), s.blocks.empty() ? s.stem : s.blocks.back().out, s.last, 1, 1, 1);
  m->classifier.weight = binder.take("classifier.1.weight", {s.num_classes, s.last});
  m->classifier.bias = binder.take("classifier.1.bias", {s.num_classes});
  binder.finish();
  m->finalize(s.name, s.num_classes);
  return m;
}

}  // namespace pg::nn
