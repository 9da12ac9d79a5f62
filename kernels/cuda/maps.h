// Saliency maps: reductions of a gradient g[N,C,HW] (and the input x) over the channel
// axis, bit-identical to the host loops of parchgrad/methods.cpp as written: channels are
// summed in float from +0 in order c = 0..C-1, each product x*g is rounded to float on its
// own (never fused into an FMA with the sum), then the sum is divided by float(C):
//   abs_grad               m[n,i] = (sum_c |g[n,c,i]|) / C
//   abs_input_x_grad       m[n,i] = (sum_c |fl(x[n,c,i] * g[n,c,i])|) / C
//   abs_mean_input_x_grad  m[n,i] = | (sum_c fl(x[n,c,i] * g[n,c,i])) / C |
// One thread per (n, i): the loads of a warp are coalesced along i. CPU twin:
// kernels/cpu/maps.h.
// defines: launch_channel_map
// (their parameter structs: kernels/params.h)
#pragma once
#include <cstdint>

#include "core/stream.h"
#include "kernels/params.h"

namespace pg::kernels::cuda {

// g, x [N,C,HW] (x may be nullptr for abs_grad); m [N,HW] overwritten (must not alias g or
// x). Device pointers.
void launch_channel_map(const ChannelMapParams& p, const float* g, const float* x, float* m, cudaStream_t stream);

}  // namespace pg::kernels::cuda
