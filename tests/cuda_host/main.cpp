// doctest main of parchgrad_cuda_host_tests (the CUDA kernels run on the host SIMT runtime).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
