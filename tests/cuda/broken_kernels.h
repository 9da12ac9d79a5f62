// Two deliberately broken kernels, the positive controls of tools/gpu_check.sh: a sanitizer
// run that does not flag them proves nothing about the clean runs of the real kernels.
//   run_broken_oob    memcheck must flag it: global writes past the end of an allocation.
//   run_broken_race   racecheck must flag it: a shared-memory read of another warp's slot
//                     with no __syncthreads() between the write and the read.
// Run them only under compute-sanitizer (test_kernels_gpu --broken=oob|race): without it
// the out-of-bounds writes land in whatever memory follows the allocation.
// defines: run_broken_oob, run_broken_race
#pragma once

#include "core/stream.h"

namespace pg::gputest {

// Each returns after synchronising; CUDA errors (the sanitizer may abort the kernel) are
// printed, not thrown: the verdict is the sanitizer's.
void run_broken_oob(cudaStream_t stream);
void run_broken_race(cudaStream_t stream);

}  // namespace pg::gputest
