#include "core/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"
#include "core/memory.h"

namespace pg {

namespace {
int64_t product(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) throw Error("tensor: negative dimension in shape " + shape_str(s));
    n *= d;
  }
  return n;
}

}  // namespace

const char* device_name(Device d) { return d == Device::cuda ? "cuda" : "cpu"; }

Tensor::Tensor(std::vector<int64_t> shape, Device device) : shape_(std::move(shape)), device_(device) {
  numel_ = product(shape_);
  data_ = memory(device).allocate(numel_);
}

Tensor Tensor::zeros(std::vector<int64_t> shape, Device device) {
  Tensor t(std::move(shape), device);
  t.fill(0.0f);
  return t;
}

void Tensor::device_access_error() const {
  throw Error("internal error: host access to the data of a " + std::string(device_name(device_)) + " tensor " +
              shape_str());
}

Tensor Tensor::filled(std::vector<int64_t> shape, float value) {
  Tensor t(std::move(shape));
  t.fill(value);
  return t;
}

void Tensor::fill(float v) {
  if (device_ == Device::cpu) {
    std::fill(data(), data() + numel_, v);
    return;
  }
  if (v != 0.0f) throw Error("internal error: fill(" + std::to_string(v) + ") of a device tensor");
  memory(device_).zero(data_.get(), static_cast<size_t>(numel_) * sizeof(float));
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  if (product(shape) != numel_)
    throw Error("tensor: cannot reshape " + shape_str() + " to " + pg::shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  if (ndim() == 0 || begin < 0 || end > shape_[0] || begin > end)
    throw Error("tensor: bad slice of " + shape_str());
  int64_t inner = shape_[0] ? numel_ / shape_[0] : 0;
  Tensor t;
  t.shape_ = shape_;
  t.shape_[0] = end - begin;
  t.numel_ = (end - begin) * inner;
  t.data_ = std::shared_ptr<float>(data_, data_.get() + begin * inner);
  t.device_ = device_;
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(shape_, device_);
  if (!numel_) return t;
  if (device_ == Device::cpu) {
    std::memcpy(t.data(), data(), numel_ * sizeof(float));
    return t;
  }
  memory(device_).copy(t.data_.get(), data_.get(), numel_ * sizeof(float));
  return t;
}

Tensor Tensor::to(Device device) const {
  if (device == device_) return *this;
  Tensor t(shape_, device);
  if (!numel_) return t;
  if (device == Device::cuda)
    device_memory().upload(t.data_.get(), data_.get(), numel_ * sizeof(float));
  else
    device_memory().download(t.data_.get(), data_.get(), numel_ * sizeof(float));
  return t;
}

std::string Tensor::shape_str() const { return pg::shape_str(shape_); }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Tensor stack(const std::vector<Tensor>& samples) {
  if (samples.empty()) throw Error("tensor: stack of no tensors");
  std::vector<int64_t> shape = samples[0].shape();
  shape.insert(shape.begin(), int64_t(samples.size()));
  Tensor out(std::move(shape));
  const int64_t n = samples[0].numel();
  for (size_t b = 0; b < samples.size(); ++b) {
    if (samples[b].shape() != samples[0].shape())
      throw Error("tensor: stack of " + samples[0].shape_str() + " and " + samples[b].shape_str());
    std::copy(samples[b].data(), samples[b].data() + n, out.data() + int64_t(b) * n);
  }
  return out;
}

}  // namespace pg
