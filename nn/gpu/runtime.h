// The device runtime under nn/: memory, streams, host<->device copies, and the library
// calls (cuDNN forward convolution and data-gradient, cuBLAS linear layers) that the device
// layers use next to the project's own kernels in kernels/cuda.
//
// One interface, two implementations, chosen when the project is configured:
//   runtime_cuda.cpp  PARCHGRAD_CUDA=ON/AUTO with nvcc: the CUDA runtime, cuDNN, cuBLAS.
//   runtime_simt.cpp  PARCHGRAD_CUDA=SIM: "device" memory is host memory, the kernels of
//                     kernels/cuda run on the host SIMT runtime (kernels/simt), and the
//                     library calls are served by the CPU backend's kernels (their twins).
//                     This is how CI runs the whole device path without a GPU.
// A build with neither has no device (nn/gpu/ is not compiled; --device cuda is refused).
//
// Ordering: every device operation of this interface and every kernel launched on
// stream(Stage::compute) runs in issue order. upload() and download() are synchronous for
// the host (the host buffer may be reused when they return) and ordered with the compute
// stream through events: an upload completes before later compute work starts, a download
// waits for earlier compute work. Errors throw pg::Error naming the call, file and line.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::gpu {

// "cuda" or "simt".
const char* backend_name();

// Devices and threads: a process may use several devices (`--gpu all`: one worker thread per
// device). Each device has its own state (streams, library handles, convolution plans, memory
// arena, staging buffers, settings), created by the first init() of its index. Each host
// thread works on one device at a time, its current device: the last one it passed to init(),
// else the first device the process initialised (so that a single-device program never has to
// think about it). Every function below acts on the calling thread's current device, except
// free(), which returns a block to whichever device's arena handed it out.

// Initialises device `device_index` (an index into the visible devices) unless it already is,
// and makes it the calling thread's current device. Throws when the device cannot be used,
// with the runtime's reason (e.g. "no CUDA-capable device is detected").
void init(int device_index = 0);
// Whether some device has been initialised.
bool initialized();
// The calling thread's current device; -1 before any init().
int current_device();
// The visible devices (0 when the runtime reports none or fails); simt: PARCHGRAD_SIM_DEVICES
// (1 by default), so that a test can give a process several simulated devices to choose from.
int device_count();
// E.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB), driver 13.0, runtime 13.0,
// cuDNN 9.x, cuBLAS 13.x"; on simt: "host SIMT runtime (N threads)".
std::string device_description();

// ---- memory ----------------------------------------------------------------------------
// Device memory from the current device's caching arena (nn/gpu/arena.h): 256-byte aligned,
// uninitialised. alloc(0) returns a valid unique pointer. Throws on out-of-memory after
// releasing the arena's cached blocks and retrying once.
void* alloc(size_t bytes);
// Returns a block to the arena of the device that handed it out (the current device's is
// asked first), from any thread; nullptr is ignored.
void free(void* p);
struct MemoryStats {
  size_t in_use = 0;       // bytes handed out
  size_t cached = 0;       // bytes held for reuse
  size_t peak = 0;         // peak of in_use
  size_t device_allocs = 0;  // calls to the underlying allocator (cudaMalloc)
};
MemoryStats memory_stats();
// The current device's arena. Returns its cached blocks to the device (the next alloc
// allocates anew).
void release_cached();

// Page-locked host memory (cudaMallocHost; simt: plain aligned memory).
void* alloc_pinned(size_t bytes);
void free_pinned(void* p);

// ---- streams and copies ------------------------------------------------------------------
enum class Stage { upload, compute, download };
cudaStream_t stream(Stage s);
// Host -> device: src is first copied into a pinned staging buffer, then sent on the upload
// stream; the compute stream waits for it.
void upload(void* dst, const void* src, size_t bytes);
// Device -> host: waits for the compute stream's earlier work, copies on the download
// stream through a pinned staging buffer into dst, and returns when dst holds the data.
void download(void* dst, const void* src, size_t bytes);
// On the compute stream.
void copy(void* dst, const void* src, size_t bytes);
void zero(void* dst, size_t bytes);
// Waits until all streams of the current device are idle.
void synchronize();

// ---- settings (per device: each worker configures its own) ---------------------------------
// deterministic: library algorithms that are bitwise reproducible run to run (cuDNN:
// no atomics-based algorithms); the project's kernels always are.
// tensor_math: cuDNN's convolutions (forward, and the data-gradient of --dgrad cudnn) may use
// TF32 tensor-core math (for --precision tf32|bf16); off: strict float32 FMA math (fp32).
struct LibrarySettings {
  bool deterministic = false;
  bool tensor_math = false;
};
void set_library_settings(const LibrarySettings& s);
LibrarySettings library_settings();

// ---- library calls (on the compute stream; device pointers) ---------------------------------
// y[N,K,P,Q] = conv(x, w) without bias (cuDNN; simt: kernels/cpu/conv2d.h). Shapes as the CPU
// backend's Conv2dParams (P, Q filled). Overwrites y.
void conv_forward(const kernels::Conv2dParams& p, const float* x, const float* w, float* y);
// dx[N,C,H,W] = the data-gradient of that convolution for dy[N,K,P,Q] (cuDNN; simt: the CPU
// backend's conv2d_dgrad without scale). Overwrites dx. The oracle and baseline for
// kernels/cuda/conv_dgrad (--dgrad cudnn).
void conv_backward_data(const kernels::Conv2dParams& p, const float* dy, const float* w, float* dx);
// y[N,out] = x[N,in] * w[out,in]^T (+ b[out] when b is not null) (cuBLAS; simt: CPU).
void linear_forward(int N, int in, int out, const float* x, const float* w, const float* b, float* y);
// dx[N,in] = dy[N,out] * w[out,in] (cuBLAS; simt: CPU). Overwrites dx.
void linear_backward(int N, int in, int out, const float* dy, const float* w, float* dx);

}  // namespace pg::gpu
