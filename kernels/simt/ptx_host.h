// The PTX wrappers of kernels/cuda/ptx.h on the host SIMT runtime: warp collectives that
// gather the lanes' fragments and apply the models of tensor_core.h (tensor_core.cpp).
// Included by kernels/cuda/ptx.h under a host compiler only.
#pragma once

#include <cstdint>

#include "kernels/simt/cuda_compat.h"
#include "kernels/simt/tensor_core.h"

namespace pg::simt::tc {
// Defined in tensor_core.cpp: post this lane's fragments, wait for the warp, get results.
void mma_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], SourceLoc loc);
void mma_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], SourceLoc loc);
void ldmatrix(int num, bool trans, uint32_t* r, const void* row, SourceLoc loc);
}  // namespace pg::simt::tc

inline void pg_mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                                ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::tc::mma_tf32(d, a, b, c, loc);
}
inline void pg_mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                                 ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::tc::mma_bf16(d, a, b, c, loc);
}
inline void pg_ldmatrix_x1(uint32_t r[1], const void* row, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::tc::ldmatrix(1, false, r, row, loc);
}
inline void pg_ldmatrix_x2(uint32_t r[2], const void* row, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::tc::ldmatrix(2, false, r, row, loc);
}
inline void pg_ldmatrix_x4(uint32_t r[4], const void* row, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::tc::ldmatrix(4, false, r, row, loc);
}
inline void pg_ldmatrix_x1_trans(uint32_t r[1], const void* row,
                                 ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::tc::ldmatrix(1, true, r, row, loc);
}
inline void pg_ldmatrix_x2_trans(uint32_t r[2], const void* row,
                                 ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::tc::ldmatrix(2, true, r, row, loc);
}
inline void pg_ldmatrix_x4_trans(uint32_t r[4], const void* row,
                                 ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::tc::ldmatrix(4, true, r, row, loc);
}
inline void pg_cp_async_4(void* dst, const void* src, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::cp_async(dst, src, 4, loc);
}
inline void pg_cp_async_8(void* dst, const void* src, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::cp_async(dst, src, 8, loc);
}
inline void pg_cp_async_16(void* dst, const void* src, ::pg::simt::SourceLoc loc = ::pg::simt::SourceLoc::here()) {
  ::pg::simt::cp_async(dst, src, 16, loc);
}
inline void pg_cp_async_commit() { ::pg::simt::cp_async_commit(); }
template <int N>
inline void pg_cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group takes a count >= 0");
  ::pg::simt::cp_async_wait(N);
}
inline void pg_cp_async_wait_all() { ::pg::simt::cp_async_wait_all(); }
inline uint32_t pg_cvt_rna_tf32(float x) { return ::pg::simt::tc::cvt_rna_tf32_bits(x); }
