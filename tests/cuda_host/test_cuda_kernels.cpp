// The CUDA kernels of kernels/cuda, compiled as C++ and run on the host SIMT runtime
// (kernels/simt), against their CPU twins: the shared tables of tests/kernels/cases.cpp (the
// same cases, tolerances and bit-exactness as the GPU runner, tests/cuda/test_kernels_gpu.cu),
// each table run under several scheduler seeds (randomised thread orders between barriers).
// What only the SIMT runtime can vary (scheduler seeds and host threads for one launch) is
// tested here as well.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cuda/avgpool.h"
#include "kernels/cuda/conv_dgrad.h"
#include "kernels/params.h"
#include "kernels/simt/simt.h"
#include "tests/kernels/harness.h"

namespace kc = pg::kernels::cuda;
namespace kt = pg::kernel_tests;
using pg::kernels::Conv2dParams;

namespace {

// Device memory on the SIMT runtime is host memory; launches run to completion on the call.
class HostDevice final : public kt::Device {
 public:
  void* alloc(size_t bytes) override {
    void* p = std::malloc(bytes);
    if (!p) throw pg::Error("kernel tests: out of host memory");
    return p;
  }
  void release(void* p) noexcept override { std::free(p); }
  void upload(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void download(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void fill(void* p, unsigned char byte, size_t bytes) override { std::memset(p, byte, bytes); }
  void sync() override {}
  cudaStream_t stream() const override { return nullptr; }
  double time_us(const std::function<void()>&) override { return 0; }
};

// Checks as doctest assertions (a failing one names the case); information lines printed.
class DoctestReport final : public kt::Report {
 public:
  void check(bool ok, const std::string& name, const std::string& detail) override {
    CHECK_MESSAGE(ok, name << ": " << detail);
  }
  void info(const std::string& line) override { std::printf("%s\n", line.c_str()); }
};

const uint64_t kSchedulerSeeds[] = {1, 7, 12345};

// One group's table under each scheduler seed (the dgrad table, by far the longest on the
// SIMT runtime, under one: its scheduling is tested on its own below).
void run_group(const char* name) {
  HostDevice dev;
  DoctestReport report;
  kt::Options opt;
  opt.large = false;
  opt.timing = false;
  const bool dgrad = std::strcmp(name, "dgrad") == 0;
  opt.all_seeds = !dgrad;
  opt.repeat = !dgrad;
  kt::Ctx ctx{dev, report, opt};
  for (uint64_t seed : kSchedulerSeeds) {
    pg::simt::ScopedSeed ss(dgrad ? 7 : seed);
    kt::group(name).run(ctx);
    if (dgrad) break;
  }
}

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("relu forward/backward: mask bits identical to the CPU backend's uint64 words") { run_group("relu"); }
TEST_CASE("maxpool forward (argmax, ties, NaN, -inf) and gather backward bit for bit") { run_group("maxpool"); }
TEST_CASE("relu6 forward: values and mask bits identical to the CPU twin, no gradient at 0 and 6") { run_group("relu6"); }
TEST_CASE("depthwise dgrad with the ParchGrad scale: bit for bit against the CPU twin") { run_group("depthwise"); }
TEST_CASE("layernorm over channels forward/backward (ConvNeXt): bit for bit against the CPU twin") { run_group("layernorm"); }
TEST_CASE("exact GELU forward/backward (ConvNeXt): bit for bit against the CPU twin") { run_group("gelu"); }
TEST_CASE("SiLU, sigmoid, hardswish, hardsigmoid forward/backward (EfficientNet, MobileNetV3) against the CPU twin") {
  run_group("activations");
}
TEST_CASE("squeeze-and-excitation product, dx and ds bit for bit against the CPU twin") { run_group("se_scale"); }
TEST_CASE("channel gap with and without the folded BatchNorm") { run_group("gap"); }
TEST_CASE("spatial variances M, N: one pass over g, masks with empty H or L, BatchNorm scale") {
  run_group("variances");
}
TEST_CASE("class moments: batches merged into running count/mean/M2") { run_group("moments"); }
TEST_CASE("conv dgrad fp32, TF32, BF16 (mma.sync and ldmatrix models), strided by phase") { run_group("dgrad"); }
TEST_CASE("avgpool and adaptive avgpool forward and gather backward bit for bit") { run_group("avgpool"); }
TEST_CASE("add, scale, sample_channel_scale, channel_affine bit for bit, in place and out of place") {
  run_group("elementwise");
}
TEST_CASE("probability seed: attribution.cpp's double softmax, within one float ulp") { run_group("seed"); }
TEST_CASE("channel maps (grad, input x grad, IG): bit for bit, products rounded, no FMA") { run_group("maps"); }
TEST_CASE("normalize_u8: uint8 HWC -> (u8 / 255 - mean) / std CHW, bit for bit") { run_group("preprocess"); }

// ---- what only the SIMT runtime varies ------------------------------------------------------------

TEST_CASE("conv dgrad precision names") {
  using pg::kernels::ConvPrecision;
  ConvPrecision prec = ConvPrecision::fp32;
  CHECK(pg::kernels::parse_conv_precision("bf16", &prec));
  CHECK(prec == ConvPrecision::bf16);
  CHECK(pg::kernels::parse_conv_precision("tf32", &prec));
  CHECK(prec == ConvPrecision::tf32);
  CHECK_FALSE(pg::kernels::parse_conv_precision("fp16", &prec));
  CHECK(prec == ConvPrecision::tf32);
  CHECK(std::string(pg::kernels::conv_precision_name(ConvPrecision::fp32)) == "fp32");
}

TEST_CASE("conv dgrad: the same bits under every scheduler seed and host thread count") {
  Conv2dParams p;
  p.N = 2, p.C = 17, p.H = 13, p.W = 11, p.K = 40, p.R = p.S = 3;
  p.pad_h = p.pad_w = 1;
  const size_t nx = size_t(p.N) * p.C * p.H * p.W;
  const std::vector<float> w = randn(size_t(p.K) * p.C * 9, 2);
  std::vector<float> scale = randn(size_t(p.N) * p.K, 3);
  for (size_t i = 0; i < scale.size(); i += 3) scale[i] = 0.f;
  const int old_threads = pg::simt::host_threads();
  for (pg::kernels::ConvPrecision prec :
       {pg::kernels::ConvPrecision::fp32, pg::kernels::ConvPrecision::tf32, pg::kernels::ConvPrecision::bf16}) {
    for (int stride : {1, 2}) {  // stride 2: four phases in one grid
      Conv2dParams q = p;
      q.stride_h = q.stride_w = stride;
      REQUIRE(pg::kernels::conv2d_output_size(q));
      const std::vector<float> dy = randn(size_t(q.N) * q.K * q.P * q.Q, uint32_t(5 + stride));
      std::vector<unsigned char> ws(kc::conv_dgrad_workspace_bytes(q));
      std::vector<float> ref(nx);
      pg::simt::set_host_threads(1);
      {
        pg::simt::ScopedSeed ss(1);
        kc::launch_conv_dgrad(q, prec, dy.data(), w.data(), scale.data(), ref.data(), ws.data(), nullptr);
      }
      for (int threads : {1, 2}) {
        pg::simt::set_host_threads(threads);
        for (uint64_t seed : {uint64_t(99), uint64_t(4242)}) {
          CAPTURE(pg::kernels::conv_precision_name(prec));
          CAPTURE(stride);
          CAPTURE(threads);
          pg::simt::ScopedSeed ss(seed);
          std::vector<float> dx(nx);
          kc::launch_conv_dgrad(q, prec, dy.data(), w.data(), scale.data(), dx.data(), ws.data(), nullptr);
          CHECK(same_bits(dx, ref));
        }
      }
    }
  }
  pg::simt::set_host_threads(old_threads);
}

TEST_CASE("global adaptive avgpool on two host threads (its static shared memory per OS thread)") {
  const kc::AdaptivePoolParams p{300, 7, 7, 1, 1};
  const std::vector<float> x = randn(300 * 49, 5);
  std::vector<float> y1(300), y2(300);
  kc::launch_adaptive_avgpool_forward(p, x.data(), y1.data(), nullptr);
  const int old_threads = pg::simt::host_threads();
  pg::simt::set_host_threads(2);
  kc::launch_adaptive_avgpool_forward(p, x.data(), y2.data(), nullptr);
  pg::simt::set_host_threads(old_threads);
  CHECK(same_bits(y1, y2));
}
