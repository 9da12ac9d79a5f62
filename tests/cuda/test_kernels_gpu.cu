// Every kernel of kernels/cuda on a real GPU against its CPU twin: the shared tables of
// tests/kernels/cases.cpp (the cases, tolerances and bit-exactness of the host runner,
// tests/cuda_host/test_cuda_kernels.cpp) on device memory, plus the realistic shapes,
// determinism reruns and cudaEvent timings. Built by CMake with nvcc (target
// parchgrad_kernels_gpu; a CTest test labelled `gpu` with -DPARCHGRAD_GPU_TESTS=ON).
//
//   test_kernels_gpu [--quick] [--no-timing] [--only=a,b] [--probe] [--host-only] [--broken=oob|race]
//     (default)   small and realistic shapes (ResNet-50 at batch 8, VGG's first max-pool),
//                 a second launch of each for determinism, timings
//     --quick     small shapes only, first data seed, no reruns, no timings: for the
//                 compute-sanitizer runs, which slow kernels down 10-100x
//     --only=...  groups to run (relu, maxpool, gap, variances, moments, dgrad, avgpool,
//                 elementwise, seed, maps, preprocess)
//     --probe     prints the device and exits 0, or "no CUDA device" and exits 2
//     --host-only no device needed: loads OpenBLAS, checks the dgrad twin against double
//                 loops on the small shapes, and the refusal of unsupported shapes
//     --broken=   runs one deliberately broken kernel (tests/cuda/broken_kernels.cu) and
//                 nothing else: the sanitizers' positive controls
// Output: one line per check, "PASS|FAIL <name>  <detail>", "TIME <name> ..." per timing,
// "INFO ..." lines, and last "SUMMARY: <n> checks, <p> passed, <f> failed". Exit status 0
// when everything passed, 1 when a check failed, 2 when there is no device.
#include <cuda_runtime.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>

#include "core/error.h"
#include "kernels/cuda/check.h"
#include "tests/cuda/broken_kernels.h"
#include "tests/kernels/harness.h"

namespace kt = pg::kernel_tests;

namespace {

// Device memory through the CUDA runtime; copies and fills on one stream.
class CudaDevice final : public kt::Device {
 public:
  explicit CudaDevice(cudaStream_t s) : s_(s) {}
  void* alloc(size_t bytes) override {
    void* p = nullptr;
    PG_CUDA_CHECK(cudaMalloc(&p, bytes));
    return p;
  }
  void release(void* p) noexcept override { cudaFree(p); }
  void upload(void* dst, const void* src, size_t bytes) override {
    PG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s_));
    sync();
  }
  void download(void* dst, const void* src, size_t bytes) override {
    PG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s_));
    sync();
  }
  void fill(void* p, unsigned char byte, size_t bytes) override { PG_CUDA_CHECK(cudaMemsetAsync(p, byte, bytes, s_)); }
  void sync() override {
    PG_CUDA_CHECK(cudaStreamSynchronize(s_));
    PG_CUDA_CHECK(cudaGetLastError());
  }
  cudaStream_t stream() const override { return s_; }
  // One warm-up, one run to size the repetitions (about 20 ms in all, 3 to 200 of them),
  // then the repetitions between two cudaEvents.
  double time_us(const std::function<void()>& launch) override {
    cudaEvent_t a, b;
    PG_CUDA_CHECK(cudaEventCreate(&a));
    PG_CUDA_CHECK(cudaEventCreate(&b));
    float ms = 0;
    launch();
    sync();
    PG_CUDA_CHECK(cudaEventRecord(a, s_));
    launch();
    PG_CUDA_CHECK(cudaEventRecord(b, s_));
    PG_CUDA_CHECK(cudaEventSynchronize(b));
    PG_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    const int reps = std::clamp(int(20.0 / std::max(double(ms), 1e-3)), 3, 200);
    PG_CUDA_CHECK(cudaEventRecord(a, s_));
    for (int i = 0; i < reps; ++i) launch();
    PG_CUDA_CHECK(cudaEventRecord(b, s_));
    PG_CUDA_CHECK(cudaEventSynchronize(b));
    PG_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    PG_CUDA_CHECK(cudaGetLastError());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return 1000.0 * double(ms) / reps;
  }

 private:
  cudaStream_t s_;
};

// PASS/FAIL lines, counted for the summary.
class LineReport final : public kt::Report {
 public:
  int pass = 0, fail = 0;
  void check(bool ok, const std::string& name, const std::string& detail) override {
    std::printf("%s %s  %s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.c_str());
    std::fflush(stdout);
    ++(ok ? pass : fail);
  }
  void info(const std::string& line) override {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
};

bool listed(const std::string& only, const char* group) {
  return only.empty() || ("," + only + ",").find("," + std::string(group) + ",") != std::string::npos;
}

int no_device(cudaError_t e, int count) {
  std::printf("FAIL no CUDA device (%s, %d devices)\n", e == cudaSuccess ? "cudaSuccess" : cudaGetErrorString(e),
              count);
  std::printf("SUMMARY: 1 checks, 0 passed, 1 failed (no CUDA device)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  kt::Options o;
  o.large = true;
  o.timing = true;
  std::string only, broken;
  bool probe = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
      o.large = o.timing = o.repeat = o.all_seeds = false;
    } else if (a == "--no-timing") {
      o.timing = false;
    } else if (a.rfind("--only=", 0) == 0) {
      only = a.substr(7);
    } else if (a == "--probe") {
      probe = true;
    } else if (a == "--host-only") {
      o.host_only = true;
      o.timing = false;
    } else if (a.rfind("--broken=", 0) == 0) {
      broken = a.substr(9);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--quick] [--no-timing] [--only=relu,maxpool,gap,variances,moments,dgrad,avgpool,"
                   "elementwise,seed,maps,preprocess] [--probe] [--host-only] [--broken=oob|race]\n",
                   argv[0]);
      return 64;
    }
  }
  LineReport report;

  if (o.host_only) {  // the dgrad group's host side; nothing touches the device
    std::printf("INFO mode: host only (no device used), OpenMP threads for the twins: %d\n", omp_get_max_threads());
    CudaDevice none(nullptr);
    kt::Ctx ctx{none, report, o};
    try {
      kt::group("dgrad").run(ctx);
    } catch (const std::exception& ex) {
      report.check(false, "dgrad host side (aborted)", ex.what());
    }
    std::printf("SUMMARY: %d checks, %d passed, %d failed (host only)\n", report.pass + report.fail, report.pass,
                report.fail);
    return report.fail ? 1 : 0;
  }

  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) return no_device(e, count);
  cudaDeviceProp prop{};
  int driver = 0, runtime = 0;
  cudaGetDeviceProperties(&prop, 0);
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  std::printf("INFO device 0: %s, sm_%d%d, %d SMs, %.1f GiB, driver API %d, runtime %d\n", prop.name, prop.major,
              prop.minor, prop.multiProcessorCount, double(prop.totalGlobalMem) / (1 << 30), driver, runtime);
  if (probe) return 0;

  cudaStream_t stream = nullptr;
  try {
    PG_CUDA_CHECK(cudaStreamCreate(&stream));
  } catch (const std::exception& ex) {
    std::printf("FAIL cudaStreamCreate: %s\n", ex.what());
    return 1;
  }
  if (!broken.empty()) {
    if (broken == "oob") {
      pg::gputest::run_broken_oob(stream);
    } else if (broken == "race") {
      pg::gputest::run_broken_race(stream);
    } else {
      std::fprintf(stderr, "--broken=oob or --broken=race\n");
      return 64;
    }
    return 0;  // the verdict is the sanitizer's
  }

  std::printf("INFO mode: %s, timings %s, OpenMP threads for the twins: %d\n", o.quick ? "quick" : "full",
              o.timing ? "on" : "off", omp_get_max_threads());
  const auto t0 = std::chrono::steady_clock::now();
  {
    CudaDevice dev(stream);
    kt::Ctx ctx{dev, report, o};
    for (const kt::Group& g : kt::groups()) {
      if (!listed(only, g.name)) continue;
      const auto g0 = std::chrono::steady_clock::now();
      try {
        g.run(ctx);
      } catch (const std::exception& ex) {  // a CUDA error or a refused launch: the group stops here
        report.check(false, std::string(g.name) + " (group aborted)", ex.what());
      }
      std::printf("INFO group %s: %.1f s\n", g.name,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count());
    }
  }
  cudaStreamDestroy(stream);
  cudaDeviceReset();  // lets compute-sanitizer's leak check see every allocation released
  std::printf("SUMMARY: %d checks, %d passed, %d failed (%.1f s)\n", report.pass + report.fail, report.pass,
              report.fail, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return report.fail ? 1 : 0;
}
