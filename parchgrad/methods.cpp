#include "parchgrad/methods.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/params.h"

#include "kernels/cpu/maps.h"
#include "core/error.h"

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
    std::vector<GradientResult> rs = input_gradients(model, ctx, x, target_sets, b);
    if (hook && !per_set.empty()) per_set.back() = hook->explain();
    for (size_t j = 0; j < rs.size(); ++j) {
      Explanation ex;
      ex.maps = Tensor::zeros({N, H, W});
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
  ex.probs = softmax(logits);
  ex.targets = resolve_targets(logits, targets);
  if (hook) hook->set_targets(ex.targets);

  if (opt.method == Method::IG) {
    const int M = opt.ig_steps;
    if (M < 1) throw Error("--ig-steps must be at least 1");
    // The baseline b [C, H, W]; empty for the normalised zero (then the path is a * x exactly).
    Tensor b;
    if (opt.ig_baseline == MethodOptions::Baseline::black) {
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
    const int64_t copies = N * (M + 1);
    Tensor pts({copies, C, H, W});
    std::vector<int> t(copies);
    for (int64_t n = 0; n < N; ++n)
      for (int i = 0; i <= M; ++i) {
        const int64_t j = n * (M + 1) + i;
        const float a = float(i) / float(M);
        if (b.empty())
          for (int64_t k = 0; k < per; ++k) pts[j * per + k] = x[n * per + k] * a;
        else
          for (int64_t k = 0; k < per; ++k) pts[j * per + k] = b[k] + (x[n * per + k] - b[k]) * a;
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
          const float d = b.empty() ? x[j] : x[j] - b[c * HW + i];
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
