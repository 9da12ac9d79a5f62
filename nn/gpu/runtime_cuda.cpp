// The device runtime on a real GPU: the CUDA runtime API, cuDNN 9 (its legacy descriptor
// API: cudnnConvolutionForward / cudnnConvolutionBackwardData) and cuBLAS. Plain C++ for the
// host compiler; it includes the CUDA headers itself and links cudart, cudnn and cublas.
//
// Lifetime: each device's state is created by its first init() and never destroyed (leaked on
// purpose).
// Device tensors may be destroyed during static destruction, after the CUDA runtime has
// begun to unload; their gpu::free only returns the block to the arena, which never calls
// cudaFree at exit, and the handles, streams and pinned staging buffers are left to the
// driver's process teardown.
//
// Reuse of arena blocks is stream-safe because everything that touches device memory is
// ordered with the compute stream (runtime.h): uploads first wait for earlier compute
// work, the compute stream waits for uploads, downloads wait for earlier compute work and
// finish before they return. A block freed while compute work still reads it can therefore
// be handed out again at once.
//
// Devices and threads (runtime.h): each initialised device has its own State (streams,
// handles, plans, arena, staging), and each host thread works on its current device, which
// ready_state() also makes current in the CUDA runtime before any CUDA call. Threads that
// share a device share its one cuDNN and one cuBLAS handle, serialised by a mutex, and its
// uploads and downloads, serialised by one mutex each.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"
#include "nn/gpu/arena.h"
#include "nn/gpu/device_table.h"
#include "nn/gpu/runtime.h"

// ---- error checks ----------------------------------------------------------------------
// kernels/cuda/check.h defines PG_CUDA_CHECK only under nvcc: under a host compiler it maps
// CUDA onto the SIMT runtime, which cannot be mixed with the real cuda_runtime.h. This file
// therefore has its own, with the same message.
namespace pg::gpu {
namespace {

[[noreturn]] void cuda_fail(cudaError_t e, const char* stmt, const char* file, int line) {
  throw Error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in `" + stmt +
              "` at " + file + ":" + std::to_string(line));
}

[[noreturn]] void cudnn_fail(cudnnStatus_t s, const char* stmt, const char* file, int line) {
  std::string msg = std::string("cuDNN error ") + cudnnGetErrorString(s) + " in `" + stmt + "` at " + file + ":" +
                    std::to_string(line);
  // cuDNN 9 keeps a message per thread that often says more than the status; it can be
  // that of an earlier refused query, hence the label.
  char detail[512] = {0};
  cudnnGetLastErrorString(detail, sizeof detail);
  if (detail[0]) {
    std::string d(detail);
    std::replace(d.begin(), d.end(), '\n', ' ');  // pg::Error messages are one line
    msg += " (cuDNN's last message: " + d + ")";
  }
  throw Error(msg);
}

[[noreturn]] void cublas_fail(cublasStatus_t s, const char* stmt, const char* file, int line) {
  throw Error(std::string("cuBLAS error ") + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ") in `" +
              stmt + "` at " + file + ":" + std::to_string(line));
}

}  // namespace
}  // namespace pg::gpu

#ifndef PG_CUDA_CHECK
#define PG_CUDA_CHECK(stmt)                                                      \
  do {                                                                           \
    const cudaError_t pg_cuda_err_ = (stmt);                                     \
    if (pg_cuda_err_ != cudaSuccess)                                             \
      ::pg::gpu::cuda_fail(pg_cuda_err_, #stmt, __FILE__, __LINE__);             \
  } while (0)
#endif
#define PG_CUDNN_CHECK(stmt)                                                     \
  do {                                                                           \
    const cudnnStatus_t pg_cudnn_st_ = (stmt);                                   \
    if (pg_cudnn_st_ != CUDNN_STATUS_SUCCESS)                                    \
      ::pg::gpu::cudnn_fail(pg_cudnn_st_, #stmt, __FILE__, __LINE__);            \
  } while (0)
#define PG_CUBLAS_CHECK(stmt)                                                    \
  do {                                                                           \
    const cublasStatus_t pg_cublas_st_ = (stmt);                                 \
    if (pg_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                  \
      ::pg::gpu::cublas_fail(pg_cublas_st_, #stmt, __FILE__, __LINE__);          \
  } while (0)

namespace pg::gpu {
namespace {

// Host <-> device copies go through pinned buffers in chunks of at most this size, two
// buffers per direction, so that the host's memcpy of one chunk overlaps the DMA of the
// other and the pinned memory stays bounded (4 x 8 MiB).
constexpr size_t kStagingChunk = size_t(8) << 20;

// Two pinned buffers used alternately; done[i] is recorded after the last copy that used
// buf[i], so the host waits on it before writing or freeing that buffer.
struct Staging {
  void* buf[2] = {nullptr, nullptr};
  size_t cap[2] = {0, 0};
  cudaEvent_t done[2] = {nullptr, nullptr};
  int next = 0;
};

// ---- convolution plans ------------------------------------------------------------------
enum class ConvDir { forward = 0, backward_data = 1 };

// Every field of Conv2dParams, the direction and the settings that change the choice.
using ConvKey = std::array<int, 19>;

struct ConvCandidate {
  int algo = 0;  // cudnnConvolutionFwdAlgo_t or cudnnConvolutionBwdDataAlgo_t
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;
};

// Descriptors of one shape and the algorithms that may run it, best first (cuDNN's
// heuristic order). A candidate that turns out unsupported at run time is dropped.
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;  // [N,C,H,W], [N,K,P,Q]
  cudnnFilterDescriptor_t w = nullptr;               // [K, C/groups, R, S]
  cudnnConvolutionDescriptor_t conv = nullptr;
  std::vector<ConvCandidate> candidates;
  ConvPlan() = default;
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;
  ~ConvPlan() {  // only on a failed plan creation (plans are otherwise kept for good)
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
};

// One device's state, made by init() and never destroyed (see the top of the file).
struct State {
  int device = -1;
  cudaStream_t streams[3] = {nullptr, nullptr, nullptr};  // indexed by Stage
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  Arena* arena = nullptr;

  std::mutex up_mu, down_mu;
  Staging up, down;
  cudaEvent_t up_after_compute = nullptr, up_done = nullptr, down_after_compute = nullptr;

  std::mutex lib_mu;  // settings, plans, ones, and the use of the two library handles
  LibrarySettings settings;
  std::map<ConvKey, std::unique_ptr<ConvPlan>> plans;
  float* ones = nullptr;  // device vector of ones for the bias rank-1 update
  size_t ones_len = 0;
};

DeviceTable<State>& table() {
  static auto* t = new DeviceTable<State>;  // never destroyed (see the top of the file)
  return *t;
}

// The calling thread's device's state, with that device current in the CUDA runtime
// (cudaSetDevice is per host thread). The CUDA runtime is asked every time rather than
// remembered: a program embedding the library (C API) may switch its threads' device between
// calls.
State& ready_state() {
  State* s = table().current_state();
  if (!s) throw Error("internal error: the device runtime is used before gpu::init()");
  int cur = -1;
  PG_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != s->device) PG_CUDA_CHECK(cudaSetDevice(s->device));
  return *s;
}

cudaStream_t stage_stream(State& s, Stage st) { return s.streams[static_cast<int>(st)]; }

// ---- arena callbacks ---------------------------------------------------------------------
void* device_raw_alloc(size_t bytes, void*) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // not sticky, but would be reported by the next launch check
    return nullptr;
  }
  if (e != cudaSuccess) cuda_fail(e, "cudaMalloc(&p, bytes)", __FILE__, __LINE__);
  return p;
}

void device_raw_free(void* p, void*) {
  const cudaError_t e = cudaFree(p);
  if (e == cudaErrorCudartUnloading) return;  // process exit: the driver frees it anyway
  if (e != cudaSuccess) cuda_fail(e, "cudaFree(p)", __FILE__, __LINE__);
}

// ---- staging -----------------------------------------------------------------------------
// Makes buf[i] hold at least `need` bytes. Waits for its last copy first, so that a buffer
// a copy still reads or writes is never freed.
void staging_reserve(Staging& st, int i, size_t need) {
  if (st.cap[i] >= need) return;
  PG_CUDA_CHECK(cudaEventSynchronize(st.done[i]));
  const size_t cap = std::min(kStagingChunk, std::max({need, 2 * st.cap[i], size_t(64) << 10}));
  if (st.buf[i]) {
    void* old = st.buf[i];
    st.buf[i] = nullptr;
    st.cap[i] = 0;
    PG_CUDA_CHECK(cudaFreeHost(old));
  }
  PG_CUDA_CHECK(cudaMallocHost(&st.buf[i], cap));
  st.cap[i] = cap;
}

// Destroys whatever a failed init() created, ignoring errors (it is already failing).
void teardown_partial(State& s) {
  delete s.arena;
  s.arena = nullptr;
  for (Staging* st : {&s.up, &s.down}) {
    for (int i = 0; i < 2; ++i) {
      if (st->buf[i]) cudaFreeHost(st->buf[i]);
      if (st->done[i]) cudaEventDestroy(st->done[i]);
      st->buf[i] = nullptr;
      st->cap[i] = 0;
      st->done[i] = nullptr;
    }
  }
  for (cudaEvent_t* e : {&s.up_after_compute, &s.up_done, &s.down_after_compute}) {
    if (*e) cudaEventDestroy(*e);
    *e = nullptr;
  }
  if (s.cublas) cublasDestroy(s.cublas);
  if (s.cudnn) cudnnDestroy(s.cudnn);
  s.cublas = nullptr;
  s.cudnn = nullptr;
  for (cudaStream_t& st : s.streams) {
    if (st) cudaStreamDestroy(st);
    st = nullptr;
  }
  (void)cudaGetLastError();
}

std::string version_text(int v) {  // CUDA's 1000 * major + 10 * minor
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// ---- convolutions -------------------------------------------------------------------------
std::string conv_text(const kernels::Conv2dParams& p) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "x [%d, %d, %d, %d], w [%d, %d, %d, %d], y [%d, %d, %d, %d], stride %dx%d, pad %dx%d, "
                "dilation %dx%d, groups %d",
                p.N, p.C, p.H, p.W, p.K, p.groups > 0 ? p.C / p.groups : 0, p.R, p.S, p.N, p.K, p.P, p.Q,
                p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups);
  return buf;
}

void check_conv_params(const kernels::Conv2dParams& p, const char* what) {
  bool ok = p.N >= 0 && p.C > 0 && p.H > 0 && p.W > 0 && p.K > 0 && p.R > 0 && p.S > 0 && p.stride_h > 0 &&
            p.stride_w > 0 && p.pad_h >= 0 && p.pad_w >= 0 && p.dil_h > 0 && p.dil_w > 0 && p.groups > 0 &&
            p.C % p.groups == 0 && p.K % p.groups == 0;
  if (ok) {
    kernels::Conv2dParams q = p;
    ok = kernels::conv2d_output_size(q) && q.P == p.P && q.Q == p.Q;
  }
  if (!ok) throw Error(std::string("gpu::") + what + ": invalid convolution shape: " + conv_text(p));
}

ConvKey conv_key(ConvDir dir, const kernels::Conv2dParams& p, const LibrarySettings& set) {
  return {static_cast<int>(dir), p.N, p.C, p.H, p.W, p.K, p.R, p.S, p.P, p.Q, p.stride_h, p.stride_w,
          p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups, set.deterministic ? 1 : 0, set.tensor_math ? 1 : 0};
}

// Whether a heuristic result may be used under the settings, and with which math type.
// Strict float32 (tensor_math off) runs everything with CUDNN_FMA_MATH, whatever math type
// the heuristic reports for an algorithm, and skips the tensor-op ones; TENSOR_OP_MATH_
// ALLOW_CONVERSION would round float32 inputs to half and is never used.
template <class Perf>
bool accept_perf(const Perf& r, const LibrarySettings& set, cudnnMathType_t& math) {
  if (r.status != CUDNN_STATUS_SUCCESS) return false;
  if (set.deterministic && r.determinism != CUDNN_DETERMINISTIC) return false;
  if (r.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;
  if (!set.tensor_math && r.mathType == CUDNN_TENSOR_OP_MATH) return false;
  math = set.tensor_math ? r.mathType : CUDNN_FMA_MATH;
  return true;
}

std::unique_ptr<ConvPlan> make_plan(State& s, ConvDir dir, const kernels::Conv2dParams& p,
                                    const LibrarySettings& set) {
  auto plan = std::make_unique<ConvPlan>();
  PG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->x));
  PG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, p.N, p.C, p.H, p.W));
  PG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->y));
  PG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, p.N, p.K, p.P, p.Q));
  PG_CUDNN_CHECK(cudnnCreateFilterDescriptor(&plan->w));
  PG_CUDNN_CHECK(cudnnSetFilter4dDescriptor(plan->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, p.K, p.C / p.groups, p.R, p.S));
  PG_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&plan->conv));
  // torchvision's Conv2d is a cross-correlation; float32 accumulation.
  PG_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(plan->conv, p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dil_h,
                                                 p.dil_w, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  PG_CUDNN_CHECK(cudnnSetConvolutionGroupCount(plan->conv, p.groups));
  PG_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv, set.tensor_math ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH));

  // cuDNN must agree with the P x Q the caller computed.
  int n = 0, k = 0, pp = 0, qq = 0;
  PG_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(plan->conv, plan->x, plan->w, &n, &k, &pp, &qq));
  if (n != p.N || k != p.K || pp != p.P || qq != p.Q)
    throw Error("internal error: cuDNN computes the output [" + std::to_string(n) + ", " + std::to_string(k) +
                ", " + std::to_string(pp) + ", " + std::to_string(qq) + "] for " + conv_text(p));

  // cuDNN's heuristics (no benchmarking: Find would allocate outside the arena and time
  // every algorithm), filtered by the settings; each kept candidate's workspace is asked
  // for with the math type it will run with, and one cuDNN refuses is dropped.
  auto add = [&](int algo, cudnnMathType_t math) {
    for (const auto& c : plan->candidates)
      if (c.algo == algo && c.math == math) return;
    PG_CUDNN_CHECK(cudnnSetConvolutionMathType(plan->conv, math));
    size_t ws = 0;
    const cudnnStatus_t st =
        dir == ConvDir::forward
            ? cudnnGetConvolutionForwardWorkspaceSize(s.cudnn, plan->x, plan->w, plan->conv, plan->y,
                                                      static_cast<cudnnConvolutionFwdAlgo_t>(algo), &ws)
            : cudnnGetConvolutionBackwardDataWorkspaceSize(s.cudnn, plan->w, plan->y, plan->conv, plan->x,
                                                           static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), &ws);
    if (st == CUDNN_STATUS_SUCCESS) plan->candidates.push_back({algo, math, ws});
  };
  if (dir == ConvDir::forward) {
    int max_count = 0, got = 0;
    PG_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(s.cudnn, &max_count));
    std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(max_count, 1));
    PG_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(s.cudnn, plan->x, plan->w, plan->conv, plan->y,
                                                          static_cast<int>(perf.size()), &got, perf.data()));
    for (int i = 0; i < got; ++i) {
      cudnnMathType_t math;
      if (accept_perf(perf[i], set, math)) add(perf[i].algo, math);
    }
  } else {
    int max_count = 0, got = 0;
    PG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(s.cudnn, &max_count));
    std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(max_count, 1));
    PG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(s.cudnn, plan->w, plan->y, plan->conv, plan->x,
                                                               static_cast<int>(perf.size()), &got, perf.data()));
    for (int i = 0; i < got; ++i) {
      cudnnMathType_t math;
      if (accept_perf(perf[i], set, math)) add(perf[i].algo, math);
    }
  }
  if (plan->candidates.empty())
    throw Error(std::string("cuDNN offers no ") + (dir == ConvDir::forward ? "forward" : "data-gradient") +
                " algorithm for " + conv_text(p) + " (deterministic " + (set.deterministic ? "on" : "off") +
                ", tensor math " + (set.tensor_math ? "on" : "off") + ")");
  return plan;
}

// Returns an arena block at scope exit. Freeing right after the asynchronous library call
// is safe: the block's next user is ordered after it on the compute stream.
struct ArenaHold {
  Arena* arena;
  void* p;
  ~ArenaHold() {
    if (p) arena->free(p);
  }
};

// Runs one convolution: a = x (forward) or dy (backward data), out = y or dx.
void run_conv(ConvDir dir, const kernels::Conv2dParams& p, const float* a, const float* w, float* out) {
  const char* what = dir == ConvDir::forward ? "conv_forward" : "conv_backward_data";
  State& s = ready_state();
  check_conv_params(p, what);
  if (p.N == 0) return;
  std::lock_guard<std::mutex> lock(s.lib_mu);
  const LibrarySettings set = s.settings;
  auto& slot = s.plans[conv_key(dir, p, set)];
  if (!slot) {
    try {
      slot = make_plan(s, dir, p, set);
    } catch (...) {
      s.plans.erase(conv_key(dir, p, set));
      throw;
    }
  }
  ConvPlan& plan = *slot;
  const float alpha = 1.f, beta = 0.f;  // beta 0: the output is overwritten, never read
  for (size_t i = 0; i < plan.candidates.size();) {
    const ConvCandidate c = plan.candidates[i];
    void* ws = nullptr;
    if (c.workspace) {
      try {
        ws = s.arena->alloc(c.workspace);
      } catch (const OutOfMemory&) {
        if (i + 1 == plan.candidates.size()) throw;
        ++i;  // the next candidate may need less workspace (kept for later calls)
        continue;
      }
    }
    ArenaHold hold{s.arena, ws};
    PG_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv, c.math));
    const cudnnStatus_t st =
        dir == ConvDir::forward
            ? cudnnConvolutionForward(s.cudnn, &alpha, plan.x, a, plan.w, w, plan.conv,
                                      static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws, c.workspace, &beta,
                                      plan.y, out)
            : cudnnConvolutionBackwardData(s.cudnn, &alpha, plan.w, w, plan.y, a, plan.conv,
                                           static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo), ws, c.workspace,
                                           &beta, plan.x, out);
    if (st == CUDNN_STATUS_SUCCESS) return;
    if (st == CUDNN_STATUS_NOT_SUPPORTED && plan.candidates.size() > 1) {
      plan.candidates.erase(plan.candidates.begin() + static_cast<long>(i));
      continue;
    }
    cudnn_fail(st,
               dir == ConvDir::forward ? "cudnnConvolutionForward(...)" : "cudnnConvolutionBackwardData(...)",
               __FILE__, __LINE__);
  }
  throw Error(std::string("gpu::") + what + ": no cuDNN algorithm could run " + conv_text(p));
}

// A device vector of at least n ones (the bias update's second factor), grown as needed.
const float* ones_vector(State& s, size_t n) {
  if (s.ones_len >= n) return s.ones;
  const size_t len = std::max({n, 2 * s.ones_len, size_t(1024)});
  std::vector<float> host(len, 1.f);
  auto* p = static_cast<float*>(s.arena->alloc(len * sizeof(float)));
  try {
    upload(p, host.data(), len * sizeof(float));  // the compute stream waits for it
  } catch (...) {
    s.arena->free(p);
    throw;
  }
  if (s.ones) s.arena->free(s.ones);  // later users of that block are ordered after our reads
  s.ones = p;
  s.ones_len = len;
  return p;
}

void check_linear(int N, int in, int out, const char* what) {
  if (N < 0 || in < 0 || out < 0)
    throw Error(std::string("gpu::") + what + ": invalid shape N " + std::to_string(N) + ", in " +
                std::to_string(in) + ", out " + std::to_string(out));
}

// Creates device d's state: the context, streams, events, library handles and arena.
State* make_state(int d) {
  auto unusable = [](const std::string& why) { return Error("no usable CUDA device: " + why); };
  auto reason = [](cudaError_t e) {
    (void)cudaGetLastError();
    return std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")";
  };
  cudaError_t e = cudaSetDevice(d);
  if (e != cudaSuccess) throw unusable("cudaSetDevice(" + std::to_string(d) + "): " + reason(e));
  e = cudaFree(nullptr);  // creates the context now, so that a broken device fails here
  if (e != cudaSuccess) throw unusable("creating a context on device " + std::to_string(d) + ": " + reason(e));

  auto* s = new State;
  s->device = d;
  try {
    for (cudaStream_t& st : s->streams) PG_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    for (cudaEvent_t* ev : {&s->up_after_compute, &s->up_done, &s->down_after_compute, &s->up.done[0],
                            &s->up.done[1], &s->down.done[0], &s->down.done[1]})
      PG_CUDA_CHECK(cudaEventCreateWithFlags(ev, cudaEventDisableTiming));
    const cudaStream_t compute = stage_stream(*s, Stage::compute);
    PG_CUDNN_CHECK(cudnnCreate(&s->cudnn));
    PG_CUDNN_CHECK(cudnnSetStream(s->cudnn, compute));
    PG_CUBLAS_CHECK(cublasCreate(&s->cublas));
    PG_CUBLAS_CHECK(cublasSetStream(s->cublas, compute));
    // Default math keeps SGEMM in float32 (TF32 needs CUBLAS_TF32_TENSOR_OP_MATH); pedantic
    // would also forbid the faster float32 kernels for no gain in accuracy here.
    PG_CUBLAS_CHECK(cublasSetMathMode(s->cublas, CUBLAS_DEFAULT_MATH));
    s->arena = new Arena(device_raw_alloc, device_raw_free, nullptr);
  } catch (...) {
    teardown_partial(*s);
    delete s;
    throw;
  }
  return s;
}

}  // namespace

const char* backend_name() { return "cuda"; }

void init(int device_index) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error(std::string("no usable CUDA device: ") + cudaGetErrorString(e) + " (" + cudaGetErrorName(e) + ")");
  }
  if (count <= 0) throw Error("no usable CUDA device: the CUDA runtime reports no device");
  if (device_index < 0 || device_index >= count)
    throw Error("no usable CUDA device: device " + std::to_string(device_index) + " requested, " +
                std::to_string(count) + " visible (CUDA_VISIBLE_DEVICES selects which)");
  table().init(device_index, make_state);
  ready_state();  // the CUDA runtime's current device of this thread follows
}

bool initialized() { return table().any(); }

int current_device() { return table().current(); }

int device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

std::string device_description() {
  State& s = ready_state();
  cudaDeviceProp prop;
  PG_CUDA_CHECK(cudaGetDeviceProperties(&prop, s.device));
  int driver = 0, runtime = 0, cublas_version = 0;
  PG_CUDA_CHECK(cudaDriverGetVersion(&driver));
  PG_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));
  {
    std::lock_guard<std::mutex> lock(s.lib_mu);
    PG_CUBLAS_CHECK(cublasGetVersion(s.cublas, &cublas_version));
  }
  const size_t cudnn_version = cudnnGetVersion();  // 10000 * major + 100 * minor + patch
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%s (sm_%d%d, %d SMs, %.1f GiB), driver %s, runtime %s, cuDNN %zu.%zu.%zu, cuBLAS %d.%d.%d",
                prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                static_cast<double>(prop.totalGlobalMem) / double(1u << 30), version_text(driver).c_str(),
                version_text(runtime).c_str(), cudnn_version / 10000, cudnn_version / 100 % 100, cudnn_version % 100,
                cublas_version / 10000, cublas_version / 100 % 100, cublas_version % 100);
  return buf;
}

// ---- memory ------------------------------------------------------------------------------
void* alloc(size_t bytes) { return ready_state().arena->alloc(bytes); }

void free(void* p) {
  if (!p) return;
  // No CUDA call (an arena only takes the block back), so this is safe at any time and from
  // any thread, including static destruction after the CUDA runtime has unloaded.
  if (table().return_block([&](State& s) { return s.arena->try_free(p); })) return;
  throw Error(initialized() ? "gpu::free: unknown pointer (not allocated by any device's arena, or already freed)"
                            : "internal error: gpu::free of a pointer before gpu::init()");
}

MemoryStats memory_stats() {
  MemoryStats m;
  State* s = table().current_state();
  if (!s) return m;
  const ArenaStats a = s->arena->stats();
  m.in_use = a.in_use;
  m.cached = a.cached;
  m.peak = a.peak;
  m.device_allocs = a.device_allocs;
  return m;
}

void release_cached() {
  if (!initialized()) return;
  ready_state().arena->release_cached();
}

void* alloc_pinned(size_t bytes) {
  ready_state();
  void* p = nullptr;
  const cudaError_t e = cudaMallocHost(&p, std::max<size_t>(bytes, 1));
  if (e == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    throw Error("out of pinned host memory: " + std::to_string(bytes) + " bytes requested");
  }
  if (e != cudaSuccess) cuda_fail(e, "cudaMallocHost(&p, bytes)", __FILE__, __LINE__);
  return p;
}

void free_pinned(void* p) {
  if (!p) return;
  const cudaError_t e = cudaFreeHost(p);
  if (e == cudaErrorCudartUnloading) return;  // process exit
  if (e != cudaSuccess) cuda_fail(e, "cudaFreeHost(p)", __FILE__, __LINE__);
}

// ---- streams and copies ------------------------------------------------------------------
cudaStream_t stream(Stage st) { return stage_stream(ready_state(), st); }

void upload(void* dst, const void* src, size_t bytes) {
  State& s = ready_state();
  if (bytes == 0) return;
  std::lock_guard<std::mutex> lock(s.up_mu);
  const cudaStream_t up = stage_stream(s, Stage::upload), compute = stage_stream(s, Stage::compute);
  // Issue order: dst may be an arena block that compute work issued earlier still uses.
  PG_CUDA_CHECK(cudaEventRecord(s.up_after_compute, compute));
  PG_CUDA_CHECK(cudaStreamWaitEvent(up, s.up_after_compute, 0));
  Staging& st = s.up;
  for (size_t off = 0; off < bytes; off += kStagingChunk) {
    const size_t n = std::min(kStagingChunk, bytes - off);
    const int i = st.next;
    st.next ^= 1;
    PG_CUDA_CHECK(cudaEventSynchronize(st.done[i]));  // its previous copy has left the buffer
    staging_reserve(st, i, n);
    std::memcpy(st.buf[i], static_cast<const char*>(src) + off, n);
    PG_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + off, st.buf[i], n, cudaMemcpyHostToDevice, up));
    PG_CUDA_CHECK(cudaEventRecord(st.done[i], up));
  }
  // Later compute work starts after the data has arrived.
  PG_CUDA_CHECK(cudaEventRecord(s.up_done, up));
  PG_CUDA_CHECK(cudaStreamWaitEvent(compute, s.up_done, 0));
}

void download(void* dst, const void* src, size_t bytes) {
  State& s = ready_state();
  if (bytes == 0) return;
  std::lock_guard<std::mutex> lock(s.down_mu);
  const cudaStream_t down = stage_stream(s, Stage::download), compute = stage_stream(s, Stage::compute);
  PG_CUDA_CHECK(cudaEventRecord(s.down_after_compute, compute));
  PG_CUDA_CHECK(cudaStreamWaitEvent(down, s.down_after_compute, 0));
  Staging& st = s.down;
  const size_t chunks = (bytes + kStagingChunk - 1) / kStagingChunk;
  // Chunk k goes through buffer k % 2; chunk k + 1 is in flight while the host copies k out.
  auto issue = [&](size_t k) {
    const int i = static_cast<int>(k & 1);
    const size_t off = k * kStagingChunk, n = std::min(kStagingChunk, bytes - off);
    staging_reserve(st, i, n);
    PG_CUDA_CHECK(cudaMemcpyAsync(st.buf[i], static_cast<const char*>(src) + off, n, cudaMemcpyDeviceToHost, down));
    PG_CUDA_CHECK(cudaEventRecord(st.done[i], down));
  };
  issue(0);
  for (size_t k = 0; k < chunks; ++k) {
    if (k + 1 < chunks) issue(k + 1);
    const int i = static_cast<int>(k & 1);
    const size_t off = k * kStagingChunk, n = std::min(kStagingChunk, bytes - off);
    PG_CUDA_CHECK(cudaEventSynchronize(st.done[i]));
    std::memcpy(static_cast<char*>(dst) + off, st.buf[i], n);
  }
}

void copy(void* dst, const void* src, size_t bytes) {
  State& s = ready_state();
  if (bytes == 0 || dst == src) return;
  PG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stage_stream(s, Stage::compute)));
}

void zero(void* dst, size_t bytes) {
  State& s = ready_state();
  if (bytes == 0) return;
  PG_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, stage_stream(s, Stage::compute)));
}

void synchronize() {
  if (!initialized()) return;
  ready_state();
  PG_CUDA_CHECK(cudaDeviceSynchronize());
}

// ---- settings ----------------------------------------------------------------------------
void set_library_settings(const LibrarySettings& set) {
  State& s = ready_state();
  std::lock_guard<std::mutex> lock(s.lib_mu);
  s.settings = set;  // plans are keyed by the settings: nothing to invalidate
}

LibrarySettings library_settings() {
  State& s = ready_state();
  std::lock_guard<std::mutex> lock(s.lib_mu);
  return s.settings;
}

// ---- library calls -------------------------------------------------------------------------
void conv_forward(const kernels::Conv2dParams& p, const float* x, const float* w, float* y) {
  run_conv(ConvDir::forward, p, x, w, y);
}

void conv_backward_data(const kernels::Conv2dParams& p, const float* dy, const float* w, float* dx) {
  run_conv(ConvDir::backward_data, p, dy, w, dx);
}

// cuBLAS is column-major. A row-major matrix M [r x c] is, read column-major, M^T [c x r]
// with leading dimension c, so with no data movement:
//   x [N x in] is X = x^T [in x N] (ld in), w [out x in] is W = w^T [in x out] (ld in),
//   y [N x out] is Y = y^T [out x N] (ld out).
// y = x w^T  <=>  y^T = w x^T = W^T X: SGEMM with op(A) = A^T, A = W, B = X, m = out, n = N, k = in.
void linear_forward(int N, int in, int out, const float* x, const float* w, const float* b, float* y) {
  State& s = ready_state();
  check_linear(N, in, out, "linear_forward");
  if (N == 0 || out == 0) return;
  std::lock_guard<std::mutex> lock(s.lib_mu);
  const float one = 1.f, zero_f = 0.f;
  if (in == 0) {
    PG_CUDA_CHECK(cudaMemsetAsync(y, 0, size_t(N) * out * sizeof(float), stage_stream(s, Stage::compute)));
  } else {
    PG_CUBLAS_CHECK(cublasSgemm(s.cublas, CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, &one, w, in, x, in, &zero_f, y, out));
  }
  if (b) {
    // Y [out x N] += b [out] * ones [N]^T: a rank-1 update adds b to every row of y.
    const float* ones = ones_vector(s, size_t(N));
    PG_CUBLAS_CHECK(cublasSger(s.cublas, out, N, &one, b, 1, ones, 1, y, out));
  }
}

// dx = dy w  <=>  dx^T [in x N] = w^T dy^T = W DY with W as above and DY = dy^T [out x N]
// (ld out): SGEMM without transposes, m = in, n = N, k = out, ldc = in.
void linear_backward(int N, int in, int out, const float* dy, const float* w, float* dx) {
  State& s = ready_state();
  check_linear(N, in, out, "linear_backward");
  if (N == 0 || in == 0) return;
  std::lock_guard<std::mutex> lock(s.lib_mu);
  if (out == 0) {
    PG_CUDA_CHECK(cudaMemsetAsync(dx, 0, size_t(N) * in * sizeof(float), stage_stream(s, Stage::compute)));
    return;
  }
  const float one = 1.f, zero_f = 0.f;
  PG_CUBLAS_CHECK(cublasSgemm(s.cublas, CUBLAS_OP_N, CUBLAS_OP_N, in, N, out, &one, w, in, dy, out, &zero_f, dx, in));
}

}  // namespace pg::gpu
