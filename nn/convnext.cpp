// torchvision ConvNeXt built from a state dict: features.0 (4x4 stride-4 conv with bias,
// LayerNorm2d), then per stage s its CNBlocks (features.{2s+1}.B) and, between stages, a
// downsample (features.{2s+2}: LayerNorm2d, 2x2 stride-2 conv with bias); global average pool;
// classifier (LayerNorm2d, Flatten, Linear). A CNBlock: the 7x7 depthwise conv (pad 3, bias),
// LayerNorm over the channels (torchvision permutes to NHWC and normalises the last dimension:
// the same numbers), Linear(C, 4C), exact GELU, Linear(4C, C), the layer scale, stochastic depth
// (the identity in evaluation), plus the input. Every LayerNorm has eps 1e-6.
//
// The two Linear layers act on each (n, h, w) alone, so on NCHW they are 1x1 convolutions and
// run on the conv kernels; they are not Conv2d modules, so they are built with hookable = false
// and left out of convs() (ParchGrad's ratio:R, `stats`). The layer scale gamma is folded into
// the second Linear at load (weight[c, :] * gamma[c], bias[c] * gamma[c], products in double
// rounded once): PyTorch rounds the Linear's output, then its product with gamma; the folded
// form rounds once.
#include <cmath>

#include "core/error.h"
#include "nn/builders.h"
#include "nn/model.h"

namespace pg::nn {

namespace {

struct Block {
  Conv2d dw;        // block.0: depthwise 7x7, a Conv2d module
  LayerNorm2d ln;   // block.2
  Conv2d fc1, fc2;  // block.3, block.5 (fc2 with the layer scale folded in), as 1x1 convs
};

struct Downsample {
  LayerNorm2d ln;  // features.{2s+2}.0
  Conv2d conv;     // features.{2s+2}.1: 2x2 stride 2
};

class ConvNeXt : public Model {
 public:
  Conv2d stem;
  LayerNorm2d stem_ln;
  std::vector<std::vector<Block>> stages;
  std::vector<Downsample> downs;  // after stage s, for s < stages - 1
  LayerNorm2d head_ln;
  Linear fc;

  // The Conv2d modules in torchvision's module order (the order ParchGrad's ratio counts in):
  // features.0.0, each block's depthwise conv, stage by stage, each downsample conv between.
  void finalize(const std::string& arch, int classes) {
    begin_convs(arch, classes);
    auto push = [&](Conv2d& c) { push_conv(c); };
    push(stem);
    for (size_t s = 0; s < stages.size(); ++s) {
      for (Block& b : stages[s]) {
        push(b.dw);
        b.fc1.bind_site();
        b.fc2.bind_site();
      }
      if (s < downs.size()) push(downs[s].conv);
    }
  }

  ag::Var forward(Context& ctx, const ag::Var& x) const override {
    ag::Var h = stem_ln.forward(ctx, stem.forward(ctx, x));
    for (size_t s = 0; s < stages.size(); ++s) {
      for (const Block& b : stages[s]) {
        ag::Var o = b.ln.forward(ctx, b.dw.forward(ctx, h));
        o = b.fc2.forward(ctx, gelu(ctx, b.fc1.forward(ctx, o)));
        h = add(ctx, o, h);
      }
      if (s < downs.size()) h = downs[s].conv.forward(ctx, downs[s].ln.forward(ctx, h));
    }
    // Grad-CAM's default layer, as pytorch-grad-cam takes it for torchvision models with
    // `features`: model.features[-1], the last stage's output.
    if (ctx.capture_feature) ctx.feature = h;
    h = head_ln.forward(ctx, adaptive_avgpool(ctx, h, 1, 1));
    return fc.forward(ctx, flatten(ctx, h));
  }
};

struct Standard {
  const char* name;
  int dims[4];
  int depths[4];
};
const Standard kStandard[] = {{"convnext_tiny", {96, 192, 384, 768}, {3, 3, 9, 3}},
                              {"convnext_small", {96, 192, 384, 768}, {3, 3, 27, 3}},
                              {"convnext_base", {128, 256, 512, 1024}, {3, 3, 27, 3}},
                              {"convnext_large", {192, 384, 768, 1536}, {3, 3, 27, 3}}};

std::string feature(int i) { return "features." + std::to_string(i); }
std::string block(int s, int b) { return feature(2 * s + 1) + "." + std::to_string(b) + "."; }

LayerNorm2d make_ln(WeightBinder& binder, const std::string& name, int c) {
  LayerNorm2d ln;
  ln.name = name;
  ln.weight = binder.take(name + ".weight", {c});
  ln.bias = binder.take(name + ".bias", {c});
  ln.eps = 1e-6;
  return ln;
}

// nn.Linear(in, out) on NHWC as a 1x1 conv on NCHW; gamma ([out, 1, 1] tensor, or empty) is
// the layer scale folded into it.
Conv2d make_pointwise(WeightBinder& binder, const std::string& name, int in, int out, const Tensor& gamma) {
  Conv2d c;
  c.site.name = name;
  c.site.index = -1;
  c.hookable = false;
  c.in_channels = in;
  c.out_channels = out;
  Tensor w = binder.take(name + ".weight", {out, in});
  Tensor b = binder.take(name + ".bias", {out});
  if (gamma.empty()) {
    c.weight = w.reshape({out, in, 1, 1});
    c.bias = b;
  } else {
    c.weight = Tensor({out, in, 1, 1});
    c.bias = Tensor({out});
    for (int k = 0; k < out; ++k) {
      const double g = double(gamma[k]);
      for (int i = 0; i < in; ++i) c.weight[int64_t(k) * in + i] = float(double(w[int64_t(k) * in + i]) * g);
      c.bias[k] = float(double(b[k]) * g);
    }
  }
  return c;
}

// How many CNBlocks stage s has in the weights (block.0 weights numbered from 0).
int count_blocks(const weights::StateDict& sd, int s) {
  int n = 0;
  while (sd.count(block(s, n) + "block.0.weight")) ++n;
  return n;
}

}  // namespace

bool convnext_spec_from_name(const std::string& name, ConvNeXtSpec* spec) {
  for (const Standard& st : kStandard)
    if (name == st.name) {
      spec->name = name;
      spec->dims.assign(st.dims, st.dims + 4);
      spec->depths.assign(st.depths, st.depths + 4);
      return true;
    }
  return false;
}

ConvNeXtSpec convnext_spec_from_weights(const weights::StateDict& sd, const std::string& source) {
  // Stage s has blocks features.{2s+1}.B and a width read from its first depthwise conv; the
  // stages end where the numbering does. Every tensor is then checked by name and shape by the
  // binder against the spec, so a wrong width shows up as a mis-shaped tensor.
  ConvNeXtSpec s;
  for (int st = 0;; ++st) {
    const int n = count_blocks(sd, st);
    if (n == 0) break;
    const Tensor& w = sd.at(block(st, 0) + "block.0.weight");
    if (w.ndim() != 4 || w.dim(0) < 1)
      throw file_error(source, "'" + block(st, 0) + "block.0.weight' is " + w.shape_str() +
                                   ", expected a depthwise conv weight [C, 1, 7, 7]");
    s.dims.push_back(int(w.dim(0)));
    s.depths.push_back(n);
  }
  if (s.dims.empty())
    throw file_error(source, "no ConvNeXt blocks ('features.1.0.block.0.weight' is missing)");
  s.name = "convnext (custom)";
  for (const Standard& st : kStandard)
    if (s.dims == std::vector<int>(st.dims, st.dims + 4) && s.depths == std::vector<int>(st.depths, st.depths + 4))
      s.name = st.name;
  auto it = sd.find("classifier.2.weight");
  if (it != sd.end() && it->second.ndim() == 2) s.num_classes = int(it->second.dim(0));
  return s;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> convnext_tensors(const ConvNeXtSpec& s) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> t;
  auto ln = [&](const std::string& p, int c) {
    t.push_back({p + ".weight", {c}});
    t.push_back({p + ".bias", {c}});
  };
  const int S = int(s.dims.size());
  t.push_back({"features.0.0.weight", {s.dims[0], 3, 4, 4}});
  t.push_back({"features.0.0.bias", {s.dims[0]}});
  ln("features.0.1", s.dims[0]);
  for (int st = 0; st < S; ++st) {
    const int c = s.dims[size_t(st)];
    for (int b = 0; b < s.depths[size_t(st)]; ++b) {
      const std::string P = block(st, b);
      t.push_back({P + "layer_scale", {c, 1, 1}});
      t.push_back({P + "block.0.weight", {c, 1, 7, 7}});
      t.push_back({P + "block.0.bias", {c}});
      ln(P + "block.2", c);
      t.push_back({P + "block.3.weight", {4 * c, c}});
      t.push_back({P + "block.3.bias", {4 * c}});
      t.push_back({P + "block.5.weight", {c, 4 * c}});
      t.push_back({P + "block.5.bias", {c}});
    }
    if (st + 1 < S) {
      const std::string D = feature(2 * st + 2);
      ln(D + ".0", c);
      t.push_back({D + ".1.weight", {s.dims[size_t(st) + 1], c, 2, 2}});
      t.push_back({D + ".1.bias", {s.dims[size_t(st) + 1]}});
    }
  }
  ln("classifier.0", s.dims.back());
  t.push_back({"classifier.2.weight", {s.num_classes, s.dims.back()}});
  t.push_back({"classifier.2.bias", {s.num_classes}});
  return t;
}

std::unique_ptr<Model> build_convnext(const ConvNeXtSpec& s, WeightBinder& binder) {
  auto m = std::make_unique<ConvNeXt>();
  const int S = int(s.dims.size());
  m->stem = make_conv(binder, "features.0.0", "", 3, s.dims[0], 4, 4, 0, 1, true, 0);
  m->stem_ln = make_ln(binder, "features.0.1", s.dims[0]);
  for (int st = 0; st < S; ++st) {
    const int c = s.dims[size_t(st)];
    std::vector<Block> blocks;
    for (int b = 0; b < s.depths[size_t(st)]; ++b) {
      const std::string P = block(st, b);
      Block blk;
      blk.dw = make_conv(binder, P + "block.0", "", c, c, 7, 1, 3, c, true, 0);
      blk.ln = make_ln(binder, P + "block.2", c);
      blk.fc1 = make_pointwise(binder, P + "block.3", c, 4 * c, Tensor());
      const Tensor gamma = binder.take(P + "layer_scale", {c, 1, 1});
      blk.fc2 = make_pointwise(binder, P + "block.5", 4 * c, c, gamma);
      blocks.push_back(std::move(blk));
    }
    m->stages.push_back(std::move(blocks));
    if (st + 1 < S) {
      const std::string D = feature(2 * st + 2);
      Downsample d;
      d.ln = make_ln(binder, D + ".0", c);
      d.conv = make_conv(binder, D + ".1", "", c, s.dims[size_t(st) + 1], 2, 2, 0, 1, true, 0);
      m->downs.push_back(std::move(d));
    }
  }
  m->head_ln = make_ln(binder, "classifier.0", s.dims.back());
  m->fc.weight = binder.take("classifier.2.weight", {s.num_classes, s.dims.back()});
  m->fc.bias = binder.take("classifier.2.bias", {s.num_classes});
  binder.finish();
  m->finalize(s.name, s.num_classes);
  return m;
}

}  // namespace pg::nn
