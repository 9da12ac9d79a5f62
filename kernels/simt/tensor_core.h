// Host models of the warp-level tensor-core instructions that kernels/cuda/ptx.h wraps: pure
// functions of whole-warp fragments, as the PTX ISA defines them (no SIMT runtime needed;
// tests/cuda/test_tensor_core_hw.cu holds them against the hardware).
//
//   pg_mma_m16n8k8_tf32(d, a, b, c)   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32
//   pg_mma_m16n8k16_bf16(d, a, b, c)  mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
//                                     d[4], c[4] floats; a[4], b[2] 32-bit registers
//   pg_ldmatrix_x1/x2/x4(r, p)        ldmatrix.sync.aligned.m8n8.{x1,x2,x4}.shared.b16
//   pg_ldmatrix_x1/x2/x4_trans(r, p)  the same with .trans; p: this lane's row address
//   pg_cp_async_4/8/16(dst, src)      cp.async.{ca,ca,cg}.shared.global
//   pg_cp_async_commit()              cp.async.commit_group
//   pg_cp_async_wait<N>()             cp.async.wait_group N
//   pg_cp_async_wait_all()            cp.async.wait_all
//   pg_cvt_rna_tf32(x)                cvt.rna.tf32.f32 (returns the tf32 bit pattern)
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k8 / m16n8k16" and "ldmatrix";
// g = laneid >> 2, t = laneid % 4):
//   m16n8k8 .tf32   A (16x8, row):  a0 (g, t)  a1 (g+8, t)  a2 (g, t+4)  a3 (g+8, t+4)
//                   B (8x8, col):   b0 (k=t, n=g)  b1 (k=t+4, n=g)
//   m16n8k16 .bf16  A (16x16, row): register j holds two elements (low half first):
//                   a[0] (g, 2t..2t+1)  a[1] (g+8, 2t..2t+1)  a[2] (g, 2t+8..)  a[3] (g+8, 2t+8..)
//                   B (16x8, col):  b[0] (k=2t..2t+1, n=g)  b[1] (k=2t+8..2t+9, n=g)
//   C/D (16x8 f32, both shapes):    c0 (g, 2t)  c1 (g, 2t+1)  c2 (g+8, 2t)  c3 (g+8, 2t+1)
//   ldmatrix m8n8.b16: matrix i's 8 rows (16 bytes each, 16-byte aligned) are addressed by
//                   lanes 8i..8i+7 (x1: lanes 0-7, x2: 0-15, x4: 0-31; the other lanes'
//                   addresses are ignored); lane l receives in register i the elements
//                   (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix i, low half first; with
//                   .trans, the elements (2(l%4), l/4) and (2(l%4)+1, l/4).
//
// Arithmetic of the models: .tf32 operands are fp32 registers of which the tensor core uses
// the top 19 bits (sign, exponent, 10 mantissa bits): the model ignores the low 13 bits
// (truncation), which is what feeding un-rounded floats does; round with pg_cvt_rna_tf32
// first to get round-to-nearest (ties away from zero). Products of tf32 or bf16 values are
// exact in double; the model adds them and c in double and rounds once to float (round to
// nearest even). The hardware's accumulation order and intermediate rounding are not
// specified by the PTX ISA, so results may differ from the model in the last bits: compare
// with a tolerance (tests use a few ulps of sum|a*b| + |c|). Denormal inputs are kept.
//
// cp.async model (host): each thread queues its copies; they are performed when that
// thread's wait_group/wait_all covers their group, never at a barrier. So a kernel that
// forgets to wait, waits for too few groups, or reads another thread's copy without a
// __syncthreads after the waits, reads stale shared memory (the 0xFF/NaN fill of dynamic
// shared memory, or what was there before) - deterministically for a missing wait, for
// some seeds for a missing barrier. Copies still queued at block end are dropped. The
// source is read at the wait (the hardware reads it at some time in between: writing it
// before the wait is a race either way).
#pragma once

#include <cstdint>
#include <cstring>

// ---- host models of the fragment semantics (plain host code in both modes) ---------------
// Warp-wide: index [lane][register]. Used by the SIMT runtime's collectives and by the GPU
// test (tests/cuda/test_tensor_core_hw.cu), which runs the same fragments on the hardware.
namespace pg::simt::tc {

inline uint32_t f2u(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
inline float u2f(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
// The value the tensor core takes from a .tf32 operand register: its top 19 bits.
inline float tf32_operand(uint32_t bits) { return u2f(bits & 0xFFFFE000u); }
// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits (adding half
// an ulp to the magnitude bits carries into the exponent as needed; overflow gives inf).
inline uint32_t cvt_rna_tf32_bits(float x) {
  uint32_t u = f2u(x);
  if ((u & 0x7F800000u) == 0x7F800000u) {  // inf stays, NaN stays NaN
    return (u & 0x007FFFFFu) ? (u | 0x00400000u) & 0xFFFFE000u : u;
  }
  return (u + 0x1000u) & 0xFFFFE000u;
}
inline float bf16_bits_to_float(uint32_t h16) { return u2f((h16 & 0xFFFFu) << 16); }

// D = A*B + C for m16n8k8 with .tf32 A/B.
inline void mma_m16n8k8_tf32_warp(const uint32_t a[32][4], const uint32_t b[32][2], const float c[32][4],
                                  float d[32][4]) {
  double A[16][8], B[8][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    A[g][t] = tf32_operand(a[l][0]);
    A[g + 8][t] = tf32_operand(a[l][1]);
    A[g][t + 4] = tf32_operand(a[l][2]);
    A[g + 8][t + 4] = tf32_operand(a[l][3]);
    B[t][g] = tf32_operand(b[l][0]);
    B[t + 4][g] = tf32_operand(b[l][1]);
    for (int i = 0; i < 4; ++i) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = c[l][i];
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
      double s = C[row][col];
      for (int k = 0; k < 8; ++k) s += A[row][k] * B[k][col];
      d[l][i] = static_cast<float>(s);
    }
  }
}

// D = A*B + C for m16n8k16 with .bf16 A/B.
inline void mma_m16n8k16_bf16_warp(const uint32_t a[32][4], const uint32_t b[32][2], const float c[32][4],
                                   float d[32][4]) {
  double A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    for (int j = 0; j < 4; ++j) {  // register j: rows g / g+8, columns 2t(+8)
      const int row = g + 8 * (j & 1), col = 2 * t + 8 * (j >> 1);
      A[row][col] = bf16_bits_to_float(a[l][j]);
      A[row][col + 1] = bf16_bits_to_float(a[l][j] >> 16);
    }
    for (int j = 0; j < 2; ++j) {
      const int k = 2 * t + 8 * j;
      B[k][g] = bf16_bits_to_float(b[l][j]);
      B[k + 1][g] = bf16_bits_to_float(b[l][j] >> 16);
    }
    for (int i = 0; i < 4; ++i) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = c[l][i];
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, t = l & 3;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
      double s = C[row][col];
      for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
      d[l][i] = static_cast<float>(s);
    }
  }
}

// ldmatrix m8n8.b16 .x{num}{.trans}: rows[l] is lane l's row address (16 bytes).
inline void ldmatrix_warp(int num, bool trans, const void* const rows[32], uint32_t r[32][4]) {
  uint16_t M[4][8][8];
  for (int i = 0; i < num; ++i)
    for (int row = 0; row < 8; ++row) std::memcpy(M[i][row], rows[8 * i + row], 16);
  for (int l = 0; l < 32; ++l) {
    const int q = l >> 2, p = 2 * (l & 3);
    for (int i = 0; i < num; ++i) {
      uint32_t lo = trans ? M[i][p][q] : M[i][q][p];
      uint32_t hi = trans ? M[i][p + 1][q] : M[i][q][p + 1];
      r[l][i] = lo | (hi << 16);
    }
  }
}

}  // namespace pg::simt::tc
