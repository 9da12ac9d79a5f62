// Where tensor storage lives. The ground floor knows two places: the host, whose memory is
// here, and the device, whose memory the device backend installs (nn::device_backend() does
// so when it is first asked for). That inversion is what lets core/ use nothing above it
// while a Tensor can still live on the GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/tensor.h"

namespace pg {

class Memory {
 public:
  virtual ~Memory() = default;
  // Storage for n floats (uninitialised), freed when the last owner lets go.
  virtual std::shared_ptr<float> allocate(int64_t n) = 0;
  // Within this memory.
  virtual void copy(float* dst, const float* src, size_t bytes) = 0;
  virtual void zero(float* dst, size_t bytes) = 0;
};

class DeviceMemory : public Memory {
 public:
  // Host <-> device.
  virtual void upload(float* dst, const float* src, size_t bytes) = 0;
  virtual void download(float* dst, const float* src, size_t bytes) = 0;
};

// The memory of a device: the host's (64-byte aligned), or the installed device memory.
Memory& memory(Device d);
// The installed device memory; throws pg::Error when the device backend has not been set up.
DeviceMemory& device_memory();
// Called by the device backend; the memory must outlive every device tensor.
void install_device_memory(DeviceMemory& m);

}  // namespace pg
