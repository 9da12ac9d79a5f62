// CPU twin of kernels/cuda/maps.h: the channel reductions into saliency maps as plain
// loops (float sums in channel order, products rounded on their own: the .cpp is compiled
// without FMA contraction).
// defines: channel_map
#pragma once
#include <cstdint>

#include "kernels/params.h"

namespace pg::kernels::cpu {

// m [N, HW] overwritten; x may be nullptr for MapKind::abs_grad.
void channel_map(const ChannelMapParams& p, const float* g, const float* x, float* m);

}  // namespace pg::kernels::cpu
