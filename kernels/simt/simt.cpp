// The SIMT runtime: fibers, the block scheduler, barriers, warp collectives, cp.async.
//
// Why ucontext (makecontext/swapcontext) and not Boost.Context: it is part of glibc, so the
// runtime adds no dependency to the project's Debian package list, and AddressSanitizer
// supports it (its swapcontext interceptor plus the __sanitizer_*_switch_fiber annotations
// used below). Its cost is one rt_sigprocmask system call per switch (glibc saves the
// signal mask); a 256-thread block crossing 300 barriers is ~150k switches, tens of
// milliseconds: the unit test measures ~50 ms in Release (~250 ms under ASan), fine for
// CI's small shapes. (A hand-written register switch would be ~10x faster on x86-64; not
// done, to stay on a documented, sanitizer-supported interface.)
//
// Structure: one Runner per OS thread (thread_local) owns a pool of fiber stacks (reused
// across blocks and launches), one Thread record per CUDA thread of the current block, the
// ready list and the barrier state. The scheduler loop (Runner::run_block, on the OS
// thread's own stack) repeatedly picks a random ready thread and switches to it; the thread
// switches back when it waits (barrier, warp collective) or ends. Everything a fiber
// needs to tell the scheduler is written into the Runner before it switches back, so no
// exception ever crosses a fiber boundary: a fiber catches whatever its kernel throws in
// fiber_entry, stores it in Runner::error, and the scheduler rethrows it on the launching
// thread. The fibers of an aborted block are abandoned (their stacks are reused, their
// frames never unwound; kernels keep plain data on their stacks).
#include "kernels/simt/simt.h"

#include <omp.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define PG_SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PG_SIMT_ASAN 1
#endif
#endif
#ifdef PG_SIMT_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace pg::simt {
namespace {

// ---- configuration ----------------------------------------------------------------------

uint64_t env_u64(const char* name, uint64_t dflt) {
  const char* s = std::getenv(name);
  if (!s || !*s) return dflt;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 0);
  if (*end) throw pg::Error(std::string(name) + ": not a number: '" + s + "'");
  return v;
}

constexpr uint64_t kDefaultSeed = 0x51A7'0F5E'ED00'0001ull;
#ifdef PG_SIMT_ASAN
constexpr uint64_t kDefaultStackKiB = 256;  // ASan's redzones make frames several times larger
#else
constexpr uint64_t kDefaultStackKiB = 64;
#endif
constexpr size_t kMaxBlockThreads = 1024;
constexpr size_t kMaxDynamicSmem = 227 * 1024;  // sm_90's opt-in maximum per block

std::atomic<uint64_t>& seed_ref() {
  static std::atomic<uint64_t> s{env_u64("PG_SIMT_SEED", kDefaultSeed)};
  return s;
}
std::atomic<int>& threads_ref() {
  static std::atomic<int> t{static_cast<int>(env_u64("PG_SIMT_THREADS", 1))};
  return t;
}
size_t stack_bytes() {
  static const size_t s = std::max<uint64_t>(16, env_u64("PG_SIMT_STACK_KB", kDefaultStackKiB)) * 1024;
  return s;
}

// splitmix64: small, fast, good enough to shuffle threads.
struct Rng {
  uint64_t s = 0;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return static_cast<size_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
};

// ---- fibers -----------------------------------------------------------------------------

// A fiber stack: mmap'ed, with a PROT_NONE guard page below it so that an overflow faults
// instead of corrupting the neighbouring stack (raise PG_SIMT_STACK_KB if a kernel needs it).
struct Fiber {
  ucontext_t ctx;
  void* map = nullptr;
  size_t map_bytes = 0;
  char* stack = nullptr;
  size_t stack_size = 0;

  explicit Fiber(size_t bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    stack_size = (bytes + page - 1) / page * page;
    map_bytes = stack_size + page;
    map = mmap(nullptr, map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
               -1, 0);
    if (map == MAP_FAILED) throw pg::Error("pg::simt: cannot map a fiber stack");
    mprotect(map, page, PROT_NONE);
    stack = static_cast<char*>(map) + page;
  }
  ~Fiber() { munmap(map, map_bytes); }
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
};

enum class State : uint8_t { ready, running, at_barrier, at_warp, done };

struct CpCopy {
  void* dst;
  const void* src;
  unsigned bytes;
  uint64_t group;
};

struct Thread {
  detail::Builtins b;
  unsigned tid = 0, warp = 0, lane = 0;
  State state = State::ready;
  SourceLoc loc{"", 0};  // where it waits
  int barrier_result = 0;
  const WarpOp* op = nullptr;
  uint32_t op_mask = 0;
  void* op_args = nullptr;
  std::vector<CpCopy> cp;  // queued cp.async copies, oldest first
  uint64_t cp_group = 0;   // id of the open (not yet committed) group
  Fiber* fiber = nullptr;
};

bool same_loc(SourceLoc a, SourceLoc b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}
std::string loc_str(SourceLoc l) {
  const char* f = l.file;
  // Keep messages short: drop the directories of absolute paths.
  if (const char* s = std::strrchr(f, '/')) f = s + 1;
  return std::string(f) + ":" + std::to_string(l.line);
}
std::string xyz(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}
std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}
// "0-4,6,8-31"
std::string ranges(const std::vector<unsigned>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size();) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(ids[i]);
    if (j > i) out += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return out;
}

void fiber_entry();

// One per OS thread: runs the blocks given to this OS thread, one at a time.
struct Runner {
  std::vector<std::unique_ptr<Fiber>> fibers;
  std::vector<Thread> threads;
  std::vector<unsigned> ready;    // runnable thread ids
  std::vector<unsigned> waiters;  // thread ids waiting at the current block barrier
  ucontext_t sched;
  Thread* current = nullptr;

  // Launch and block.
  const char* kernel = "";
  dim3 grid, block;
  uint3 bidx{0, 0, 0};
  KernelInvoker inv{nullptr, nullptr};
  unsigned n = 0, exited = 0;
  BarrierKind bkind = BarrierKind::plain;
  SourceLoc bloc{"", 0};
  int bacc = 0;
  uint32_t live_mask[kMaxBlockThreads / 32] = {};
  std::exception_ptr error;
  Rng rng;
  unsigned char* smem = nullptr;
  size_t smem_cap = 0, smem_size = 0;
#ifdef PG_SIMT_ASAN
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
#endif

  ~Runner() { std::free(smem); }

  // "pg::simt: kernel 'k' block (..) thread (..): <what> at <loc>"
  std::string context() const {
    std::string s = "pg::simt: kernel '" + std::string(kernel) + "' block " + xyz(bidx);
    if (current) s += " thread " + xyz(current->b.threadIdx);
    return s;
  }

  void run_block(uint3 bidx_);
  void to_fiber(Thread& t);
  void to_scheduler(Thread& t, bool dying);
  void on_exit(Thread& t);
  bool try_complete(unsigned warp, unsigned lane);
  [[noreturn]] void deadlock();
};

thread_local Runner* tl_run = nullptr;

Runner& runner() {
  thread_local std::unique_ptr<Runner> r(new Runner);
  tl_run = r.get();
  return *r;
}

Thread& current_thread(const char* what) {
  Runner* r = tl_run;
  if (!r || !r->current) throw pg::Error(std::string("pg::simt: ") + what + " called outside a kernel");
  return *r->current;
}

void Runner::to_fiber(Thread& t) {
  current = &t;
  detail::tl_builtins = &t.b;
  t.state = State::running;
#ifdef PG_SIMT_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, t.fiber->stack, t.fiber->stack_size);
#endif
  swapcontext(&sched, &t.fiber->ctx);
#ifdef PG_SIMT_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  current = nullptr;
  detail::tl_builtins = nullptr;
}

void Runner::to_scheduler(Thread& t, bool dying) {
#ifdef PG_SIMT_ASAN
  void* fake = nullptr;
  // A dying fiber passes nullptr so that ASan frees its fake stack.
  __sanitizer_start_switch_fiber(dying ? nullptr : &fake, sched_stack_bottom, sched_stack_size);
#else
  (void)dying;
#endif
  swapcontext(&t.fiber->ctx, &sched);
#ifdef PG_SIMT_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

void fiber_entry() {
  Runner& r = *tl_run;
#ifdef PG_SIMT_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &r.sched_stack_bottom, &r.sched_stack_size);
#endif
  Thread& t = *r.current;
  try {
    r.inv.invoke(r.inv.ctx);
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  try {
    r.on_exit(t);
  } catch (...) {
    if (!r.error) r.error = std::current_exception();
  }
  r.to_scheduler(t, /*dying=*/true);
  std::abort();  // a finished fiber is never resumed
}

void Runner::on_exit(Thread& t) {
  t.state = State::done;
  ++exited;
  live_mask[t.warp] &= ~(1u << t.lane);
  t.cp.clear();  // copies never waited for die with the block's shared memory
  if (error) return;
  if (!waiters.empty()) {
    throw pg::Error(context() + ": exited while " + std::to_string(waiters.size()) +
                    " thread(s) wait at __syncthreads at " + loc_str(bloc) +
                    " (every thread of a block must reach each barrier)");
  }
  // Exited lanes no longer take part in warp collectives: the ones waiting for this lane
  // may now be complete.
  for (unsigned l = 0; l < 32; ++l) {
    unsigned tid = t.warp * 32 + l;
    if (tid < n && threads[tid].state == State::at_warp) try_complete(t.warp, l);
  }
}

bool Runner::try_complete(unsigned warp, unsigned lane) {
  Thread& t = threads[warp * 32 + lane];
  const uint32_t eff = t.op_mask & live_mask[warp];
  void* args[32] = {};
  for (uint32_t m = eff; m; m &= m - 1) {
    unsigned l = static_cast<unsigned>(__builtin_ctz(m));
    Thread& u = threads[warp * 32 + l];
    // Not there yet. A lane waiting in another collective (say its own half-warp's shuffle)
    // may still come: if it never can, the scheduler reports the deadlock with both sites.
    if (u.state != State::at_warp || u.op != t.op || u.op_mask != t.op_mask) return false;
    args[l] = u.op_args;
  }
  if (t.op->aligned && eff != 0xFFFFFFFFu) {
    throw pg::Error(context() + ": " + t.op->name + " at " + loc_str(t.loc) +
                    " needs all 32 lanes of the warp, but only lanes " + hex(eff) +
                    " exist and have not exited");
  }
  t.op->complete(args, eff);
  for (uint32_t m = eff; m; m &= m - 1) {
    Thread& u = threads[warp * 32 + static_cast<unsigned>(__builtin_ctz(m))];
    u.state = State::ready;
    ready.push_back(u.tid);
  }
  return true;
}

void Runner::deadlock() {
  // Group the waiting threads by what they wait for.
  struct Group {
    std::string what;
    std::vector<unsigned> tids;
  };
  std::vector<Group> groups;
  for (unsigned i = 0; i < n; ++i) {
    const Thread& t = threads[i];
    std::string what;
    if (t.state == State::at_barrier) {
      what = "wait at __syncthreads at " + loc_str(t.loc);
    } else if (t.state == State::at_warp) {
      what = std::string("wait in ") + t.op->name + " (mask " + hex(t.op_mask) + ", warp " +
             std::to_string(t.warp) + ") at " + loc_str(t.loc);
    } else {
      continue;
    }
    auto g = std::find_if(groups.begin(), groups.end(), [&](const Group& x) { return x.what == what; });
    if (g == groups.end()) {
      groups.push_back({what, {}});
      g = groups.end() - 1;
    }
    g->tids.push_back(i);
  }
  std::string msg = "pg::simt: deadlock in kernel '" + std::string(kernel) + "' block " + xyz(bidx) + ":";
  for (size_t i = 0; i < groups.size(); ++i) {
    msg += (i ? "; " : " ") + std::to_string(groups[i].tids.size()) + " thread(s) [" +
           ranges(groups[i].tids) + "] " + groups[i].what;
  }
  if (exited) msg += "; " + std::to_string(exited) + " thread(s) have exited";
  msg += " (a lane named in a warp mask never arrives, or threads wait at different barriers)";
  throw pg::Error(msg);
}

void Runner::run_block(uint3 bidx_) {
  tl_run = this;
  bidx = bidx_;
  n = block.x * block.y * block.z;
  while (fibers.size() < n) fibers.emplace_back(new Fiber(stack_bytes()));
  if (threads.size() < n) threads.resize(n);
  for (unsigned tid = 0; tid < n; ++tid) {
    Thread& t = threads[tid];
    t.b.threadIdx = uint3{tid % block.x, (tid / block.x) % block.y, tid / (block.x * block.y)};
    t.b.blockIdx = bidx;
    t.b.blockDim = block;
    t.b.gridDim = grid;
    t.tid = tid;
    t.warp = tid / 32;
    t.lane = tid % 32;
    t.state = State::ready;
    t.op = nullptr;
    t.cp.clear();
    t.cp_group = 0;
    t.fiber = fibers[tid].get();
    Fiber& f = *t.fiber;
#ifdef PG_SIMT_ASAN
    // An aborted block leaves poisoned frames behind on reused stacks.
    ASAN_UNPOISON_MEMORY_REGION(f.stack, f.stack_size);
#endif
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = f.stack_size;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
  }
  const unsigned nwarps = (n + 31) / 32;
  for (unsigned w = 0; w < nwarps; ++w) {
    unsigned lanes = std::min(32u, n - 32 * w);
    live_mask[w] = lanes == 32 ? 0xFFFFFFFFu : ((1u << lanes) - 1);
  }
  ready.resize(n);
  for (unsigned i = 0; i < n; ++i) ready[i] = i;
  waiters.clear();
  exited = 0;
  error = nullptr;
  current = nullptr;

  // Dynamic shared memory: 0xFF bytes (NaN floats) so reads before writes show.
  if (smem_cap < std::max<size_t>(smem_size, 16)) {
    std::free(smem);
    smem_cap = std::max<size_t>(smem_size, 16);
    smem = static_cast<unsigned char*>(std::aligned_alloc(128, (smem_cap + 127) / 128 * 128));
    if (!smem) throw pg::Error("pg::simt: cannot allocate shared memory");
  }
#ifdef PG_SIMT_ASAN
  ASAN_UNPOISON_MEMORY_REGION(smem, smem_cap);
#endif
  std::memset(smem, 0xFF, smem_size);
#ifdef PG_SIMT_ASAN
  ASAN_POISON_MEMORY_REGION(smem + smem_size, smem_cap - smem_size);  // beyond smem_bytes
#endif

  const uint64_t lin = bidx.x + uint64_t(grid.x) * (bidx.y + uint64_t(grid.y) * bidx.z);
  rng.s = seed();
  rng.s = rng.next() ^ (lin * 0xD1B54A32D192ED03ull);

  unsigned done = 0;
  while (done < n) {
    if (ready.empty()) deadlock();
    size_t i = rng.below(ready.size());
    unsigned tid = ready[i];
    ready[i] = ready.back();
    ready.pop_back();
    Thread& t = threads[tid];
    to_fiber(t);
    if (error) {
      std::exception_ptr e = error;
      error = nullptr;
      std::rethrow_exception(e);
    }
    if (t.state == State::done) ++done;
  }
}

// ---- shuffles and votes -----------------------------------------------------------------

struct ShflArgs {
  uint64_t bits;
  int param;
  int width;
  unsigned size;
  uint64_t result;
};

// Source lane of `lane` for each mode (CUDA's __shfl*_sync semantics with width segments);
// returns lane itself where CUDA says the thread keeps its own value.
template <ShflMode M>
unsigned shfl_src(unsigned lane, int param, int width) {
  const unsigned w = static_cast<unsigned>(width);
  const unsigned base = lane & ~(w - 1);
  switch (M) {
    case ShflMode::idx:
      return base + (static_cast<unsigned>(param) & (w - 1));
    case ShflMode::up: {
      unsigned d = static_cast<unsigned>(param);
      return (lane - base) < d ? lane : lane - d;
    }
    case ShflMode::down: {
      unsigned d = static_cast<unsigned>(param);
      return (lane - base) + d >= w ? lane : lane + d;
    }
    case ShflMode::bfly: {
      unsigned j = lane ^ (static_cast<unsigned>(param) & 31u);
      return j > base + w - 1 ? lane : j;  // may reach earlier segments, not later ones
    }
  }
  return lane;
}

template <ShflMode M>
void shfl_complete(void* const lane_args[32], uint32_t mask) {
  unsigned size = 0;
  for (uint32_t m = mask; m; m &= m - 1) {
    auto* a = static_cast<ShflArgs*>(lane_args[__builtin_ctz(m)]);
    if (size == 0) size = a->size;
    if (a->size != size) fail("lanes of one shuffle pass values of different sizes", SourceLoc{"", 0});
  }
  for (uint32_t m = mask; m; m &= m - 1) {
    unsigned l = static_cast<unsigned>(__builtin_ctz(m));
    auto* a = static_cast<ShflArgs*>(lane_args[l]);
    unsigned src = shfl_src<M>(l, a->param, a->width);
    if (src < 32 && lane_args[src]) {
      a->result = static_cast<ShflArgs*>(lane_args[src])->bits;
    } else {
      // The source lane does not take part: undefined in CUDA, a NaN pattern here.
      a->result = size == 8 ? 0x7FF8DEAD7FF8DEADull : 0x7FC0DEADull;
    }
  }
}

const WarpOp kShfl[4] = {
    {"__shfl_sync", shfl_complete<ShflMode::idx>, false},
    {"__shfl_up_sync", shfl_complete<ShflMode::up>, false},
    {"__shfl_down_sync", shfl_complete<ShflMode::down>, false},
    {"__shfl_xor_sync", shfl_complete<ShflMode::bfly>, false},
};

struct VoteArgs {
  int pred;
  uint32_t result;
};
template <VoteMode M>
void vote_complete(void* const lane_args[32], uint32_t mask) {
  uint32_t ballot = 0;
  for (uint32_t m = mask; m; m &= m - 1) {
    unsigned l = static_cast<unsigned>(__builtin_ctz(m));
    if (static_cast<VoteArgs*>(lane_args[l])->pred) ballot |= 1u << l;
  }
  uint32_t r = M == VoteMode::ballot ? ballot : M == VoteMode::any ? (ballot != 0) : (ballot == mask);
  for (uint32_t m = mask; m; m &= m - 1) static_cast<VoteArgs*>(lane_args[__builtin_ctz(m)])->result = r;
}
const WarpOp kVote[3] = {
    {"__ballot_sync", vote_complete<VoteMode::ballot>, false},
    {"__any_sync", vote_complete<VoteMode::any>, false},
    {"__all_sync", vote_complete<VoteMode::all>, false},
};
void nothing(void* const[32], uint32_t) {}
const WarpOp kSyncwarp{"__syncwarp", nothing, false};

}  // namespace

// ---- public API -------------------------------------------------------------------------

void set_seed(uint64_t s) { seed_ref().store(s); }
uint64_t seed() { return seed_ref().load(); }
void set_host_threads(int n) { threads_ref().store(std::max(1, n)); }
int host_threads() { return std::max(1, threads_ref().load()); }

void fail(const char* what, SourceLoc loc) {
  std::string msg = tl_run ? tl_run->context() : std::string("pg::simt");
  msg += std::string(": ") + what;
  if (loc.line > 0) msg += " at " + loc_str(loc);
  throw pg::Error(msg);
}

int barrier(BarrierKind kind, int pred, SourceLoc loc) {
  Thread& t = current_thread("__syncthreads");
  Runner& r = *tl_run;
  if (r.exited) {
    fail(("__syncthreads reached after " + std::to_string(r.exited) +
          " thread(s) of the block exited (every thread of a block must reach each barrier)")
             .c_str(),
         loc);
  }
  if (r.waiters.empty()) {
    r.bkind = kind;
    r.bloc = loc;
    r.bacc = kind == BarrierKind::all ? 1 : 0;
  } else if (!same_loc(loc, r.bloc) || kind != r.bkind) {
    fail(("mismatched barriers: this thread reached a barrier while " + std::to_string(r.waiters.size()) +
          " thread(s) wait at another one at " + loc_str(r.bloc))
             .c_str(),
         loc);
  }
  switch (kind) {
    case BarrierKind::plain: break;
    case BarrierKind::count: r.bacc += pred != 0; break;
    case BarrierKind::all: r.bacc &= pred != 0; break;
    case BarrierKind::any: r.bacc |= pred != 0; break;
  }
  t.state = State::at_barrier;
  t.loc = loc;
  r.waiters.push_back(t.tid);
  if (r.waiters.size() == r.n) {  // the last one releases everybody
    for (unsigned w : r.waiters) {
      r.threads[w].state = State::ready;
      r.threads[w].barrier_result = r.bacc;
      r.ready.push_back(w);
    }
    r.waiters.clear();
  }
  r.to_scheduler(t, false);
  return t.barrier_result;
}

void warp_collective(const WarpOp& op, uint32_t mask, void* args, SourceLoc loc) {
  Thread& t = current_thread(op.name);
  Runner& r = *tl_run;
  if (!(mask & (1u << t.lane))) {
    fail((std::string(op.name) + ": the calling lane " + std::to_string(t.lane) + " is not in mask " + hex(mask))
             .c_str(),
         loc);
  }
  t.state = State::at_warp;
  t.op = &op;
  t.op_mask = mask;
  t.op_args = args;
  t.loc = loc;
  r.try_complete(t.warp, t.lane);
  r.to_scheduler(t, false);
}

unsigned lane_id() { return current_thread("lane_id").lane; }
uint32_t live_lanes() {
  Thread& t = current_thread("__activemask");
  return tl_run->live_mask[t.warp];
}

uint64_t shfl(ShflMode mode, uint32_t mask, uint64_t bits, unsigned size, int lane_or_delta, int width,
              SourceLoc loc) {
  if (width < 1 || width > 32 || (width & (width - 1))) {
    fail(("shuffle width " + std::to_string(width) + " is not a power of two in [1, 32]").c_str(), loc);
  }
  ShflArgs a{bits, lane_or_delta, width, size, 0};
  warp_collective(kShfl[static_cast<int>(mode)], mask, &a, loc);
  return a.result;
}

uint32_t vote(VoteMode mode, uint32_t mask, int pred, SourceLoc loc) {
  VoteArgs a{pred, 0};
  warp_collective(kVote[static_cast<int>(mode)], mask, &a, loc);
  return a.result;
}

void syncwarp(uint32_t mask, SourceLoc loc) { warp_collective(kSyncwarp, mask, nullptr, loc); }

void cp_async(void* dst, const void* src, unsigned bytes, SourceLoc loc) {
  Thread& t = current_thread("cp.async");
  if (bytes != 4 && bytes != 8 && bytes != 16) fail("cp.async size must be 4, 8 or 16 bytes", loc);
  if (reinterpret_cast<uintptr_t>(dst) % bytes || reinterpret_cast<uintptr_t>(src) % bytes) {
    fail(("cp.async of " + std::to_string(bytes) + " bytes needs addresses aligned to its size").c_str(), loc);
  }
  t.cp.push_back(CpCopy{dst, src, bytes, t.cp_group});
}

void cp_async_commit() { ++current_thread("cp.async.commit_group").cp_group; }

// Performs the copies of every committed group except the `allowed` most recent ones.
void cp_async_wait(int allowed) {
  Thread& t = current_thread("cp.async.wait_group");
  if (allowed < 0) allowed = 0;
  if (t.cp_group < static_cast<uint64_t>(allowed)) return;
  const uint64_t limit = t.cp_group - static_cast<uint64_t>(allowed);  // groups < limit complete
  size_t keep = 0;
  for (size_t i = 0; i < t.cp.size(); ++i) {
    if (t.cp[i].group < limit) {
      std::memcpy(t.cp[i].dst, t.cp[i].src, t.cp[i].bytes);
    } else {
      t.cp[keep++] = t.cp[i];
    }
  }
  t.cp.resize(keep);
}

// cp.async.wait_all = commit_group + wait_group 0: every copy, committed or not.
void cp_async_wait_all() {
  cp_async_commit();
  cp_async_wait(0);
}

void* dynamic_smem() {
  current_thread("dynamic shared memory");
  return tl_run->smem;
}
size_t dynamic_smem_bytes() {
  current_thread("dynamic shared memory");
  return tl_run->smem_size;
}

void run_grid(const char* name, dim3 grid, dim3 block, size_t smem_bytes, KernelInvoker inv) {
  const std::string what = std::string("pg::simt: kernel '") + name + "': ";
  if (tl_run && tl_run->current) throw pg::Error(what + "launched from inside a kernel");
  const uint64_t nthreads = uint64_t(block.x) * block.y * block.z;
  if (nthreads == 0 || nthreads > kMaxBlockThreads || block.z > 64) {
    throw pg::Error(what + "block " + xyz(block) + " is empty or has more than 1024 threads (or z > 64)");
  }
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 || grid.z > 65535) {
    throw pg::Error(what + "invalid grid " + xyz(grid));
  }
  if (smem_bytes > kMaxDynamicSmem) {
    throw pg::Error(what + std::to_string(smem_bytes) + " bytes of dynamic shared memory exceed " +
                    std::to_string(kMaxDynamicSmem));
  }
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  auto block_index = [&](uint64_t b) {
    return uint3{static_cast<unsigned>(b % grid.x), static_cast<unsigned>((b / grid.x) % grid.y),
                 static_cast<unsigned>(b / (uint64_t(grid.x) * grid.y))};
  };
  auto prepare = [&](Runner& r) {
    r.kernel = name;
    r.grid = grid;
    r.block = block;
    r.smem_size = smem_bytes;
    r.inv = inv;
  };
  const int nt = static_cast<int>(std::min<uint64_t>(host_threads(), nblocks));
  if (nt <= 1) {
    Runner& r = runner();
    prepare(r);
    for (uint64_t b = 0; b < nblocks; ++b) r.run_block(block_index(b));
    return;
  }
  std::atomic<bool> failed{false};
  std::exception_ptr first;
  std::mutex m;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (long long b = 0; b < static_cast<long long>(nblocks); ++b) {
    if (failed.load(std::memory_order_relaxed)) continue;
    try {
      Runner& r = runner();
      prepare(r);
      r.run_block(block_index(static_cast<uint64_t>(b)));
    } catch (...) {
      std::lock_guard<std::mutex> lock(m);
      if (!first) first = std::current_exception();
      failed = true;
    }
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace pg::simt
