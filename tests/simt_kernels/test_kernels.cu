// Test kernels of the SIMT runtime. Compiled as C++ into parchgrad_unit (through
// pg_add_simt_cuda_sources) only: they include the CPU execution mode's headers, which nvcc
// refuses (the nvcc side of ptx.h is checked on tests/cuda/test_tensor_core_hw.cu by
// tests/checks/cuda_compile_gate.sh). Several kernels are wrong on purpose (marked "bug:"): the
// runtime must catch them.
#include "tests/simt_kernels/test_kernels.h"

#include <cstdint>

#include "kernels/simt/cuda_compat.h"
#include "kernels/simt/ptx_host.h"

namespace simt_test {

// ---- block reduction, dynamic shared memory, grid-stride loops ---------------------------

__global__ void block_sum_kernel(const float* in, float* out, int n, int sync) {
  PG_DYNAMIC_SMEM(float, s);
  const unsigned tid = threadIdx.x;
  float v = 0.0f;
  for (int i = blockIdx.x * blockDim.x + tid; i < n; i += blockDim.x * gridDim.x) v += in[i];
  s[tid] = v;
  if (sync) __syncthreads();
  unsigned p = 1;
  while (p < blockDim.x) p <<= 1;
  // Tree over the next power of two; the bound check handles any block size.
  for (unsigned stride = p / 2; stride > 0; stride >>= 1) {
    if (tid < stride && tid + stride < blockDim.x) s[tid] += s[tid + stride];
    if (sync) __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = s[0];
}
void block_sum(const float* in, float* out, int n, int blocks, int threads, bool sync) {
  PG_LAUNCH(block_sum_kernel, blocks, threads, threads * sizeof(float), 0, in, out, n, sync ? 1 : 0);
}

__global__ void saxpy_kernel(int n, float a, const float* x, float* y) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
    y[i] = __fmaf_rn(a, __ldg(&x[i]), y[i]);
  }
}
void saxpy(int n, float a, const float* x, float* y, int blocks, int threads) {
  PG_LAUNCH(saxpy_kernel, blocks, threads, 0, 0, n, a, x, y);
}

// A template kernel whose arguments contain a comma: PG_LAUNCH takes it in parentheses.
template <class T, int N>
__global__ void fill_kernel(T* out, T base) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = base + static_cast<T>(N);
}
void fill_plus4(int* out, int base, int blocks, int threads) {
  PG_LAUNCH((fill_kernel<int, 4>), blocks, threads, 0, 0, out, base);
}

__global__ void index3d_kernel(unsigned* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[block * nthreads + t] = blockIdx.x << 20 | blockIdx.y << 16 | blockIdx.z << 12 | threadIdx.x << 8 |
                              threadIdx.y << 4 | threadIdx.z;
}
void index3d(unsigned* out, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz) {
  PG_LAUNCH(index3d_kernel, dim3(gx, gy, gz), dim3(bx, by, bz), 0, 0, out);
}

// ---- warp shuffles and votes -------------------------------------------------------------

__global__ void warp_ops_kernel(const int* in, int* out) {
  const unsigned tid = threadIdx.x, lane = tid % 32;
  const int v = in[tid];
  int* o = out + tid * 16;
  // Before the first collective no lane can have exited (no divergence model: every
  // non-exited lane counts as active).
  o[15] = static_cast<int>(__activemask());
  int s = v;
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  o[0] = s;
  int d = v;
  for (int off = 16; off > 0; off >>= 1) d += __shfl_down_sync(0xffffffffu, d, off);
  o[1] = d;
  o[2] = __shfl_up_sync(0xffffffffu, v, 3);
  o[3] = __shfl_sync(0xffffffffu, v, (lane * 7) % 32);
  o[4] = __shfl_sync(0xffffffffu, v, lane + 5, 8);
  o[5] = __shfl_xor_sync(0xffffffffu, v, 9, 8);
  o[6] = __shfl_down_sync(0xffffffffu, v, 2, 16);
  o[7] = static_cast<int>(__ballot_sync(0xffffffffu, v & 1));
  // Partial masks: even and odd lanes each run their own collectives.
  if (lane % 2 == 0) {
    o[8] = __shfl_sync(0x55555555u, v, (lane + 2) % 32);
    o[9] = static_cast<int>(__ballot_sync(0x55555555u, v > 40));
    o[10] = __any_sync(0x55555555u, v == 7);
    o[11] = __all_sync(0x55555555u, v >= 0);
  } else {
    o[8] = __shfl_xor_sync(0xaaaaaaaau, v, 2);
    o[9] = static_cast<int>(__ballot_sync(0xaaaaaaaau, v > 40));
    o[10] = __any_sync(0xaaaaaaaau, v < 0);
    o[11] = __all_sync(0xaaaaaaaau, v > 0);
  }
  __syncwarp();
  float f = static_cast<float>(v) * 0.5f;
  for (int off = 16; off > 0; off >>= 1) f += __shfl_xor_sync(0xffffffffu, f, off);
  o[12] = static_cast<int>(f * 2.0f);
  double dd = v * 0.25;
  dd = __shfl_sync(0xffffffffu, dd, 31 - lane);
  o[13] = static_cast<int>(dd * 4.0);
  unsigned u = static_cast<unsigned>(v);
  o[14] = static_cast<int>(__shfl_down_sync(0xffffffffu, u, 1));
}
void warp_ops(const int* in, int* out) { PG_LAUNCH(warp_ops_kernel, 1, 64, 0, 0, in, out); }

__global__ void partial_warp_kernel(int* out) {
  const unsigned t = threadIdx.x;
  // __activemask first: after the ballot, lanes that finish early have exited.
  out[2 * t + 1] = static_cast<int>(__activemask());
  out[2 * t] = static_cast<int>(__ballot_sync(0xffffffffu, 1));
}
void partial_warp(int* out, int threads) { PG_LAUNCH(partial_warp_kernel, 1, threads, 0, 0, out); }

// ---- atomics from many blocks ------------------------------------------------------------

__global__ void atomics_kernel(AtomicOut* o) {
  __shared__ int hist[8];
  const int t = threadIdx.x;
  const int gid = blockIdx.x * blockDim.x + t;
  if (t < 8) hist[t] = 0;
  __syncthreads();
  atomicAdd(&o->fsum, 1.0f + static_cast<float>(gid % 3));
  atomicAdd(&o->isum, gid);
  atomicAdd(&o->usum, 2u);
  atomicAdd(&o->ullsum, static_cast<unsigned long long>(gid) << 20);
  atomicAdd(&o->dsum, 0.5 * gid);
  atomicMax(&o->imax, gid * 7 % 1000 - 500);
  atomicMin(&o->imin, gid * 7 % 1000 - 500);
  atomicMax(&o->umax, static_cast<unsigned>(gid) * 3u);
  atomicMin(&o->umin, static_cast<unsigned>(gid) + 100u);
  int old = o->cas_counter, assumed;
  do {
    assumed = old;
    old = atomicCAS(&o->cas_counter, assumed, assumed + 1);
  } while (old != assumed);
  atomicExch(&o->exch, gid);
  atomicAdd(&hist[gid % 8], 1);  // shared-memory atomics
  __syncthreads();
  if (t < 8) atomicAdd(&o->hist[t], hist[t]);
}
void atomics(AtomicOut* out, int blocks, int threads) { PG_LAUNCH(atomics_kernel, blocks, threads, 0, 0, out); }

// ---- static shared memory in two kernels --------------------------------------------------

__global__ void reverse_tiles_kernel(const float* in, float* out, unsigned long long* addr) {
  __shared__ float tile[64];
  const unsigned t = threadIdx.x;
  tile[t] = in[blockIdx.x * 64 + t];
  __syncthreads();
  out[blockIdx.x * 64 + t] = tile[63 - t];
  if (t == 0 && blockIdx.x == 0) *addr = static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(tile));
}
void reverse_tiles(const float* in, float* out, int tiles, unsigned long long* addr) {
  PG_LAUNCH(reverse_tiles_kernel, tiles, 64, 0, 0, in, out, addr);
}

// in: (4 * tiles) x 8 row-major; out: 8 x (4 * tiles) row-major (the transpose).
__global__ void transpose_tiles_kernel(const int* in, int* out, unsigned long long* addr) {
  __shared__ int tile[4][9];
  tile[threadIdx.y][threadIdx.x] = in[(blockIdx.x * 4 + threadIdx.y) * 8 + threadIdx.x];
  __syncthreads();
  const unsigned t = threadIdx.y * 8 + threadIdx.x, r = t / 4, c = t % 4;
  out[r * (4 * gridDim.x) + blockIdx.x * 4 + c] = tile[c][r];
  if (t == 0 && blockIdx.x == 0) *addr = static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(tile));
}
void transpose_tiles(const int* in, int* out, int tiles, unsigned long long* addr) {
  PG_LAUNCH(transpose_tiles_kernel, tiles, dim3(8, 4), 0, 0, in, out, addr);
}

// ---- kernels the runtime must reject -------------------------------------------------------

__global__ void mismatched_barriers_kernel(int* out) {
  if (threadIdx.x < 16) {  // bug: two different barriers
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    __syncthreads();
    out[threadIdx.x] = 2;
  }
}
void mismatched_barriers(int* out) { PG_LAUNCH(mismatched_barriers_kernel, 1, 64, 0, 0, out); }

__global__ void barrier_after_exit_kernel(int* out) {
  if (threadIdx.x >= 32) return;  // bug: these threads never reach the barrier
  __syncthreads();
  out[threadIdx.x] = 1;
}
void barrier_after_exit(int* out) { PG_LAUNCH(barrier_after_exit_kernel, 1, 64, 0, 0, out); }

__global__ void missing_shuffle_lane_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x != 5) v = __shfl_xor_sync(0xffffffffu, v, 1);  // bug: lane 5 is in the mask
  __syncthreads();
  out[threadIdx.x] = v;
}
void missing_shuffle_lane(int* out) { PG_LAUNCH(missing_shuffle_lane_kernel, 1, 64, 0, 0, out); }

__global__ void mismatched_warp_ops_kernel(int* out) {
  int v = static_cast<int>(threadIdx.x);
  if (threadIdx.x % 32 == 5) {
    v = static_cast<int>(__ballot_sync(0xffffffffu, v));  // bug: a vote against a shuffle
  } else {
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  }
  out[threadIdx.x] = v;
}
void mismatched_warp_ops(int* out) { PG_LAUNCH(mismatched_warp_ops_kernel, 1, 64, 0, 0, out); }

__global__ void bad_shuffle_width_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0, 12);  // bug: width not a power of two
}
void bad_shuffle_width(int* out) { PG_LAUNCH(bad_shuffle_width_kernel, 1, 64, 0, 0, out); }

__global__ void mma_partial_warp_kernel(float* out) {
  uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  float c[4] = {0, 0, 0, 0}, d[4];
  pg_mma_m16n8k8_tf32(d, a, b, c);  // bug: the second warp has 16 lanes
  out[threadIdx.x] = d[0];
}
void mma_partial_warp(float* out) { PG_LAUNCH(mma_partial_warp_kernel, 1, 48, 0, 0, out); }

__global__ void ldmatrix_misaligned_kernel(unsigned* out) {
  __shared__ __align__(16) unsigned short s[8 * 16];
  for (int i = threadIdx.x; i < 8 * 16; i += 32) s[i] = static_cast<unsigned short>(i);
  __syncthreads();
  uint32_t r[1];
  pg_ldmatrix_x1(r, &s[(threadIdx.x % 8) * 16 + 1]);  // bug: rows 2 bytes off alignment
  out[threadIdx.x] = r[0];
}
void ldmatrix_misaligned(unsigned* out) { PG_LAUNCH(ldmatrix_misaligned_kernel, 1, 32, 0, 0, out); }

// ---- barrier reductions, uninitialised memory, speed ---------------------------------------

__global__ void sync_reduce_kernel(int* out) {
  const int t = threadIdx.x;
  const int c = __syncthreads_count(t % 3 == 0);
  const int a = __syncthreads_and(t < 100000);
  const int o = __syncthreads_or(t == 77);
  const int a2 = __syncthreads_and(t != 10);
  if (t == 0) {
    out[0] = c;
    out[1] = a;
    out[2] = o;
    out[3] = a2;
  }
}
void sync_reduce(int* out, int threads) { PG_LAUNCH(sync_reduce_kernel, 1, threads, 0, 0, out); }

__global__ void uninitialised_smem_kernel(float* out) {
  PG_DYNAMIC_SMEM(float, s);
  out[threadIdx.x] = s[threadIdx.x];  // bug: read before any write
}
void uninitialised_smem(float* out, int threads) {
  PG_LAUNCH(uninitialised_smem_kernel, 1, threads, threads * sizeof(float), 0, out);
}

__global__ void barrier_loop_kernel(int iters, int* out) {
  __shared__ int cnt[1024];
  const unsigned t = threadIdx.x;
  cnt[t] = 0;
  __syncthreads();
  for (int i = 0; i < iters; ++i) {
    cnt[(t + i) % blockDim.x] += 1;  // a different slot for every thread in each round
    __syncthreads();
  }
  out[t] = cnt[t];
}
void barrier_loop(int iters, int* out, int threads) {
  PG_LAUNCH(barrier_loop_kernel, 1, threads, 0, 0, iters, out);
}

__global__ void bf16_convert_kernel(const float* in, unsigned short* bits, float* back, unsigned* pair_bits,
                                    int n) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    __nv_bfloat16 h = __float2bfloat16(in[i]);
    bits[i] = __bfloat16_as_ushort(h);
    back[i] = __bfloat162float(h);
  }
  for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
    __nv_bfloat162 p = __floats2bfloat162_rn(in[2 * i], in[2 * i + 1]);
    unsigned u;
    memcpy(&u, &p, 4);
    pair_bits[i] = u;
  }
}
void bf16_convert(const float* in, unsigned short* bits, float* back, unsigned* pair_bits, int n) {
  PG_LAUNCH(bf16_convert_kernel, 1, 32, 0, 0, in, bits, back, pair_bits, n);
}

// ---- tensor cores -------------------------------------------------------------------------

PG_DEVICE_INLINE uint32_t tf32_operand(float x, int round) {
  return round ? pg_cvt_rna_tf32(x) : __float_as_uint(x);
}

__global__ void mma_tf32_kernel(const float* A, const float* B, const float* C, float* D, int round) {
  PG_DYNAMIC_SMEM(float, sm);
  float* sA = sm;        // 16 x 8
  float* sB = sm + 128;  // 8 x 8 (k x n)
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  for (int i = lane; i < 128; i += 32) sA[i] = A[i];
  for (int i = lane; i < 64; i += 32) sB[i] = B[i];
  __syncthreads();
  uint32_t a[4] = {tf32_operand(sA[g * 8 + t], round), tf32_operand(sA[(g + 8) * 8 + t], round),
                   tf32_operand(sA[g * 8 + t + 4], round), tf32_operand(sA[(g + 8) * 8 + t + 4], round)};
  uint32_t b[2] = {tf32_operand(sB[t * 8 + g], round), tf32_operand(sB[(t + 4) * 8 + g], round)};
  float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  pg_mma_m16n8k8_tf32(c, a, b, c);  // accumulate in place: c = A*B + C
  pg_mma_m16n8k8_tf32(d, a, b, c);  // d = A*B + c
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
void mma_tf32(const float* A, const float* B, const float* C, float* D, bool round) {
  PG_LAUNCH(mma_tf32_kernel, 1, 32, (128 + 64) * sizeof(float), 0, A, B, C, D, round ? 1 : 0);
}

__global__ void mma_bf16_kernel(const unsigned short* A, const unsigned short* B, int b_nk, const float* C,
                                float* D) {
  __shared__ __align__(16) unsigned short sA[16 * 24];  // rows padded to 48 bytes (16-byte aligned)
  __shared__ __align__(16) unsigned short sB[16 * 8];   // 16 x 8 (k x n) or 8 x 16 (n x k)
  const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
  for (int i = lane; i < 256; i += 32) sA[(i / 16) * 24 + i % 16] = A[i];
  for (int i = lane; i < 128; i += 32) sB[i] = B[i];
  __syncthreads();
  uint32_t a[4], b[2];
  // x4: lanes 0-15 address rows 0-15 at column 0, lanes 16-31 rows 0-15 at column 8.
  pg_ldmatrix_x4(a, &sA[(lane % 16) * 24 + (lane / 16) * 8]);
  if (!b_nk) {
    pg_ldmatrix_x2_trans(b, &sB[(lane % 16) * 8]);  // rows k = 0..15 (lanes 16-31 ignored)
  } else {
    pg_ldmatrix_x2(b, &sB[(lane % 8) * 16 + ((lane / 8) % 2) * 8]);  // rows n, k halves 0-7 / 8-15
  }
  float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  pg_mma_m16n8k16_bf16(d, a, b, c);
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
void mma_bf16(const unsigned short* A, const unsigned short* B, bool b_nk, const float* C, float* D) {
  PG_LAUNCH(mma_bf16_kernel, 1, 32, 0, 0, A, B, b_nk ? 1 : 0, C, D);
}

__global__ void ldmatrix_kernel(const unsigned short* M, const int* perm, unsigned* out) {
  __shared__ __align__(16) unsigned short s[32 * 16];  // 32 rows, 32-byte stride
  const int lane = threadIdx.x;
  for (int e = lane; e < 256; e += 32) {
    const int i = e / 64, r = (e / 8) % 8, c = e % 8;
    s[perm[8 * i + r] * 16 + c] = M[e];
  }
  __syncthreads();
  const void* row = &s[perm[lane] * 16];  // lane l: row l % 8 of matrix l / 8
  uint32_t r[4];
  unsigned* o = out + lane * 4;
  pg_ldmatrix_x1(r, row);
  o[0 * 128 + 0] = r[0];
  pg_ldmatrix_x2(r, row);
  for (int i = 0; i < 2; ++i) o[1 * 128 + i] = r[i];
  pg_ldmatrix_x4(r, row);
  for (int i = 0; i < 4; ++i) o[2 * 128 + i] = r[i];
  pg_ldmatrix_x1_trans(r, row);
  o[3 * 128 + 0] = r[0];
  pg_ldmatrix_x2_trans(r, row);
  for (int i = 0; i < 2; ++i) o[4 * 128 + i] = r[i];
  pg_ldmatrix_x4_trans(r, row);
  for (int i = 0; i < 4; ++i) o[5 * 128 + i] = r[i];
}
void ldmatrix_all(const unsigned short* M, const int* perm, unsigned* out) {
  PG_LAUNCH(ldmatrix_kernel, 1, 32, 0, 0, M, perm, out);
}

__global__ void cp_async_kernel(const float* src, float* out, int mode) {
  PG_DYNAMIC_SMEM(float, s);  // 128 floats
  const int t = threadIdx.x;  // 32 threads
  // Group 0: floats 0-31 (4 bytes each), 32-63 (8 bytes each, threads 0-15).
  pg_cp_async_4(&s[t], &src[t]);
  if (t < 16) pg_cp_async_8(&s[32 + 2 * t], &src[32 + 2 * t]);
  pg_cp_async_commit();
  // Group 1: floats 64-127 (16 bytes each, threads 0-15).
  if (t < 16) pg_cp_async_16(&s[64 + 4 * t], &src[64 + 4 * t]);
  pg_cp_async_commit();
  if (mode == 0) {
    pg_cp_async_wait<0>();
    __syncthreads();
  } else if (mode == 1) {
    __syncthreads();  // bug: no wait, a barrier does not complete cp.async
  } else if (mode == 2) {
    pg_cp_async_wait<1>();  // bug if group 1 is read: it may still be in flight
    __syncthreads();
  } else {
    pg_cp_async_wait_all();  // bug: no barrier before reading other threads' copies
  }
  for (int i = t; i < 128; i += 32) out[i] = s[i];
}
void cp_async_copy(const float* src, float* out, int mode) {
  PG_LAUNCH(cp_async_kernel, 1, 32, 128 * sizeof(float), 0, src, out, mode);
}

}  // namespace simt_test
