// cudaStream_t without the CUDA headers, so that the launcher headers of kernels/cuda stay
// plain C++ (the CUDA runtime and kernels/simt/cuda_compat.h both spell it this way, and a
// repeated typedef of the same type is allowed).
#pragma once

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
