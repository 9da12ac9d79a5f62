// Fallback <omp.h> for tools/gpu_check.sh, used only when the GPU machine's host compiler
// cannot build with -fopenmp: the CPU twins (kernels/cpu) then run single-threaded. With
// no -fopenmp the `#pragma omp` lines are ignored; these are the only OpenMP calls the
// twins and tests/cuda/test_kernels_gpu.cu make.
#pragma once

inline int omp_get_max_threads() { return 1; }
inline int omp_get_thread_num() { return 0; }
