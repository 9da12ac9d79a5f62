#include "nn/gpu/arena.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

namespace pg::gpu {
namespace {

// Requests above this cannot be rounded (and no device has that much memory).
constexpr size_t kMaxRequest = std::numeric_limits<size_t>::max() / 4;

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % Arena::kAlignment == 0; }

void* align_up(void* p) {
  const uintptr_t a = Arena::kAlignment;
  return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(p) + a - 1) / a * a);
}

std::string pointer_text(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

}  // namespace

Arena::Arena(RawAlloc raw_alloc, RawFree raw_free, void* ctx)
    : raw_alloc_(raw_alloc), raw_free_(raw_free), ctx_(ctx) {
  if (!raw_alloc_ || !raw_free_) throw Error("gpu arena: raw_alloc and raw_free must not be null");
}

Arena::~Arena() {
  // Cached blocks go back; blocks in use are left alone (their owners may still free them
  // during static destruction, which must not crash, so the arena is usually never
  // destroyed: see runtime_cuda.cpp). A failing raw_free is ignored: a destructor must not throw.
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& entry : free_) {
    try {
      raw_free_(entry.second.second.raw, ctx_);
    } catch (...) {
    }
  }
  free_.clear();
  stats_.cached = 0;
}

size_t Arena::round_size(size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (bytes > kMaxRequest) return bytes;  // alloc refuses these before rounding
  if (bytes <= kSmallLimit) return (bytes + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (bytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

void* Arena::raw_block(size_t size, Block& b) {
  size_t want = pad_ ? size + kAlignment - 1 : size;
  void* p = raw_alloc_(want, ctx_);
  if (!p) return nullptr;
  if (!pad_ && !aligned(p)) {
    // The first misaligned pointer switches the arena to over-allocating for good.
    raw_free_(p, ctx_);
    pad_ = true;
    want = size + kAlignment - 1;
    p = raw_alloc_(want, ctx_);
    if (!p) return nullptr;
  }
  b.raw = p;
  b.size = size;
  ++stats_.device_allocs;
  return pad_ ? align_up(p) : p;
}

void* Arena::alloc(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  if (bytes > kMaxRequest)
    throw OutOfMemory("device out of memory: " + std::to_string(bytes) + " bytes requested, " +
                      std::to_string(stats_.in_use) + " in use, " + std::to_string(stats_.cached) +
                      " cached (larger than any device)");
  const size_t size = round_size(bytes);

  // Best fit among the cached blocks, at most twice the rounded size.
  auto it = free_.lower_bound(size);
  if (it != free_.end() && it->first <= 2 * size) {
    void* p = it->second.first;
    const Block b = it->second.second;
    used_.emplace(p, b);  // may throw bad_alloc: then nothing has changed yet
    free_.erase(it);
    stats_.cached -= b.size;
    stats_.in_use += b.size;
    if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
    return p;
  }

  Block b;
  void* p = raw_block(size, b);
  if (!p) {
    const size_t released = stats_.cached;
    release_cached_locked();
    p = raw_block(size, b);
    if (!p)
      throw OutOfMemory("device out of memory: " + std::to_string(bytes) + " bytes requested, " +
                        std::to_string(stats_.in_use) + " in use, " + std::to_string(stats_.cached) +
                        " cached (after releasing " + std::to_string(released) +
                        " cached bytes and retrying)");
  }
  try {
    used_.emplace(p, b);
  } catch (...) {
    raw_free_(b.raw, ctx_);
    --stats_.device_allocs;
    throw;
  }
  stats_.in_use += b.size;
  if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
  return p;
}

void Arena::free(void* p) {
  if (!p) return;
  if (!try_free(p))
    throw Error("gpu arena: free of unknown pointer " + pointer_text(p) +
                " (not allocated by this arena, or already freed)");
}

bool Arena::try_free(void* p) {
  if (!p) return true;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = used_.find(p);
  if (it == used_.end()) return false;
  const Block b = it->second;
  free_.emplace(b.size, std::make_pair(p, b));  // may throw bad_alloc: the block stays in use
  used_.erase(it);
  stats_.in_use -= b.size;
  stats_.cached += b.size;
  return true;
}

bool Arena::contains(const void* p) const {
  const auto* q = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [start, b] : used_) {
    const auto* s = static_cast<const char*>(start);
    if (q >= s && q < s + std::max<size_t>(b.size, 1)) return true;
  }
  return false;
}

void Arena::release_cached_locked() {
  // Each block leaves the list before raw_free, so a throwing raw_free leaves the arena
  // consistent (that block is then lost, not freed twice).
  while (!free_.empty()) {
    auto it = free_.begin();
    const Block b = it->second.second;
    free_.erase(it);
    stats_.cached -= b.size;
    raw_free_(b.raw, ctx_);
  }
}

void Arena::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  release_cached_locked();
}

ArenaStats Arena::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace pg::gpu
