#include "parchgrad/methods.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/params.h"

#include "kernels/cpu/maps.h"
#include "core/error.h"
#include "nn/backend.h"

namespace pg {

Method parse_method(const std::string& name) {
  if (name == "grad") return Method::Grad;
  if (name == "inputgrad") return Method::InputGrad;
  if (name == "ig") return Method::IG;
  if (name == "smoothgrad") return Method::SmoothGrad;
  if (name == "gradcam") return Method::GradCAM;
  throw Error("--method: unknown method '" + name + "' (grad, inputgrad, ig, smoothgrad, gradcam)");
}

const char* method_name(Method m) {
  switch (m) {
    case Method::Grad: return "grad";
    case Method::InputGrad: return "inputgrad";
    case Method::IG: return "ig";
    case Method::SmoothGrad: return "smoothgrad";
    case Method::GradCAM: return "gradcam";
  }
  return "?";
}

Tensor upsample_bilinear(const Tensor& maps, int H, int W) {
  const int64_t N = maps.dim(0), h = maps.dim(1), w = maps.dim(2);
  Tensor out({N, H, W});
  auto src = [](int dst, int64_t in, int outn, int64_t* i0, int64_t* i1, float* lam) {
    const float scale = float(in) / float(outn);
    float s = scale * (float(dst) + 0.5f) - 0.5f;
    if (s < 0) s = 0;
    *i0 = std::min<int64_t>(int64_t(s), in - 1);
    *i1 = *i0 < in - 1 ? *i0 + 1 : *i0;
    *lam = s - float(*i0);
  };
  for (int64_t n = 0; n < N; ++n)
    for (int y = 0; y < H; ++y) {
      int64_t y0, y1;
      float ly;
      src(y, h, H, &y0, &y1, &ly);
      for (int x = 0; x < W; ++x) {
        int64_t x0, x1;
        float lx;
        src(x, w, W, &x0, &x1, &lx);
        const float* m = maps.data() + n * h * w;
        out[(n * H + y) * W + x] = (1 - ly) * ((1 - lx) * m[y0 * w + x0] + lx * m[y0 * w + x1]) +
                                   ly * ((1 - lx) * m[y1 * w + x0] + lx * m[y1 * w + x1]);
      }
    }
  return out;
}

namespace {

// ---------------------------------------------------------------------------------------
// Grad-CAM's target layer. The models capture one feature themselves (ctx.feature: ResNet's
// last block, VGG's last ReLU). Any other layer is found by running the model's forward up
// to it, module by module, with the model's own layers in the order its forward calls them:
// the value there is that layer's output, and since every op numbers its output on the tape
// in call order, the value's tape id is the id the same value gets in the full forward, whose
// backward then keeps that id's gradient (BackwardOptions::feature_id). The walk below is the
// forward of nn/resnet.cpp and nn/vgg.cpp, read from the conv names (torchvision's module
// names); tests/unit/test_methods.cpp holds it to the models' own capture.

// One layer output Grad-CAM can take, in forward order.
struct CamPoint {
  std::string name;
  int conv = -1;           // the conv it is the output of (raw or BatchNorm-folded), else -1
  bool raw = false;        // the raw conv output (the conv is followed by a folded BatchNorm)
  std::vector<int> above;  // convs whose input depends on this output (indices into convs())
  int alias_of = -1;       // the point it equals (ResNet's layerS is its last block), else -1
};

// A conv name's parts: "layer4.0.conv2" -> {"layer4.0", "conv2"}.
bool split_block(const std::string& name, std::string* block, std::string* part) {
  const size_t a = name.find('.');
  const size_t b = a == std::string::npos ? std::string::npos : name.find('.', a + 1);
  if (name.rfind("layer", 0) != 0 || b == std::string::npos) return false;
  *block = name.substr(0, b);
  *part = name.substr(b + 1);
  return true;
}

int features_index(const std::string& name) {
  if (name.rfind("features.", 0) != 0) return -1;
  const std::string i = name.substr(9);
  if (i.empty() || i.size() > 6 || !std::all_of(i.begin(), i.end(), [](unsigned char c) { return std::isdigit(c); }))
    return -1;
  return std::stoi(i);
}

bool has_bn(const nn::Conv2d* c) { return c->site.bn_scale != nullptr; }

// Walks the model's forward in call order and lists its layer points. With ctx, runs it on
// x (whose tape id must be the tape's first) and stops at point `stop`, returning its value in
// *out; without, only lists. Throws for a conv layout that is not torchvision's.
std::vector<CamPoint> walk(const nn::Model& model, nn::Context* ctx, const ag::Var& x, int stop, ag::Var* out) {
  const auto& convs = model.convs();
  const int n_convs = int(convs.size());
  const bool go = ctx != nullptr;
  std::vector<CamPoint> pts;
  auto from = [&](int first, std::vector<int> d = {}) {
    for (int i = first; i < n_convs; ++i) d.push_back(i);
    return d;
  };
  // Records a point; true when it is the one to stop at.
  auto at = [&](CamPoint p, const ag::Var& v) {
    pts.push_back(std::move(p));
    if (go && int(pts.size()) - 1 == stop) {
      *out = v;
      return true;
    }
    return false;
  };
  // A conv's output points: its raw output and its BatchNorm's, or its output.
  auto conv_points = [&](int c, const std::string& bn_name, const std::vector<int>& above, const ag::Var& v) {
    if (has_bn(convs[size_t(c)]) && at({convs[size_t(c)]->site.name, c, true, above}, v)) return true;
    return at({has_bn(convs[size_t(c)]) ? bn_name : convs[size_t(c)]->site.name, c, false, above}, v);
  };
  auto bad_layout = [&]() {
    return Error("Grad-CAM layers: the convs of " + model.arch() + " are not laid out as torchvision's");
  };
  if (n_convs == 0) throw bad_layout();
  ag::Var h = x;
  if (convs[0]->site.name == "conv1") {
    // ResNet: the stem, then blocks "layerS.B" of conv1, conv2[, conv3][, downsample.0].
    struct Block {
      std::string name;
      std::vector<int> path;  // conv1, conv2[, conv3]
      int down = -1;
    };
    std::vector<Block> blocks;
    for (int i = 1; i < n_convs; ++i) {
      std::string block, part;
      if (!split_block(convs[size_t(i)]->site.name, &block, &part)) throw bad_layout();
      if (blocks.empty() || blocks.back().name != block) blocks.push_back({block, {}, -1});
      Block& b = blocks.back();
      const std::string want = "conv" + std::to_string(b.path.size() + 1);
      if (part == want && b.down < 0) b.path.push_back(i);
      else if (part == "downsample.0" && b.down < 0 && b.path.size() >= 2) b.down = i;
      else throw bad_layout();
    }
    for (const auto& b : blocks)
      if (b.path.size() < 2) throw bad_layout();
    if (go) h = convs[0]->forward(*ctx, h);
    if (conv_points(0, "bn1", from(1), h)) return pts;
    if (go) h = nn::relu(*ctx, h);
    if (at({"relu", -1, false, from(1)}, h)) return pts;
    if (go) h = nn::MaxPool2d{3, 2, 1, false}.forward(*ctx, h);
    if (at({"maxpool", -1, false, from(1)}, h)) return pts;
    for (size_t bi = 0; bi < blocks.size(); ++bi) {
      const Block& b = blocks[bi];
      const int next = std::max(b.path.back(), b.down) + 1;  // the next block's first conv
      auto bn_of = [](const std::string& conv) {
        const std::string part = conv.substr(conv.rfind('.') + 1);
        return part == "0" ? conv.substr(0, conv.size() - 1) + "1" : conv.substr(0, conv.size() - part.size()) + "bn" + part.substr(4);
      };
      ag::Var o = h;
      for (size_t k = 0; k < b.path.size(); ++k) {
        const int c = b.path[k];
        if (go) o = convs[size_t(c)]->forward(*ctx, o);
        // Above a path conv: the rest of the path, then every later block.
        if (conv_points(c, bn_of(convs[size_t(c)]->site.name), from(next, std::vector<int>(b.path.begin() + long(k) + 1, b.path.end())), o))
          return pts;
        if (k + 1 < b.path.size() && go) o = nn::relu(*ctx, o);
      }
      ag::Var identity = h;
      if (b.down >= 0) {
        if (go) identity = convs[size_t(b.down)]->forward(*ctx, h);
        if (conv_points(b.down, bn_of(convs[size_t(b.down)]->site.name), from(next), identity)) return pts;
      }
      if (go) h = nn::relu(*ctx, nn::add(*ctx, o, identity));
      const int block_point = int(pts.size());
      if (at({b.name, -1, false, from(next)}, h)) return pts;
      const std::string stage = b.name.substr(0, b.name.find('.'));
      if (bi + 1 == blocks.size() || blocks[bi + 1].name.rfind(stage + ".", 0) != 0) {
        CamPoint alias{stage, -1, false, from(next)};
        alias.alias_of = block_point;
        if (at(alias, h)) return pts;
      }
    }
    return pts;
  }
  // VGG: features.I, each conv [BatchNorm] ReLU, a max-pool where the numbering skips one,
  // and always one after the last conv.
  for (int c = 0; c < n_convs; ++c) {
    const int i = features_index(convs[size_t(c)]->site.name);
    const int relu_i = i + (has_bn(convs[size_t(c)]) ? 2 : 1);
    const int next_i = c + 1 < n_convs ? features_index(convs[size_t(c + 1)]->site.name) : relu_i + 2;
    if (i < 0 || (next_i != relu_i + 1 && next_i != relu_i + 2)) throw bad_layout();
    if (go) h = convs[size_t(c)]->forward(*ctx, h);
    if (conv_points(c, "features." + std::to_string(i + 1), from(c + 1), h)) return pts;
    if (go) h = nn::relu(*ctx, h);
    if (at({"features." + std::to_string(relu_i), -1, false, from(c + 1)}, h)) return pts;
    if (next_i == relu_i + 2) {
      if (go) h = nn::MaxPool2d{2, 2, 0, false}.forward(*ctx, h);
      if (at({"features." + std::to_string(relu_i + 1), -1, false, from(c + 1)}, h)) return pts;
    }
  }
  return pts;
}

// The point the model captures itself: ResNet's last block (the last point is its stage's
// alias), VGG's last ReLU (the last point is the final max-pool).
int default_point(const std::vector<CamPoint>& pts) { return int(pts.size()) - 2; }

bool is_resnet(const nn::Model& model) { return !model.convs().empty() && model.convs()[0]->site.name == "conv1"; }

int find_point(const nn::Model& model, const std::vector<CamPoint>& pts, const std::string& name) {
  for (size_t i = 0; i < pts.size(); ++i)
    if (pts[i].name == name) return int(i);
  std::string known;
  if (is_resnet(model)) {
    known = "conv1, bn1, relu, maxpool, a stage (layer1 ...), a block (layer1.0 ...) or a module in a block (layer1.0.conv1, "
            "layer1.0.bn1, layer1.0.downsample.0, ...)";
  } else {
    known = "features.0 ... " + pts.back().name;
  }
  throw Error("--gradcam-layer: '" + name + "' is not a layer of " + model.arch() + " (" + known + "; default: " +
              pts[size_t(default_point(pts))].name + ")");
}

// The value of point `p` for the batch x and its tape id in a forward from the tape's start.
struct CamCapture {
  Tensor value;  // host; the raw conv output for a raw point
  int id = -1;
  const nn::Conv2d* raw_conv = nullptr;  // set for a raw point: the gradient is converted too
};

CamCapture capture_point(const nn::Model& model, nn::Context& ctx, const Tensor& x, int p) {
  ag::Tape tape(nn::add_gradients);
  ag::Tape* saved_tape = ctx.tape;
  ag::ConvHook* saved_hook = ctx.hook;
  const bool saved_capture = ctx.capture_feature;
  ctx.tape = &tape;
  ctx.hook = nullptr;
  ctx.capture_feature = false;
  auto restore = [&]() {
    ctx.tape = saved_tape;
    ctx.hook = saved_hook;
    ctx.capture_feature = saved_capture;
  };
  CamCapture cap;
  try {
    ag::Var in{ctx.device == Device::cuda ? x.to(Device::cuda) : x, tape.new_value()};
    ag::Var v;
    const std::vector<CamPoint> pts = walk(model, &ctx, in, p, &v);
    if (v.id < 0) throw Error("internal error: Grad-CAM layer " + pts.back().name + " not reached");
    cap.value = v.value.to(Device::cpu);
    cap.id = v.id;
    const CamPoint& cp = pts[size_t(p)];
    if (cp.raw) {
      // y = scale * y_raw + shift (BatchNorm folded): y_raw = (y - shift) / scale, as the
      // conv epilogue computes the GAP.
      const nn::Conv2d* conv = model.convs()[size_t(cp.conv)];
      cap.raw_conv = conv;
      cap.value = cap.value.clone();
      const int64_t N = cap.value.dim(0), K = cap.value.dim(1), PQ = cap.value.dim(2) * cap.value.dim(3);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
          float* a = cap.value.data() + (n * K + k) * PQ;
          for (int64_t i = 0; i < PQ; ++i) a[i] = (a[i] - conv->site.bn_shift[k]) / conv->site.bn_scale[k];
        }
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return cap;
}

// Grad-CAM at `layer` (empty: the default): for a layer the model does not capture itself (or
// any with walk_default), its value from a forward up to it and b.feature_id set so that the
// full pass keeps its gradient; for the model's own layer nothing (capture.id = -1).
CamCapture prepare_cam(const nn::Model& model, nn::Context& ctx, const Tensor& x, const std::string& layer,
                       bool walk_default, BackwardOptions& b) {
  b.capture_feature = true;
  CamCapture cap;
  if (layer.empty() && !walk_default) return cap;  // the model's own: no walk needed
  const std::vector<CamPoint> pts = walk(model, nullptr, {}, -1, nullptr);
  int p = layer.empty() ? default_point(pts) : find_point(model, pts, layer);
  if (pts[size_t(p)].alias_of >= 0) p = pts[size_t(p)].alias_of;
  if (p != default_point(pts) || walk_default) {
    cap = capture_point(model, ctx, x, p);
    b.feature_id = cap.id;
  }
  return cap;
}

// Puts the captured value and its gradient (converted for a raw conv output) into rs.
void finish_cam(const CamCapture& cap, const std::string& layer, std::vector<GradientResult>& rs) {
  if (cap.id < 0) return;
  for (GradientResult& r : rs) {
    r.feature = cap.value;
    if (r.feature_grad.empty()) r.feature_grad = Tensor::zeros(cap.value.shape());
    if (r.feature_grad.shape() != cap.value.shape())
      throw Error("internal error: Grad-CAM layer " + layer + ": gradient " + r.feature_grad.shape_str() +
                  " for a value " + cap.value.shape_str());
    if (cap.raw_conv) {
      // dL/dy_raw = dL/dy * scale.
      r.feature_grad = r.feature_grad.clone();
      const int64_t N = r.feature_grad.dim(0), K = r.feature_grad.dim(1), PQ = r.feature_grad.dim(2) * r.feature_grad.dim(3);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
          float* g = r.feature_grad.data() + (n * K + k) * PQ;
          for (int64_t i = 0; i < PQ; ++i) g[i] *= cap.raw_conv->site.bn_scale[k];
        }
    }
  }
}

}  // namespace

CamInputs gradcam_inputs(const nn::Model& model, nn::Context& ctx, const Tensor& x, const std::vector<int>& targets,
                         const std::string& layer, ag::ConvHook* hook, bool walk_default) {
  BackwardOptions b;
  b.hook = hook;
  b.keep_grad = false;
  const CamCapture cap = prepare_cam(model, ctx, x, layer, walk_default, b);
  std::vector<GradientResult> rs = input_gradients(model, ctx, x, {targets}, b);
  finish_cam(cap, layer, rs);
  return {rs[0].feature, rs[0].feature_grad};
}

CamLayer resolve_cam_layer(const nn::Model& model, const std::string& name) {
  std::vector<CamPoint> pts;
  try {
    pts = walk(model, nullptr, {}, -1, nullptr);
  } catch (const Error&) {
    // A model the walk does not know still has its own layer, above every conv.
    if (!name.empty()) throw Error("--gradcam-layer: " + model.arch() + " takes only its default layer");
    CamLayer out;
    out.name = "the default layer";
    return out;
  }
  const int d = default_point(pts);
  int p = name.empty() ? d : find_point(model, pts, name);
  CamLayer out;
  out.name = pts[size_t(p)].name;
  if (pts[size_t(p)].alias_of >= 0) p = pts[size_t(p)].alias_of;
  out.is_default = p == d;
  for (int c : pts[size_t(p)].above) out.above.push_back(model.convs()[size_t(c)]->site.name);
  return out;
}

namespace {

// scipy.ndimage's 1-d Gaussian kernel (scipy 1.10, _gaussian_kernel1d), reversed as
// gaussian_filter1d uses it (symmetric: the same): exp(-0.5 / sigma^2 * x^2) for x in
// [-r, r], r = int(4 sigma + 0.5), divided by its sum, which numpy adds pairwise (its
// pairwise_sum: eight interleaved partial sums for up to 128 terms, halves above).
double numpy_sum(const double* a, int64_t n) {
  if (n < 8) {
    double s = 0.;
    for (int64_t i = 0; i < n; ++i) s += a[i];
    return s;
  }
  if (n <= 128) {
    double r[8];
    for (int k = 0; k < 8; ++k) r[k] = a[k];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int k = 0; k < 8; ++k) r[k] += a[i + k];
    double s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) s += a[i];
    return s;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return numpy_sum(a, n2) + numpy_sum(a + n2, n - n2);
}

std::vector<double> gaussian_kernel(double sigma) {
  const int r = int(4.0 * sigma + 0.5);
  std::vector<double> w(size_t(2 * r + 1));
  const double c = -0.5 / (sigma * sigma);
  for (int x = -r; x <= r; ++x) w[size_t(x + r)] = std::exp(c * double(int64_t(x) * x));
  const double sum = numpy_sum(w.data(), int64_t(w.size()));
  for (double& v : w) v /= sum;
  return w;
}

// One pass of scipy's correlate1d along a line of n values `stride` apart, mode "reflect"
// (d c b a | a b c d | d c b a, repeated for kernels longer than the line), in double with
// its order of operations for a symmetric kernel: x[0] w[0], then (x[-j] + x[j]) w[j] from
// the outermost j inwards; the result rounded to float.
void blur_line(const float* in, float* out, int64_t n, int64_t stride, const std::vector<double>& w, double* line) {
  const int64_t r = int64_t(w.size() / 2);
  const double* wc = w.data() + r;
  auto src = [&](int64_t i) {
    const int64_t p = 2 * n;
    int64_t m = i % p;
    if (m < 0) m += p;
    return m < n ? m : p - 1 - m;
  };
  for (int64_t i = -r; i < n + r; ++i) line[i + r] = double(in[src(i) * stride]);
  const double* x = line + r;
  for (int64_t i = 0; i < n; ++i) {
    double acc = x[i] * wc[0];
    for (int64_t j = r; j >= 1; --j) acc += (x[i - j] + x[i + j]) * wc[j];
    out[i * stride] = float(acc);
  }
}

}  // namespace

Tensor blur_baseline(const Tensor& x, double sigma) {
  if (!(sigma >= 0) || !std::isfinite(sigma)) throw Error("--ig-blur-sigma must be a finite number >= 0");
  if (x.ndim() != 4) throw Error("internal error: blur_baseline of a " + x.shape_str() + " tensor");
  // scipy skips an axis whose sigma is not above 1e-15.
  if (sigma <= 1e-15) return x.clone();
  const int64_t planes = x.dim(0) * x.dim(1), H = x.dim(2), W = x.dim(3), HW = H * W;
  const std::vector<double> w = gaussian_kernel(sigma);
  const int64_t r = int64_t(w.size() / 2);
  Tensor mid(x.shape()), out(x.shape());
#pragma omp parallel
  {
    std::vector<double> line(size_t(std::max(H, W) + 2 * r));
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      // Axis H, then axis W, each rounded to float (scipy's order for axes 2 and 3).
      for (int64_t c = 0; c < W; ++c) blur_line(x.data() + p * HW + c, mid.data() + p * HW + c, H, W, w, line.data());
      for (int64_t rr = 0; rr < H; ++rr)
        blur_line(mid.data() + p * HW + rr * W, out.data() + p * HW + rr * W, W, 1, w, line.data());
    }
  }
  return out;
}

namespace {

BackwardOptions with_hook(ParchGradHook* hook) {
  BackwardOptions b;
  b.hook = hook;
  if (hook) b.on_targets = [hook](const std::vector<int>& t) { hook->set_targets(t); };
  return b;
}

// Runs the copies copies[i] (each [3,H,W] of sample owner[i]) in chunks of max_batch and
// calls add(i, grad_i) for each.
template <class Add>
void run_copies(const nn::Model& model, nn::Context& ctx, const Tensor& copies, const std::vector<int>& targets,
                int max_batch, ParchGradHook* hook, Add add) {
  const int64_t total = copies.dim(0);
  for (int64_t b = 0; b < total; b += max_batch) {
    const int64_t e = std::min<int64_t>(total, b + max_batch);
    std::vector<int> t(targets.begin() + b, targets.begin() + e);
    GradientResult r = input_gradient(model, ctx, copies.slice0(b, e), t, with_hook(hook));
    const int64_t per = r.grad.numel() / (e - b);
    for (int64_t i = b; i < e; ++i) add(i, r.grad.data() + (i - b) * per);
  }
}


// Map of one sample from the clean-input gradient (grad, inputgrad) or Grad-CAM.
void direct_maps(const Tensor& x, const GradientResult& r, Method method, Explanation& ex) {
  const int64_t N = x.dim(0), H = x.dim(2), W = x.dim(3), HW = H * W;
  if (method == Method::GradCAM) {
    const Tensor& A = r.feature;
    const Tensor& G = r.feature_grad;
    const int64_t K = A.dim(1), h = A.dim(2), w = A.dim(3);
    Tensor cam = Tensor::zeros({N, h, w});
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        const float* g = G.data() + (n * K + k) * h * w;
        const float* a = A.data() + (n * K + k) * h * w;
        double wk = 0;
        for (int64_t i = 0; i < h * w; ++i) wk += g[i];
        wk /= double(h * w);
        for (int64_t i = 0; i < h * w; ++i) cam[n * h * w + i] += float(wk) * a[i];
      }
    for (int64_t i = 0; i < cam.numel(); ++i) cam[i] = std::max(cam[i], 0.f);
    ex.maps = upsample_bilinear(cam, int(H), int(W));
    return;
  }
  // grad and inputgrad: the map was made where the gradient is (input_gradients).
  if (r.map.numel() != N * HW) throw Error("internal error: no saliency map for " + std::string(method_name(method)));
  ex.maps = r.map.reshape({N, H, W});
}

Explanation explain_copies(const nn::Model& model, nn::Context& ctx, const Tensor& x, const Tensor& logits,
                           const std::vector<int>& targets, const MethodOptions& opt, ParchGradHook* hook);

}  // namespace

std::vector<Explanation> explain(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                                 const std::vector<std::vector<int>>& target_sets, const MethodOptions& opt,
                                 ParchGradHook* hook) {
  const int64_t N = x.dim(0), H = x.dim(2), W = x.dim(3);
  std::vector<Explanation> out;
  if (hook) hook->set_explain(true);
  if (opt.method == Method::Grad || opt.method == Method::InputGrad || opt.method == Method::GradCAM) {
    BackwardOptions b = with_hook(hook);
    b.capture_feature = opt.method == Method::GradCAM;
    b.map = opt.method == Method::Grad        ? BackwardOptions::Map::grad
            : opt.method == Method::InputGrad ? BackwardOptions::Map::inputgrad
                                              : BackwardOptions::Map::none;
    b.keep_grad = false;
    std::vector<std::vector<std::vector<LayerExplain>>> per_set;
    if (hook) {
      // Keep each target set's decisions: set_targets resets them before each backward.
      b.on_targets = [hook, &per_set](const std::vector<int>& t) {
        if (!per_set.empty()) per_set.back() = hook->explain();
        hook->set_targets(t);
        per_set.emplace_back();
      };
    }
    // Grad-CAM at a layer the model does not capture itself: its value from a forward up to
    // it, its gradient kept by tape id in the full pass.
    CamCapture cap;
    if (b.capture_feature) cap = prepare_cam(model, ctx, x, opt.gradcam_layer, false, b);
    std::vector<GradientResult> rs = input_gradients(model, ctx, x, target_sets, b);
    if (hook && !per_set.empty()) per_set.back() = hook->explain();
    finish_cam(cap, opt.gradcam_layer, rs);
    for (size_t j = 0; j < rs.size(); ++j) {
      Explanation ex;
      ex.maps = Tensor::zeros({N, H, W});
      ex.logits = rs[j].logits;
      ex.probs = rs[j].probs;
      ex.targets = rs[j].targets;
      if (hook) ex.layers = per_set[j];
      direct_maps(x, rs[j], opt.method, ex);
      out.push_back(std::move(ex));
    }
    return out;
  }
  Tensor logits = forward_logits(model, ctx, x);
  for (const auto& targets : target_sets) out.push_back(explain_copies(model, ctx, x, logits, targets, opt, hook));
  return out;
}

namespace {

Explanation explain_copies(const nn::Model& model, nn::Context& ctx, const Tensor& x, const Tensor& logits,
                           const std::vector<int>& targets, const MethodOptions& opt, ParchGradHook* hook) {
  const int64_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3), HW = H * W, per = C * HW;
  Explanation ex;
  ex.maps = Tensor::zeros({N, H, W});
  // IG and SmoothGrad: the target is chosen on the clean input.
  ex.logits = logits;
  ex.probs = softmax(logits);
  ex.targets = resolve_targets(logits, targets);
  if (hook) hook->set_targets(ex.targets);

  if (opt.method == Method::IG) {
    const int M = opt.ig_steps;
    if (M < 1) throw Error("--ig-steps must be at least 1");
    // The baseline b [C, H, W], or [N, C, H, W] (blurred: one per sample); empty for the
    // normalised zero (then the path is a * x exactly).
    Tensor b;
    if (opt.ig_baseline == MethodOptions::Baseline::blurred) {
      b = blur_baseline(x, opt.ig_blur_sigma);
    } else if (opt.ig_baseline == MethodOptions::Baseline::black) {
      const kernels::NormalizeParams np;  // ImageNet's mean and std, as the inputs were normalised
      if (C != 3) throw Error("--ig-baseline black: needs 3-channel inputs");
      b = Tensor({C, H, W});
      for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < HW; ++i) b[c * HW + i] = (0.0f - np.mean[c]) / np.std[c];
    } else if (opt.ig_baseline == MethodOptions::Baseline::given) {
      b = opt.ig_baseline_tensor;
      if (b.ndim() != 3 || b.dim(0) != C || b.dim(1) != H || b.dim(2) != W)
        throw Error("--ig-baseline: expected a [" + std::to_string(C) + ", " + std::to_string(H) + ", " +
                    std::to_string(W) + "] tensor, got " + b.shape_str());
    }
    const bool per_sample = b.ndim() == 4;
    auto base = [&](int64_t n) { return b.data() + (per_sample ? n * per : 0); };
    const int64_t copies = N * (M + 1);
    Tensor pts({copies, C, H, W});
    std::vector<int> t(copies);
    for (int64_t n = 0; n < N; ++n)
      for (int i = 0; i <= M; ++i) {
        const int64_t j = n * (M + 1) + i;
        const float a = float(i) / float(M);
        if (b.empty()) {
          for (int64_t k = 0; k < per; ++k) pts[j * per + k] = x[n * per + k] * a;
        } else {
          const float* bn = base(n);
          for (int64_t k = 0; k < per; ++k) pts[j * per + k] = bn[k] + (x[n * per + k] - bn[k]) * a;
        }
        t[j] = ex.targets[n];
      }
    Tensor avg = Tensor::zeros({N, C, H, W});
    run_copies(model, ctx, pts, t, opt.max_batch, hook, [&](int64_t j, const float* g) {
      const int64_t n = j / (M + 1), i = j % (M + 1);
      const float wgt = (i == 0 || i == M) ? 0.5f : 1.f;
      for (int64_t k = 0; k < per; ++k) avg[n * per + k] += wgt * g[k];
    });
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < HW; ++i) {
        float s = 0;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t j = n * per + c * HW + i;
          const float d = b.empty() ? x[j] : x[j] - base(n)[c * HW + i];
          s += d * (avg[j] / float(M));
        }
        ex.maps[n * HW + i] = std::fabs(s / float(C));
      }
    return ex;
  }

  // SmoothGrad. Every sample's noise depends on the sample alone, never on the batch: with
  // a seed each sample draws from its own generator started at that seed (the same M
  // standard-normal draws for every sample, scaled by its value range); fixed noise is taken
  // per sample by its index in the run.
  const Tensor& fixed = opt.sg_noise;
  const bool shared_noise = !fixed.empty() && fixed.ndim() == 4;
  const int M = fixed.empty() ? opt.sg_samples : int(fixed.dim(0));
  if (M < 1) throw Error("--sg-samples must be at least 1");
  if (!opt.sample_ids.empty() && int64_t(opt.sample_ids.size()) != N)
    throw Error("internal error: " + std::to_string(opt.sample_ids.size()) + " sample ids for " +
                std::to_string(N) + " samples");
  auto id_of = [&](int64_t n) { return opt.sample_ids.empty() ? n : opt.sample_ids[size_t(n)]; };
  if (!fixed.empty()) {
    const int64_t d = fixed.ndim();
    const bool shape_ok = (d == 4 || d == 5) && fixed.dim(d - 3) == C && fixed.dim(d - 2) == H && fixed.dim(d - 1) == W;
    if (!shape_ok)
      throw Error("--sg-noise: expected shape [M, 3, " + std::to_string(H) + ", " + std::to_string(W) + "] or [M, S, 3, " +
                  std::to_string(H) + ", " + std::to_string(W) + "] (S samples in the run), got " + fixed.shape_str());
    if (!shared_noise)
      for (int64_t n = 0; n < N; ++n)
        if (id_of(n) >= fixed.dim(1))
          throw Error("--sg-noise: holds noise for " + std::to_string(fixed.dim(1)) + " samples, sample " +
                      std::to_string(id_of(n) + 1) + " of the run has none");
  }
  const int64_t copies = N * M;
  Tensor noisy({copies, C, H, W});
  std::vector<int> t(copies);
  for (int64_t n = 0; n < N; ++n) {
    const float* xn = x.data() + n * per;
    const auto mm = std::minmax_element(xn, xn + per);
    const float sigma = float(opt.sg_sigma) * (*mm.second - *mm.first);
    std::mt19937_64 rng(opt.seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (int m = 0; m < M; ++m) {
      const int64_t j = n * M + m;
      const float* e = fixed.empty()       ? nullptr
                       : shared_noise      ? fixed.data() + int64_t(m) * per
                                           : fixed.data() + (int64_t(m) * fixed.dim(1) + id_of(n)) * per;
      for (int64_t k = 0; k < per; ++k) noisy[j * per + k] = xn[k] + (e ? e[k] : sigma * normal(rng));
      t[j] = ex.targets[n];
    }
  }
  kernels::ChannelMapParams mp;  // one copy's grad map (the twin of the device's)
  mp.N = 1;
  mp.C = int(C);
  mp.HW = HW;
  std::vector<float> m1(HW);
  run_copies(model, ctx, noisy, t, opt.max_batch, hook, [&](int64_t j, const float* g) {
    const int64_t n = j / M;
    kernels::cpu::channel_map(mp, g, nullptr, m1.data());
    for (int64_t i = 0; i < HW; ++i) ex.maps[n * HW + i] += m1[i] / float(M);
  });
  return ex;
}

}  // namespace

}  // namespace pg
