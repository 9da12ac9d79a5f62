// Takes tensors out of a state dict by name, checking their shapes, and reports every
// missing, mis-shaped and unexpected tensor by name in one error.
#pragma once
#include <set>
#include <string>
#include <vector>

#include "weights/state_dict.h"

namespace pg::nn {

class WeightBinder {
 public:
  WeightBinder(const weights::StateDict& sd, std::string source, std::string arch)
      : sd_(sd), source_(std::move(source)), arch_(std::move(arch)) {}

  bool has(const std::string& name) const { return sd_.count(name) > 0; }
  const Tensor* peek(const std::string& name) const;
  // The tensor, or zeros of the expected shape after recording the problem.
  Tensor take(const std::string& name, const std::vector<int64_t>& shape);
  // Marks a tensor as used without reading it (e.g. num_batches_tracked), if present.
  void ignore(const std::string& name) { used_.insert(name); }
  // Throws pg::Error listing every problem; call after the model is built.
  void finish() const;

 private:
  const weights::StateDict& sd_;
  std::string source_, arch_;
  std::set<std::string> used_;
  std::vector<std::string> missing_, misshaped_;
};

}  // namespace pg::nn
