#include "autograd/tape.h"

#include "core/error.h"

namespace pg::ag {

void Tape::accumulate(int id, Tensor g) {
  if (id < 0) return;
  if (size_t(id) >= grads_.size()) grads_.resize(id + 1);
  Tensor& cur = grads_[id];
  if (cur.empty()) {
    cur = std::move(g);
    return;
  }
  if (cur.numel() != g.numel()) throw Error("tape: gradient shape mismatch " + cur.shape_str() + " vs " + g.shape_str());
  if (cur.device() != g.device()) throw Error("tape: gradients on different devices for " + cur.shape_str());
  add_(cur, g);
}

Tensor Tape::take(int id) {
  if (id < 0 || size_t(id) >= grads_.size()) return Tensor();
  if (id == keep_id_ && !grads_[id].empty()) kept_ = grads_[id].clone();
  return std::move(grads_[id]);
}

Tensor Tape::backward(int output, Tensor seed, int input, const std::vector<int64_t>& input_shape,
                      bool keep_steps) {
  grads_.clear();
  kept_ = Tensor();
  const Device device = seed.device();
  accumulate(output, std::move(seed));
  if (keep_steps) {
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) (*it)(*this);
  } else {
    while (!steps_.empty()) {
      Step step = std::move(steps_.back());
      steps_.pop_back();
      step(*this);
    }
  }
  Tensor g = take(input);
  grads_.clear();
  if (!keep_steps) clear();
  if (g.empty()) return Tensor::zeros(input_shape, device);
  return g;
}

void Tape::clear() {
  steps_.clear();
  grads_.clear();
  next_id_ = 0;
  keep_id_ = -1;
}

}  // namespace pg::ag
