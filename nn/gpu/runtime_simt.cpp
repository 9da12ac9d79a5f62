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
#include "nn/gpu/runtime.h"

namespace pg::gpu {
namespace {

void* host_alloc(size_t bytes, void*) {
  // 256-byte aligned as cudaMalloc's blocks are.
  return std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
}
void host_free(void* p, void*) { std::free(p); }

struct State {
  bool ready = false;
  LibrarySettings settings;
  std::mutex mu;
};
State& state() {
  static State* s = new State;  // never destroyed: tensors may outlive static destruction
  return *s;
}
Arena& arena() {
  static Arena* a = new Arena(host_alloc, host_free, nullptr);
  return *a;
}

void require() {
  if (!state().ready) throw Error("internal error: the device runtime is used before gpu::init()");
}

// Distinct non-null stream handles, never dereferenced.
cudaStream_t fake_stream(Stage s) {
  static char tags[3];
  return reinterpret_cast<cudaStream_t>(&tags[int(s)]);
}

}  // namespace

const char* backend_name() { return "simt"; }

int device_count() {
  const char* v = std::getenv("PARCHGRAD_SIM_DEVICES");
  if (!v || !*v) return 1;
  const int n = std::atoi(v);
  return n >= 1 && n <= 64 ? n : 1;
}

// Every simulated device is the same host memory and fibers: the index only has to exist.
void init(int device_index) {
  const int count = device_count();
  if (device_index < 0 || device_index >= count)
    throw Error("device " + std::to_string(device_index) + " does not exist (the SIMT backend has " +
                (count == 1 ? std::string("one device, 0") : std::to_string(count) + " devices (PARCHGRAD_SIM_DEVICES)") +
                ")");
  state().ready = true;
}
bool initialized() { return state().ready; }

std::string device_description() {
  return "host SIMT runtime (CUDA kernels on CPU fibers, " + std::to_string(simt::host_threads()) +
         " block thread(s); cuDNN and cuBLAS served by the CPU backend)";
}

void* alloc(size_t bytes) {
  require();
  return arena().alloc(bytes);
}
void free(void* p) {
  if (p) arena().free(p);
}
MemoryStats memory_stats() {
  const auto s = arena().stats();
  MemoryStats m;
  m.in_use = s.in_use;
  m.cached = s.cached;
  m.peak = s.peak;
  m.device_allocs = s.device_allocs;
  return m;
}
void release_cached() { arena().release_cached(); }

void* alloc_pinned(size_t bytes) {
  void* p = host_alloc(bytes, nullptr);
  if (!p) throw Error("out of host memory: " + std::to_string(bytes) + " bytes of pinned memory requested");
  return p;
}
void free_pinned(void* p) { std::free(p); }

cudaStream_t stream(Stage s) { return fake_stream(s); }
void upload(void* dst, const void* src, size_t bytes) {
  require();
  if (bytes) std::memcpy(dst, src, bytes);
}
void download(void* dst, const void* src, size_t bytes) {
  require();
  if (bytes) std::memcpy(dst, src, bytes);
}
void copy(void* dst, const void* src, size_t bytes) {
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}
void zero(void* dst, size_t bytes) {
  if (bytes) std::memset(dst, 0, bytes);
}
void synchronize() {}

void set_library_settings(const LibrarySettings& s) { state().settings = s; }
LibrarySettings library_settings() { return state().settings; }

void conv_forward(const kernels::Conv2dParams& p, const float* x, const float* w, float* y) {
  // Depthwise convolutions as the CPU backend runs them (its direct kernel, not the grouped
  // im2col path), so that the forward stays bitwise the CPU's (MobileNets, EfficientNets).
  if (kernels::cpu::depthwise_supported(p)) return kernels::cpu::depthwise_forward(p, x, w, kernels::cpu::ConvEpilogue{}, y);
  std::vector<float> ws(kernels::cpu::conv2d_workspace_floats(p, omp_get_max_threads()));
  kernels::cpu::conv2d_forward(p, x, w, kernels::cpu::ConvEpilogue{}, y, ws.data());
}
void conv_backward_data(const kernels::Conv2dParams& p, const float* dy, const float* w, float* dx) {
  std::vector<float> ws(kernels::cpu::conv2d_workspace_floats(p, omp_get_max_threads()));
  kernels::cpu::conv2d_dgrad(p, dy, w, nullptr, dx, ws.data());
}
void linear_forward(int N, int in, int out, const float* x, const float* w, const float* b, float* y) {
  kernels::cpu::linear_forward(N, in, out, x, w, b, y);
}
void linear_backward(int N, int in, int out, const float* dy, const float* w, float* dx) {
  kernels::cpu::linear_backward(N, in, out, dy, w, dx);
}

}  // namespace pg::gpu
