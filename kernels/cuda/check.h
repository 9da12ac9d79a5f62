// Error checks for CUDA runtime calls and kernel launches, in both build modes.
//
//   PG_CUDA_CHECK(stmt)    under nvcc: runs stmt (a cudaError_t expression) and throws
//                          pg::Error "CUDA error <name> (<text>) in `stmt` at file:line"
//                          when it is not cudaSuccess. On the host SIMT runtime the CUDA
//                          runtime does not exist: stmt is not compiled there, so use it
//                          only under `#if !PG_SIMT` or for calls that have a host twin.
//   PG_CUDA_CHECK_LAUNCH() under nvcc: cudaGetLastError() after a <<<...>>> launch (bad
//                          configuration, too much shared memory, no kernel image for this
//                          GPU). On the host: a no-op, because PG_LAUNCH there is synchronous
//                          and already throws pg::Error on every launch or kernel error.
//
// Launchers write `PG_LAUNCH(...); PG_CUDA_CHECK_LAUNCH();`. Asynchronous errors (a fault
// inside a running kernel) surface at the next synchronising call, as usual in CUDA.
#pragma once

#include <string>

#include "kernels/cuda/compat.h"
#include "core/error.h"

namespace pg::kernels::cuda {

#if !PG_SIMT
[[noreturn]] inline void cuda_fail(cudaError_t e, const char* stmt, const char* file, int line) {
  throw pg::Error(std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in `" +
                  stmt + "` at " + file + ":" + std::to_string(line));
}
#endif

}  // namespace pg::kernels::cuda

#if !PG_SIMT
#define PG_CUDA_CHECK(stmt)                                                         \
  do {                                                                              \
    const cudaError_t pg_cuda_err_ = (stmt);                                        \
    if (pg_cuda_err_ != cudaSuccess)                                                \
      ::pg::kernels::cuda::cuda_fail(pg_cuda_err_, #stmt, __FILE__, __LINE__);      \
  } while (0)
#define PG_CUDA_CHECK_LAUNCH() PG_CUDA_CHECK(cudaGetLastError())
#else
#define PG_CUDA_CHECK_LAUNCH() ((void)0)
#endif
