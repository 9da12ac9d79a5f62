// The tape: a list of backward steps recorded during forward. Backward computes the
// gradient with respect to the network input only; each step keeps just what that needs
// (ReLU bit masks, max-pool argmax, shapes), never activations or weight gradients.
#pragma once
#include <functional>
#include <vector>

#include "core/tensor.h"

namespace pg::ag {

// A value flowing through the network: its tensor and its id on the tape (-1 = not
// recorded, e.g. during a forward pass without tape).
struct Var {
  Tensor value;
  int id = -1;
};

class Tape {
 public:
  using Step = std::function<void(Tape&)>;
  // a += b for two gradients of equal size on the same device. The tape knows nothing of
  // devices: whoever runs the network supplies the arithmetic (nn::add_gradients).
  using Add = void (*)(Tensor& a, const Tensor& b);

  explicit Tape(Add add) : add_(add) {}

  // Registers a new value and returns its id.
  int new_value() { return next_id_++; }
  void record(Step step) { steps_.push_back(std::move(step)); }

  // Adds g into the gradient of value `id` (takes g over if it has none yet; g must then
  // not be shared with any other gradient).
  void accumulate(int id, Tensor g);
  // Removes and returns the gradient of `id` (empty if no gradient reached it).
  Tensor take(int id);

  // Seeds the gradient of `output` and runs every recorded step in reverse, releasing
  // each one's memory as it goes (unless keep_steps, so that the same forward serves another
  // backward with a different seed). Returns the gradient of `input` (zeros if none).
  Tensor backward(int output, Tensor seed, int input, const std::vector<int64_t>& input_shape,
                  bool keep_steps = false);

  // Keeps a copy of the gradient of value `id` when backward reaches it (Grad-CAM).
  void keep_gradient(int id) { keep_id_ = id; }
  const Tensor& kept_gradient() const { return kept_; }

  size_t size() const { return steps_.size(); }
  void clear();

 private:
  Add add_;
  int next_id_ = 0;
  std::vector<Step> steps_;
  std::vector<Tensor> grads_;
  int keep_id_ = -1;
  Tensor kept_;
};

}  // namespace pg::ag
