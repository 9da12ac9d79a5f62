// The CPU execution mode's side of kernels/cuda/compat.h: under a host compiler it maps the
// part of CUDA's device surface the project's kernels use onto the SIMT runtime (simt.h), so
// the same source runs on the CPU, one fiber per CUDA thread. nvcc builds never include it
// (kernels/cuda/nvcc.h is their side).
//
// Portability macros (both modes):
//   PG_SIMT                          1 on the host runtime, 0 under nvcc
//   PG_HOST_DEVICE                   __host__ __device__
//   PG_DEVICE_INLINE                 __device__ __forceinline__
//   PG_DYNAMIC_SMEM(type, name)      declares `type* name` pointing at the block's dynamic
//                                    shared memory (16-byte aligned; host: 128). On the
//                                    host it is filled with 0xFF bytes at block start.
//   PG_LAUNCH(kernel, grid, block, smem_bytes, stream, args...)
//                                    kernel<<<grid, block, smem_bytes, stream>>>(args...);
//                                    on the host a synchronous launch that throws pg::Error
//                                    on deadlocks and misuse. A template kernel whose
//                                    arguments contain commas goes in parentheses:
//                                    PG_LAUNCH((k<float, 4>), ...).
//
// Static shared memory on the host: `__shared__` is `static thread_local`. That gives
// exactly one instance per running block because of two rules the runtime keeps: (1) all
// fibers of a block run on the OS thread that started the block and never move, and (2) an
// OS thread runs one block at a time, to its end, before it starts the next. Blocks running
// in parallel are on different OS threads and so get different instances. Unlike dynamic
// shared memory, static shared memory is not refilled at block start: it holds what the
// previous block on that OS thread left (zero at first), which CUDA leaves undefined.
// `extern __shared__` does not compile on the host (use PG_DYNAMIC_SMEM).
//
// Not modelled on the host: divergence (__activemask returns every non-exited lane of the
// warp), preemption (a thread spinning on a flag that another thread of its block sets
// never yields: use barriers), memory ordering beyond sequential consistency in one block.
#pragma once

#if defined(__CUDACC__)
#error "kernels/simt is the CPU execution mode: kernels compiled by nvcc include kernels/cuda/compat.h"
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/simt/simt.h"

#define PG_SIMT 1
#define PG_HOST_DEVICE
#define PG_DEVICE_INLINE inline __attribute__((always_inline))

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __shared__ static thread_local
// __restrict__ is already a GCC keyword.

#define PG_DYNAMIC_SMEM(type, name) type* name = static_cast<type*>(::pg::simt::dynamic_smem())
#define PG_LAUNCH(kernel, grid, block, smem_bytes, stream, ...) \
  ((void)(stream), ::pg::simt::launch(#kernel, kernel, (grid), (block), (smem_bytes), ##__VA_ARGS__))

using dim3 = ::pg::simt::dim3;
using uint3 = ::pg::simt::uint3;
typedef struct CUstream_st* cudaStream_t;

#define threadIdx (::pg::simt::detail::builtins().threadIdx)
#define blockIdx (::pg::simt::detail::builtins().blockIdx)
#define blockDim (::pg::simt::detail::builtins().blockDim)
#define gridDim (::pg::simt::detail::builtins().gridDim)
static constexpr int warpSize = 32;

// ---- vector types (the few kernels use for vectorised loads) -----------------------------
struct alignas(8) float2 { float x, y; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// ---- barriers, warp collectives ---------------------------------------------------------
inline void __syncthreads(::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::barrier(::pg::simt::BarrierKind::plain, 0, loc);
}
inline int __syncthreads_count(int pred, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return ::pg::simt::barrier(::pg::simt::BarrierKind::count, pred, loc);
}
inline int __syncthreads_and(int pred, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return ::pg::simt::barrier(::pg::simt::BarrierKind::all, pred, loc);
}
inline int __syncthreads_or(int pred, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return ::pg::simt::barrier(::pg::simt::BarrierKind::any, pred, loc);
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::syncwarp(mask, loc);
}
inline unsigned __activemask() { return ::pg::simt::live_lanes(); }

namespace pg::simt::detail {
template <class T>
inline T shfl_t(ShflMode mode, unsigned mask, T var, int param, int width, SourceLoc loc) {
  static_assert(std::is_trivially_copyable<T>::value && (sizeof(T) == 4 || sizeof(T) == 8),
                "__shfl*_sync: 4- or 8-byte values only");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = shfl(mode, mask, bits, sizeof(T), param, width, loc);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}
}  // namespace pg::simt::detail

template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32,
                     ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return ::pg::simt::detail::shfl_t(::pg::simt::ShflMode::idx, mask, var, srcLane, width, loc);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32,
                        ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return ::pg::simt::detail::shfl_t(::pg::simt::ShflMode::up, mask, var, static_cast<int>(delta), width, loc);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32,
                          ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return ::pg::simt::detail::shfl_t(::pg::simt::ShflMode::down, mask, var, static_cast<int>(delta), width, loc);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32,
                         ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return ::pg::simt::detail::shfl_t(::pg::simt::ShflMode::bfly, mask, var, laneMask, width, loc);
}
inline unsigned __ballot_sync(unsigned mask, int pred, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return ::pg::simt::vote(::pg::simt::VoteMode::ballot, mask, pred, loc);
}
inline int __any_sync(unsigned mask, int pred, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return static_cast<int>(::pg::simt::vote(::pg::simt::VoteMode::any, mask, pred, loc));
}
inline int __all_sync(unsigned mask, int pred, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  return static_cast<int>(::pg::simt::vote(::pg::simt::VoteMode::all, mask, pred, loc));
}

// ---- atomics ----------------------------------------------------------------------------
// Real atomic read-modify-writes (GCC __atomic builtins), so blocks running in parallel on
// several OS threads stay correct. Relaxed, as CUDA's atomics are; fences below.
namespace pg::simt::detail {
template <class T, class F>
inline T atomic_update(T* p, F f) {
  T old;
  __atomic_load(p, &old, __ATOMIC_RELAXED);
  T desired;
  do {
    desired = f(old);
  } while (!__atomic_compare_exchange(p, &old, &desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}
}  // namespace pg::simt::detail

inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* p, float v) {
  return ::pg::simt::detail::atomic_update(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
  return ::pg::simt::detail::atomic_update(p, [v](double o) { return o + v; });
}
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicSub(unsigned* p, unsigned v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }
inline int atomicMax(int* p, int v) {
  return ::pg::simt::detail::atomic_update(p, [v](int o) { return o > v ? o : v; });
}
inline unsigned atomicMax(unsigned* p, unsigned v) {
  return ::pg::simt::detail::atomic_update(p, [v](unsigned o) { return o > v ? o : v; });
}
inline int atomicMin(int* p, int v) {
  return ::pg::simt::detail::atomic_update(p, [v](int o) { return o < v ? o : v; });
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
  return ::pg::simt::detail::atomic_update(p, [v](unsigned o) { return o < v ? o : v; });
}
inline int atomicAnd(int* p, int v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicAnd(unsigned* p, unsigned v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }
inline int atomicOr(int* p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }
inline int atomicXor(int* p, int v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicXor(unsigned* p, unsigned v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }
template <class T>
inline T pg_simt_atomic_cas(T* p, T compare, T val) {
  __atomic_compare_exchange_n(p, &compare, val, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;  // the old value either way
}
inline int atomicCAS(int* p, int compare, int val) { return pg_simt_atomic_cas(p, compare, val); }
inline unsigned atomicCAS(unsigned* p, unsigned compare, unsigned val) { return pg_simt_atomic_cas(p, compare, val); }
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long compare, unsigned long long val) {
  return pg_simt_atomic_cas(p, compare, val);
}
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) {
  return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
inline float atomicExch(float* p, float v) {
  float old;
  __atomic_exchange(p, &v, &old, __ATOMIC_RELAXED);
  return old;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- loads, math, bits ------------------------------------------------------------------
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x == x ? x : 0.0f)); }
inline unsigned __float_as_uint(float x) { return ::pg::simt::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return ::pg::simt::bit_cast<float>(x); }
inline int __float_as_int(float x) { return ::pg::simt::bit_cast<int>(x); }
inline float __int_as_float(int x) { return ::pg::simt::bit_cast<float>(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// ---- bfloat16 (minimal) -----------------------------------------------------------------
// Storage and conversions only (no arithmetic operators): float -> bf16 rounds to nearest,
// ties to even; NaN becomes the canonical 0x7FFF, as cuda_bf16.h does.
namespace pg::simt {
inline unsigned short float_to_bf16_rn(float f) {
  uint32_t u = bit_cast<uint32_t>(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<unsigned short>(u >> 16);
}
inline float bf16_to_float(unsigned short h) { return bit_cast<float>(uint32_t(h) << 16); }
}  // namespace pg::simt

struct __nv_bfloat16 {
  __nv_bfloat16() = default;  // trivial, so `__shared__ __nv_bfloat16 s[N]` needs no initialiser
  __nv_bfloat16(float f) : __x(::pg::simt::float_to_bf16_rn(f)) {}
  operator float() const { return ::pg::simt::bf16_to_float(__x); }

 protected:
  unsigned short __x;
  friend unsigned short __bfloat16_as_ushort(__nv_bfloat16);
  friend __nv_bfloat16 __ushort_as_bfloat16(unsigned short);
};
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
  __nv_bfloat16 h;
  h.__x = u;
  return h;
}
struct __nv_bfloat162 {
  __nv_bfloat16 x, y;  // x in the low 16 bits
  __nv_bfloat162() = default;
  __nv_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) : x(a), y(b) {}
};
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return static_cast<float>(h); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) { return {__nv_bfloat16(lo), __nv_bfloat16(hi)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return {__nv_bfloat16(f.x), __nv_bfloat16(f.y)}; }
inline float __low2float(__nv_bfloat162 h) { return static_cast<float>(h.x); }
inline float __high2float(__nv_bfloat162 h) { return static_cast<float>(h.y); }
