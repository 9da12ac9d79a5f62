// Tensor: a float32, contiguous, row-major (NCHW for images) array on the host.
// Storage is shared between copies (like a shared_ptr); clone() makes a deep copy.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pg {

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised storage of the given shape.
  explicit Tensor(std::vector<int64_t> shape);
  static Tensor zeros(std::vector<int64_t> shape);
  static Tensor filled(std::vector<int64_t> shape, float value);

  const std::vector<int64_t>& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim() : i]; }
  int64_t numel() const { return numel_; }
  bool empty() const { return numel_ == 0; }

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float& operator[](int64_t i) { return data_.get()[i]; }
  float operator[](int64_t i) const { return data_.get()[i]; }

  // Same storage, new shape (numel must match).
  Tensor reshape(std::vector<int64_t> shape) const;
  // View of samples [begin, end) along dim 0 (shares storage).
  Tensor slice0(int64_t begin, int64_t end) const;
  Tensor clone() const;
  void fill(float v);

  std::string shape_str() const;

 private:
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::shared_ptr<float> data_;
};

std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace pg
