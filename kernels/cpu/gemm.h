// An SGEMM whose every result element is computed in one fixed order of fused multiply-adds, the CPU
// forward convolution's GEMM.
// defines: gemm_ordered, gemm_ordered_workspace_floats, gemm_ordered_isa, GemmIsa
//
// Why not OpenBLAS here: a BLAS computes an element of C with whichever micro-kernel its
// blocking assigns to that element's position (a full tile, a column or row remainder, a
// different reduction split), and those code paths round differently. Under im2col the
// column of C is the output position, so two output pixels whose receptive fields hold the
// same values can come out one ulp apart, and a max-pool window of such pixels (any flat
// image region) then picks its maximum by rounding instead of by PyTorch's first-index rule:
// the whole gradient is routed elsewhere. Here every element is, for the reduction cut into
// slices of 256 (the last one shorter),
//   c = 0;  for each slice:  { s = 0;  for k in the slice, in order:  s = fma(a[i][k], b[k][j], s);
//                              c = (first slice) ? s : c + s }
// whatever M, N, the blocking, the tile an element falls into or the instruction set: its
// bits are a function of row i of A and column j of B alone. (Summing slices, as BLAS kernels
// do, keeps the rounding error growing with 256 + K / 256 rather than with K.) So equal
// receptive fields give equal outputs, and results are the same bits on every x86-64 CPU.
#pragma once
#include <cstddef>

namespace pg::kernels::cpu {

// The micro-kernel families: the same chains, wider or narrower registers. kAuto picks the
// widest the CPU has (AVX-512F, else AVX2 with FMA, else scalar std::fma).
enum class GemmIsa { kAuto, kScalar, kAvx2, kAvx512 };

// Floats of scratch memory one gemm_ordered call needs (packed panels of A and B).
size_t gemm_ordered_workspace_floats();

// C[M x N] = A[M x K] * B[K x N], all row-major with leading dimensions lda, ldb, ldc, by
// the chains above (K = 0 gives zeros). Single-threaded; `workspace` holds
// gemm_ordered_workspace_floats() floats. `isa` other than kAuto is for tests; an
// instruction set the CPU lacks is an error (pg::Error).
void gemm_ordered(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                  float* workspace, GemmIsa isa = GemmIsa::kAuto);

// The family kAuto runs on this CPU: "avx512", "avx2" or "scalar".
const char* gemm_ordered_isa();

// Whether this CPU can run `isa`.
bool gemm_isa_supported(GemmIsa isa);

}  // namespace pg::kernels::cpu
