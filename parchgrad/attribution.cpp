#include "parchgrad/attribution.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/maps.h"
#include "core/error.h"
#include "nn/backend.h"

namespace pg {

Tensor softmax(const Tensor& logits) {
  const int64_t N = logits.dim(0), K = logits.dim(1);
  Tensor p({N, K});
  for (int64_t n = 0; n < N; ++n) {
    const float* l = logits.data() + n * K;
    double mx = l[0];
    for (int64_t k = 1; k < K; ++k) mx = std::max(mx, double(l[k]));
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += std::exp(double(l[k]) - mx);
    for (int64_t k = 0; k < K; ++k) p[n * K + k] = float(std::exp(double(l[k]) - mx) / sum);
  }
  return p;
}

std::vector<int> resolve_targets(const Tensor& logits, const std::vector<int>& targets) {
  const int64_t N = logits.dim(0), K = logits.dim(1);
  if (!targets.empty() && targets.size() != 1 && int64_t(targets.size()) != N)
    throw Error(std::to_string(targets.size()) + " targets given for " + std::to_string(N) + " inputs");
  std::vector<int> out(N);
  for (int64_t n = 0; n < N; ++n) {
    int t = targets.empty() ? -1 : targets[targets.size() == 1 ? 0 : n];
    if (t < 0) {
      // -r: the class ranked r-th by logit (ties: lower class id first).
      const int rank = -t;
      if (rank > K) throw Error("top-" + std::to_string(rank) + " asked of a model with " + std::to_string(K) + " classes");
      const float* l = logits.data() + n * K;
      std::vector<int> idx(K);
      for (int k = 0; k < K; ++k) idx[k] = k;
      std::partial_sort(idx.begin(), idx.begin() + rank, idx.end(),
                        [&](int a, int b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
      t = idx[rank - 1];
    } else if (t >= K) {
      throw Error("target class " + std::to_string(t) + " is out of range for a model with " +
                  std::to_string(K) + " classes");
    }
    out[n] = t;
  }
  return out;
}

Tensor probability_seed(const Tensor& probs, const std::vector<int>& targets) {
  const int64_t N = probs.dim(0), K = probs.dim(1);
  Tensor s = Tensor::zeros({N, K});
  for (int64_t n = 0; n < N; ++n) s[n * K + targets[n]] = probs[n * K + targets[n]];
  return s;
}

void check_input(const Tensor& x, const std::string& what) {
  if (x.ndim() != 4 || x.dim(1) != 3)
    throw Error(what + ": expected an input of shape [N, 3, H, W], got " + x.shape_str());
  const float* d = x.data();
  for (int64_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(d[i])) throw Error(what + ": input contains " + (std::isnan(d[i]) ? "NaN" : "infinite") + " values");
}

std::vector<GradientResult> input_gradients(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                                            const std::vector<std::vector<int>>& target_sets,
                                            const BackwardOptions& opt) {
  ag::Tape tape(nn::add_gradients);
  ctx.tape = &tape;
  ctx.hook = opt.hook;
  ctx.capture_feature = opt.capture_feature && opt.feature_id < 0;
  ctx.feature = ag::Var{};
  std::vector<GradientResult> out;
  auto reset = [&]() {
    ctx.tape = nullptr;
    ctx.hook = nullptr;
    ctx.capture_feature = false;
    ctx.feature = ag::Var{};
  };
  try {
    // On the device the input goes up once; logits and probabilities (small) come back for
    // the target choice; the gradient comes back at the end.
    const bool on_device = ctx.device == Device::cuda;
    if (x.is_cuda() && !on_device) throw Error("internal error: a device input for a cpu context");
    ag::Var in{on_device ? x.to(Device::cuda) : x, tape.new_value()};
    ag::Var logits = model.forward(ctx, in);
    const Tensor logits_host = logits.value.to(Device::cpu);
    Tensor probs = on_device ? Tensor() : softmax(logits.value);
    if (opt.capture_feature) tape.keep_gradient(opt.feature_id >= 0 ? opt.feature_id : ctx.feature.id);
    for (size_t j = 0; j < target_sets.size(); ++j) {
      GradientResult r;
      r.logits = logits_host;
      r.targets = resolve_targets(r.logits, target_sets[j]);
      Tensor seed;
      if (on_device) {
        seed = nn::device_backend().probability_seed(logits.value, r.targets, probs.empty() ? &probs : nullptr);
      } else {
        seed = probability_seed(probs, r.targets);
      }
      r.probs = probs;
      if (opt.on_targets) opt.on_targets(r.targets);
      const bool last = j + 1 == target_sets.size();
      Tensor g = tape.backward(logits.id, std::move(seed), in.id, in.value.shape(), !last);
      if (opt.map != BackwardOptions::Map::none) {
        const bool ig = opt.map == BackwardOptions::Map::inputgrad;
        if (g.is_cuda()) {
          r.map = nn::device_backend().channel_map(g, ig ? &in.value : nullptr,
                                                   ig ? nn::MapKind::input_x_grad : nn::MapKind::grad);
        } else {
          r.map = ig ? input_gradient_map(in.value, g) : gradient_map(g);
        }
      }
      if (opt.keep_grad) r.grad = g.to(Device::cpu);
      if (opt.capture_feature && opt.feature_id >= 0) {
        r.feature_grad = tape.kept_gradient().to(Device::cpu);  // empty when none reached it
      } else if (opt.capture_feature) {
        r.feature = ctx.feature.value.to(Device::cpu);
        r.feature_grad = tape.kept_gradient().to(Device::cpu);
        if (r.feature_grad.empty()) r.feature_grad = Tensor::zeros(r.feature.shape());
      }
      out.push_back(std::move(r));
    }
  } catch (...) {
    reset();
    throw;
  }
  reset();
  return out;
}

GradientResult input_gradient(const nn::Model& model, nn::Context& ctx, const Tensor& x,
                              const std::vector<int>& targets, const BackwardOptions& opt) {
  return std::move(input_gradients(model, ctx, x, {targets}, opt)[0]);
}

Tensor forward_logits(const nn::Model& model, nn::Context& ctx, const Tensor& x) {
  ctx.tape = nullptr;
  ctx.hook = nullptr;
  const bool on_device = ctx.device == Device::cuda;
  return model.forward(ctx, ag::Var{on_device ? x.to(Device::cuda) : x, -1}).value.to(Device::cpu);
}

namespace {
// The host twin of the device map kernels (kernels/cpu/maps.h), so both backends make the
// same map bit for bit.
Tensor host_map(const Tensor& g, const Tensor* x, kernels::MapKind kind) {
  kernels::ChannelMapParams p;
  p.N = int(g.dim(0));
  p.C = int(g.dim(1));
  p.HW = g.dim(2) * g.dim(3);
  p.kind = kind;
  Tensor m({g.dim(0), g.dim(2), g.dim(3)});
  kernels::cpu::channel_map(p, g.data(), x ? x->data() : nullptr, m.data());
  return m;
}
}  // namespace

Tensor input_gradient_map(const Tensor& x, const Tensor& g) {
  return host_map(g, &x, kernels::MapKind::abs_input_x_grad);
}

Tensor gradient_map(const Tensor& g) { return host_map(g, nullptr, kernels::MapKind::abs_grad); }

}  // namespace pg
