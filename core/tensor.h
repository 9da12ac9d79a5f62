// Tensor: a float32, contiguous, row-major (NCHW for images) array on the host or on the
// device (nn/gpu). Storage is shared between copies (like a shared_ptr); clone() makes a deep
// copy on the same device, to() a copy on another one.
//
// data() is for host code and throws on a device tensor, so that a host loop can never read
// device memory by mistake (on the SIMT backend "device" memory is host memory, where such
// a bug would otherwise pass silently); device code takes dptr().
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pg {

enum class Device { cpu, cuda };
const char* device_name(Device d);

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised storage of the given shape.
  explicit Tensor(std::vector<int64_t> shape, Device device = Device::cpu);
  // Zero-filled (on either device).
  static Tensor zeros(std::vector<int64_t> shape, Device device = Device::cpu);
  static Tensor filled(std::vector<int64_t> shape, float value);

  const std::vector<int64_t>& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim() : i]; }
  int64_t numel() const { return numel_; }
  bool empty() const { return numel_ == 0; }

  Device device() const { return device_; }
  bool is_cuda() const { return device_ == Device::cuda; }

  // Host data; throws pg::Error on a device tensor.
  float* data() {
    if (device_ != Device::cpu) device_access_error();
    return data_.get();
  }
  const float* data() const {
    if (device_ != Device::cpu) device_access_error();
    return data_.get();
  }
  // The storage on whichever device it lives (device code only).
  float* dptr() { return data_.get(); }
  const float* dptr() const { return data_.get(); }
  float& operator[](int64_t i) { return data_.get()[i]; }
  float operator[](int64_t i) const { return data_.get()[i]; }

  // Same storage, new shape (numel must match).
  Tensor reshape(std::vector<int64_t> shape) const;
  // View of samples [begin, end) along dim 0 (shares storage).
  Tensor slice0(int64_t begin, int64_t end) const;
  Tensor clone() const;
  // A copy on `device` (this tensor itself when it is already there).
  Tensor to(Device device) const;
  void fill(float v);  // host tensors, or 0 on the device

  std::string shape_str() const;

 private:
  [[noreturn]] void device_access_error() const;

  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::shared_ptr<float> data_;
  Device device_ = Device::cpu;
};

std::string shape_str(const std::vector<int64_t>& shape);

// Host tensors of one shape stacked along a new first dimension: [N, ...] (a batch of samples).
// Throws pg::Error for an empty list or a sample of another shape.
Tensor stack(const std::vector<Tensor>& samples);

}  // namespace pg
