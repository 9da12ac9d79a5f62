// Host models of mma.sync and ldmatrix as warp collectives on the SIMT runtime: every lane
// posts pointers to its own fragment registers; when all 32 lanes have arrived, the
// completion (run once, on the last lane's fiber) gathers the fragments into warp-wide
// arrays, computes what the PTX ISA defines (tensor_core.h's pg::simt::tc models) and
// scatters each lane's results back.
#include "kernels/simt/ptx_host.h"

#include <string>

namespace pg::simt::tc {
namespace {

struct MmaArgs {
  float* d;
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
};

template <void (*Model)(const uint32_t[32][4], const uint32_t[32][2], const float[32][4], float[32][4])>
void mma_complete(void* const lane_args[32], uint32_t) {
  uint32_t a[32][4], b[32][2];
  float c[32][4], d[32][4];
  for (int l = 0; l < 32; ++l) {  // the runtime guarantees all 32 lanes (aligned op)
    auto* x = static_cast<MmaArgs*>(lane_args[l]);
    for (int i = 0; i < 4; ++i) a[l][i] = x->a[i], c[l][i] = x->c[i];
    for (int i = 0; i < 2; ++i) b[l][i] = x->b[i];
  }
  Model(a, b, c, d);  // all inputs read before any output is written: d may alias c
  for (int l = 0; l < 32; ++l) {
    auto* x = static_cast<MmaArgs*>(lane_args[l]);
    for (int i = 0; i < 4; ++i) x->d[i] = d[l][i];
  }
}

const WarpOp kMmaTf32{"mma.sync.m16n8k8.tf32", mma_complete<mma_m16n8k8_tf32_warp>, true};
const WarpOp kMmaBf16{"mma.sync.m16n8k16.bf16", mma_complete<mma_m16n8k16_bf16_warp>, true};

struct LdmArgs {
  uint32_t* r;
  const void* row;
  SourceLoc loc;
};

template <int Num, bool Trans>
void ldmatrix_complete(void* const lane_args[32], uint32_t) {
  const void* rows[32];
  for (int l = 0; l < 32; ++l) {
    auto* x = static_cast<LdmArgs*>(lane_args[l]);
    rows[l] = x->row;
    if (l < 8 * Num && (x->row == nullptr || reinterpret_cast<uintptr_t>(x->row) % 16 != 0)) {
      fail(("ldmatrix: lane " + std::to_string(l) + "'s row address is not 16-byte aligned").c_str(), x->loc);
    }
  }
  uint32_t r[32][4];
  ldmatrix_warp(Num, Trans, rows, r);
  for (int l = 0; l < 32; ++l) {
    auto* x = static_cast<LdmArgs*>(lane_args[l]);
    for (int i = 0; i < Num; ++i) x->r[i] = r[l][i];
  }
}

const WarpOp kLdm[2][3] = {
    {{"ldmatrix.x1", ldmatrix_complete<1, false>, true},
     {"ldmatrix.x2", ldmatrix_complete<2, false>, true},
     {"ldmatrix.x4", ldmatrix_complete<4, false>, true}},
    {{"ldmatrix.x1.trans", ldmatrix_complete<1, true>, true},
     {"ldmatrix.x2.trans", ldmatrix_complete<2, true>, true},
     {"ldmatrix.x4.trans", ldmatrix_complete<4, true>, true}},
};

}  // namespace

void mma_tf32(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], SourceLoc loc) {
  MmaArgs x{d, a, b, c};
  warp_collective(kMmaTf32, 0xFFFFFFFFu, &x, loc);
}

void mma_bf16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], SourceLoc loc) {
  MmaArgs x{d, a, b, c};
  warp_collective(kMmaBf16, 0xFFFFFFFFu, &x, loc);
}

void ldmatrix(int num, bool trans, uint32_t* r, const void* row, SourceLoc loc) {
  LdmArgs x{r, row, loc};
  const int idx = num == 1 ? 0 : num == 2 ? 1 : 2;
  warp_collective(kLdm[trans ? 1 : 0][idx], 0xFFFFFFFFu, &x, loc);
}

}  // namespace pg::simt::tc
