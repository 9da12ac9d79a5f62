// The BLAS the CPU kernels use (OpenBLAS, OpenMP build), loaded at first use.
//
// Why it is loaded with dlopen rather than linked: OpenBLAS picks its kernels for the CPU
// once, when the library is loaded, from the CPUID model number. Debian 12's OpenBLAS
// (0.3.21) does not know recent Intel models and falls back to its generic SSE3 kernels
// ("Prescott"), three times slower than its AVX-512 kernels on the same machine. Loading
// it ourselves lets us choose the kernels from the CPU's feature flags first
// (OPENBLAS_CORETYPE, only when the user has not set it), for the command line and for
// programs that embed the library alike.
#pragma once
#include <string>

namespace pg::blas {

// Loads OpenBLAS (once; thread-safe). Throws pg::Error naming the library when it cannot be
// loaded. Call it outside parallel regions: the kernels call it before they start threads.
void init();

// Row-major C = alpha * op(A) * op(B) + beta * C (cblas_sgemm with CblasRowMajor).
void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc);

// OpenBLAS's own thread count (used outside OpenMP parallel regions).
void set_num_threads(int threads);

// The kernel family OpenBLAS runs (e.g. "SkylakeX", "Haswell"), and what chose it:
// "user" (OPENBLAS_CORETYPE was set), "features" (set here from the CPU's flags) or
// "library" (OpenBLAS's own detection).
std::string core_name();
std::string core_choice();

}  // namespace pg::blas
