// Host-callable launchers of the SIMT runtime's test kernels (test_kernels.cu). Plain C++:
// included by tests/unit/test_simt.cpp, which does not see the CUDA surface. Pointers are
// device pointers under nvcc and ordinary host memory on the SIMT runtime.
#pragma once

#include <cstdint>

namespace simt_test {

// Per-block sums of in[0..n) over a grid-stride loop, one float per block, reduced in
// dynamic shared memory; sync=false drops every __syncthreads (the positive control).
void block_sum(const float* in, float* out, int n, int blocks, int threads, bool sync);
// y = a*x + y over a grid-stride loop.
void saxpy(int n, float a, const float* x, float* y, int blocks, int threads);
// out[i] = base + 4 through a template kernel launched as PG_LAUNCH((fill_kernel<int, 4>), ...).
void fill_plus4(int* out, int base, int blocks, int threads);
// out[linear block * threads + linear thread] = bx<<20 | by<<16 | bz<<12 | tx<<8 | ty<<4 | tz.
void index3d(unsigned* out, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz);
// Shuffles and votes on one block of 64 threads: 16 ints per thread in out.
void warp_ops(const int* in, int* out);
// One block of `threads` (not a multiple of 32): out[2t] = ballot(full, 1), out[2t+1] = activemask.
void partial_warp(int* out, int threads);

struct AtomicOut {
  float fsum;
  int isum;
  unsigned usum;
  unsigned long long ullsum;
  double dsum;
  int imax, imin;
  unsigned umax, umin;
  int cas_counter;
  int exch;
  int hist[8];
};
void atomics(AtomicOut* out, int blocks, int threads);

// Static __shared__ in two kernels: reverse 64-float tiles; transpose 4x8 int tiles through
// a 2-D block (8,4). Each writes its tile's address to *addr.
void reverse_tiles(const float* in, float* out, int tiles, unsigned long long* addr);
void transpose_tiles(const int* in, int* out, int tiles, unsigned long long* addr);

// Errors: each must throw pg::Error on the host (64 threads).
void mismatched_barriers(int* out);
void barrier_after_exit(int* out);
void missing_shuffle_lane(int* out);
void mismatched_warp_ops(int* out);
void bad_shuffle_width(int* out);
void mma_partial_warp(float* out);
void ldmatrix_misaligned(unsigned* out);

// __syncthreads_count/and/or over `threads` threads: out[0..2].
void sync_reduce(int* out, int threads);
// Reads dynamic shared memory before writing it: out[t] = smem[t].
void uninitialised_smem(float* out, int threads);
// 256-thread block crossing `iters` barriers; out[t] must equal iters.
void barrier_loop(int iters, int* out, int threads);
// bf16 conversions: bits[i] = bf16(in[i]), back[i] = float(bf16(in[i])) for i < n (n even;
// pairs also through __floats2bfloat162_rn into pair_bits).
void bf16_convert(const float* in, unsigned short* bits, float* back, unsigned* pair_bits, int n);

// Tensor cores (one warp). tf32: A 16x8, B 8x8 (k x n), C 16x8, all row-major floats;
// D = A*B + A*B + C (two chained mma, the first accumulating in place); round: operands
// through pg_cvt_rna_tf32 (else raw floats, truncated by the tensor core).
void mma_tf32(const float* A, const float* B, const float* C, float* D, bool round);
// bf16: A 16x16 row-major bits; B as 16x8 (k x n, b_nk=false, loaded with ldmatrix .trans)
// or 8x16 (n x k, b_nk=true, plain ldmatrix); C, D 16x8 floats; D = A*B + C.
void mma_bf16(const unsigned short* A, const unsigned short* B, bool b_nk, const float* C, float* D);
// ldmatrix: M holds four 8x8 b16 matrices (row-major, 256 elements); matrix i's row r is
// stored at shared-memory row perm[8i + r]. out[(v * 32 + lane) * 4 + reg] for the six
// variants v = x1, x2, x4, x1.trans, x2.trans, x4.trans (unused registers left alone).
void ldmatrix_all(const unsigned short* M, const int* perm, unsigned* out);
// cp.async of 128 floats (4-, 8- and 16-byte copies in two groups) into shared memory,
// then out[i] = smem[i]. mode 0: wait_group 0 + barrier; 1: barrier, no wait; 2: wait_group 1
// + barrier (second group still pending); 3: wait_all, no barrier (reads other threads' copies).
void cp_async_copy(const float* src, float* out, int mode);

}  // namespace simt_test
