#include "nn/binder.h"

#include "core/error.h"

namespace pg::nn {

const Tensor* WeightBinder::peek(const std::string& name) const {
  auto it = sd_.find(name);
  return it == sd_.end() ? nullptr : &it->second;
}

Tensor WeightBinder::take(const std::string& name, const std::vector<int64_t>& shape) {
  used_.insert(name);
  auto it = sd_.find(name);
  if (it == sd_.end()) {
    missing_.push_back("'" + name + "'");
    return Tensor::zeros(shape);
  }
  if (it->second.shape() != shape) {
    misshaped_.push_back("'" + name + "' is " + it->second.shape_str() + ", expected " + shape_str(shape));
    return Tensor::zeros(shape);
  }
  return it->second;
}

namespace {
std::string join_some(const std::vector<std::string>& items) {
  std::string s;
  const size_t show = 5;
  for (size_t i = 0; i < items.size() && i < show; ++i) s += (i ? ", " : "") + items[i];
  if (items.size() > show) s += " and " + std::to_string(items.size() - show) + " more";
  return s;
}
}  // namespace

void WeightBinder::finish() const {
  std::vector<std::string> unexpected;
  for (const auto& kv : sd_)
    if (!used_.count(kv.first)) unexpected.push_back("'" + kv.first + "'");
  std::string msg;
  auto part = [&](const std::string& what, const std::vector<std::string>& items) {
    if (items.empty()) return;
    msg += (msg.empty() ? "" : "; ") + what + " " + join_some(items);
  };
  part("mis-shaped tensor", misshaped_);
  part("missing tensor", missing_);
  part("unexpected tensor", unexpected);
  if (!msg.empty()) throw file_error(source_, "does not match " + arch_ + ": " + msg);
}

}  // namespace pg::nn
