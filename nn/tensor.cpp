#include "nn/tensor.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "nn/error.h"

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

std::shared_ptr<float> allocate(int64_t n) {
  // 64-byte aligned so vector loads and BLAS panels are aligned.
  size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
}
}  // namespace

Tensor::Tensor(std::vector<int64_t> shape) : shape_(std::move(shape)) {
  numel_ = product(shape_);
  data_ = allocate(numel_);
}

Tensor Tensor::zeros(std::vector<int64_t> shape) { return filled(std::move(shape), 0.0f); }

Tensor Tensor::filled(std::vector<int64_t> shape, float value) {
  Tensor t(std::move(shape));
  t.fill(value);
  return t;
}

void Tensor::fill(float v) { std::fill(data(), data() + numel_, v); }

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
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(shape_);
  if (numel_) std::memcpy(t.data(), data(), numel_ * sizeof(float));
  return t;
}

std::string Tensor::shape_str() const { return pg::shape_str(shape_); }

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace pg
