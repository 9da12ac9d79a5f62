// pg::simt: a small SIMT runtime that runs CUDA kernels on the CPU, so that the same
// kernels/cuda/*.cu sources compile with g++ and run in CI without a GPU.
//
// Model
// -----
// * One fiber per CUDA thread (ucontext, see simt.cpp for why). All fibers of a block run
//   on one OS thread, one at a time; a block runs to its end before the OS thread starts
//   another block. Blocks of a grid run one after another (default) or on several OpenMP
//   threads (set_host_threads / PG_SIMT_THREADS), one block per OS thread at a time.
// * A thread runs without interruption until it reaches a block barrier (__syncthreads),
//   a warp-collective operation (shuffles, votes, __syncwarp, ldmatrix, mma) or its end.
//   Between two such points the runnable threads of a block are picked in a random order
//   drawn from a seeded generator, so a missing barrier shows as a wrong result.
// * Barriers are strict, as the CUDA programming guide states them: every thread of the
//   block must reach the same __syncthreads (same source line), and a thread that has
//   exited never arrives, so exiting before a barrier others wait at is reported (hardware
//   tolerates exited whole warps in practice; kernels here must not rely on it).
// * Warp collectives follow the *_sync rules: the non-exited lanes named in the mask must
//   all reach the same operation with the same mask; a lane waiting in another collective
//   (its half-warp's shuffle, say) is simply not there yet. What can never complete is
//   reported by the deadlock check, which lists every waiting group and its source line.
// * Errors (deadlocks, mismatched barriers, misuse of warp operations) are raised as
//   pg::Error on the thread that launched the kernel, with a one-line message naming the
//   kernel, the block and the source lines involved.
// * Dynamic shared memory is filled with 0xFF bytes (NaN as float) at each block start.
//
// Seeds: the default seed is fixed (reproducible CI); the environment variable
// PG_SIMT_SEED overrides it; set_seed() (tests) overrides both. Each block's order is drawn
// from (seed, linear block index), so a result does not depend on what ran before.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

namespace pg::simt {

// CUDA's built-in vector types for indices.
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

// A call site, filled in by default arguments at the caller (GCC's __builtin_FILE/LINE
// evaluate at the point where the default argument is used).
struct SourceLoc {
  const char* file;
  int line;
  static constexpr SourceLoc here(const char* f = __builtin_FILE(), int l = __builtin_LINE()) {
    return SourceLoc{f, l};
  }
};

// ---- configuration ----------------------------------------------------------------------
void set_seed(uint64_t seed);  // overrides PG_SIMT_SEED and the default
uint64_t seed();
// OS threads that run blocks of one launch in parallel (1 = serial, the default; the
// environment variable PG_SIMT_THREADS sets the initial value).
void set_host_threads(int n);
int host_threads();

// Sets the seed for the scope of a test, restoring the previous one after.
class ScopedSeed {
 public:
  explicit ScopedSeed(uint64_t s) : old_(seed()) { set_seed(s); }
  ~ScopedSeed() { set_seed(old_); }
  ScopedSeed(const ScopedSeed&) = delete;
  ScopedSeed& operator=(const ScopedSeed&) = delete;

 private:
  uint64_t old_;
};

// ---- per-thread built-ins ---------------------------------------------------------------
namespace detail {
struct Builtins {
  uint3 threadIdx;
  uint3 blockIdx;
  dim3 blockDim;
  dim3 gridDim;
};
// Points at the running fiber's built-ins; set by the scheduler before each switch. Inline
// and constant-initialised, so an access is a plain TLS load (no TLS wrapper call).
inline thread_local const Builtins* tl_builtins = nullptr;
inline const Builtins& builtins() { return *tl_builtins; }
}  // namespace detail

// ---- block barrier ----------------------------------------------------------------------
enum class BarrierKind { plain, count, all, any };
// Waits until every thread of the block has arrived at this same barrier; returns the
// reduction of `pred` over the block for count/all/any (0 for plain).
int barrier(BarrierKind kind, int pred, SourceLoc loc);

// ---- warp collectives -------------------------------------------------------------------
// A warp-collective operation. Each participating lane posts a pointer to its own argument
// block (living on its fiber's stack) and is suspended; when every non-exited lane named in
// the mask has arrived at the same operation with the same mask, `complete` runs once with
// the 32 lanes' argument pointers (nullptr for lanes not taking part) and the effective
// mask (mask minus exited lanes), writes each lane's results into its argument block, and
// the lanes become runnable again.
struct WarpOp {
  const char* name;
  void (*complete)(void* const lane_args[32], uint32_t mask);
  bool aligned;  // .aligned PTX ops (mma, ldmatrix): all 32 lanes must take part
};
void warp_collective(const WarpOp& op, uint32_t mask, void* args, SourceLoc loc);
// Lane id of the calling thread and the mask of this warp's lanes that exist and have not
// exited (what __activemask returns here: the runtime has no divergence model).
unsigned lane_id();
uint32_t live_lanes();

// Shuffles on 32- or 64-bit values (bits carried in a uint64_t).
enum class ShflMode { idx, up, down, bfly };
uint64_t shfl(ShflMode mode, uint32_t mask, uint64_t bits, unsigned size, int lane_or_delta,
              int width, SourceLoc loc);
enum class VoteMode { ballot, any, all };
uint32_t vote(VoteMode mode, uint32_t mask, int pred, SourceLoc loc);
void syncwarp(uint32_t mask, SourceLoc loc);

// ---- cp.async model ----------------------------------------------------------------------
// Copies are queued per thread and performed only when that thread waits for their group
// (cp_async_wait / cp_async_wait_all): never at a barrier, never at block end (dropped).
void cp_async(void* smem_dst, const void* gmem_src, unsigned bytes, SourceLoc loc);
void cp_async_commit();
void cp_async_wait(int pending_groups_allowed);
void cp_async_wait_all();

// ---- shared memory ----------------------------------------------------------------------
void* dynamic_smem();
size_t dynamic_smem_bytes();

// Throws pg::Error with "pg::simt: <kernel> block (..) thread (..): <what>" (usable from
// kernel code and from warp-collective completions).
[[noreturn]] void fail(const char* what, SourceLoc loc);

// ---- launch ------------------------------------------------------------------------------
struct KernelInvoker {
  void (*invoke)(void* ctx);
  void* ctx;
};
void run_grid(const char* kernel_name, dim3 grid, dim3 block, size_t smem_bytes,
              KernelInvoker inv);

// Launches `kernel` over grid x block threads. The arguments are converted to the kernel's
// parameter types once, here; every CUDA thread then gets its own copy, as on a GPU.
template <class... P, class... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem_bytes,
            A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "PG_LAUNCH: wrong number of kernel arguments");
  using Params = std::tuple<std::decay_t<P>...>;
  Params params(std::forward<A>(args)...);
  struct Ctx {
    void (*k)(P...);
    Params* p;
  } ctx{kernel, &params};
  KernelInvoker inv{[](void* c) {
                      auto* x = static_cast<Ctx*>(c);
                      std::apply(x->k, *x->p);
                    },
                    &ctx};
  run_grid(name, grid, block, smem_bytes, inv);
}

// ---- bit helpers shared with cuda_compat.h and tensor_core.h ------------------------------
template <class To, class From>
inline To bit_cast(const From& f) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: size mismatch");
  To t;
  std::memcpy(&t, &f, sizeof(To));
  return t;
}

}  // namespace pg::simt
