// torchvision ResNet (BasicBlock and Bottleneck, the V1.5 form with the stride on the 3x3
// conv) built from a state dict.
#include <map>

#include "nn/builders.h"
#include "core/error.h"
#include "nn/model.h"

namespace pg::nn {

namespace {

struct Block {
  Conv2d conv1, conv2, conv3, down;
  bool has_conv3 = false, has_down = false;
};

class ResNet : public Model {
 public:
  Conv2d stem;
  MaxPool2d pool{3, 2, 1, false};
  std::vector<std::vector<Block>> stages;
  Linear fc;

  void finalize(const std::string& arch, int classes) {
    arch_ = arch;
    num_classes_ = classes;
    convs_.clear();
    stem.bind_site();
    convs_.push_back(&stem);
    for (auto& st : stages)
      for (auto& b : st) {
        for (Conv2d* c : {&b.conv1, &b.conv2, &b.conv3, &b.down}) {
          if ((c == &b.conv3 && !b.has_conv3) || (c == &b.down && !b.has_down)) continue;
          c->bind_site();
          convs_.push_back(c);
        }
      }
    for (size_t i = 0; i < convs_.size(); ++i) const_cast<Conv2d*>(convs_[i])->site.index = int(i);
  }

  ag::Var forward(Context& ctx, const ag::Var& x) const override {
    ag::Var h = relu(ctx, stem.forward(ctx, x));
    h = pool.forward(ctx, h);
    for (const auto& st : stages)
      for (const auto& b : st) {
        ag::Var o = relu(ctx, b.conv1.forward(ctx, h));
        if (b.has_conv3) {
          o = relu(ctx, b.conv2.forward(ctx, o));
          o = b.conv3.forward(ctx, o);
        } else {
          o = b.conv2.forward(ctx, o);
        }
        ag::Var identity = b.has_down ? b.down.forward(ctx, h) : h;
        h = relu(ctx, add(ctx, o, identity));
      }
    if (ctx.capture_feature) ctx.feature = h;
    h = adaptive_avgpool(ctx, h, 1, 1);
    return fc.forward(ctx, flatten(ctx, h));
  }

  std::vector<std::string> preset(const std::string& name) const override {
    if (name != "layer34") return {};
    std::vector<std::string> out;
    for (const Conv2d* c : convs_) {
      const std::string& n = c->site.name;
      if ((n.rfind("layer3.", 0) == 0 || n.rfind("layer4.", 0) == 0) && n.find("downsample") == std::string::npos)
        out.push_back(n);
    }
    return out;
  }
};

// torchvision's ResNet family: Bottleneck blocks have an inner width of
// int(planes * width_per_group / 64) * groups (planes = 64, 128, 256, 512 per stage), which is
// how ResNeXt (groups > 1) and Wide ResNet (width_per_group = 128) differ from ResNet.
struct Known {
  bool bottleneck;
  std::vector<int> blocks;
  int groups = 1, width_per_group = 64;
};
const std::map<std::string, Known>& known() {
  static const std::map<std::string, Known> k = {
      {"resnet18", {false, {2, 2, 2, 2}}},
      {"resnet34", {false, {3, 4, 6, 3}}},
      {"resnet50", {true, {3, 4, 6, 3}}},
      {"resnet101", {true, {3, 4, 23, 3}}},
      {"resnet152", {true, {3, 8, 36, 3}}},
      {"resnext50_32x4d", {true, {3, 4, 6, 3}, 32, 4}},
      {"resnext101_32x8d", {true, {3, 4, 23, 3}, 32, 8}},
      {"resnext101_64x4d", {true, {3, 4, 23, 3}, 64, 4}},
      {"wide_resnet50_2", {true, {3, 4, 6, 3}, 1, 128}},
      {"wide_resnet101_2", {true, {3, 4, 23, 3}, 1, 128}},
  };
  return k;
}

int stage_stride(int s) { return s == 0 ? 1 : 2; }

}  // namespace

bool resnet_spec_from_name(const std::string& name, ResNetSpec* spec) {
  auto it = known().find(name);
  if (it == known().end()) return false;
  spec->name = name;
  spec->bottleneck = it->second.bottleneck;
  spec->stem = 64;
  spec->blocks = it->second.blocks;
  spec->mid.clear();
  spec->out.clear();
  spec->groups.assign(4, it->second.groups);
  for (int s = 0; s < 4; ++s) {
    const int planes = 64 << s;
    spec->mid.push_back(planes * it->second.width_per_group / 64 * it->second.groups);
    spec->out.push_back(spec->bottleneck ? planes * 4 : planes);
  }
  return true;
}

ResNetSpec resnet_spec_from_weights(const weights::StateDict& sd, const std::string& source) {
  auto dim = [&](const std::string& name, int d) -> int {
    auto it = sd.find(name);
    if (it == sd.end()) throw file_error(source, "missing tensor '" + name + "' (a torchvision ResNet needs it)");
    if (it->second.ndim() <= d) throw file_error(source, "tensor '" + name + "' has shape " + it->second.shape_str());
    return int(it->second.dim(d));
  };
  ResNetSpec s;
  s.bottleneck = sd.count("layer1.0.conv3.weight") > 0;
  s.stem = dim("conv1.weight", 0);
  for (int st = 1; sd.count("layer" + std::to_string(st) + ".0.conv1.weight"); ++st) {
    const std::string L = "layer" + std::to_string(st);
    int b = 0;
    while (sd.count(L + "." + std::to_string(b) + ".conv1.weight")) ++b;
    s.blocks.push_back(b);
    const int mid = dim(L + ".0.conv1.weight", 0);
    s.mid.push_back(mid);
    s.out.push_back(dim(L + (s.bottleneck ? ".0.conv3.weight" : ".0.conv2.weight"), 0));
    const int per_group = dim(L + ".0.conv2.weight", 1);
    s.groups.push_back(per_group > 0 && mid % per_group == 0 ? mid / per_group : 1);
  }
  if (s.blocks.empty()) throw file_error(source, "missing tensor 'layer1.0.conv1.weight' (a torchvision ResNet needs it)");
  s.num_classes = dim("fc.weight", 0);
  // Name it when it is a standard torchvision ResNet, ResNeXt or Wide ResNet.
  s.name = "resnet (custom)";
  const ResNetSpec* nearest = nullptr;
  int nearest_score = -1;
  std::vector<ResNetSpec> standard;
  for (const auto& kv : known()) {
    standard.emplace_back();
    resnet_spec_from_name(kv.first, &standard.back());
  }
  for (const ResNetSpec& k : standard) {
    if (k.bottleneck != s.bottleneck || k.blocks != s.blocks) continue;
    if (k.stem == s.stem && k.mid == s.mid && k.out == s.out && k.groups == s.groups) {
      s.name = k.name;
      return s;
    }
    int score = 0;  // stages whose widths and groups match
    for (size_t st = 0; st < k.mid.size(); ++st)
      score += k.mid[st] == s.mid[st] && k.out[st] == s.out[st] && k.groups[st] == s.groups[st];
    if (score > nearest_score) nearest = &k, nearest_score = score;
  }
  if (nearest && s.stem == 64) {
    // A standard layout with a wrong width somewhere: check against the nearest standard
    // model's shapes so that the mis-shaped tensor is named.
    ResNetSpec k = *nearest;
    k.num_classes = s.num_classes;
    return k;
  }
  return s;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> resnet_tensors(const ResNetSpec& s) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> t;
  auto bn = [&](const std::string& p, int c) {
    for (const char* f : {".weight", ".bias", ".running_mean", ".running_var"}) t.push_back({p + f, {c}});
    t.push_back({p + ".num_batches_tracked", {}});
  };
  t.push_back({"conv1.weight", {s.stem, 3, 7, 7}});
  bn("bn1", s.stem);
  int in = s.stem;
  for (size_t st = 0; st < s.blocks.size(); ++st) {
    const int mid = s.mid[st], out = s.out[st], g = s.groups[st];
    for (int b = 0; b < s.blocks[st]; ++b) {
      const std::string P = "layer" + std::to_string(st + 1) + "." + std::to_string(b) + ".";
      const int stride = b == 0 ? stage_stride(int(st)) : 1;
      if (s.bottleneck) {
        t.push_back({P + "conv1.weight", {mid, in, 1, 1}});
        bn(P + "bn1", mid);
        t.push_back({P + "conv2.weight", {mid, mid / g, 3, 3}});
        bn(P + "bn2", mid);
        t.push_back({P + "conv3.weight", {out, mid, 1, 1}});
        bn(P + "bn3", out);
      } else {
        t.push_back({P + "conv1.weight", {mid, in, 3, 3}});
        bn(P + "bn1", mid);
        t.push_back({P + "conv2.weight", {out, mid, 3, 3}});
        bn(P + "bn2", out);
      }
      if (b == 0 && (stride != 1 || in != out)) {
        t.push_back({P + "downsample.0.weight", {out, in, 1, 1}});
        bn(P + "downsample.1", out);
      }
      in = out;
    }
  }
  t.push_back({"fc.weight", {s.num_classes, in}});
  t.push_back({"fc.bias", {s.num_classes}});
  return t;
}

std::unique_ptr<Model> build_resnet(const ResNetSpec& s, WeightBinder& binder) {
  auto m = std::make_unique<ResNet>();
  m->stem = make_conv(binder, "conv1", "bn1", 3, s.stem, 7, 2, 3, 1, false, 0);
  int in = s.stem;
  for (size_t st = 0; st < s.blocks.size(); ++st) {
    const int mid = s.mid[st], out = s.out[st], g = s.groups[st];
    std::vector<Block> blocks;
    for (int b = 0; b < s.blocks[st]; ++b) {
      const std::string P = "layer" + std::to_string(st + 1) + "." + std::to_string(b) + ".";
      const int stride = b == 0 ? stage_stride(int(st)) : 1;
      Block blk;
      if (s.bottleneck) {
        blk.conv1 = make_conv(binder, P + "conv1", P + "bn1", in, mid, 1, 1, 0, 1, false, 0);
        blk.conv2 = make_conv(binder, P + "conv2", P + "bn2", mid, mid, 3, stride, 1, g, false, 0);
        blk.conv3 = make_conv(binder, P + "conv3", P + "bn3", mid, out, 1, 1, 0, 1, false, 0);
        blk.has_conv3 = true;
      } else {
        blk.conv1 = make_conv(binder, P + "conv1", P + "bn1", in, mid, 3, stride, 1, 1, false, 0);
        blk.conv2 = make_conv(binder, P + "conv2", P + "bn2", mid, out, 3, 1, 1, 1, false, 0);
      }
      if (b == 0 && (stride != 1 || in != out)) {
        blk.down = make_conv(binder, P + "downsample.0", P + "downsample.1", in, out, 1, stride, 0, 1, false, 0);
        blk.has_down = true;
      }
      blocks.push_back(std::move(blk));
      in = out;
    }
    m->stages.push_back(std::move(blocks));
  }
  m->fc.weight = binder.take("fc.weight", {s.num_classes, in});
  m->fc.bias = binder.take("fc.bias", {s.num_classes});
  binder.finish();
  m->finalize(s.name, s.num_classes);
  return m;
}

}  // namespace pg::nn
