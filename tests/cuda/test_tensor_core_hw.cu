// Checks the host models of kernels/simt/tensor_core.h against the real instructions.
//
// A standalone nvcc program for a machine with a GPU (sm_80 or newer): the CMake target
// parchgrad_tensor_core_hw of a build with the CUDA backend (CTest test tensor_core_hw, label
// gpu, with -DPARCHGRAD_GPU_TESTS=ON); tests/checks/cuda_compile_gate.sh checks its PTX and SASS.
//   ./tests/parchgrad_tensor_core_hw
// It feeds random fragments to mma.sync / ldmatrix / cvt.rna.tf32 / cp.async on the GPU and
// the same fragments to the host models (pg::simt::tc, compiled here as host code), and
// prints one line "PASS|FAIL <instruction> ..." per instruction; the exit status is non-zero
// if any fails. ldmatrix, cvt and cp.async must match bit for bit; mma within a tolerance
// (the accumulation order and rounding inside the tensor core are unspecified).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cuda/compat.h"
#include "kernels/cuda/ptx.h"
#include "kernels/simt/tensor_core.h"

namespace {

// ---- device kernels: one warp; fragments are indexed [lane][register] -------------------

__global__ void mma_tf32_hw(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  const int l = threadIdx.x;
  uint32_t ra[4] = {a[l * 4], a[l * 4 + 1], a[l * 4 + 2], a[l * 4 + 3]};
  uint32_t rb[2] = {b[l * 2], b[l * 2 + 1]};
  float rc[4] = {c[l * 4], c[l * 4 + 1], c[l * 4 + 2], c[l * 4 + 3]};
  float rd[4];
  pg_mma_m16n8k8_tf32(rd, ra, rb, rc);
  for (int i = 0; i < 4; ++i) d[l * 4 + i] = rd[i];
}

__global__ void mma_bf16_hw(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
  const int l = threadIdx.x;
  uint32_t ra[4] = {a[l * 4], a[l * 4 + 1], a[l * 4 + 2], a[l * 4 + 3]};
  uint32_t rb[2] = {b[l * 2], b[l * 2 + 1]};
  float rc[4] = {c[l * 4], c[l * 4 + 1], c[l * 4 + 2], c[l * 4 + 3]};
  float rd[4];
  pg_mma_m16n8k16_bf16(rd, ra, rb, rc);
  for (int i = 0; i < 4; ++i) d[l * 4 + i] = rd[i];
}

// rows: 32 rows of 8 b16 values; lane l addresses row row_of_lane[l]. out[v][lane][4].
__global__ void ldmatrix_hw(const uint16_t* rows, const int* row_of_lane, uint32_t* out) {
  __shared__ __align__(16) uint16_t s[32 * 8];
  const int l = threadIdx.x;
  for (int i = l; i < 32 * 8; i += 32) s[i] = rows[i];
  __syncthreads();
  const void* p = &s[row_of_lane[l] * 8];
  uint32_t r[4];
  pg_ldmatrix_x1(r, p);
  out[(0 * 32 + l) * 4] = r[0];
  pg_ldmatrix_x2(r, p);
  for (int i = 0; i < 2; ++i) out[(1 * 32 + l) * 4 + i] = r[i];
  pg_ldmatrix_x4(r, p);
  for (int i = 0; i < 4; ++i) out[(2 * 32 + l) * 4 + i] = r[i];
  pg_ldmatrix_x1_trans(r, p);
  out[(3 * 32 + l) * 4] = r[0];
  pg_ldmatrix_x2_trans(r, p);
  for (int i = 0; i < 2; ++i) out[(4 * 32 + l) * 4 + i] = r[i];
  pg_ldmatrix_x4_trans(r, p);
  for (int i = 0; i < 4; ++i) out[(5 * 32 + l) * 4 + i] = r[i];
}

__global__ void cvt_hw(const float* in, uint32_t* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) out[i] = pg_cvt_rna_tf32(in[i]);
}

// Two groups: floats 0-63 with 4- and 8-byte copies, 64-127 with 16-byte copies.
__global__ void cp_async_hw(const float* src, float* out) {
  __shared__ __align__(16) float s[128];
  const int t = threadIdx.x;
  pg_cp_async_4(&s[t], &src[t]);
  if (t < 16) pg_cp_async_8(&s[32 + 2 * t], &src[32 + 2 * t]);
  pg_cp_async_commit();
  if (t < 16) pg_cp_async_16(&s[64 + 4 * t], &src[64 + 4 * t]);
  pg_cp_async_commit();
  pg_cp_async_wait<1>();
  __syncthreads();
  for (int i = t; i < 64; i += 32) out[i] = s[i];
  pg_cp_async_wait<0>();
  __syncthreads();
  for (int i = 64 + t; i < 128; i += 32) out[i] = s[i];
}

// ---- host side ----------------------------------------------------------------------------

int failures = 0;

bool cuda_ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::printf("FAIL %s: %s\n", what, cudaGetErrorString(e));
  ++failures;
  return false;
}

template <class T>
T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  cudaMalloc(&p, v.size() * sizeof(T));
  cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}
template <class T>
std::vector<T> from_device(const T* p, size_t n) {
  std::vector<T> v(n);
  cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

uint32_t f2u(float x) { return pg::simt::tc::f2u(x); }
uint32_t bf16_rn(float x) {  // round to nearest even (finite inputs)
  const uint32_t u = f2u(x);
  return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

// mma: `trials` random fragment sets; compare |hw - model| <= tol * (sum|a*b| + |c|) per
// element, where the magnitude comes from the model's own operand decoding.
template <class Kernel, class Model>
void check_mma(const char* name, Kernel kernel, Model model, bool bf16, bool round_tf32, int trials) {
  std::mt19937 rng(bf16 ? 11 : (round_tf32 ? 12 : 13));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  double worst = 0;
  bool ok = true;
  for (int trial = 0; trial < trials && ok; ++trial) {
    uint32_t a[32][4], b[32][2];
    float c[32][4], d_model[32][4];
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 4; ++i) {
        if (bf16) {
          a[l][i] = bf16_rn(nd(rng)) | uint32_t(bf16_rn(nd(rng))) << 16;
        } else {
          float x = nd(rng);
          a[l][i] = round_tf32 ? pg::simt::tc::cvt_rna_tf32_bits(x) : f2u(x);
        }
        c[l][i] = nd(rng);
      }
      for (int i = 0; i < 2; ++i) {
        if (bf16) {
          b[l][i] = bf16_rn(nd(rng)) | uint32_t(bf16_rn(nd(rng))) << 16;
        } else {
          float x = nd(rng);
          b[l][i] = round_tf32 ? pg::simt::tc::cvt_rna_tf32_bits(x) : f2u(x);
        }
      }
    }
    model(a, b, c, d_model);
    // Magnitudes: the same model on |A|, |B|, |C| (sign bits cleared) bounds sum|a*b| + |c|.
    uint32_t aa[32][4], ba[32][2];
    float ca[32][4], mag[32][4];
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 4; ++i) {
        aa[l][i] = a[l][i] & (bf16 ? 0x7FFF7FFFu : 0x7FFFFFFFu);
        ca[l][i] = std::fabs(c[l][i]);
      }
      for (int i = 0; i < 2; ++i) ba[l][i] = b[l][i] & (bf16 ? 0x7FFF7FFFu : 0x7FFFFFFFu);
    }
    model(aa, ba, ca, mag);

    std::vector<uint32_t> va(&a[0][0], &a[0][0] + 128), vb(&b[0][0], &b[0][0] + 64);
    std::vector<float> vc(&c[0][0], &c[0][0] + 128);
    uint32_t *da = to_device(va), *db = to_device(vb);
    float *dc = to_device(vc), *dd = nullptr;
    cudaMalloc(&dd, 128 * sizeof(float));
    kernel<<<1, 32>>>(da, db, dc, dd);
    if (!cuda_ok(cudaDeviceSynchronize(), name)) return;
    std::vector<float> hw = from_device(dd, 128);
    cudaFree(da), cudaFree(db), cudaFree(dc), cudaFree(dd);
    for (int l = 0; l < 32; ++l) {
      for (int i = 0; i < 4; ++i) {
        const double err = std::fabs(double(hw[l * 4 + i]) - d_model[l][i]) / mag[l][i];
        worst = std::max(worst, err);
        if (!(err <= 0x1p-20)) {
          std::printf("FAIL %s: trial %d lane %d d%d: hw %.9g model %.9g (relative to magnitude %.3g)\n", name,
                      trial, l, i, hw[l * 4 + i], d_model[l][i], err);
          ok = false;
        }
      }
    }
  }
  if (ok) std::printf("PASS %s (%d trials, max |hw-model| / (sum|ab|+|c|) = %.3g)\n", name, trials, worst);
  else ++failures;
}

void check_ldmatrix() {
  std::mt19937 rng(21);
  std::vector<uint16_t> rows(32 * 8);
  for (auto& x : rows) x = static_cast<uint16_t>(rng());
  std::vector<int> row_of_lane(32);
  for (int l = 0; l < 32; ++l) row_of_lane[l] = (l * 13 + 7) % 32;
  uint16_t* drows = to_device(rows);
  int* dlane = to_device(row_of_lane);
  uint32_t* dout = nullptr;
  cudaMalloc(&dout, 6 * 32 * 4 * sizeof(uint32_t));
  cudaMemset(dout, 0, 6 * 32 * 4 * sizeof(uint32_t));
  ldmatrix_hw<<<1, 32>>>(drows, dlane, dout);
  if (!cuda_ok(cudaDeviceSynchronize(), "ldmatrix")) return;
  std::vector<uint32_t> hw = from_device(dout, 6 * 32 * 4);
  cudaFree(drows), cudaFree(dlane), cudaFree(dout);
  const void* addr[32];
  for (int l = 0; l < 32; ++l) addr[l] = &rows[row_of_lane[l] * 8];
  const char* names[6] = {"ldmatrix.x1", "ldmatrix.x2", "ldmatrix.x4",
                          "ldmatrix.x1.trans", "ldmatrix.x2.trans", "ldmatrix.x4.trans"};
  for (int v = 0; v < 6; ++v) {
    const int num = v % 3 == 0 ? 1 : v % 3 == 1 ? 2 : 4;
    uint32_t model[32][4];
    pg::simt::tc::ldmatrix_warp(num, v >= 3, addr, model);
    int bad = 0;
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < num; ++i) bad += hw[(v * 32 + l) * 4 + i] != model[l][i];
    if (bad) {
      std::printf("FAIL %s: %d of %d registers differ\n", names[v], bad, 32 * num);
      ++failures;
    } else {
      std::printf("PASS %s\n", names[v]);
    }
  }
}

void check_cvt() {
  std::mt19937 rng(31);
  std::vector<float> in;
  for (int i = 0; i < 4096; ++i) {  // random bit patterns: every exponent, ties, NaN, inf
    uint32_t u = static_cast<uint32_t>(rng());
    if (i % 4 == 0) u = (u & ~0x1FFFu) | 0x1000u;  // exact ties
    float x;
    std::memcpy(&x, &u, 4);
    in.push_back(x);
  }
  float* din = to_device(in);
  uint32_t* dout = nullptr;
  cudaMalloc(&dout, in.size() * sizeof(uint32_t));
  cvt_hw<<<8, 128>>>(din, dout, static_cast<int>(in.size()));
  if (!cuda_ok(cudaDeviceSynchronize(), "cvt.rna.tf32.f32")) return;
  std::vector<uint32_t> hw = from_device(dout, in.size());
  cudaFree(din), cudaFree(dout);
  int bad = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const uint32_t m = pg::simt::tc::cvt_rna_tf32_bits(in[i]);
    const bool both_nan = std::isnan(pg::simt::tc::u2f(m)) && std::isnan(pg::simt::tc::u2f(hw[i]));
    if (hw[i] != m && !both_nan) {
      if (bad < 5) std::printf("  cvt.rna.tf32 %08x: hw %08x model %08x\n", f2u(in[i]), hw[i], m);
      ++bad;
    }
  }
  if (bad) {
    std::printf("FAIL cvt.rna.tf32.f32: %d of %zu differ\n", bad, in.size());
    ++failures;
  } else {
    std::printf("PASS cvt.rna.tf32.f32 (%zu values, NaN payloads not compared)\n", in.size());
  }
}

void check_cp_async() {
  std::vector<float> src(128);
  for (int i = 0; i < 128; ++i) src[i] = 0.5f + i;
  float* dsrc = to_device(src);
  float* dout = nullptr;
  cudaMalloc(&dout, 128 * sizeof(float));
  cp_async_hw<<<1, 32>>>(dsrc, dout);
  if (!cuda_ok(cudaDeviceSynchronize(), "cp.async")) return;
  std::vector<float> hw = from_device(dout, 128);
  cudaFree(dsrc), cudaFree(dout);
  if (hw == src) {
    std::printf("PASS cp.async 4/8/16 + commit_group + wait_group 1/0\n");
  } else {
    std::printf("FAIL cp.async: copied data differ\n");
    ++failures;
  }
}

}  // namespace

int main() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("FAIL no CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  check_mma("mma.m16n8k8.tf32 (raw fp32 operands: low 13 bits ignored)", mma_tf32_hw,
            pg::simt::tc::mma_m16n8k8_tf32_warp, false, false, 50);
  check_mma("mma.m16n8k8.tf32 (operands through cvt.rna.tf32)", mma_tf32_hw, pg::simt::tc::mma_m16n8k8_tf32_warp,
            false, true, 50);
  check_mma("mma.m16n8k16.bf16", mma_bf16_hw, pg::simt::tc::mma_m16n8k16_bf16_warp, true, false, 50);
  check_ldmatrix();
  check_cvt();
  check_cp_async();
  std::printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
