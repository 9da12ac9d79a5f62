// Loads items ahead of their use on background threads (images decoded on the CPU while the
// device computes the previous batch), handing them out in order. An exception thrown by
// the loader is rethrown by next() for that item only.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace pg::io {

template <class T>
class Prefetcher {
 public:
  // Items 0..count-1 from load(i), at most `ahead` items loaded before they are taken, on
  // `threads` threads. threads == 0: loaded on the caller's thread inside next().
  Prefetcher(size_t count, std::function<T(size_t)> load, size_t ahead, int threads)
      : count_(count), load_(std::move(load)), ahead_(ahead < 1 ? 1 : ahead) {
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { work(); });
  }
  ~Prefetcher() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // The next item in order (call at most `count` times).
  T next() {
    const size_t i = taken_++;
    if (workers_.empty()) return load_(i);
    std::unique_lock<std::mutex> lk(mu_);
    cv_.notify_all();  // a slot is free: workers may start item i + ahead
    cv_.wait(lk, [&] { return done_.count(i) > 0; });
    Slot s = std::move(done_[i]);
    done_.erase(i);
    consumed_ = i + 1;
    cv_.notify_all();
    lk.unlock();
    if (s.error) std::rethrow_exception(s.error);
    return std::move(*s.value);
  }

 private:
  struct Slot {
    std::optional<T> value;
    std::exception_ptr error;
  };
  void work() {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || (next_ < count_ && next_ < consumed_ + ahead_); });
        if (stop_) return;
        i = next_++;
      }
      Slot s;
      try {
        s.value.emplace(load_(i));
      } catch (...) {
        s.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lk(mu_);
        done_[i] = std::move(s);
      }
      cv_.notify_all();
    }
  }

  const size_t count_;
  std::function<T(size_t)> load_;
  const size_t ahead_;
  size_t taken_ = 0;  // caller's thread only
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<size_t, Slot> done_;
  size_t next_ = 0, consumed_ = 0;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace pg::io
