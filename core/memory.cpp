#include "core/memory.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"

namespace pg {

namespace {

class HostMemory final : public Memory {
 public:
  std::shared_ptr<float> allocate(int64_t n) override {
    // 64-byte aligned so vector loads and BLAS panels are aligned.
    size_t bytes = static_cast<size_t>(n > 1 ? n : 1) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    return std::shared_ptr<float>(static_cast<float*>(p), [](float* q) { std::free(q); });
  }
  void copy(float* dst, const float* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void zero(float* dst, size_t bytes) override { std::memset(dst, 0, bytes); }
};

std::atomic<DeviceMemory*> g_device{nullptr};

}  // namespace

Memory& memory(Device d) {
  static HostMemory host;
  if (d == Device::cpu) return host;
  return device_memory();
}

DeviceMemory& device_memory() {
  DeviceMemory* m = g_device.load();
  if (!m) throw Error("internal error: a device tensor before the device backend was set up");
  return *m;
}

void install_device_memory(DeviceMemory& m) { g_device.store(&m); }

}  // namespace pg
