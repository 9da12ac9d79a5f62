// Warp-level tensor-core and async-copy instructions for the kernels of kernels/cuda, under
// nvcc (inline PTX, below) and on the host SIMT runtime (kernels/simt/ptx_host.h: warp-collective
// models of the PTX ISA's definitions, kernels/simt/tensor_core.h). Fragment layouts and the
// models' arithmetic: kernels/simt/tensor_core.h.
//
//   pg_mma_m16n8k8_tf32(d, a, b, c)   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
//   pg_mma_m16n8k16_bf16(d, a, b, c)  mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//   pg_ldmatrix_x1/x2/x4[_trans](r, p) ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16
//   pg_cp_async_4/8/16(dst, src)      cp.async.{ca,ca,cg}.shared.global
//   pg_cp_async_commit(), pg_cp_async_wait<N>(), pg_cp_async_wait_all()
//   pg_cvt_rna_tf32(x)                cvt.rna.tf32.f32 (returns the tf32 bit pattern)
#pragma once

#include <cstdint>

#include "kernels/cuda/compat.h"

#if defined(__CUDACC__)
PG_DEVICE_INLINE void pg_mma_m16n8k8_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}
PG_DEVICE_INLINE void pg_mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
}
PG_DEVICE_INLINE uint32_t pg_smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
PG_DEVICE_INLINE void pg_ldmatrix_x1(uint32_t r[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(pg_smem_addr(row)));
}
PG_DEVICE_INLINE void pg_ldmatrix_x2(uint32_t r[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(pg_smem_addr(row)));
}
PG_DEVICE_INLINE void pg_ldmatrix_x4(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(pg_smem_addr(row)));
}
PG_DEVICE_INLINE void pg_ldmatrix_x1_trans(uint32_t r[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(pg_smem_addr(row)));
}
PG_DEVICE_INLINE void pg_ldmatrix_x2_trans(uint32_t r[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(pg_smem_addr(row)));
}
PG_DEVICE_INLINE void pg_ldmatrix_x4_trans(uint32_t r[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(pg_smem_addr(row)));
}
PG_DEVICE_INLINE void pg_cp_async_4(void* smem_dst, const void* gmem_src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(pg_smem_addr(smem_dst)), "l"(gmem_src));
}
PG_DEVICE_INLINE void pg_cp_async_8(void* smem_dst, const void* gmem_src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(pg_smem_addr(smem_dst)), "l"(gmem_src));
}
PG_DEVICE_INLINE void pg_cp_async_16(void* smem_dst, const void* gmem_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(pg_smem_addr(smem_dst)), "l"(gmem_src));
}
PG_DEVICE_INLINE void pg_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
PG_DEVICE_INLINE void pg_cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
PG_DEVICE_INLINE void pg_cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::); }
PG_DEVICE_INLINE uint32_t pg_cvt_rna_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}
#else
#include "kernels/simt/ptx_host.h"
#endif
