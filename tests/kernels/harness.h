// The kernel tests' one table of cases, and what a runner gives it.
//
// tests/kernels/cases.cpp holds, per op of kernels/cuda, a table of cases (shapes, data
// seeds, size class) with the op's tolerance or bit-exactness beside it, and one function
// that runs the table: inputs, the CPU twin, device buffers, the launch, the comparison, a
// second launch for determinism, timings. It is plain C++ that never names a CUDA API: it
// reaches memory through `Device` and reports through `Report`. Two runners compile it:
//   tests/cuda_host/test_cuda_kernels.cpp  the .cu sources on the host SIMT runtime (device
//                                          memory is host memory; doctest; every table run
//                                          under several scheduler seeds)
//   tests/cuda/test_kernels_gpu.cu         the nvcc build on a real GPU (cudaMalloc, streams,
//                                          cudaEvent timings, --quick for the sanitizers)
// so a tolerance or a shape lives in one place and both runners hold the kernels to it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/stream.h"

namespace pg::kernel_tests {

// Device memory and launches, as a runner provides them.
class Device {
 public:
  virtual ~Device() = default;
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* p) noexcept = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;    // waits for the copy
  virtual void download(void* dst, const void* src, size_t bytes) = 0;  // waits for earlier work
  virtual void fill(void* p, unsigned char byte, size_t bytes) = 0;     // ordered on stream()
  virtual void sync() = 0;  // waits for stream() and reports a failed launch (throws)
  virtual cudaStream_t stream() const = 0;
  // Mean microseconds of one launch(); called only when Options::timing is set.
  virtual double time_us(const std::function<void()>& launch) = 0;
};

// Where results go: one line per check, and information lines.
class Report {
 public:
  virtual ~Report() = default;
  virtual void check(bool ok, const std::string& name, const std::string& detail) = 0;
  virtual void info(const std::string& line) = 0;
};

struct Options {
  bool large = false;      // also the realistic shapes (ResNet-50 at batch 8, ...)
  bool repeat = true;      // determinism: a second launch into fresh buffers gives the same bits
  bool timing = false;     // Device::time_us of the cases marked timed
  bool all_seeds = true;   // every data seed of a case (false: its first)
  bool quick = false;      // dgrad: scale modes none and mixed only (the sanitizer runs)
  bool host_only = false;  // dgrad: the twin's own checks and the refusals only, no device
};

struct Ctx {
  Device& dev;
  Report& report;
  Options opt;
  void check(bool ok, const std::string& name, const std::string& detail) { report.check(ok, name, detail); }
};

// A device array of n T's, released on destruction.
template <class T>
class Buf {
 public:
  Buf(Device& d, size_t n) : d_(d), n_(n) { p_ = static_cast<T*>(d_.alloc(bytes() ? bytes() : sizeof(T))); }
  Buf(Device& d, const std::vector<T>& v) : Buf(d, v.size()) { upload(v); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  ~Buf() { d_.release(p_); }

  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  void upload(const std::vector<T>& v) { d_.upload(p_, v.data(), bytes()); }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    d_.download(v.data(), p_, bytes());
    return v;
  }
  // 0xFF bytes: NaN for floats and doubles, -1 for integers; an element a kernel forgets to
  // write then fails the comparison.
  void poison() { d_.fill(p_, 0xFF, bytes()); }
  void zero() { d_.fill(p_, 0, bytes()); }

 private:
  Device& d_;
  T* p_ = nullptr;
  size_t n_ = 0;
};

// The groups of cases, one per op family, in the order the runners run them.
struct Group {
  const char* name;  // relu, maxpool, gap, variances, moments, dgrad, avgpool, elementwise, seed, maps, preprocess
  void (*run)(Ctx&);
};
// Groups whose tables live in files of their own: tests/kernels/cases_layernorm.cpp
// (ConvNeXt's layernorm and gelu).
void run_layernorm(Ctx& ctx);
void run_gelu(Ctx& ctx);
// tests/kernels/cases_activations.cpp (EfficientNet and MobileNetV3: SiLU, sigmoid,
// hardswish, hardsigmoid; the squeeze-and-excitation product).
void run_activations(Ctx& ctx);
void run_se_scale(Ctx& ctx);

const std::vector<Group>& groups();
// The group of that name; throws pg::Error for an unknown one.
const Group& group(const std::string& name);

}  // namespace pg::kernel_tests
