// A caching allocator for device memory, independent of the backend: it sees the device only
// through two callbacks, so the same code serves cudaMalloc (runtime_cuda.cpp), host memory
// (runtime_simt.cpp) and malloc in the unit tests.
//
// Blocks are never split: each block is one raw allocation, kept for reuse when freed.
//   * Sizes are rounded up: to kSmallRound (512 B) up to kSmallLimit (1 MiB), to kLargeRound
//     (2 MiB) above, so that the varied shapes of different batch sizes land on few sizes.
//   * alloc takes the smallest cached block >= the rounded size, but never one more than
//     2x the rounded size (bounds the waste), else allocates a new block.
//   * When the raw allocator fails, every cached block is released and the allocation is
//     retried once; a second failure throws OutOfMemory.
//   * Pointers are 256-byte aligned. A raw allocator whose pointers are not (malloc) is
//     handled by over-allocating by 255 bytes and aligning inside the block.
//   * alloc(0) returns a unique valid pointer (a block of the smallest size).
// Blocks are not tied to streams: reusing a freed block is safe only because every user of
// the device memory is ordered with the compute stream (see runtime.h's ordering rule).
// Thread-safe: one mutex; the callbacks are called with it held.
// The destructor returns the cached blocks; blocks still in use are left to the process
// (deliberately: their owners may outlive the arena at exit).
#pragma once
#include <cstddef>
#include <map>
#include <mutex>
#include <unordered_map>

#include "core/error.h"

namespace pg::gpu {

// Thrown when the raw allocator fails twice (before and after releasing the cache).
struct OutOfMemory : Error {
  explicit OutOfMemory(const std::string& msg) : Error(msg) {}
};

struct ArenaStats {
  size_t in_use = 0;         // bytes of the blocks handed out (rounded sizes)
  size_t cached = 0;         // bytes of the blocks held for reuse
  size_t peak = 0;           // peak of in_use since construction
  size_t device_allocs = 0;  // raw allocations made (raw_alloc calls that returned a block)
};

class Arena {
 public:
  // raw_alloc returns nullptr when the device is out of memory and may throw pg::Error for
  // any other failure; raw_free may throw pg::Error. ctx is passed to both unchanged.
  using RawAlloc = void* (*)(size_t bytes, void* ctx);
  using RawFree = void (*)(void* p, void* ctx);

  static constexpr size_t kAlignment = 256;
  static constexpr size_t kSmallRound = 512;
  static constexpr size_t kSmallLimit = size_t(1) << 20;
  static constexpr size_t kLargeRound = size_t(2) << 20;

  Arena(RawAlloc raw_alloc, RawFree raw_free, void* ctx = nullptr);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // A kAlignment-aligned block of at least `bytes` bytes, uninitialised. Throws OutOfMemory
  // ("device out of memory: ...") or what raw_alloc throws.
  void* alloc(size_t bytes);
  // Returns a block to the cache; nullptr is ignored; a pointer this arena did not hand out
  // (or already took back) throws pg::Error naming it.
  void free(void* p);
  // free(p) when this arena handed p out; false (and nothing changes) when it did not: the
  // device runtime asks each device's arena in turn.
  bool try_free(void* p);
  // Whether p points into a block this arena has handed out (at its start or inside it).
  // Linear in the blocks in use: for checks, not for every access.
  bool contains(const void* p) const;
  // Gives every cached block back to raw_free.
  void release_cached();
  ArenaStats stats() const;

  // The block size alloc(bytes) uses.
  static size_t round_size(size_t bytes);

 private:
  struct Block {
    void* raw = nullptr;  // what raw_alloc returned (differs from the user pointer if padded)
    size_t size = 0;      // rounded size, what in_use/cached count
  };
  void* raw_block(size_t size, Block& b);  // nullptr when raw_alloc fails
  void release_cached_locked();

  RawAlloc raw_alloc_;
  RawFree raw_free_;
  void* ctx_;
  mutable std::mutex mu_;
  std::multimap<size_t, std::pair<void*, Block>> free_;  // size -> (user pointer, block)
  std::unordered_map<void*, Block> used_;                // user pointer -> block
  ArenaStats stats_;
  bool pad_ = false;  // raw_alloc gave a misaligned pointer once: always over-allocate
};

}  // namespace pg::gpu
