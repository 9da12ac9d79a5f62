// torchvision MobileNetV3 (mobilenet_v3_large, mobilenet_v3_small) built from a state dict:
// features.0 (3x3 stride-2 conv, BatchNorm, hardswish), the InvertedResidual blocks
// features.1 .. features.B (features.<i>.block: [1x1 expansion conv, BN, act] when the expanded
// width differs, kxk depthwise conv (stride), BN, act, [SqueezeExcitation: ReLU, hardsigmoid],
// 1x1 projection, BN; act ReLU or hardswish; the input added back when the stride is 1 and the
// widths agree), features.B+1 (1x1 conv to 6x the last width, BN, hardswish), global average
// pool, classifier (Linear, hardswish, Dropout: the identity in evaluation, Linear). BatchNorm
// eps 1e-3, as torchvision.
#include <algorithm>
#include <limits>

#include "core/error.h"
#include "nn/builders.h"
#include "nn/model.h"

namespace pg::nn {

namespace {

using kernels::Activation;

struct Block {
  bool has_expand = false, has_se = false, residual = false, hardswish = false;
  Conv2d expand, depthwise, project;
  SqueezeExcitation se;
};

class MobileNetV3 : public Model {
 public:
  Conv2d stem, last;
  std::vector<Block> blocks;
  Linear fc, head;  // classifier.0, classifier.3

  // The convs in torchvision's module order (ParchGrad's ratio counts in it): features.0.0,
  // then per block the expansion, the depthwise conv, the SE's fc1 and fc2, the projection,
  // then the last conv.
  void finalize(const std::string& arch, int classes) {
    begin_convs(arch, classes);
    auto push = [&](Conv2d& c) { push_conv(c); };
    push(stem);
    for (Block& b : blocks) {
      if (b.has_expand) push(b.expand);
      push(b.depthwise);
      if (b.has_se) {
        push(b.se.fc1);
        push(b.se.fc2);
      }
      push(b.project);
    }
    push(last);
  }

  ag::Var forward(Context& ctx, const ag::Var& x) const override {
    auto hswish = [&](const ag::Var& v) { return activation(ctx, Activation::hardswish, v); };
    ag::Var h = hswish(stem.forward(ctx, x));
    for (const Block& b : blocks) {
      auto act = [&](const ag::Var& v) { return b.hardswish ? hswish(v) : relu(ctx, v); };
      ag::Var o = b.has_expand ? act(b.expand.forward(ctx, h)) : h;
      o = act(b.depthwise.forward(ctx, o));
      if (b.has_se) o = b.se.forward(ctx, o);
      o = b.project.forward(ctx, o);
      h = b.residual ? add(ctx, o, h) : o;
    }
    h = hswish(last.forward(ctx, h));
    // Grad-CAM's default layer, as pytorch-grad-cam takes it for torchvision models with
    // `features`: model.features[-1] (the last conv's BatchNorm and hardswish output).
    if (ctx.capture_feature) ctx.feature = h;
    h = adaptive_avgpool(ctx, h, 1, 1);
    h = hswish(fc.forward(ctx, flatten(ctx, h)));
    return head.forward(ctx, h);
  }
};

// _make_divisible(v, 8).
int make_divisible(double v) {
  int n = std::max(8, int(v + 4.0) / 8 * 8);
  if (double(n) < 0.9 * v) n += 8;
  return n;
}

// _mobilenet_v3_conf: input, kernel, expanded, out, SE, hardswish, stride (width 1.0, no
// dilation).
struct Setting {
  int in, kernel, expanded, out;
  bool se, hs;
  int stride;
};
const Setting kLarge[] = {{16, 3, 16, 16, false, false, 1},   {16, 3, 64, 24, false, false, 2},
                          {24, 3, 72, 24, false, false, 1},   {24, 5, 72, 40, true, false, 2},
                          {40, 5, 120, 40, true, false, 1},   {40, 5, 120, 40, true, false, 1},
                          {40, 3, 240, 80, false, true, 2},   {80, 3, 200, 80, false, true, 1},
                          {80, 3, 184, 80, false, true, 1},   {80, 3, 184, 80, false, true, 1},
                          {80, 3, 480, 112, true, true, 1},   {112, 3, 672, 112, true, true, 1},
                          {112, 5, 672, 160, true, true, 2},  {160, 5, 960, 160, true, true, 1},
                          {160, 5, 960, 160, true, true, 1}};
const Setting kSmall[] = {{16, 3, 16, 16, true, false, 2},  {16, 3, 72, 24, false, false, 2},
                          {24, 3, 88, 24, false, false, 1}, {24, 5, 96, 40, true, true, 2},
                          {40, 5, 240, 40, true, true, 1},  {40, 5, 240, 40, true, true, 1},
                          {40, 5, 120, 48, true, true, 1},  {48, 5, 144, 48, true, true, 1},
                          {48, 5, 288, 96, true, true, 2},  {96, 5, 576, 96, true, true, 1},
                          {96, 5, 576, 96, true, true, 1}};

std::string feature(int i) { return "features." + std::to_string(i); }
constexpr double kEps = 1e-3;

}  // namespace

bool mobilenet_v3_spec_from_name(const std::string& name, MobileNetV3Spec* spec) {
  const Setting* set = nullptr;
  int n = 0;
  if (name == "mobilenet_v3_large") {
    set = kLarge;
    n = int(std::size(kLarge));
    spec->hidden = 1280;
  } else if (name == "mobilenet_v3_small") {
    set = kSmall;
    n = int(std::size(kSmall));
    spec->hidden = 1024;
  } else {
    return false;
  }
  spec->name = name;
  spec->blocks.clear();
  for (int i = 0; i < n; ++i) {
    MobileNetV3Spec::Block b;
    b.in = make_divisible(set[i].in);
    b.expanded = make_divisible(set[i].expanded);
    b.out = make_divisible(set[i].out);
    b.kernel = set[i].kernel;
    b.stride = set[i].stride;
    b.squeeze = set[i].se ? make_divisible(b.expanded / 4) : 0;
    b.hardswish = set[i].hs;
    spec->blocks.push_back(b);
  }
  spec->stem = spec->blocks.front().in;
  spec->last = 6 * spec->blocks.back().out;
  return true;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> mobilenet_v3_tensors(const MobileNetV3Spec& s) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> t;
  auto conv_bn = [&](const std::string& p, int out, int in_per_group, int k) {
    t.push_back({p + ".0.weight", {out, in_per_group, k, k}});
    for (const char* f : {".weight", ".bias", ".running_mean", ".running_var"}) t.push_back({p + ".1" + f, {out}});
    t.push_back({p + ".1.num_batches_tracked", {}});
  };
  conv_bn(feature(0), s.stem, 3, 3);
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const MobileNetV3Spec::Block& b = s.blocks[i];
    const std::string P = feature(int(i) + 1) + ".block.";
    int j = 0;
    if (b.expanded != b.in) conv_bn(P + std::to_string(j++), b.expanded, b.in, 1);
    conv_bn(P + std::to_string(j++), b.expanded, 1, b.kernel);
    if (b.squeeze > 0) {
      const std::string se = P + std::to_string(j++);
      t.push_back({se + ".fc1.weight", {b.squeeze, b.expanded, 1, 1}});
      t.push_back({se + ".fc1.bias", {b.squeeze}});
      t.push_back({se + ".fc2.weight", {b.expanded, b.squeeze, 1, 1}});
      t.push_back({se + ".fc2.bias", {b.expanded}});
    }
    conv_bn(P + std::to_string(j), b.out, b.expanded, 1);
  }
  conv_bn(feature(int(s.blocks.size()) + 1), s.last, s.blocks.empty() ? s.stem : s.blocks.back().out, 1);
  t.push_back({"classifier.0.weight", {s.hidden, s.last}});
  t.push_back({"classifier.0.bias", {s.hidden}});
  t.push_back({"classifier.3.weight", {s.num_classes, s.hidden}});
  t.push_back({"classifier.3.bias", {s.num_classes}});
  return t;
}

MobileNetV3Spec mobilenet_v3_spec_from_weights(const weights::StateDict& sd, const std::string& source) {
  // The strides are not in the weights: the weights are taken to be torchvision's large or
  // small model, the one whose tensor names agree best (then the most shapes), and every
  // tensor is then checked against it by the binder.
  int classes = 1000;
  auto it = sd.find("classifier.3.weight");
  if (it != sd.end() && it->second.ndim() == 2) classes = int(it->second.dim(0));
  MobileNetV3Spec best;
  SpecFit best_fit{std::numeric_limits<long>::max(), -1};
  for (const char* name : {"mobilenet_v3_large", "mobilenet_v3_small"}) {
    MobileNetV3Spec s;
    mobilenet_v3_spec_from_name(name, &s);
    s.num_classes = classes;
    const SpecFit fit = spec_fit(sd, mobilenet_v3_tensors(s));
    if (fit.better_than(best_fit)) {
      best = s;
      best_fit = fit;
    }
  }
  (void)source;
  return best;
}

std::unique_ptr<Model> build_mobilenet_v3(const MobileNetV3Spec& s, WeightBinder& binder) {
  auto m = std::make_unique<MobileNetV3>();
  auto conv = [&](const std::string& p, int in, int out, int k, int stride, int groups) {
    return make_conv(binder, p + ".0", p + ".1", in, out, k, stride, (k - 1) / 2, groups, false, 0, kEps);
  };
  m->stem = conv(feature(0), 3, s.stem, 3, 2, 1);
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const MobileNetV3Spec::Block& b = s.blocks[i];
    const std::string P = feature(int(i) + 1) + ".block.";
    Block blk;
    blk.has_expand = b.expanded != b.in;
    blk.has_se = b.squeeze > 0;
    blk.hardswish = b.hardswish;
    blk.residual = b.stride == 1 && b.in == b.out;
    int j = 0;
    if (blk.has_expand) blk.expand = conv(P + std::to_string(j++), b.in, b.expanded, 1, 1, 1);
    blk.depthwise = conv(P + std::to_string(j++), b.expanded, b.expanded, b.kernel, b.stride, b.expanded);
    if (blk.has_se) {
      const std::string se = P + std::to_string(j++);
      blk.se.hard = true;
      blk.se.fc1 = make_conv(binder, se + ".fc1", "", b.expanded, b.squeeze, 1, 1, 0, 1, true, 0);
      blk.se.fc2 = make_conv(binder, se + ".fc2", "", b.squeeze, b.expanded, 1, 1, 0, 1, true, 0);
    }
    blk.project = conv(P + std::to_string(j), b.expanded, b.out, 1, 1, 1);
    m->blocks.push_back(std::move(blk));
  }
  m->last = conv(feature(int(s.blocks.size()) + 1), s.blocks.empty() ? s.stem : s.blocks.back().out, s.last, 1, 1, 1);
  m->fc.weight = binder.take("classifier.0.weight", {s.hidden, s.last});
  m->fc.bias = binder.take("classifier.0.bias", {s.hidden});
  m->head.weight = binder.take("classifier.3.weight", {s.num_classes, s.hidden});
  m->head.bias = binder.take("classifier.3.bias", {s.num_classes});
  binder.finish();
  m->finalize(s.name, s.num_classes);
  return m;
}

}  // namespace pg::nn
