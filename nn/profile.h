// Per-op wall-time accounting for `parchgrad bench --profile`: off unless enabled, then
// every layer adds its time to a named counter.
#pragma once
#include <chrono>
#include <string>

namespace pg::nn::profile {

void enable(bool on);
bool enabled();
void add(const std::string& name, double seconds, double flops);
// Prints the counters sorted by time, then clears them.
void report(FILE* out);

class Scope {
 public:
  Scope(const char* name, double flops = 0) : name_(name), flops_(flops) {
    if (enabled()) start_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (enabled())
      add(name_, std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count(), flops_);
  }

 private:
  const char* name_;
  double flops_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace pg::nn::profile
