// The device backend of a build without one (no nvcc when the project was configured): every
// call fails with one error that says so. Only the tensor's device decides that this is
// reached (`--device cuda`), so a CPU build has no device branches to skip silently.
#include <string>
#include <vector>

#include "nn/backend.h"
#include "core/error.h"

namespace pg::nn {

namespace {

[[noreturn]] void no_device() {
  throw Error("--device cuda: this build of parchgrad has no CUDA backend (nvcc was not found when it was configured)");
}

class NoDevice final : public DeviceBackend {
 public:
  const char* name() const override { return "none"; }
  ag::Var conv2d(Context&, const Conv2d&, const ag::Var&) override { no_device(); }
  ag::Var linear(Context&, const Linear&, const ag::Var&) override { no_device(); }
  ag::Var maxpool(Context&, const kernels::Pool2dParams&, const ag::Var&) override { no_device(); }
  ag::Var relu(Context&, ag::Var) override { no_device(); }
  ag::Var relu6(Context&, ag::Var) override { no_device(); }
  ag::Var avgpool(Context&, const kernels::Pool2dParams&, const ag::Var&) override { no_device(); }
  ag::Var adaptive_avgpool(Context&, const ag::Var&, int, int) override { no_device(); }
  ag::Var activation(Context&, kernels::Activation, const ag::Var&) override { no_device(); }
  ag::Var se_scale(Context&, const ag::Var&, const ag::Var&) override { no_device(); }
  ag::Var layernorm(Context&, const LayerNorm2d&, const ag::Var&) override { no_device(); }
  ag::Var gelu(Context&, const ag::Var&) override { no_device(); }
  void add_inplace(Tensor&, const Tensor&) override { no_device(); }
  void spatial_variances(const Tensor&, const float*, const std::vector<uint8_t>&, std::vector<double>&,
                         std::vector<double>&) override {
    no_device();
  }
  std::shared_ptr<float> allocate(int64_t) override { no_device(); }
  void copy(float*, const float*, size_t) override { no_device(); }
  void zero(float*, size_t) override { no_device(); }
  void configure(const DeviceOptions&, int) override { no_device(); }
  int device_count() const override { return 0; }
  std::string description() const override { return ""; }
  const char* runtime_name() const override { return "none"; }
  void upload(float*, const float*, size_t) override { no_device(); }
  void download(float*, const float*, size_t) override { no_device(); }
  Tensor probability_seed(const Tensor&, const std::vector<int>&, Tensor*) override { no_device(); }
  Tensor channel_map(const Tensor&, const Tensor*, MapKind) override { no_device(); }
  Tensor normalize_u8(const uint8_t*, int, int, int, const float*, const float*) override { no_device(); }
};

}  // namespace

DeviceBackend& detail::this_builds_device() {
  static NoDevice instance;
  return instance;
}

}  // namespace pg::nn
