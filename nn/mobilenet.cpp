// torchvision MobileNetV2 built from a state dict: features.0 (3x3 stride-2 conv, BatchNorm,
// ReLU6), 17 inverted residual blocks features.1 .. features.17 (1x1 expansion conv unless the
// expansion factor is 1, 3x3 depthwise conv, 1x1 linear projection, each with a BatchNorm
// folded in; the input added back when the stride is 1 and the widths agree), features.18
// (1x1 conv to 1280, BatchNorm, ReLU6), global average pool, classifier (Dropout: the identity
// in evaluation, then Linear).
#include "core/error.h"
#include "nn/builders.h"
#include "nn/model.h"

namespace pg::nn {

namespace {

struct Block {
  Conv2d expand, depthwise, project;
  bool has_expand = false, residual = false;
};

class MobileNetV2 : public Model {
 public:
  Conv2d stem, last;
  std::vector<Block> blocks;
  Linear classifier;

  // The convs in torchvision's module order (the order ParchGrad's ratio counts in):
  // features.0.0, then per block conv.0.0 (expansion), the depthwise conv, the projection,
  // then features.18.0.
  void finalize(const std::string& arch, int classes) {
    begin_convs(arch, classes);
    auto push = [&](Conv2d& c) { push_conv(c); };
    push(stem);
    for (Block& b : blocks) {
      if (b.has_expand) push(b.expand);
      push(b.depthwise);
      push(b.project);
    }
    push(last);
  }

  ag::Var forward(Context& ctx, const ag::Var& x) const override {
    ag::Var h = relu6(ctx, stem.forward(ctx, x));
    for (const Block& b : blocks) {
      ag::Var o = b.has_expand ? relu6(ctx, b.expand.forward(ctx, h)) : h;
      o = relu6(ctx, b.depthwise.forward(ctx, o));
      o = b.project.forward(ctx, o);
      h = b.residual ? add(ctx, o, h) : o;
    }
    h = relu6(ctx, last.forward(ctx, h));
    // Grad-CAM's default layer, as pytorch-grad-cam takes it for MobileNetV2: model.features[-1].
    if (ctx.capture_feature) ctx.feature = h;
    h = adaptive_avgpool(ctx, h, 1, 1);
    return classifier.forward(ctx, flatten(ctx, h));
  }
};

// torchvision's inverted residual settings (expansion t, width c, blocks n, first stride s)
// at width_mult 1.0.
struct Setting {
  int t, c, n, s;
};
const Setting kSettings[] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                             {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};

std::string feature(int i) { return "features." + std::to_string(i); }

}  // namespace

bool mobilenet_spec_from_name(const std::string& name, MobileNetSpec* spec) {
  if (name != "mobilenet_v2") return false;
  spec->name = name;
  spec->stem = 32;
  spec->last = 1280;
  spec->blocks.clear();
  int in = spec->stem;
  for (const Setting& st : kSettings)
    for (int i = 0; i < st.n; ++i) {
      MobileNetSpec::Block b;
      b.in = in;
      b.hidden = in * st.t;  // int(round(inp * t)) for an integer t
      b.out = st.c;
      b.stride = i == 0 ? st.s : 1;
      b.expand = st.t != 1;
      spec->blocks.push_back(b);
      in = st.c;
    }
  return true;
}

MobileNetSpec mobilenet_spec_from_weights(const weights::StateDict& sd, const std::string& source) {
  // The block strides are not in the weights: the layout is torchvision's mobilenet_v2, and
  // every tensor is then checked against it by name and shape (a missing, extra or
  // mis-shaped one is reported by the binder).
  MobileNetSpec s;
  mobilenet_spec_from_name("mobilenet_v2", &s);
  auto it = sd.find("classifier.1.weight");
  if (it != sd.end() && it->second.ndim() == 2) s.num_classes = int(it->second.dim(0));
  (void)source;
  return s;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> mobilenet_tensors(const MobileNetSpec& s) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> t;
  auto bn = [&](const std::string& p, int c) {
    for (const char* f : {".weight", ".bias", ".running_mean", ".running_var"}) t.push_back({p + f, {c}});
    t.push_back({p + ".num_batches_tracked", {}});
  };
  t.push_back({"features.0.0.weight", {s.stem, 3, 3, 3}});
  bn("features.0.1", s.stem);
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const MobileNetSpec::Block& b = s.blocks[i];
    const std::string P = feature(int(i) + 1) + ".conv.";
    int j = 0;
    if (b.expand) {
      t.push_back({P + "0.0.weight", {b.hidden, b.in, 1, 1}});
      bn(P + "0.1", b.hidden);
      j = 1;
    }
    t.push_back({P + std::to_string(j) + ".0.weight", {b.hidden, 1, 3, 3}});
    bn(P + std::to_string(j) + ".1", b.hidden);
    t.push_back({P + std::to_string(j + 1) + ".weight", {b.out, b.hidden, 1, 1}});
    bn(P + std::to_string(j + 2), b.out);
  }
  const std::string L = feature(int(s.blocks.size()) + 1);
  const int in = s.blocks.empty() ? s.stem : s.blocks.back().out;
  t.push_back({L + ".0.weight", {s.last, in, 1, 1}});
  bn(L + ".1", s.last);
  t.push_back({"classifier.1.weight", {s.num_classes, s.last}});
  t.push_back({"classifier.1.bias", {s.num_classes}});
  return t;
}

std::unique_ptr<Model> build_mobilenet(const MobileNetSpec& s, WeightBinder& binder) {
  auto m = std::make_unique<MobileNetV2>();
  m->stem = make_conv(binder, "features.0.0", "features.0.1", 3, s.stem, 3, 2, 1, 1, false, 0);
  for (size_t i = 0; i < s.blocks.size(); ++i) {
    const MobileNetSpec::Block& b = s.blocks[i];
    const std::string P = feature(int(i) + 1) + ".conv.";
    Block blk;
    int j = 0;
    if (b.expand) {
      blk.expand = make_conv(binder, P + "0.0", P + "0.1", b.in, b.hidden, 1, 1, 0, 1, false, 0);
      blk.has_expand = true;
      j = 1;
    }
    const std::string D = P + std::to_string(j);
    blk.depthwise = make_conv(binder, D + ".0", D + ".1", b.hidden, b.hidden, 3, b.stride, 1, b.hidden, false, 0);
    blk.project = make_conv(binder, P + std::to_string(j + 1), P + std::to_string(j + 2), b.hidden, b.out, 1, 1, 0, 1,
                            false, 0);
    blk.residual = b.stride == 1 && b.in == b.out;
    m->blocks.push_back(std::move(blk));
  }
  const std::string L = feature(int(s.blocks.size()) + 1);
  const int in = s.blocks.empty() ? s.stem : s.blocks.back().out;
  m->last = make_conv(binder, L + ".0", L + ".1", in, s.last, 1, 1, 0, 1, false, 0);
  m->classifier.weight = binder.take("classifier.1.weight", {s.num_classes, s.last});
  m->classifier.bias = binder.take("classifier.1.bias", {s.num_classes});
  binder.finish();
  m->finalize(s.name, s.num_classes);
  return m;
}

}  // namespace pg::nn
