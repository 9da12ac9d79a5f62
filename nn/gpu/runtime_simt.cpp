// The device runtime on the host SIMT runtime (PARCHGRAD_CUDA=SIM): "device" memory is host
// memory handed out by the same caching arena as on a GPU, the kernels of kernels/cuda run on
// fibers (kernels/simt), every launch is synchronous, and the library calls are served by the
// CPU backend's kernels. Used by CI to run the whole device path (layers, tape, ParchGrad,
// methods, the command line) without a GPU.
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/depthwise.h"
#include "kernels/cpu/linear.h"
#include "kernels/simt/simt.h"
#include "core/error.h"
#include "nn/gpu/arena.h"
#include "nn/gpu/device_table.h"
#include "nn/gpu/runtime.h"

namespace pg::gpu {
namespace {

void* host_alloc(size_t bytes, void*) {
  // 256-byte aligned as cudaMalloc's blocks are.
  return std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
}
void host_free(void* p, void*) { std::free(p); }

// One simulated device: its own arena (a block freed through another device's arena is an
// error, as it would be on a GPU) and settings; the memory itself is all host memory.
struct State {
  explicit State(int d) : device(d), check_pointers(device_count() > 1), arena(host_alloc, host_free, nullptr) {}
  int device;
  bool check_pointers;  // several simulated devices: check_on_device's scan (not on every call's getenv)
  Arena arena;
  std::mutex mu;
  LibrarySettings settings;
};
DeviceTable<State>& table() {
  static auto* t = new DeviceTable<State>;  // never destroyed: tensors may outlive static destruction
  return *t;
}

State& ready_state() {
  State* s = table().current_state();
  if (!s) throw Error("internal error: the device runtime is used before gpu::init()");
  return *s;
}

// With several simulated devices, every pointer a runtime call is given must belong to the
// calling thread's device, as it must on a GPU (a tensor of device 0 used by device 1's worker is
// the bug a multi-device run can have that a single-device one cannot). Host pointers (upload's
// source, download's destination) are not checked. Costs a scan of the arena's blocks: only done
// when more than one device was asked for.
void check_on_device(const State& s, const void* p, const char* what) {
  if (!p || !s.check_pointers || s.arena.contains(p)) return;
  std::string owner = "no device";
  table().for_each([&](int d, const State& o) {
    if (&o != &s && o.arena.contains(p)) owner = "device " + std::to_string(d);
  });
  throw Error(std::string("internal error: gpu::") + what + " on device " + std::to_string(s.device) +
              " was given memory of " + owner);
}

// Distinct non-null stream handles per device and stage, never dereferenced.
cudaStream_t fake_stream(int device, Stage s) {
  static char tags[DeviceTable<State>::kMaxDevices][3];
  return reinterpret_cast<cudaStream_t>(&tags[device][int(s)]);
}

}  // namespace

const char* backend_name() { return "simt"; }

int device_count() {
  const char* v = std::getenv("PARCHGRAD_SIM_DEVICES");
  if (!v || !*v) return 1;
  const int n = std::atoi(v);
  return n >= 1 && n <= 64 ? n : 1;
}

// Every simulated device is the same host memory and fibers, with its own arena and settings.
void init(int device_index) {
  const int count = device_count();
  if (device_index < 0 || device_index >= count)
    throw Error("device " + std::to_string(device_index) + " does not exist (the SIMT backend has " +
                (count == 1 ? std::string("one device, 0") : std::to_string(count) + " devices (PARCHGRAD_SIM_DEVICES)") +
                ")");
  table().init(device_index, [](int d) { return new State(d); });
}
bool initialized() { return table().any(); }
int current_device() { return table().current(); }

std::string device_description() {
  const State& s = ready_state();
  return "host SIMT runtime (CUDA kernels on CPU fibers, " + std::to_string(simt::host_threads()) +
         " block thread(s); cuDNN and cuBLAS served by the CPU backend)" +
         (device_count() > 1 ? ", simulated device " + std::to_string(s.device) + " of " + std::to_string(device_count())
                             : std::string());
}

void* alloc(size_t bytes) { return ready_state().arena.alloc(bytes); }
void free(void* p) {
  if (!p || table().return_block([&](State& s) { return s.arena.try_free(p); })) return;
  throw Error("gpu::free: unknown pointer (not allocated by any device's arena, or already freed)");
}
MemoryStats memory_stats() {
  MemoryStats m;
  State* st = table().current_state();
  if (!st) return m;
  const auto s = st->arena.stats();
  m.in_use = s.in_use;
  m.cached = s.cached;
  m.peak = s.peak;
  m.device_allocs = s.device_allocs;
  return m;
}
void release_cached() {
  if (State* s = table().current_state()) s->arena.release_cached();
}

void* alloc_pinned(size_t bytes) {
  void* p = host_alloc(bytes, nullptr);
  if (!p) throw Error("out of host memory: " + std::to_string(bytes) + " bytes of pinned memory requested");
  return p;
}
void free_pinned(void* p) { std::free(p); }

cudaStream_t stream(Stage s) { return fake_stream(ready_state().device, s); }
void upload(void* dst, const void* src, size_t bytes) {
  const State& s = ready_state();
  check_on_device(s, dst, "upload");
  if (bytes) std::memcpy(dst, src, bytes);
}
void download(void* dst, const void* src, size_t bytes) {
  const State& s = ready_state();
  check_on_device(s, src, "download");
  if (bytes) std::memcpy(dst, src, bytes);
}
void copy(void* dst, const void* src, size_t bytes) {
  const State& s = ready_state();
  check_on_device(s, dst, "copy");
  check_on_device(s, src, "copy");
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}
void zero(void* dst, size_t bytes) {
  check_on_device(ready_state(), dst, "zero");
  if (bytes) std::memset(dst, 0, bytes);
}
void synchronize() {}

void set_library_settings(const LibrarySettings& s) {
  State& st = ready_state();
  std::lock_guard<std::mutex> lock(st.mu);
  st.settings = s;
}
LibrarySettings library_settings() {
  State& st = ready_state();
  std::lock_guard<std::mutex> lock(st.mu);
  return st.settings;
}

namespace {
void check_operands(const char* what, std::initializer_list<const void*> ps) {
  const State& s = ready_state();
  for (const void* p : ps) check_on_device(s, p, what);
}
}  // namespace

void conv_forward(const kernels::Conv2dParams& p, const float* x, const float* w, float* y) {
  check_operands("conv_forward", {x, w, y});
  // Depthwise convolutions as the CPU backend runs them (its direct kernel, not the grouped
  // im2col path), so that the forward stays bitwise the CPU's (MobileNets, EfficientNets).
  if (kernels::cpu::depthwise_supported(p)) return kernels::cpu::depthwise_forward(p, x, w, kernels::cpu::ConvEpilogue{}, y);
  std::vector<float> ws(kernels::cpu::conv2d_workspace_floats(p, omp_get_max_threads()));
  kernels::cpu::conv2d_forward(p, x, w, kernels::cpu::ConvEpilogue{}, y, ws.data());
}
void conv_backward_data(const kernels::Conv2dParams& p, const float* dy, const float* w, float* dx) {
  check_operands("conv_backward_data", {dy, w, dx});
  std::vector<float> ws(kernels::cpu::conv2d_workspace_floats(p, omp_get_max_threads()));
  kernels::cpu::conv2d_dgrad(p, dy, w, nullptr, dx, ws.data());
}
void linear_forward(int N, int in, int out, const float* x, const float* w, const float* b, float* y) {
  check_operands("linear_forward", {x, w, b, y});
  kernels::cpu::linear_forward(N, in, out, x, w, b, y);
}
void linear_backward(int N, int in, int out, const float* dy, const float* w, float* dx) {
  check_operands("linear_backward", {dy, w, dx});
  kernels::cpu::linear_backward(N, in, out, dy, w, dx);
}

}  // namespace pg::gpu
