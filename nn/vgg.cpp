// torchvision VGG (configurations A, B, D, E, with or without BatchNorm) built from a
// state dict.
#include <algorithm>
#include <cmath>
#include <map>

#include "nn/builders.h"
#include "core/error.h"
#include "nn/model.h"

namespace pg::nn {

namespace {

struct Feature {
  bool is_pool = false;
  Conv2d conv;
};

class VGG : public Model {
 public:
  std::vector<Feature> features;
  MaxPool2d pool{2, 2, 0, false};
  int avg = 7;
  std::vector<Linear> classifier;

  void finalize(const std::string& arch, int classes) {
    arch_ = arch;
    num_classes_ = classes;
    convs_.clear();
    for (auto& f : features)
      if (!f.is_pool) {
        f.conv.bind_site();
        f.conv.site.index = int(convs_.size());
        convs_.push_back(&f.conv);
      }
  }

  ag::Var forward(Context& ctx, const ag::Var& x) const override {
    ag::Var h = x;
    for (size_t i = 0; i < features.size(); ++i) {
      const Feature& f = features[i];
      // Grad-CAM's feature: the last ReLU output, before the final max-pool.
      if (ctx.capture_feature && f.is_pool && i + 1 == features.size()) ctx.feature = h;
      h = f.is_pool ? pool.forward(ctx, h) : relu(ctx, f.conv.forward(ctx, h));
    }
    if (ctx.capture_feature && !features.back().is_pool) ctx.feature = h;
    h = flatten(ctx, adaptive_avgpool(ctx, h, avg, avg));
    for (size_t i = 0; i < classifier.size(); ++i) {
      h = classifier[i].forward(ctx, h);
      if (i + 1 < classifier.size()) h = relu(ctx, h);  // Dropout is the identity at inference
    }
    return h;
  }
};

const std::map<std::string, std::vector<int>>& cfgs() {
  static const std::map<std::string, std::vector<int>> c = {
      {"vgg11", {64, -1, 128, -1, 256, 256, -1, 512, 512, -1, 512, 512, -1}},
      {"vgg13", {64, 64, -1, 128, 128, -1, 256, 256, -1, 512, 512, -1, 512, 512, -1}},
      {"vgg16", {64, 64, -1, 128, 128, -1, 256, 256, 256, -1, 512, 512, 512, -1, 512, 512, 512, -1}},
      {"vgg19", {64, 64, -1, 128, 128, -1, 256, 256, 256, 256, -1, 512, 512, 512, 512, -1, 512, 512, 512, 512, -1}},
  };
  return c;
}

}  // namespace

bool vgg_spec_from_name(const std::string& name, VGGSpec* spec) {
  std::string base = name;
  bool bn = false;
  if (base.size() > 3 && base.compare(base.size() - 3, 3, "_bn") == 0) {
    bn = true;
    base.resize(base.size() - 3);
  }
  auto it = cfgs().find(base);
  if (it == cfgs().end()) return false;
  spec->name = name;
  spec->cfg = it->second;
  spec->batch_norm = bn;
  spec->pool = 7;
  spec->hidden = {4096, 4096};
  return true;
}

VGGSpec vgg_spec_from_weights(const weights::StateDict& sd, const std::string& source) {
  auto key = [](const std::string& part, int i, const char* field) {
    return part + "." + std::to_string(i) + "." + field;
  };
  auto is_conv = [&](int i) {
    auto it = sd.find(key("features", i, "weight"));
    return it != sd.end() && it->second.ndim() == 4;
  };
  VGGSpec s;
  s.batch_norm = sd.count(key("features", 1, "running_mean")) > 0;
  if (!is_conv(0)) throw file_error(source, "missing tensor 'features.0.weight' (a torchvision VGG needs it)");
  int i = 0, last = 3;
  while (true) {
    last = int(sd.at(key("features", i, "weight")).dim(0));
    s.cfg.push_back(last);
    i += s.batch_norm ? 3 : 2;  // conv, [bn], relu
    if (is_conv(i)) continue;
    s.cfg.push_back(-1);         // max-pool
    if (is_conv(i + 1)) {
      i += 1;
      continue;
    }
    break;
  }
  std::vector<int> lin;
  for (int j = 0; j < 64; ++j)
    if (sd.count(key("classifier", j, "weight"))) lin.push_back(j);
  if (lin.empty()) throw file_error(source, "missing tensor 'classifier.0.weight' (a torchvision VGG needs it)");
  const Tensor& first = sd.at(key("classifier", lin[0], "weight"));
  if (first.ndim() != 2) throw file_error(source, "tensor 'classifier.0.weight' has shape " + first.shape_str());
  const int64_t area = first.dim(1) / std::max(last, 1);
  const int pool = int(std::lround(std::sqrt(double(area))));
  if (int64_t(pool) * pool * last != first.dim(1))
    throw file_error(source, "tensor 'classifier.0.weight' has " + std::to_string(first.dim(1)) +
                                 " inputs, not channels x a square pool (" + std::to_string(last) + " channels)");
  s.pool = pool;
  for (size_t j = 0; j + 1 < lin.size(); ++j) s.hidden.push_back(int(sd.at(key("classifier", lin[j], "weight")).dim(0)));
  s.num_classes = int(sd.at(key("classifier", lin.back(), "weight")).dim(0));
  // Name it when it is a standard torchvision VGG.
  s.name = "vgg (custom)";
  for (const auto& kv : cfgs()) {
    VGGSpec k;
    vgg_spec_from_name(kv.first + (s.batch_norm ? "_bn" : ""), &k);
    const size_t nconv = std::count_if(k.cfg.begin(), k.cfg.end(), [](int v) { return v > 0; });
    const size_t sconv = std::count_if(s.cfg.begin(), s.cfg.end(), [](int v) { return v > 0; });
    if (k.cfg == s.cfg && k.pool == s.pool && k.hidden == s.hidden) {
      s.name = k.name;
    } else if (nconv == sconv && s.cfg[0] == 64 && lin.size() == 3) {
      // Standard layout with a wrong shape somewhere: check against the standard shapes.
      k.num_classes = s.num_classes;
      return k;
    }
  }
  return s;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> vgg_tensors(const VGGSpec& s) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> t;
  int i = 0, in = 3;
  for (int v : s.cfg) {
    if (v < 0) {
      i += 1;
      continue;
    }
    const std::string P = "features." + std::to_string(i);
    t.push_back({P + ".weight", {v, in, 3, 3}});
    t.push_back({P + ".bias", {v}});
    if (s.batch_norm) {
      const std::string B = "features." + std::to_string(i + 1);
      for (const char* f : {".weight", ".bias", ".running_mean", ".running_var"}) t.push_back({B + f, {v}});
      t.push_back({B + ".num_batches_tracked", {}});
    }
    in = v;
    i += s.batch_norm ? 3 : 2;
  }
  int64_t features = int64_t(in) * s.pool * s.pool;
  int j = 0;
  for (int h : s.hidden) {
    t.push_back({"classifier." + std::to_string(j) + ".weight", {h, features}});
    t.push_back({"classifier." + std::to_string(j) + ".bias", {h}});
    features = h;
    j += 3;  // Linear, ReLU, Dropout
  }
  t.push_back({"classifier." + std::to_string(j) + ".weight", {s.num_classes, features}});
  t.push_back({"classifier." + std::to_string(j) + ".bias", {s.num_classes}});
  return t;
}

std::unique_ptr<Model> build_vgg(const VGGSpec& s, WeightBinder& binder) {
  auto m = std::make_unique<VGG>();
  int i = 0, in = 3;
  for (int v : s.cfg) {
    Feature f;
    if (v < 0) {
      f.is_pool = true;
      i += 1;
    } else {
      const std::string P = "features." + std::to_string(i);
      f.conv = make_conv(binder, P, s.batch_norm ? "features." + std::to_string(i + 1) : "", in, v, 3, 1, 1, 1, true, 0);
      in = v;
      i += s.batch_norm ? 3 : 2;
    }
    m->features.push_back(std::move(f));
  }
  m->avg = s.pool;
  int64_t features = int64_t(in) * s.pool * s.pool;
  std::vector<int> widths = s.hidden;
  widths.push_back(s.num_classes);
  for (size_t j = 0; j < widths.size(); ++j) {
    const std::string P = "classifier." + std::to_string(3 * j);
    Linear l;
    l.weight = binder.take(P + ".weight", {widths[j], features});
    l.bias = binder.take(P + ".bias", {widths[j]});
    m->classifier.push_back(l);
    features = widths[j];
  }
  binder.finish();
  m->finalize(s.name, s.num_classes);
  return m;
}

}  // namespace pg::nn
