// Every kernel of kernels/cuda on a real GPU, against its CPU twin, with determinism checks
// and cudaEvent timings. A standalone program built by tools/gpu_check.sh (nvcc for the
// .cu files, the host compiler for the twins in kernels/cpu, OpenBLAS from .vendor/).
//
//   test_kernels_gpu [--quick] [--no-timing] [--only=a,b] [--probe] [--broken=oob|race]
//     (default)   small odd shapes (those of tests/cuda_host/test_cuda_kernels.cpp) and
//                 realistic ones (ResNet-50 at batch 8, VGG's first max-pool), timings
//     --quick     small shapes only, one seed, no determinism reruns, no timings: for the
//                 compute-sanitizer runs, which slow kernels down 10-100x
//     --only=...  groups to run (relu, maxpool, gap, variances, moments, dgrad, avgpool,
//                 elementwise, seed, maps, preprocess)
//     --probe     prints the device and exits 0, or "no CUDA device" and exits 2
//     --host-only no device needed: loads OpenBLAS, checks the dgrad twin against double
//                 loops on the small shapes, and the refusal of unsupported shapes (the
//                 host side of the dgrad group; gpu_check.sh's "host" step)
//     --broken=   runs one deliberately broken kernel (tests/cuda/broken_kernels.cu) and
//                 nothing else: the sanitizers' positive controls
// Output: one line per check, "PASS|FAIL <name> <detail>", "TIME <name> ..." per timing,
// "INFO ..." lines, and last "SUMMARY: <n> checks, <p> passed, <f> failed". Exit status 0
// when everything passed, 1 when a check failed, 2 when there is no device.
//
// Tolerances are the host tests' (tests/cuda_host/test_cuda_kernels.cpp):
//   * ReLU (values and mask bytes), max-pool (values, argmax, backward): bit for bit;
//   * channel gap: |gpu - twin| / twin <= 1e-6;  M, N and class moments: <= 1e-12;
//   * conv dgrad float32: max_i |gpu_i - twin_i| / bound_i <= 1e-5, where bound is the same
//     dgrad of |scale|, |dy|, |w| (sum of |terms|); TF32: <= 1.5e-3 on random inputs,
//     <= 1e-5 on inputs exactly representable in TF32; BF16 (launch_conv_dgrad_bf16, built
//     only when conv_dgrad.h declares it: -DPG_GPU_TEST_BF16=1): <= 2u + u^2 + 2^-23 +
//     2 L 2^-24 (u = 2^-8, L = K*R*S) and >= 1e-4 on random inputs, <= 1e-5 on BF16-exact
//     inputs. The twin cpu::conv2d_dgrad itself is checked against double loops on the
//     small shapes (<= 1e-5).
//   * average and adaptive average pools (forward, gather backward), add, scale,
//     sample_channel_scale, channel_affine, channel maps, normalize_u8: bit for bit;
//   * probability seed: within one float ulp of the twin (the device's double exp may differ
//     from glibc's in the last bit of a double); the number of inexact values is printed.
// Every output buffer is filled with 0xFF bytes (NaN, -1) before each launch, so an element
// a kernel forgets to write fails the comparison. "Deterministic" means that a second
// launch on the same inputs gives the same bits.
//
// CPU twins: kernels/cpu (relu, pool, channel_stats, conv2d, elementwise, seed, maps,
// preprocess). conv2d_dgrad needs OpenBLAS; when it cannot be loaded, a FAIL line says so and
// the dgrad checks use plain double loops (naive_dgrad below) instead, so that the GPU
// kernels are still checked.
#include <cuda_runtime.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/common/error_measures.h"
#include "kernels/cpu/blas.h"
#include "kernels/cpu/channel_stats.h"
#include "kernels/cpu/conv2d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/maps.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/preprocess.h"
#include "kernels/cpu/relu.h"
#include "kernels/cpu/seed.h"
#include "kernels/cuda/avgpool.h"
#include "kernels/cuda/channel_stats.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/conv_dgrad.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/maps.h"
#include "kernels/cuda/maxpool.h"
#include "kernels/cuda/preprocess.h"
#include "kernels/cuda/relu.h"
#include "kernels/cuda/seed.h"
#include "nn/error.h"
#include "tests/cuda/broken_kernels.h"

namespace kc = pg::kernels::cuda;
namespace kcpu = pg::kernels::cpu;
using pg::kernels::Conv2dParams;
using pg::kernels::Pool2dParams;

namespace {

// ---- options, reporting ---------------------------------------------------------------------

struct Options {
  bool quick = false;
  bool timing = true;
  bool host_only = false;  // --host-only: the host side of the dgrad group only (no device)
  std::string only;  // comma-separated group names; empty: all
  bool wants(const char* group) const {
    if (only.empty()) return true;
    const std::string list = "," + only + ",";
    return list.find("," + std::string(group) + ",") != std::string::npos;
  }
};

int g_pass = 0, g_fail = 0;
cudaStream_t g_stream = nullptr;

void check(bool ok, const std::string& name, const std::string& detail) {
  std::printf("%s %s  %s\n", ok ? "PASS" : "FAIL", name.c_str(), detail.c_str());
  std::fflush(stdout);
  ++(ok ? g_pass : g_fail);
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// ---- device memory --------------------------------------------------------------------------

void sync() {
  PG_CUDA_CHECK(cudaStreamSynchronize(g_stream));
  PG_CUDA_CHECK(cudaGetLastError());
}

// A device array of n T's, freed on destruction. Copies go through g_stream and wait for it.
template <class T>
class DevBuf {
 public:
  explicit DevBuf(size_t n) : n_(n) { PG_CUDA_CHECK(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T))); }
  explicit DevBuf(const std::vector<T>& v) : DevBuf(v.size()) { upload(v); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  ~DevBuf() { cudaFree(p_); }

  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }
  void upload(const std::vector<T>& v) {
    if (v.size() != n_) throw pg::Error("DevBuf::upload: size mismatch");
    PG_CUDA_CHECK(cudaMemcpyAsync(p_, v.data(), bytes(), cudaMemcpyHostToDevice, g_stream));
    sync();
  }
  std::vector<T> download() const {
    std::vector<T> v(n_);
    PG_CUDA_CHECK(cudaMemcpyAsync(v.data(), p_, bytes(), cudaMemcpyDeviceToHost, g_stream));
    sync();
    return v;
  }
  // 0xFF bytes: NaN for floats and doubles, -1 for integers.
  void poison() { PG_CUDA_CHECK(cudaMemsetAsync(p_, 0xFF, bytes(), g_stream)); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// ---- comparisons ------------------------------------------------------------------------------

template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// "" when a and b are bitwise equal, else where they first differ.
std::string first_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return fmt("sizes %zu vs %zu", a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], 4) != 0) return fmt("first difference at %zu: %.9g vs %.9g", i, a[i], b[i]);
  return "";
}
template <class T>
std::string first_diff_int(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return fmt("sizes %zu vs %zu", a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return fmt("first difference at %zu: %lld vs %lld", i, (long long)a[i], (long long)b[i]);
  return "";
}

using pg::testing::bf16_round;  // tests/common/error_measures.h
using pg::testing::max_rel;
using pg::testing::tf32_round;
double rel(double a, double b, double floor_) {
  const double e = std::fabs(a - b) / std::max(std::fabs(b), floor_);
  return std::isnan(e) ? INFINITY : e;
}

// Worst error of a group, printed as an INFO line when the group ends.
struct Worst {
  std::string what;
  double v = 0;
  int n = 0;
  explicit Worst(std::string w) : what(std::move(w)) {}
  void add(double e) {
    v = std::max(v, e);
    ++n;
  }
  ~Worst() {
    if (n) std::printf("INFO worst relative error, %s: %.3g over %d cases\n", what.c_str(), v, n);
  }
};

// ---- data ---------------------------------------------------------------------------------------

std::vector<float> randn(size_t n, uint32_t seed, float mean = 0.f, float sd = 1.f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> absv(std::vector<float> v) {
  for (auto& x : v) x = std::fabs(x);
  return v;
}

// ---- timing -----------------------------------------------------------------------------------

// Mean time of one launch(), in microseconds: one warm-up, one run to size the repetitions
// (about 20 ms in all, 3 to 200 of them), then the repetitions between two cudaEvents.
double time_us(const std::function<void()>& launch) {
  cudaEvent_t a, b;
  PG_CUDA_CHECK(cudaEventCreate(&a));
  PG_CUDA_CHECK(cudaEventCreate(&b));
  float ms = 0;
  launch();
  sync();
  PG_CUDA_CHECK(cudaEventRecord(a, g_stream));
  launch();
  PG_CUDA_CHECK(cudaEventRecord(b, g_stream));
  PG_CUDA_CHECK(cudaEventSynchronize(b));
  PG_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  const int reps = std::clamp(int(20.0 / std::max(double(ms), 1e-3)), 3, 200);
  PG_CUDA_CHECK(cudaEventRecord(a, g_stream));
  for (int i = 0; i < reps; ++i) launch();
  PG_CUDA_CHECK(cudaEventRecord(b, g_stream));
  PG_CUDA_CHECK(cudaEventSynchronize(b));
  PG_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  PG_CUDA_CHECK(cudaGetLastError());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 1000.0 * double(ms) / reps;
}

void time_bytes(const std::string& name, double bytes, const std::function<void()>& launch) {
  const double us = time_us(launch);
  std::printf("TIME %-58s %10.1f us %9.1f GB/s\n", name.c_str(), us, bytes / us / 1e3);
  std::fflush(stdout);
}
void time_flops(const std::string& name, double flops, const std::function<void()>& launch) {
  const double us = time_us(launch);
  std::printf("TIME %-58s %10.1f us %9.1f GFLOP/s\n", name.c_str(), us, flops / us / 1e3);
  std::fflush(stdout);
}

// =================================================================================================
// ReLU
// =================================================================================================

void relu_case(const Options& o, int64_t n, uint32_t seed, const std::string& label, bool realistic) {
  const std::string tag = fmt("n=%lld%s%s", (long long)n, label.empty() ? "" : " ", label.c_str());
  std::vector<float> x = randn(size_t(n), uint32_t(n + seed));
  if (n > 5) {  // the edge values: zero, -0, NaN, inf, -inf
    x[1] = 0.f;
    x[2] = -0.f;
    x[3] = std::numeric_limits<float>::quiet_NaN();
    x[4] = INFINITY;
    x[5] = -INFINITY;
  }
  const int64_t w32 = kc::relu_mask_words32(n);
  std::vector<float> ref = x;
  std::vector<uint64_t> ref_mask(size_t(kcpu::relu_mask_words(n)));
  kcpu::relu_forward(ref.data(), n, ref_mask.data());
  std::vector<uint32_t> ref_mask32(static_cast<size_t>(w32));
  std::memcpy(ref_mask32.data(), ref_mask.data(), ref_mask32.size() * 4);  // little-endian words

  DevBuf<float> dx_in(x), dy_out(static_cast<size_t>(n));
  DevBuf<uint32_t> dmask(static_cast<size_t>(w32));
  dy_out.poison();
  dmask.poison();
  kc::launch_relu_forward({n}, dx_in.get(), dy_out.get(), dmask.get(), g_stream);
  sync();
  const std::vector<float> y = dy_out.download();
  const std::vector<uint32_t> mask = dmask.download();
  check(same_bits(y, ref) && mask == ref_mask32, "relu_forward " + tag,
        same_bits(y, ref) ? (mask == ref_mask32 ? "values and mask bytes bit-exact" : "mask: " + first_diff_int(mask, ref_mask32))
                          : "values: " + first_diff(y, ref));

  // In place, without a mask.
  DevBuf<float> dz(x);
  kc::launch_relu_forward({n}, dz.get(), dz.get(), nullptr, g_stream);
  sync();
  const std::vector<float> z = dz.download();
  check(same_bits(z, ref), "relu_forward in-place no-mask " + tag, same_bits(z, ref) ? "bit-exact" : first_diff(z, ref));

  // Backward through the GPU's mask (out of place) and through the CPU's mask (in place).
  const std::vector<float> g = randn(size_t(n), uint32_t(3 * n + seed));
  std::vector<float> gref = g;
  kcpu::relu_backward(gref.data(), n, ref_mask.data());
  DevBuf<float> dg(g), ddx(static_cast<size_t>(n));
  ddx.poison();
  kc::launch_relu_backward({n}, dg.get(), dmask.get(), ddx.get(), g_stream);
  sync();
  const std::vector<float> dx = ddx.download();
  DevBuf<uint32_t> dcpu_mask(ref_mask32);
  kc::launch_relu_backward({n}, dg.get(), dcpu_mask.get(), dg.get(), g_stream);
  sync();
  const std::vector<float> gin = dg.download();
  check(same_bits(dx, gref) && same_bits(gin, gref), "relu_backward " + tag,
        !same_bits(dx, gref) ? "out of place: " + first_diff(dx, gref)
                             : (!same_bits(gin, gref) ? "in place (CPU mask): " + first_diff(gin, gref) : "bit-exact"));

  if (!o.quick) {  // determinism: a second forward and backward into poisoned buffers
    DevBuf<float> y2(static_cast<size_t>(n)), dx2(static_cast<size_t>(n));
    DevBuf<uint32_t> m2(static_cast<size_t>(w32));
    y2.poison();
    m2.poison();
    dx2.poison();
    kc::launch_relu_forward({n}, dx_in.get(), y2.get(), m2.get(), g_stream);
    DevBuf<float> dg2(g);
    kc::launch_relu_backward({n}, dg2.get(), m2.get(), dx2.get(), g_stream);
    sync();
    const bool same = same_bits(y2.download(), y) && m2.download() == mask && same_bits(dx2.download(), dx);
    check(same, "relu determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }

  if (realistic && o.timing) {
    const double nb = double(n);
    time_bytes("relu_forward " + tag, nb * 8 + double(w32) * 4,
               [&] { kc::launch_relu_forward({n}, dx_in.get(), dy_out.get(), dmask.get(), g_stream); });
    time_bytes("relu_backward " + tag, nb * 8 + double(w32) * 4,
               [&] { kc::launch_relu_backward({n}, dg.get(), dmask.get(), ddx.get(), g_stream); });
  }
}

void test_relu(const Options& o) {
  for (int64_t n : {int64_t(1), int64_t(31), int64_t(32), int64_t(63), int64_t(64), int64_t(65), int64_t(1000),
                    int64_t(2 * 3 * 7 * 9), int64_t(5 * 13 * 11 + 3)})
    relu_case(o, n, 1, "", false);
  if (o.quick) return;
  relu_case(o, int64_t(8) * 64 * 112 * 112, 2, "(resnet50 b8 conv1 output)", true);
  relu_case(o, int64_t(8) * 2048 * 7 * 7, 3, "(resnet50 b8 layer4 output)", true);
  relu_case(o, int64_t(8) * 256 * 56 * 56 + 17, 4, "(resnet50 b8 layer1 output + 17)", true);
}

// =================================================================================================
// max-pool
// =================================================================================================

Pool2dParams pool(int N, int C, int H, int W, int k, int s, int pad, bool ceil_mode) {
  Pool2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W;
  p.kh = p.kw = k;
  p.stride_h = p.stride_w = s;
  p.pad_h = p.pad_w = pad;
  p.ceil_mode = ceil_mode;
  if (!pg::kernels::pool2d_output_size(p)) throw pg::Error("bad pool shape in the test");
  return p;
}

void maxpool_case(const Options& o, const Pool2dParams& p, int variant, uint32_t seed, const std::string& label,
                  bool realistic) {
  const char* vname[] = {"random", "ties", "nan-inf"};
  const std::string tag = fmt("%dx%dx%dx%d k%d s%d p%d%s %s%s%s", p.N, p.C, p.H, p.W, p.kh, p.stride_h, p.pad_h,
                              p.ceil_mode ? " ceil" : "", vname[variant], label.empty() ? "" : " ", label.c_str());
  const size_t in = size_t(p.N) * p.C * p.H * p.W, out = size_t(p.N) * p.C * p.P * p.Q;
  std::vector<float> x = randn(in, uint32_t(in + seed + 100 * variant));
  if (variant == 1) {  // few distinct values: many ties
    for (auto& v : x) v = std::round(v);
  } else if (variant == 2) {  // NaNs, infinities, one constant -inf plane
    for (size_t i = 0; i < in; i += 7) x[i] = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = 3; i < in; i += 11) x[i] = INFINITY;
    std::fill(x.begin(), x.begin() + size_t(p.H) * p.W, -INFINITY);
  }
  std::vector<float> yr(out);
  std::vector<int32_t> amr(out);
  kcpu::maxpool2d_forward(p, x.data(), yr.data(), amr.data());

  DevBuf<float> dx_in(x), dy(out);
  DevBuf<int32_t> dam(out);
  dy.poison();
  dam.poison();
  kc::launch_maxpool_forward(p, dx_in.get(), dy.get(), dam.get(), g_stream);
  sync();
  const std::vector<float> y = dy.download();
  const std::vector<int32_t> am = dam.download();
  check(same_bits(y, yr) && am == amr, "maxpool_forward " + tag,
        !same_bits(y, yr) ? "values: " + first_diff(y, yr)
                          : (am != amr ? "argmax: " + first_diff_int(am, amr) : "values and argmax bit-exact"));

  const std::vector<float> g = randn(out, uint32_t(out + 5 * seed));
  std::vector<float> dxr(in);
  kcpu::maxpool2d_backward(p, g.data(), amr.data(), dxr.data());
  DevBuf<float> dg(g), ddx(in);
  ddx.poison();
  kc::launch_maxpool_backward(p, dg.get(), dam.get(), ddx.get(), g_stream);
  sync();
  const std::vector<float> dx = ddx.download();
  check(same_bits(dx, dxr), "maxpool_backward " + tag, same_bits(dx, dxr) ? "bit-exact" : first_diff(dx, dxr));

  if (!o.quick) {
    DevBuf<float> y2(out), dx2(in);
    DevBuf<int32_t> am2(out);
    y2.poison();
    am2.poison();
    dx2.poison();
    kc::launch_maxpool_forward(p, dx_in.get(), y2.get(), am2.get(), g_stream);
    kc::launch_maxpool_backward(p, dg.get(), am2.get(), dx2.get(), g_stream);
    sync();
    const bool same = same_bits(y2.download(), y) && am2.download() == am && same_bits(dx2.download(), dx);
    check(same, "maxpool determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }

  if (realistic && o.timing) {
    time_bytes("maxpool_forward " + tag, double(in) * 4 + double(out) * 8,
               [&] { kc::launch_maxpool_forward(p, dx_in.get(), dy.get(), dam.get(), g_stream); });
    time_bytes("maxpool_backward " + tag, double(out) * 8 + double(in) * 4,
               [&] { kc::launch_maxpool_backward(p, dg.get(), dam.get(), ddx.get(), g_stream); });
  }
}

void test_maxpool(const Options& o) {
  const Pool2dParams shapes[] = {
      pool(2, 3, 7, 9, 3, 2, 1, false), pool(3, 5, 13, 11, 3, 2, 1, false), pool(2, 3, 13, 11, 3, 2, 0, true),
      pool(1, 17, 7, 9, 2, 2, 0, true), pool(2, 3, 7, 9, 3, 1, 1, false),  pool(2, 5, 8, 8, 2, 2, 0, false),
      pool(1, 3, 5, 7, 5, 3, 2, true)};
  for (const Pool2dParams& p : shapes)
    for (int variant = 0; variant < 3; ++variant) maxpool_case(o, p, variant, 1, "", false);
  if (o.quick) return;
  const Pool2dParams stem = pool(8, 64, 112, 112, 3, 2, 1, false);  // ResNet stem
  maxpool_case(o, stem, 0, 2, "(resnet50 b8 stem)", true);
  maxpool_case(o, stem, 2, 3, "(resnet50 b8 stem)", false);
  const Pool2dParams vgg = pool(8, 64, 224, 224, 2, 2, 0, false);  // VGG-16's first pool
  maxpool_case(o, vgg, 0, 4, "(vgg16 b8 pool1)", true);
  maxpool_case(o, vgg, 1, 5, "(vgg16 b8 pool1)", false);
}

// =================================================================================================
// channel statistics
// =================================================================================================

struct Shape4 {
  int N, C, H, W;
};

void gap_case(const Options& o, Shape4 s, bool bn, uint32_t seed, const std::string& label, bool realistic,
              Worst& worst) {
  const std::string tag = fmt("%dx%dx%dx%d%s%s%s", s.N, s.C, s.H, s.W, bn ? " bn" : "", label.empty() ? "" : " ",
                              label.c_str());
  const int64_t HW = int64_t(s.H) * s.W;
  const size_t total = size_t(s.N) * s.C * size_t(HW);
  std::vector<float> y = randn(total, uint32_t(total + seed), 0.2f);
  std::fill(y.begin(), y.begin() + HW, -1.f);  // plane (0, 0): relu is 0 everywhere
  std::vector<float> scale = randn(size_t(s.C), 3, 1.f, 0.3f), shift = randn(size_t(s.C), 4);
  for (auto& v : scale) v = std::fabs(v) + 0.1f;
  const kc::ChannelGapParams p{s.N, s.C, HW};
  std::vector<float> ref(size_t(s.N) * s.C);
  kcpu::channel_gap(p, y.data(), bn ? scale.data() : nullptr, bn ? shift.data() : nullptr, ref.data());

  DevBuf<float> dy(y), dscale(scale), dshift(shift), dgap(ref.size());
  const float* sc = bn ? dscale.get() : nullptr;
  const float* sh = bn ? dshift.get() : nullptr;
  dgap.poison();
  kc::launch_channel_gap(p, dy.get(), sc, sh, dgap.get(), g_stream);
  sync();
  const std::vector<float> gap = dgap.download();
  const double e = max_rel(gap, ref, ref);  // terms >= 0: the value bounds the error
  worst.add(e);
  const bool zero_ok = bn || gap[0] == 0.f;
  check(e <= 1e-6 && zero_ok, "channel_gap " + tag,
        fmt("max rel err %.3g (tol 1e-6)%s", e, zero_ok ? "" : ", all-negative plane not 0"));

  if (!o.quick) {
    DevBuf<float> g2(ref.size());
    g2.poison();
    kc::launch_channel_gap(p, dy.get(), sc, sh, g2.get(), g_stream);
    sync();
    const bool same = same_bits(g2.download(), gap);
    check(same, "channel_gap determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }
  if (realistic && o.timing)
    time_bytes("channel_gap " + tag, double(total) * 4,
               [&] { kc::launch_channel_gap(p, dy.get(), sc, sh, dgap.get(), g_stream); });
}

void test_gap(const Options& o) {
  Worst worst("channel gap (relative to the value)");
  for (Shape4 s : {Shape4{2, 3, 7, 9}, Shape4{3, 17, 13, 11}, Shape4{2, 5, 1, 1}, Shape4{1, 3, 23, 19}})
    for (bool bn : {false, true}) gap_case(o, s, bn, 1, "", false, worst);
  if (o.quick) return;
  gap_case(o, Shape4{8, 64, 112, 112}, true, 2, "(resnet50 b8 conv1)", true, worst);
  gap_case(o, Shape4{8, 256, 56, 56}, true, 3, "(resnet50 b8 layer1)", true, worst);
  gap_case(o, Shape4{8, 2048, 7, 7}, true, 4, "(resnet50 b8 layer4)", true, worst);
  gap_case(o, Shape4{8, 2048, 7, 7}, false, 5, "(resnet50 b8 layer4)", false, worst);
}

void variances_case(const Options& o, Shape4 s, bool bn, uint32_t seed, const std::string& label, bool realistic,
                    Worst& worst) {
  const std::string tag = fmt("%dx%dx%dx%d%s%s%s", s.N, s.C, s.H, s.W, bn ? " bn" : "", label.empty() ? "" : " ",
                              label.c_str());
  const int64_t HW = int64_t(s.H) * s.W;
  const size_t total = size_t(s.N) * s.C * size_t(HW);
  const std::vector<float> g = randn(total, uint32_t(total + seed), 0.5f);
  const std::vector<float> scale = randn(size_t(s.C), 5, 1.f, 0.5f);
  std::mt19937 rng{seed};
  std::vector<uint8_t> sel(size_t(s.N) * s.C);
  for (auto& b : sel) b = uint8_t(rng() % 3 == 0 ? 1 + rng() % 255 : 0);  // any non-zero byte selects
  std::fill(sel.begin(), sel.begin() + s.C, uint8_t(0));               // sample 0: H empty
  std::fill(sel.begin() + s.C, sel.begin() + 2 * s.C, uint8_t(1));     // sample 1: L empty
  const kc::SpatialVarianceParams p{s.N, s.C, HW};
  std::vector<double> Mr(size_t(s.N)), Nr(size_t(s.N));
  kcpu::spatial_variances(p, g.data(), bn ? scale.data() : nullptr, sel.data(), Mr.data(), Nr.data());

  DevBuf<float> dg(g), dscale(scale);
  DevBuf<uint8_t> dsel(sel);
  DevBuf<unsigned char> ws(kc::spatial_variance_workspace_bytes(p) + 1);
  DevBuf<double> dM(size_t(s.N)), dN(size_t(s.N));
  const float* gs = bn ? dscale.get() : nullptr;
  auto run = [&](DevBuf<double>& M, DevBuf<double>& Nv) {
    M.poison();
    Nv.poison();
    ws.poison();
    kc::launch_spatial_variances(p, dg.get(), gs, dsel.get(), M.get(), Nv.get(), ws.get(), g_stream);
    sync();
  };
  run(dM, dN);
  const std::vector<double> M = dM.download(), Nv = dN.download();
  double e = 0;
  bool exact_ok = M[0] == 1e-7 && Nv[1] == 1e-7;  // empty H / empty L: variance of zeros
  for (int n = 0; n < s.N; ++n) {
    e = std::max({e, rel(M[size_t(n)], Mr[size_t(n)], 1e-300), rel(Nv[size_t(n)], Nr[size_t(n)], 1e-300)});
    if (HW < 2) exact_ok = exact_ok && M[size_t(n)] == 1e-7 && Nv[size_t(n)] == 1e-7;
  }
  worst.add(e);
  check(e <= 1e-12 && exact_ok, "spatial_variances " + tag,
        fmt("max rel err %.3g (tol 1e-12)%s", e, exact_ok ? "" : ", empty H/L or HW<2 not exactly 1e-7"));

  if (!o.quick) {
    DevBuf<double> M2(size_t(s.N)), N2(size_t(s.N));
    run(M2, N2);
    const bool same = same_bits(M2.download(), M) && same_bits(N2.download(), Nv);
    check(same, "spatial_variances determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }
  if (realistic && o.timing)
    time_bytes("spatial_variances " + tag, double(total) * 4, [&] {
      kc::launch_spatial_variances(p, dg.get(), gs, dsel.get(), dM.get(), dN.get(), ws.get(), g_stream);
    });
}

void test_variances(const Options& o) {
  Worst worst("spatial variances M, N (relative)");
  for (Shape4 s : {Shape4{2, 3, 7, 9}, Shape4{3, 17, 13, 11}, Shape4{2, 5, 1, 1}, Shape4{2, 5, 1, 2},
                   Shape4{2, 17, 23, 19}})
    for (bool bn : {false, true}) variances_case(o, s, bn, 1, "", false, worst);
  if (o.quick) return;
  variances_case(o, Shape4{8, 64, 112, 112}, true, 2, "(resnet50 b8 conv1)", true, worst);
  variances_case(o, Shape4{8, 256, 56, 56}, true, 3, "(resnet50 b8 layer1)", true, worst);
  variances_case(o, Shape4{8, 2048, 7, 7}, true, 4, "(resnet50 b8 layer4)", true, worst);
}

void moments_case(const Options& o, kc::ClassMomentsParams p, int batches, int used_classes, uint32_t seed,
                  const std::string& label, bool realistic, Worst& worst) {
  const std::string tag = fmt("N%d C%d classes%d x%d batches%s%s", p.N, p.C, p.classes, batches,
                              label.empty() ? "" : " ", label.c_str());
  std::vector<std::vector<float>> gaps;
  std::vector<std::vector<int32_t>> labels;
  std::mt19937 rng{seed};
  for (int b = 0; b < batches; ++b) {
    gaps.push_back(randn(size_t(p.N) * p.C, seed * 10 + uint32_t(b), 3.f));
    std::vector<int32_t> l(size_t(p.N));
    for (auto& v : l) v = int32_t(rng() % uint32_t(used_classes));  // the last classes never appear
    l[0] = -1;                                                    // ignored
    l[1] = p.classes;                                             // ignored
    labels.push_back(l);
  }
  std::vector<kc::ClassMoment> ref(size_t(p.classes) * p.C);
  for (int b = 0; b < batches; ++b) kcpu::class_moments_update(p, gaps[size_t(b)].data(), labels[size_t(b)].data(), ref.data());

  // The whole sequence of updates on the device, from zeroed moments.
  auto run = [&](DevBuf<kc::ClassMoment>& acc) {
    PG_CUDA_CHECK(cudaMemsetAsync(acc.get(), 0, acc.bytes(), g_stream));
    for (int b = 0; b < batches; ++b) {
      DevBuf<float> dg(gaps[size_t(b)]);
      DevBuf<int32_t> dl(labels[size_t(b)]);
      kc::launch_class_moments_update(p, dg.get(), dl.get(), acc.get(), g_stream);
      sync();
    }
    return acc.download();
  };
  DevBuf<kc::ClassMoment> dacc(ref.size());
  const std::vector<kc::ClassMoment> acc = run(dacc);
  double e = 0;
  bool counts_ok = true;
  for (size_t i = 0; i < acc.size(); ++i) {
    counts_ok = counts_ok && acc[i].count == ref[i].count;
    if (ref[i].count == 0) {
      counts_ok = counts_ok && acc[i].mean == 0 && acc[i].m2 == 0;
      continue;
    }
    e = std::max({e, rel(acc[i].mean, ref[i].mean, 1e-300), rel(acc[i].m2, ref[i].m2, 1e-300)});
  }
  worst.add(e);
  check(e <= 1e-12 && counts_ok, "class_moments_update " + tag,
        fmt("max rel err %.3g (tol 1e-12)%s", e, counts_ok ? ", counts exact" : ", counts or empty classes differ"));

  if (!o.quick) {
    DevBuf<kc::ClassMoment> dacc2(ref.size());
    const std::vector<kc::ClassMoment> acc2 = run(dacc2);
    const bool same = same_bits(acc2, acc);
    check(same, "class_moments determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }
  if (realistic && o.timing) {
    DevBuf<float> dg(gaps[0]);
    DevBuf<int32_t> dl(labels[0]);
    time_bytes("class_moments_update " + tag + " (one batch)",
               double(p.classes) * p.C * sizeof(kc::ClassMoment) * 2 + double(p.N) * p.C * 4,
               [&] { kc::launch_class_moments_update(p, dg.get(), dl.get(), dacc.get(), g_stream); });
  }
}

void test_moments(const Options& o) {
  Worst worst("class moments mean, M2 (relative)");
  for (uint32_t seed : {1u, 12345u}) moments_case(o, {7, 17, 4}, 5, 3, seed, "", false, worst);
  if (o.quick) return;
  moments_case(o, {256, 2048, 1000}, 3, 900, 2, "(imagenet-sized: 256 images, 2048 channels)", true, worst);
}

// =================================================================================================
// convolution data-gradient
// =================================================================================================

Conv2dParams conv(int N, int C, int H, int W, int K, int R, int stride, int pad) {
  Conv2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W, p.K = K, p.R = R, p.S = R;
  p.stride_h = p.stride_w = stride;
  p.pad_h = p.pad_w = pad;
  if (!pg::kernels::conv2d_output_size(p)) throw pg::Error("bad conv shape in the test");
  return p;
}

// OpenBLAS, needed by the twin cpu::conv2d_dgrad; false when it cannot be loaded.
bool g_twin_ok = true;

void cpu_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale, float* dx) {
  std::vector<float> ws(kcpu::conv2d_workspace_floats(p, omp_get_max_threads()) + 1);
  kcpu::conv2d_dgrad(p, dy, w, scale, dx, ws.data());
}

// Plain loops in double: val = dgrad(scale * dy, w), bound = dgrad(|scale * dy|, |w|). The
// reference when OpenBLAS is missing, and a check of the twin on the small shapes.
void naive_dgrad(const Conv2dParams& p, const float* dy, const float* w, const float* scale, float* val,
                 float* bound) {
  const int64_t HW = p.in_plane(), PQ = p.out_plane();
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int n = 0; n < p.N; ++n) {
    for (int c = 0; c < p.C; ++c) {
      for (int h = 0; h < p.H; ++h) {
        for (int x = 0; x < p.W; ++x) {
          double s = 0, a = 0;
          for (int k = 0; k < p.K; ++k) {
            const double sc = scale ? double(scale[int64_t(n) * p.K + k]) : 1.0;
            if (sc == 0) continue;
            const float* dyk = dy + (int64_t(n) * p.K + k) * PQ;
            const float* wk = w + (int64_t(k) * p.C + c) * p.R * p.S;
            for (int r = 0; r < p.R; ++r) {
              const int th = h + p.pad_h - r;
              if (th < 0 || th % p.stride_h) continue;
              const int oh = th / p.stride_h;
              if (oh >= p.P) continue;
              for (int q = 0; q < p.S; ++q) {
                const int tw = x + p.pad_w - q;
                if (tw < 0 || tw % p.stride_w) continue;
                const int ow = tw / p.stride_w;
                if (ow >= p.Q) continue;
                const double t = sc * double(dyk[int64_t(oh) * p.Q + ow]) * double(wk[r * p.S + q]);
                s += t;
                a += std::fabs(t);
              }
            }
          }
          const int64_t i = (int64_t(n) * p.C + c) * HW + int64_t(h) * p.W + x;
          val[i] = float(s);
          bound[i] = float(a);
        }
      }
    }
  }
}

// The data-gradient variants. BF16 exists only when kernels/cuda/conv_dgrad.h declares
// launch_conv_dgrad_bf16: tools/gpu_check.sh then defines PG_GPU_TEST_BF16=1.
#ifndef PG_GPU_TEST_BF16
#define PG_GPU_TEST_BF16 0
#endif
enum class Prec { fp32, tf32, bf16 };
const char* prec_kernel(Prec q) {
  return q == Prec::fp32 ? "conv_dgrad" : q == Prec::tf32 ? "conv_dgrad_tf32" : "conv_dgrad_bf16";
}
void launch_dgrad(Prec q, const Conv2dParams& p, const float* dy, const float* w, const float* scale, float* dx,
                  void* ws) {
  switch (q) {
    case Prec::fp32: kc::launch_conv_dgrad(p, dy, w, scale, dx, ws, g_stream); return;
    case Prec::tf32: kc::launch_conv_dgrad_tf32(p, dy, w, scale, dx, ws, g_stream); return;
    case Prec::bf16:
#if PG_GPU_TEST_BF16
      kc::launch_conv_dgrad_bf16(p, dy, w, scale, dx, ws, g_stream);
      return;
#else
      throw pg::Error("launch_conv_dgrad_bf16: not in this tree");
#endif
  }
}
std::vector<Prec> precisions() {
  std::vector<Prec> v{Prec::fp32, Prec::tf32};
  if (PG_GPU_TEST_BF16) v.push_back(Prec::bf16);
  return v;
}

// Tolerance relative to sum |terms| for random operands, as the host tests: BF16's is
// 2u + u^2 + 2^-23 + 2 L 2^-24 (u = 2^-8, L = K*R*S the reduction length).
double tolerance(Prec q, const Conv2dParams& p) {
  switch (q) {
    case Prec::fp32: return 1e-5;
    case Prec::tf32: return 1.5e-3;  // two TF32 roundings (2 x 2^-11) per product, plus float sums
    case Prec::bf16: {
      const double u = std::ldexp(1.0, -8), f = std::ldexp(1.0, -24), L = double(p.K) * p.R * p.S;
      return 2 * u + u * u + 2 * f + 2 * L * f;
    }
  }
  return 0;
}

// Data of one case. *_exact: dy and w rounded to that format, scale in {0, 0.5, 1, 2}, so
// every product is exact and only the accumulation rounds (tolerance 1e-5 for the kernels
// whose operand format holds the inputs exactly: TF32 holds BF16 values too).
enum class ScaleMode { none, mixed, all_zero, tf32_exact, bf16_exact };
const char* mode_name(ScaleMode m) {
  switch (m) {
    case ScaleMode::none: return "scale=none";
    case ScaleMode::mixed: return "scale=mixed-zeros";
    case ScaleMode::all_zero: return "scale=all-zero";
    case ScaleMode::tf32_exact: return "tf32-exact-inputs";
    case ScaleMode::bf16_exact: return "bf16-exact-inputs";
  }
  return "?";
}
bool exact_for(Prec q, ScaleMode m) {
  return (m == ScaleMode::tf32_exact && q == Prec::tf32) ||
         (m == ScaleMode::bf16_exact && (q == Prec::tf32 || q == Prec::bf16));
}

struct DgradWorst {
  Worst fp32{"conv dgrad float32 (relative to sum |terms|)"};
  Worst tf32{"conv dgrad TF32, random inputs (relative to sum |terms|)"};
  Worst bf16{"conv dgrad BF16, random inputs (relative to sum |terms|)"};
  Worst exact{"conv dgrad TF32/BF16, inputs exact in the operand format (relative to sum |terms|)"};
  Worst twin{"cpu twin conv2d_dgrad vs double loops (relative to sum |terms|)"};
  Worst& of(Prec q, ScaleMode m) {
    if (exact_for(q, m)) return exact;
    return q == Prec::fp32 ? fp32 : q == Prec::tf32 ? tf32 : bf16;
  }
};

// small: also checks the twin against the double loops; timed: cudaEvent timings.
void dgrad_case(const Options& o, const Conv2dParams& p, ScaleMode mode, uint32_t seed, const std::string& label,
                bool small, bool timed, DgradWorst& worst) {
  const std::string tag = fmt("N%d C%d %dx%d K%d %dx%d s%dx%d p%dx%d %s%s%s", p.N, p.C, p.H, p.W, p.K, p.R, p.S,
                              p.stride_h, p.stride_w, p.pad_h, p.pad_w, mode_name(mode), label.empty() ? "" : " ",
                              label.c_str());
  const size_t nx = size_t(p.N) * p.C * p.H * p.W, ny = size_t(p.N) * p.K * p.P * p.Q;
  std::vector<float> dy = randn(ny, uint32_t(ny + seed)), w = randn(size_t(p.K) * p.C * p.R * p.S, 11 + seed);
  std::vector<float> scale(size_t(p.N) * p.K, 0.f);
  std::mt19937 rng{seed};
  const bool exact_mode = mode == ScaleMode::tf32_exact || mode == ScaleMode::bf16_exact;
  if (mode == ScaleMode::mixed) {  // about a third dropped; sample 0 all dropped, sample 1 all kept
    for (auto& s : scale) s = rng() % 3 == 0 ? 0.f : 0.25f + float(rng() % 100) / 50.f;
    std::fill(scale.begin(), scale.begin() + p.K, 0.f);
    if (p.N > 2) std::fill(scale.begin() + p.K, scale.begin() + 2 * p.K, 1.5f);
  } else if (exact_mode) {  // scale in {0, 0.5, 1, 2}: scale * dy stays exact; sample 0 dropped
    for (auto& s : scale) s = rng() % 3 == 0 ? 0.f : std::ldexp(1.f, int(rng() % 3) - 1);
    std::fill(scale.begin(), scale.begin() + p.K, 0.f);
    float (*to_format)(float) = mode == ScaleMode::tf32_exact ? tf32_round : bf16_round;
    for (auto& v : dy) v = to_format(v);
    for (auto& v : w) v = to_format(v);
  }
  const bool has_scale = mode != ScaleMode::none;
  int64_t kept = 0;
  for (float s : scale) kept += s != 0.f;
  const double kept_frac = has_scale ? double(kept) / double(scale.size()) : 1.0;

  // Reference value and error bound: the CPU twin, or the double loops without OpenBLAS.
  std::vector<float> ref(nx), bound(nx);
  const float* sc_h = has_scale ? scale.data() : nullptr;
  if (g_twin_ok) {
    cpu_dgrad(p, dy.data(), w.data(), sc_h, ref.data());
    const std::vector<float> as = absv(scale);
    cpu_dgrad(p, absv(dy).data(), absv(w).data(), has_scale ? as.data() : nullptr, bound.data());
    if (small) {  // the twin itself against the double loops (checks the vendored OpenBLAS too)
      std::vector<float> nv(nx), nb(nx);
      naive_dgrad(p, dy.data(), w.data(), sc_h, nv.data(), nb.data());
      const double e = max_rel(ref, nv, nb);
      worst.twin.add(e);
      check(e <= 1e-5, "cpu_twin conv2d_dgrad vs double loops " + tag, fmt("max rel err %.3g (tol 1e-5)", e));
    }
  } else {
    naive_dgrad(p, dy.data(), w.data(), sc_h, ref.data(), bound.data());
  }
  if (o.host_only) return;

  DevBuf<float> ddy(dy), dw(w), dscale(scale), ddx(nx);
  DevBuf<unsigned char> ws(kc::conv_dgrad_workspace_bytes(p));
  const float* sc = has_scale ? dscale.get() : nullptr;
  const size_t plane = size_t(p.C) * p.H * p.W;
  const int64_t nonzero_terms = std::count_if(bound.begin(), bound.end(), [](float b) { return b > 0.f; });

  for (Prec q : precisions()) {
    auto launch = [&](float* out) { launch_dgrad(q, p, ddy.get(), dw.get(), sc, out, ws.get()); };
    const std::string kname = std::string(prec_kernel(q)) + " ";
    ddx.poison();
    ws.poison();
    launch(ddx.get());
    sync();
    const std::vector<float> dx = ddx.download();
    const double e = max_rel(dx, ref, bound);
    const double tol = exact_for(q, mode) ? 1e-5 : tolerance(q, p);
    worst.of(q, mode).add(e);
    bool zeros_ok = true;
    if (mode == ScaleMode::all_zero) zeros_ok = std::all_of(dx.begin(), dx.end(), [](float v) { return v == 0.f; });
    if (mode == ScaleMode::mixed || exact_mode)
      zeros_ok = std::all_of(dx.begin(), dx.begin() + plane, [](float v) { return v == 0.f; });
    // BF16 on random inputs: the rounding must really be there (not a float32 path), as the
    // host test checks; only where at least 100 outputs have terms (else e may just be small).
    const bool rounding_seen = !(q == Prec::bf16 && !exact_mode && nonzero_terms >= 100) || e >= 1e-4;
    check(e <= tol && zeros_ok && rounding_seen, kname + tag,
          fmt("max rel err %.3g (tol %.3g)%s%s%s", e, tol, g_twin_ok ? "" : " vs double loops (no OpenBLAS)",
              zeros_ok ? "" : ", dropped sample/channels not exactly 0",
              rounding_seen ? "" : ", below 1e-4: no BF16 rounding?"));

    if (!o.quick) {
      DevBuf<float> dx2(nx);
      dx2.poison();
      ws.poison();
      launch(dx2.get());
      sync();
      const std::vector<float> second = dx2.download();
      const bool same = same_bits(second, dx);
      check(same, kname + "determinism " + tag, same ? "second run bitwise equal" : first_diff(second, dx));
    }
    if (timed && o.timing) {
      const double flops = 2.0 * p.N * p.K * double(p.P) * p.Q * p.C * p.R * p.S;  // dense, all channels
      time_flops(kname + tag + (has_scale ? fmt(" kept %.0f%%", 100 * kept_frac) : ""), flops,
                 [&] { launch(ddx.get()); });
    }
  }
}

Conv2dParams conv2(int N, int C, int H, int W, int K, int R, int S, int sh, int sw, int ph, int pw) {
  Conv2dParams p;
  p.N = N, p.C = C, p.H = H, p.W = W, p.K = K, p.R = R, p.S = S;
  p.stride_h = sh, p.stride_w = sw;
  p.pad_h = ph, p.pad_w = pw;
  if (!pg::kernels::conv2d_output_size(p)) throw pg::Error("bad conv shape in the test");
  return p;
}

void test_dgrad(const Options& o) {
  DgradWorst worst;
  std::printf("INFO conv dgrad variants: fp32, tf32%s\n", PG_GPU_TEST_BF16 ? ", bf16" : " (no bf16 in this tree)");
  try {
    pg::blas::init();
    std::printf("INFO OpenBLAS for the CPU twin: %s (kernels chosen by: %s)\n", pg::blas::core_name().c_str(),
                pg::blas::core_choice().c_str());
  } catch (const std::exception& e) {
    g_twin_ok = false;
    check(false, "cpu_twin OpenBLAS",
          std::string("cannot load (") + e.what() + "): dgrad compared with double loops instead");
  }
  // The host tests' shapes: the float32/TF32/BF16 lists, then the strided ones.
  const Conv2dParams small[] = {
      conv(2, 3, 7, 9, 5, 3, 1, 1),    conv(3, 17, 13, 11, 5, 3, 2, 1), conv(2, 5, 13, 11, 17, 1, 1, 0),
      conv(2, 5, 13, 11, 17, 1, 2, 0), conv(2, 3, 13, 11, 5, 7, 2, 3),  conv(3, 5, 7, 9, 3, 7, 1, 3),
      conv(2, 70, 9, 7, 40, 3, 1, 1),  conv(1, 3, 17, 19, 67, 3, 2, 0), conv(2, 65, 1, 1, 9, 1, 1, 0),
      conv(2, 33, 12, 10, 24, 3, 1, 1),
      conv(2, 6, 14, 12, 9, 1, 2, 0),  conv(2, 6, 15, 13, 9, 3, 2, 1),  conv(2, 7, 16, 10, 11, 3, 2, 0),
      conv(1, 3, 23, 21, 16, 7, 2, 3), conv(1, 3, 32, 32, 64, 7, 2, 3), conv(2, 5, 11, 13, 6, 7, 2, 2),
      conv(2, 4, 17, 14, 5, 3, 4, 1),  conv2(2, 5, 11, 14, 7, 3, 5, 2, 3, 1, 2),
      conv2(1, 66, 9, 12, 20, 2, 2, 2, 2, 0, 0), conv(1, 3, 1, 1, 5, 3, 2, 1)};
  const ScaleMode quick_modes[] = {ScaleMode::none, ScaleMode::mixed};
  const ScaleMode all_modes[] = {ScaleMode::none, ScaleMode::mixed, ScaleMode::all_zero, ScaleMode::tf32_exact,
                                 ScaleMode::bf16_exact};
  for (const Conv2dParams& p : small) {
    if (o.quick) {
      for (ScaleMode m : quick_modes) dgrad_case(o, p, m, 1, "", true, false, worst);
    } else {
      for (ScaleMode m : all_modes)
        for (uint32_t seed : {1u, 12345u}) dgrad_case(o, p, m, seed, "", true, false, worst);
    }
  }

  // Unsupported configurations are refused before any launch.
  {
    const Conv2dParams p = conv(2, 17, 13, 11, 40, 3, 2, 1);
    Conv2dParams g = p;
    g.groups = 17;
    g.K = 17;
    Conv2dParams d = p;
    d.dil_h = 2;
    bool ok = !kc::conv_dgrad_supported(g) && !kc::conv_dgrad_supported(d);
    for (Prec q : precisions()) {
      for (const Conv2dParams* bad : {&g, &d}) {
        bool threw = false;
        try {
          launch_dgrad(q, *bad, nullptr, nullptr, nullptr, nullptr, nullptr);
        } catch (const pg::Error&) {
          threw = true;
        }
        ok = ok && threw;
      }
    }
    check(ok, "conv_dgrad unsupported shapes refused",
          "groups 17, dilation 2: conv_dgrad_supported false, every variant throws");
  }
  if (o.quick || o.host_only) return;

  // ResNet-50 (torchvision, stride on the 3x3) at batch 8: one conv of each kind.
  struct Real {
    Conv2dParams p;
    const char* label;
    bool exact;  // also the TF32- and BF16-exact inputs
  };
  const Real real[] = {
      {conv(8, 3, 224, 224, 64, 7, 2, 3), "(resnet50 b8 conv1)", false},
      {conv(8, 64, 56, 56, 64, 3, 1, 1), "(resnet50 b8 layer1 3x3)", false},
      {conv(8, 64, 56, 56, 256, 1, 1, 0), "(resnet50 b8 layer1 1x1 expand)", false},
      {conv(8, 128, 56, 56, 128, 3, 2, 1), "(resnet50 b8 layer2 3x3 stride 2)", false},
      {conv(8, 256, 14, 14, 256, 3, 1, 1), "(resnet50 b8 layer3 3x3)", true},
      {conv(8, 1024, 14, 14, 256, 1, 1, 0), "(resnet50 b8 layer3 1x1 reduce)", false},
      {conv(8, 1024, 14, 14, 2048, 1, 2, 0), "(resnet50 b8 layer4 downsample)", true},
      {conv(8, 512, 7, 7, 512, 3, 1, 1), "(resnet50 b8 layer4 3x3)", false}};
  for (const Real& r : real) {
    dgrad_case(o, r.p, ScaleMode::none, 2, r.label, false, true, worst);
    dgrad_case(o, r.p, ScaleMode::mixed, 3, r.label, false, true, worst);
    if (r.exact) {
      dgrad_case(o, r.p, ScaleMode::tf32_exact, 4, r.label, false, false, worst);
      if (PG_GPU_TEST_BF16) dgrad_case(o, r.p, ScaleMode::bf16_exact, 5, r.label, false, false, worst);
    }
  }
}

// =================================================================================================
// average pools
// =================================================================================================

// The outputs start poisoned (NaN) and must equal the twin bit for bit.
std::string bits_detail(const std::vector<float>& a, const std::vector<float>& b) {
  return same_bits(a, b) ? "bit-exact" : first_diff(a, b);
}

void avgpool_case(const Options& o, Pool2dParams p, bool cip, uint32_t seed, const std::string& label, bool realistic) {
  p.count_include_pad = cip;
  const std::string tag = fmt("%dx%dx%dx%d k%d s%d p%d%s%s%s%s", p.N, p.C, p.H, p.W, p.kh, p.stride_h, p.pad_h,
                              p.ceil_mode ? " ceil" : "", cip ? "" : " exclude-pad", label.empty() ? "" : " ",
                              label.c_str());
  const size_t in = size_t(p.N) * p.C * p.H * p.W, out = size_t(p.N) * p.C * p.P * p.Q;
  const std::vector<float> x = randn(in, uint32_t(in + seed)), g = randn(out, uint32_t(out + 3 * seed));
  std::vector<float> yr(out), dxr(in);
  kcpu::avgpool2d_forward(p, x.data(), yr.data());
  kcpu::avgpool2d_backward(p, g.data(), dxr.data());
  DevBuf<float> dx_in(x), dy(out), dg(g), ddx(in);
  dy.poison();
  ddx.poison();
  kc::launch_avgpool_forward(p, dx_in.get(), dy.get(), g_stream);
  kc::launch_avgpool_backward(p, dg.get(), ddx.get(), g_stream);
  sync();
  const std::vector<float> y = dy.download(), dx = ddx.download();
  check(same_bits(y, yr), "avgpool_forward " + tag, bits_detail(y, yr));
  check(same_bits(dx, dxr), "avgpool_backward " + tag, bits_detail(dx, dxr));
  if (!o.quick) {
    DevBuf<float> y2(out), dx2(in);
    y2.poison();
    dx2.poison();
    kc::launch_avgpool_forward(p, dx_in.get(), y2.get(), g_stream);
    kc::launch_avgpool_backward(p, dg.get(), dx2.get(), g_stream);
    sync();
    const bool same = same_bits(y2.download(), y) && same_bits(dx2.download(), dx);
    check(same, "avgpool determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }
  if (realistic && o.timing) {
    time_bytes("avgpool_forward " + tag, double(in + out) * 4,
               [&] { kc::launch_avgpool_forward(p, dx_in.get(), dy.get(), g_stream); });
    time_bytes("avgpool_backward " + tag, double(in + out) * 4,
               [&] { kc::launch_avgpool_backward(p, dg.get(), ddx.get(), g_stream); });
  }
}

void adaptive_case(const Options& o, kc::AdaptivePoolParams p, uint32_t seed, const std::string& label,
                   bool realistic) {
  const std::string tag = fmt("NC%d %dx%d->%dx%d%s%s", p.NC, p.H, p.W, p.P, p.Q, label.empty() ? "" : " ",
                              label.c_str());
  const size_t in = size_t(p.NC) * p.H * p.W, out = size_t(p.NC) * p.P * p.Q;
  const std::vector<float> x = randn(in, uint32_t(in + seed), 0.3f), g = randn(out, uint32_t(out + 7 * seed));
  std::vector<float> yr(out), dxr(in);
  kcpu::adaptive_avgpool2d_forward(p.NC, p.H, p.W, p.P, p.Q, x.data(), yr.data());
  kcpu::adaptive_avgpool2d_backward(p.NC, p.H, p.W, p.P, p.Q, g.data(), dxr.data());
  DevBuf<float> dx_in(x), dy(out), dg(g), ddx(in);
  dy.poison();
  ddx.poison();
  kc::launch_adaptive_avgpool_forward(p, dx_in.get(), dy.get(), g_stream);
  kc::launch_adaptive_avgpool_backward(p, dg.get(), ddx.get(), g_stream);
  sync();
  const std::vector<float> y = dy.download(), dx = ddx.download();
  check(same_bits(y, yr), "adaptive_avgpool_forward " + tag, bits_detail(y, yr));
  check(same_bits(dx, dxr), "adaptive_avgpool_backward " + tag, bits_detail(dx, dxr));
  if (!o.quick) {
    DevBuf<float> y2(out), dx2(in);
    y2.poison();
    dx2.poison();
    kc::launch_adaptive_avgpool_forward(p, dx_in.get(), y2.get(), g_stream);
    kc::launch_adaptive_avgpool_backward(p, dg.get(), dx2.get(), g_stream);
    sync();
    const bool same = same_bits(y2.download(), y) && same_bits(dx2.download(), dx);
    check(same, "adaptive_avgpool determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }
  if (realistic && o.timing) {
    time_bytes("adaptive_avgpool_forward " + tag, double(in + out) * 4,
               [&] { kc::launch_adaptive_avgpool_forward(p, dx_in.get(), dy.get(), g_stream); });
    time_bytes("adaptive_avgpool_backward " + tag, double(in + out) * 4,
               [&] { kc::launch_adaptive_avgpool_backward(p, dg.get(), ddx.get(), g_stream); });
  }
}

void test_avgpool(const Options& o) {
  const Pool2dParams shapes[] = {
      pool(3, 5, 7, 9, 3, 2, 1, false), pool(3, 5, 8, 10, 3, 2, 1, true), pool(3, 5, 8, 10, 3, 2, 0, true),
      pool(2, 3, 7, 9, 2, 2, 0, false), pool(2, 3, 7, 9, 3, 1, 1, false), pool(1, 4, 13, 11, 3, 2, 1, true),
      pool(2, 3, 8, 8, 2, 2, 1, true),  pool(1, 2, 5, 7, 5, 3, 2, true),  pool(2, 3, 1, 1, 1, 1, 0, false)};
  for (const Pool2dParams& p : shapes)
    for (bool cip : {true, false}) avgpool_case(o, p, cip, 1, "", false);
  const kc::AdaptivePoolParams ashapes[] = {{15, 7, 9, 3, 4}, {15, 7, 7, 1, 1},   {6, 5, 7, 7, 3},   {15, 13, 11, 5, 7},
                                            {4, 7, 7, 7, 7},  {1, 1, 1, 1, 1},    {3, 1, 1, 2, 3},   {300, 7, 7, 1, 1},
                                            {130, 3, 3, 1, 1}, {5, 64, 65, 1, 1}, {3, 64, 64, 1, 1}, {4, 32, 64, 1, 1}};
  for (const kc::AdaptivePoolParams& p : ashapes) adaptive_case(o, p, 1, "", false);
  if (o.quick) return;
  avgpool_case(o, pool(8, 256, 56, 56, 3, 2, 1, false), true, 2, "", true);
  adaptive_case(o, {8 * 2048, 7, 7, 1, 1}, 3, "(resnet50 b8 global pool)", true);
  adaptive_case(o, {8 * 512, 7, 7, 7, 7}, 4, "(vgg16 b8 adaptive pool)", true);
  adaptive_case(o, {8 * 512, 14, 14, 7, 7}, 5, "(vgg16 b8 at 448 px)", true);
}

// =================================================================================================
// elementwise
// =================================================================================================

void elementwise_case(const Options& o, int N, int C, int64_t HW, const std::string& label, bool realistic) {
  const std::string tag = fmt("%dx%dx%lld%s%s", N, C, (long long)HW, label.empty() ? "" : " ", label.c_str());
  const int64_t n = int64_t(N) * C * HW;
  const std::vector<float> a = randn(size_t(n), uint32_t(n)), b = randn(size_t(n), uint32_t(n + 1));
  const std::vector<float> ch_scale = randn(size_t(C), 2, 0.f, 2.f), ch_shift = randn(size_t(C), 3);
  std::vector<float> s_scale = randn(size_t(N) * C, 4, 1.f, 0.7f);
  s_scale[0] = 0.f;
  const float alpha = 0.37f;
  // Twins.
  std::vector<float> add_r(static_cast<size_t>(n)), scale_r(static_cast<size_t>(n)), scs_r(static_cast<size_t>(n));
  kcpu::add(n, a.data(), b.data(), add_r.data());
  kcpu::scale(n, alpha, a.data(), scale_r.data());
  kcpu::sample_channel_scale({N, C, HW}, a.data(), s_scale.data(), scs_r.data());
  std::vector<float> aff_r[3] = {a, a, a};  // scale and shift, scale only, shift only
  kcpu::channel_affine({N, C, HW}, aff_r[0].data(), ch_scale.data(), ch_shift.data());
  kcpu::channel_affine({N, C, HW}, aff_r[1].data(), ch_scale.data(), nullptr);
  kcpu::channel_affine({N, C, HW}, aff_r[2].data(), nullptr, ch_shift.data());

  DevBuf<float> da(a), db(b), dout(static_cast<size_t>(n)), dcs(ch_scale), dch(ch_shift), dss(s_scale);
  auto run_all = [&](std::vector<std::vector<float>>& res) {
    res.clear();
    dout.poison();
    kc::launch_add(n, da.get(), db.get(), dout.get(), g_stream);
    res.push_back(dout.download());
    DevBuf<float> t(a);  // in place: out == a
    kc::launch_add(n, t.get(), db.get(), t.get(), g_stream);
    res.push_back(t.download());
    dout.poison();
    kc::launch_scale(n, alpha, da.get(), dout.get(), g_stream);
    res.push_back(dout.download());
    dout.poison();
    kc::launch_sample_channel_scale({N, C, HW}, da.get(), dss.get(), dout.get(), g_stream);
    res.push_back(dout.download());
    for (int m = 0; m < 3; ++m) {
      DevBuf<float> y(a);
      kc::launch_channel_affine({N, C, HW}, y.get(), m < 2 ? dcs.get() : nullptr, m != 1 ? dch.get() : nullptr,
                                g_stream);
      res.push_back(y.download());
    }
  };
  std::vector<std::vector<float>> r;
  run_all(r);
  check(same_bits(r[0], add_r), "add " + tag, bits_detail(r[0], add_r));
  check(same_bits(r[1], add_r), "add in-place " + tag, bits_detail(r[1], add_r));
  check(same_bits(r[2], scale_r), "scale " + tag, bits_detail(r[2], scale_r));
  check(same_bits(r[3], scs_r), "sample_channel_scale " + tag, bits_detail(r[3], scs_r));
  const char* aff_name[3] = {"scale+shift", "scale", "shift"};
  for (int m = 0; m < 3; ++m)
    check(same_bits(r[size_t(4 + m)], aff_r[m]), std::string("channel_affine ") + aff_name[m] + " " + tag,
          bits_detail(r[size_t(4 + m)], aff_r[m]));
  if (!o.quick) {
    std::vector<std::vector<float>> r2;
    run_all(r2);
    bool same = true;
    for (size_t i = 0; i < r.size(); ++i) same = same && same_bits(r[i], r2[i]);
    check(same, "elementwise determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }
  if (realistic && o.timing) {
    const double nb = double(n) * 4;
    time_bytes("add " + tag, 3 * nb, [&] { kc::launch_add(n, da.get(), db.get(), dout.get(), g_stream); });
    time_bytes("scale " + tag, 2 * nb, [&] { kc::launch_scale(n, alpha, da.get(), dout.get(), g_stream); });
    time_bytes("sample_channel_scale " + tag, 2 * nb,
               [&] { kc::launch_sample_channel_scale({N, C, HW}, da.get(), dss.get(), dout.get(), g_stream); });
    time_bytes("channel_affine scale+shift " + tag, 2 * nb,
               [&] { kc::launch_channel_affine({N, C, HW}, dout.get(), dcs.get(), dch.get(), g_stream); });
  }
}

void test_elementwise(const Options& o) {
  elementwise_case(o, 3, 5, 63, "", false);
  elementwise_case(o, 3, 5, 1, "", false);
  elementwise_case(o, 1, 17, 49, "", false);
  elementwise_case(o, 1, 1, 1, "", false);
  if (o.quick) return;
  elementwise_case(o, 8, 256, 56 * 56, "(resnet50 b8 layer1)", true);
  elementwise_case(o, 8, 64, 112 * 112, "(resnet50 b8 conv1)", true);
  elementwise_case(o, 8, 2048, 7 * 7, "(resnet50 b8 layer4)", true);
}

// =================================================================================================
// probability seed
// =================================================================================================

// Distance in floats between a and b (both finite, or both NaN: 0).
int64_t ulps(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return 0;
  if (std::isnan(a) || std::isnan(b)) return INT64_MAX;
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i < 0 ? int64_t(INT32_MIN) - int64_t(i) : int64_t(i);  // monotone in f, +0 and -0 adjacent
  };
  const int64_t d = key(a) - key(b);
  return d < 0 ? -d : d;
}

void seed_case(const Options& o, int N, int K, uint32_t seed, const std::string& label, bool realistic,
               Worst& worst) {
  const std::string tag = fmt("N%d K%d%s%s", N, K, label.empty() ? "" : " ", label.c_str());
  const size_t total = size_t(N) * K;
  std::vector<float> logits = randn(total, uint32_t(total + seed), 0.f, 3.f);
  if (N > 1) std::fill(logits.begin() + K, logits.begin() + 2 * K, 2.5f);  // all equal: p = 1/K
  if (N > 2 && K > 3) logits[size_t(2 * K + 1)] = -INFINITY;
  std::mt19937 rng{seed + uint32_t(K)};
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (auto& t : targets) t = int32_t(rng() % uint32_t(K));
  const kc::SeedParams p{N, K};
  std::vector<float> pr(total), sr(total);
  kcpu::probability_seed(p, logits.data(), targets.data(), pr.data(), sr.data());
  DevBuf<float> dl(logits), dp(total), ds(total), ds2(total);
  DevBuf<int32_t> dt(targets);
  dp.poison();
  ds.poison();
  ds2.poison();
  kc::launch_probability_seed(p, dl.get(), dt.get(), dp.get(), ds.get(), g_stream);
  kc::launch_probability_seed(p, dl.get(), dt.get(), nullptr, ds2.get(), g_stream);
  sync();
  const std::vector<float> probs = dp.download(), sd = ds.download(), sd2 = ds2.download();
  const double e = std::max(max_rel(probs, pr, pr), max_rel(sd, sr, sr));
  int64_t max_ulps = 0;
  size_t differ = 0;
  for (size_t i = 0; i < total; ++i) {
    max_ulps = std::max({max_ulps, ulps(probs[i], pr[i]), ulps(sd[i], sr[i])});
    differ += std::memcmp(&probs[i], &pr[i], 4) != 0;
  }
  worst.add(e);
  bool seed_ok = same_bits(sd, sd2);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const size_t i = size_t(n) * K + k;
      const float want = k == targets[size_t(n)] ? probs[i] : 0.f;
      seed_ok = seed_ok && std::memcmp(&sd[i], &want, 4) == 0;
    }
  // The device's double exp may differ from glibc's by an ulp of a double, which can move the
  // float rounding by one ulp (2^-23 relative at most) in rare cases.
  check(max_ulps <= 1 && seed_ok, "probability_seed " + tag,
        fmt("max rel err %.3g, max %lld ulp (tol 1 ulp), %zu of %zu probabilities not bit-exact%s", e,
            (long long)max_ulps, differ, total, seed_ok ? "" : ", seed is not p[target] one-hot / differs without probs"));
  if (!o.quick) {
    DevBuf<float> dp2(total), ds3(total);
    dp2.poison();
    ds3.poison();
    kc::launch_probability_seed(p, dl.get(), dt.get(), dp2.get(), ds3.get(), g_stream);
    sync();
    const bool same = same_bits(dp2.download(), probs) && same_bits(ds3.download(), sd);
    check(same, "probability_seed determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }
  if (realistic && o.timing)
    time_bytes("probability_seed " + tag, double(total) * 12,
               [&] { kc::launch_probability_seed(p, dl.get(), dt.get(), dp.get(), ds.get(), g_stream); });
}

void test_seed(const Options& o) {
  Worst worst("probability seed (relative)");
  for (int K : {1, 2, 5, 257, 1000, 1001}) seed_case(o, 3, K, 1, "", false, worst);
  if (o.quick) return;
  seed_case(o, 8, 1000, 2, "(imagenet b8)", true, worst);
  seed_case(o, 256, 1000, 3, "(imagenet b256)", true, worst);
}

// =================================================================================================
// saliency maps
// =================================================================================================

void maps_case(const Options& o, int N, int C, int64_t HW, const std::string& label, bool realistic) {
  const std::string tag = fmt("%dx%dx%lld%s%s", N, C, (long long)HW, label.empty() ? "" : " ", label.c_str());
  const size_t total = size_t(N) * C * size_t(HW), out = size_t(N) * size_t(HW);
  const std::vector<float> g = randn(total, uint32_t(total + 1)), x = randn(total, uint32_t(total + 2));
  DevBuf<float> dg(g), dx(x), dm(out);
  const kc::MapKind kinds[] = {kc::MapKind::abs_grad, kc::MapKind::abs_input_x_grad, kc::MapKind::abs_mean_input_x_grad};
  const char* names[] = {"grad", "inputgrad", "ig"};
  for (int k = 0; k < 3; ++k) {
    const kc::ChannelMapParams p{N, C, HW, kinds[k]};
    const bool need_x = kinds[k] != kc::MapKind::abs_grad;
    std::vector<float> mr(out);
    kcpu::channel_map(p, g.data(), need_x ? x.data() : nullptr, mr.data());
    dm.poison();
    kc::launch_channel_map(p, dg.get(), need_x ? dx.get() : nullptr, dm.get(), g_stream);
    sync();
    const std::vector<float> m = dm.download();
    const std::string name = std::string("channel_map ") + names[k] + " " + tag;
    check(same_bits(m, mr), name, bits_detail(m, mr));
    if (!o.quick) {
      dm.poison();
      kc::launch_channel_map(p, dg.get(), need_x ? dx.get() : nullptr, dm.get(), g_stream);
      sync();
      const bool same = same_bits(dm.download(), m);
      check(same, "channel_map determinism " + std::string(names[k]) + " " + tag,
            same ? "second run bitwise equal" : "second run differs");
    }
    if (realistic && o.timing)
      time_bytes(name, double(total) * (need_x ? 8 : 4) + double(out) * 4,
                 [&] { kc::launch_channel_map(p, dg.get(), need_x ? dx.get() : nullptr, dm.get(), g_stream); });
  }
}

void test_maps(const Options& o) {
  maps_case(o, 3, 5, 63, "", false);
  maps_case(o, 3, 3, 49, "", false);
  maps_case(o, 2, 1, 17, "", false);
  maps_case(o, 3, 5, 1, "", false);
  maps_case(o, 1, 64, 9, "", false);
  if (o.quick) return;
  maps_case(o, 8, 3, 224 * 224, "(imagenet b8 input)", true);
}

// =================================================================================================
// input normalisation
// =================================================================================================

void preprocess_case(const Options& o, kc::NormalizeParams p, uint32_t seed, const std::string& label, bool realistic) {
  const std::string tag = fmt("%dx%dx%d%s%s", p.N, p.H, p.W, label.empty() ? "" : " ", label.c_str());
  const size_t px = size_t(p.N) * p.H * p.W;
  std::vector<uint8_t> rgb(px * 3);
  std::mt19937 rng{seed};
  for (auto& b : rgb) b = uint8_t(rng());
  if (px >= 256)  // every byte value in every channel
    for (size_t i = 0; i < 256; ++i)
      for (size_t c = 0; c < 3; ++c) rgb[i * 3 + c] = uint8_t(i);
  std::vector<float> ref(px * 3);
  kcpu::normalize_u8(p, rgb.data(), ref.data());
  DevBuf<uint8_t> drgb(rgb);
  DevBuf<float> dout(px * 3);
  dout.poison();
  kc::launch_normalize_u8(p, drgb.get(), dout.get(), g_stream);
  sync();
  const std::vector<float> out = dout.download();
  check(same_bits(out, ref), "normalize_u8 " + tag, bits_detail(out, ref));
  if (!o.quick) {
    dout.poison();
    kc::launch_normalize_u8(p, drgb.get(), dout.get(), g_stream);
    sync();
    const bool same = same_bits(dout.download(), out);
    check(same, "normalize_u8 determinism " + tag, same ? "second run bitwise equal" : "second run differs");
  }
  if (realistic && o.timing)
    time_bytes("normalize_u8 " + tag, double(px) * 15, [&] { kc::launch_normalize_u8(p, drgb.get(), dout.get(), g_stream); });
}

void test_preprocess(const Options& o) {
  auto params = [](int N, int H, int W) {
    kc::NormalizeParams p;
    p.N = N, p.H = H, p.W = W;
    return p;
  };
  preprocess_case(o, params(2, 7, 9), 1, "", false);
  preprocess_case(o, params(1, 1, 1), 2, "", false);
  preprocess_case(o, params(1, 16, 16), 3, "", false);
  kc::NormalizeParams custom = params(3, 5, 13);
  custom.mean[0] = 0.5f, custom.mean[1] = 0.25f, custom.mean[2] = 0.1f;
  custom.std[0] = 0.5f, custom.std[1] = 0.3f, custom.std[2] = 1.7f;
  preprocess_case(o, custom, 4, "custom mean/std", false);
  if (o.quick) return;
  preprocess_case(o, params(8, 224, 224), 5, "(imagenet b8)", true);
}

// ---- main -----------------------------------------------------------------------------------------

int no_device(cudaError_t e, int count) {
  std::printf("FAIL no CUDA device (%s, %d devices)\n", e == cudaSuccess ? "cudaSuccess" : cudaGetErrorString(e),
              count);
  std::printf("SUMMARY: 1 checks, 0 passed, 1 failed (no CUDA device)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  bool probe = false;
  std::string broken;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") {
      o.quick = true;
      o.timing = false;
    } else if (a == "--no-timing") {
      o.timing = false;
    } else if (a.rfind("--only=", 0) == 0) {
      o.only = a.substr(7);
    } else if (a == "--probe") {
      probe = true;
    } else if (a == "--host-only") {
      o.host_only = true;
      o.timing = false;
    } else if (a.rfind("--broken=", 0) == 0) {
      broken = a.substr(9);
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--no-timing] [--only=relu,maxpool,gap,variances,moments,dgrad,avgpool,elementwise,seed,maps,preprocess] "
                           "[--probe] [--host-only] [--broken=oob|race]\n", argv[0]);
      return 64;
    }
  }

  if (o.host_only) {
    std::printf("INFO mode: host only (no device used), OpenMP threads for the twins: %d\n", omp_get_max_threads());
    try {
      test_dgrad(o);
    } catch (const std::exception& ex) {
      check(false, "dgrad host side (aborted)", ex.what());
    }
    std::printf("SUMMARY: %d checks, %d passed, %d failed (host only)\n", g_pass + g_fail, g_pass, g_fail);
    return g_fail ? 1 : 0;
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

  try {
    PG_CUDA_CHECK(cudaStreamCreate(&g_stream));
  } catch (const std::exception& ex) {
    std::printf("FAIL cudaStreamCreate: %s\n", ex.what());
    return 1;
  }
  if (!broken.empty()) {
    if (broken == "oob") {
      pg::gputest::run_broken_oob(g_stream);
    } else if (broken == "race") {
      pg::gputest::run_broken_race(g_stream);
    } else {
      std::fprintf(stderr, "--broken=oob or --broken=race\n");
      return 64;
    }
    return 0;  // the verdict is the sanitizer's
  }

  std::printf("INFO mode: %s, timings %s, OpenMP threads for the twins: %d\n", o.quick ? "quick" : "full",
              o.timing ? "on" : "off", omp_get_max_threads());
  const auto t0 = std::chrono::steady_clock::now();
  struct Group {
    const char* name;
    void (*run)(const Options&);
  };
  const Group groups[] = {{"relu", test_relu},         {"maxpool", test_maxpool},       {"gap", test_gap},
                          {"variances", test_variances}, {"moments", test_moments},       {"dgrad", test_dgrad},
                          {"avgpool", test_avgpool},     {"elementwise", test_elementwise}, {"seed", test_seed},
                          {"maps", test_maps},           {"preprocess", test_preprocess}};
  for (const Group& g : groups) {
    if (!o.wants(g.name)) continue;
    const auto g0 = std::chrono::steady_clock::now();
    try {
      g.run(o);
    } catch (const std::exception& ex) {  // a CUDA error or a refused launch: the group stops here
      check(false, std::string(g.name) + " (group aborted)", ex.what());
    }
    std::printf("INFO group %s: %.1f s\n", g.name,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - g0).count());
  }
  cudaStreamDestroy(g_stream);
  cudaDeviceReset();  // lets compute-sanitizer's leak check see every allocation released
  std::printf("SUMMARY: %d checks, %d passed, %d failed (%.1f s)\n", g_pass + g_fail, g_pass, g_fail,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return g_fail ? 1 : 0;
}
