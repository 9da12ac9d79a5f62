// The devices a runtime has initialised and each host thread's current device: the part of
// runtime.h's device rule ("each thread works on its current device: the last one it passed to
// init(), else the first one the process initialised") that does not depend on the backend.
// runtime_cuda.cpp and runtime_simt.cpp each keep one table of their own per-device State.
//
// States are created once and never destroyed (device tensors may outlive static destruction,
// see runtime_cuda.cpp), so a State& stays valid for the life of the process.
#pragma once
#include <array>
#include <atomic>
#include <mutex>
#include <string>

#include "core/error.h"

namespace pg::gpu {

template <class State>
class DeviceTable {
 public:
  static constexpr int kMaxDevices = 64;

  // Device d's state, made by make() (which may throw: then nothing is recorded) the first time,
  // and d made the calling thread's current device.
  template <class Make>
  State& init(int d, Make make) {
    if (d < 0 || d >= kMaxDevices) throw Error("device " + std::to_string(d) + " is out of range");
    State* s = states_[d].load(std::memory_order_acquire);
    if (!s) {
      std::lock_guard<std::mutex> lock(mu_);
      s = states_[d].load(std::memory_order_acquire);
      if (!s) {
        s = make(d);
        states_[d].store(s, std::memory_order_release);
        int none = -1;
        first_.compare_exchange_strong(none, d);
      }
    }
    current_() = d;
    return *s;
  }

  // The calling thread's current device, or -1 before any init().
  int current() const {
    const int d = current_();
    return d >= 0 ? d : first_.load(std::memory_order_acquire);
  }
  // Its state; nullptr before any init().
  State* current_state() const {
    const int d = current();
    return d < 0 ? nullptr : states_[d].load(std::memory_order_acquire);
  }
  bool any() const { return first_.load(std::memory_order_acquire) >= 0; }

  // Offers a block to try_free(state) of the calling thread's device first (the usual owner),
  // then of every other initialised device, until one takes it; false when none does.
  template <class TryFree>
  bool return_block(TryFree try_free) const {
    State* cur = current_state();
    if (cur && try_free(*cur)) return true;
    for (int d = 0; d < kMaxDevices; ++d) {
      State* s = states_[d].load(std::memory_order_acquire);
      if (s && s != cur && try_free(*s)) return true;
    }
    return false;
  }

  // f(device, state) for every initialised device, in index order.
  template <class F>
  void for_each(F f) const {
    for (int d = 0; d < kMaxDevices; ++d)
      if (State* s = states_[d].load(std::memory_order_acquire)) f(d, *s);
  }

 private:
  static int& current_() {
    thread_local int d = -1;
    return d;
  }
  std::mutex mu_;
  std::array<std::atomic<State*>, kMaxDevices> states_{};
  std::atomic<int> first_{-1};
};

}  // namespace pg::gpu
