// Tests of the host SIMT runtime (kernels/simt): the kernels are in
// tests/simt_kernels/test_kernels.cu, compiled as C++ into this binary.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/unit/support.h"
#include "kernels/simt/simt.h"
#include "kernels/simt/tensor_core.h"
#include "core/error.h"
#include "tests/simt_kernels/test_kernels.h"

namespace {

using pg::test::error_of;

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

std::vector<float> block_sums(const std::vector<float>& in, int blocks, int threads, bool sync) {
  std::vector<float> out(blocks, -1.0f);
  simt_test::block_sum(in.data(), out.data(), static_cast<int>(in.size()), blocks, threads, sync);
  return out;
}

// Expected per-block sums of block_sum's grid-stride loop.
std::vector<float> expected_block_sums(const std::vector<float>& in, int blocks, int threads) {
  std::vector<double> s(blocks, 0.0);
  for (size_t i = 0; i < in.size(); ++i) s[(i / threads) % blocks] += in[i];
  return std::vector<float>(s.begin(), s.end());
}

uint16_t bf16_bits(float x) {  // round to nearest even (test's own reference)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  uint32_t lsb = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7FFFu + lsb) >> 16);
}
float bf16_value(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
float truncate_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u &= 0xFFFFE000u;
  std::memcpy(&x, &u, 4);
  return x;
}
float round_tf32(float x) {  // ties away from zero on the magnitude
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u = (u + 0x1000u) & 0xFFFFE000u;
  std::memcpy(&x, &u, 4);
  return x;
}

}  // namespace

TEST_CASE("simt: block reduction with barriers and dynamic shared memory on odd block sizes") {
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> dist(-50, 50);
  std::vector<float> in(5000);
  for (float& x : in) x = static_cast<float>(dist(rng));  // integers: sums are exact
  for (int threads : {96, 257, 1024, 33, 1}) {
    for (int blocks : {1, 3}) {
      CAPTURE(threads);
      CAPTURE(blocks);
      CHECK(block_sums(in, blocks, threads, true) == expected_block_sums(in, blocks, threads));
    }
  }
}

TEST_CASE("simt: the randomised order catches a missing barrier (positive control)") {
  std::mt19937 rng(2);
  std::vector<float> in(257 * 2);
  for (float& x : in) x = static_cast<float>(rng() % 10);
  const auto expected = expected_block_sums(in, 2, 257);
  int wrong = 0;
  for (uint64_t s : {1u, 2u, 3u, 4u}) {
    pg::simt::ScopedSeed seed(s);
    CHECK(block_sums(in, 2, 257, true) == expected);  // with barriers: right for every seed
    if (block_sums(in, 2, 257, false) != expected) ++wrong;
  }
  CHECK(wrong >= 1);
  // The same seed gives the same interleaving, so the same wrong result.
  pg::simt::ScopedSeed seed(3);
  std::vector<float> a = block_sums(in, 2, 257, false), b = block_sums(in, 2, 257, false);
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST_CASE("simt: blocks in parallel on host threads give the same results") {
  std::vector<float> in(20000);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 17);
  const auto expected = expected_block_sums(in, 13, 128);
  pg::simt::set_host_threads(2);
  CHECK(block_sums(in, 13, 128, true) == expected);
  simt_test::AtomicOut o{};
  o.imin = 1 << 30;
  o.umin = ~0u;
  simt_test::atomics(&o, 40, 96);
  pg::simt::set_host_threads(1);
  CHECK(o.isum == 3840 * 3839 / 2);
  CHECK(o.cas_counter == 3840);
}

TEST_CASE("simt: grid-stride loop") {
  const int n = 10007;
  std::vector<float> x(n), y(n), ref(n);
  for (int i = 0; i < n; ++i) {
    x[i] = 0.25f * static_cast<float>(i % 101);
    y[i] = static_cast<float>(i % 7);
    ref[i] = std::fma(3.0f, x[i], y[i]);
  }
  simt_test::saxpy(n, 3.0f, x.data(), y.data(), 7, 64);
  CHECK(y == ref);
}

TEST_CASE("simt: template kernel launched as PG_LAUNCH((k<T, N>), ...)") {
  std::vector<int> out(6 * 50, 0);
  simt_test::fill_plus4(out.data(), 10, 6, 50);
  for (int x : out) CHECK(x == 14);
}

TEST_CASE("simt: 3-D grids and blocks") {
  const unsigned gx = 3, gy = 2, gz = 2, bx = 4, by = 3, bz = 2;
  std::vector<unsigned> out(gx * gy * gz * bx * by * bz, 0);
  simt_test::index3d(out.data(), gx, gy, gz, bx, by, bz);
  size_t i = 0;
  for (unsigned z = 0; z < gz; ++z)
    for (unsigned y = 0; y < gy; ++y)
      for (unsigned x = 0; x < gx; ++x)
        for (unsigned tz = 0; tz < bz; ++tz)
          for (unsigned ty = 0; ty < by; ++ty)
            for (unsigned tx = 0; tx < bx; ++tx, ++i)
              CHECK(out[i] == (x << 20 | y << 16 | z << 12 | tx << 8 | ty << 4 | tz));
}

TEST_CASE("simt: warp shuffles and votes, full and partial masks") {
  std::vector<int> in(64), out(64 * 16, -1);
  for (int i = 0; i < 64; ++i) in[i] = (i * 37 + 11) % 83;  // 0..82, none negative
  simt_test::warp_ops(in.data(), out.data());
  for (int tid = 0; tid < 64; ++tid) {
    CAPTURE(tid);
    const int lane = tid % 32, base = tid - lane;
    auto V = [&](int l) { return in[base + l]; };
    const int* o = &out[tid * 16];
    int sum = 0, odd = 0;
    for (int l = 0; l < 32; ++l) sum += V(l), odd |= (V(l) & 1) << l;
    CHECK(o[0] == sum);
    // __shfl_down_sync reduction: lane l adds lanes l+off only where l+off < 32.
    int d[32];
    for (int l = 0; l < 32; ++l) d[l] = V(l);
    for (int off = 16; off > 0; off >>= 1) {
      int nd[32];
      for (int l = 0; l < 32; ++l) nd[l] = d[l] + (l + off < 32 ? d[l + off] : d[l]);
      std::memcpy(d, nd, sizeof d);
    }
    CHECK(o[1] == d[lane]);
    if (lane == 0) CHECK(o[1] == sum);
    CHECK(o[2] == (lane >= 3 ? V(lane - 3) : V(lane)));
    CHECK(o[3] == V((lane * 7) % 32));
    CHECK(o[4] == V((lane & ~7) + ((lane + 5) & 7)));
    CHECK(o[5] == ((lane ^ 9) <= (lane | 7) ? V(lane ^ 9) : V(lane)));
    CHECK(o[6] == ((lane % 16) + 2 < 16 ? V(lane + 2) : V(lane)));
    CHECK(static_cast<unsigned>(o[7]) == static_cast<unsigned>(odd));
    if (lane % 2 == 0) {
      unsigned ballot = 0;
      bool any = false, all = true;
      for (int l = 0; l < 32; l += 2) {
        ballot |= unsigned(V(l) > 40) << l;
        any |= V(l) == 7;
        all &= V(l) >= 0;
      }
      CHECK(o[8] == V((lane + 2) % 32));
      CHECK(static_cast<unsigned>(o[9]) == ballot);
      CHECK(o[10] == int(any));
      CHECK(o[11] == int(all));
    } else {
      unsigned ballot = 0;
      bool all = true;
      for (int l = 1; l < 32; l += 2) ballot |= unsigned(V(l) > 40) << l, all &= V(l) > 0;
      CHECK(o[8] == V(lane ^ 2));
      CHECK(static_cast<unsigned>(o[9]) == ballot);
      CHECK(o[10] == 0);
      CHECK(o[11] == int(all));
    }
    CHECK(o[12] == sum);
    CHECK(o[13] == V(31 - lane));
    CHECK(o[14] == (lane < 31 ? V(lane + 1) : V(lane)));
    CHECK(static_cast<unsigned>(o[15]) == 0xFFFFFFFFu);
  }
}

TEST_CASE("simt: a partial last warp (block of 40 threads)") {
  std::vector<int> out(80, 0);
  simt_test::partial_warp(out.data(), 40);
  for (int t = 0; t < 40; ++t) {
    const unsigned want = t < 32 ? 0xFFFFFFFFu : 0xFFu;
    CHECK(static_cast<unsigned>(out[2 * t]) == want);
    CHECK(static_cast<unsigned>(out[2 * t + 1]) == want);
  }
}

TEST_CASE("simt: atomics from many blocks (global and shared)") {
  simt_test::AtomicOut o{};
  o.imin = 1 << 30;
  o.umin = ~0u;
  o.exch = -1;
  const int blocks = 37, threads = 128, n = blocks * threads;
  simt_test::atomics(&o, blocks, threads);
  double fsum = 0, dsum = 0;
  long long isum = 0;
  unsigned long long ull = 0;
  int imax = -(1 << 30), imin = 1 << 30;
  unsigned umax = 0, umin = ~0u;
  int hist[8] = {};
  for (int g = 0; g < n; ++g) {
    fsum += 1 + g % 3;
    isum += g;
    ull += static_cast<unsigned long long>(g) << 20;
    dsum += 0.5 * g;
    imax = std::max(imax, g * 7 % 1000 - 500);
    imin = std::min(imin, g * 7 % 1000 - 500);
    umax = std::max(umax, unsigned(g) * 3u);
    umin = std::min(umin, unsigned(g) + 100u);
    ++hist[g % 8];
  }
  CHECK(o.fsum == static_cast<float>(fsum));  // < 2^24, integer-valued: exact in any order
  CHECK(o.isum == isum);
  CHECK(o.usum == 2u * n);
  CHECK(o.ullsum == ull);
  CHECK(o.dsum == dsum);
  CHECK(o.imax == imax);
  CHECK(o.imin == imin);
  CHECK(o.umax == umax);
  CHECK(o.umin == umin);
  CHECK(o.cas_counter == n);
  CHECK(o.exch >= 0);
  CHECK(o.exch < n);
  for (int i = 0; i < 8; ++i) CHECK(o.hist[i] == hist[i]);
}

TEST_CASE("simt: static __shared__ arrays in two different kernels") {
  const int tiles = 3;
  std::vector<float> fin(64 * tiles), fout(64 * tiles);
  for (size_t i = 0; i < fin.size(); ++i) fin[i] = static_cast<float>(i);
  std::vector<int> iin(32 * tiles), iout(32 * tiles, -1);
  for (size_t i = 0; i < iin.size(); ++i) iin[i] = static_cast<int>(i) * 3;
  unsigned long long addr_f = 0, addr_i = 0;
  simt_test::reverse_tiles(fin.data(), fout.data(), tiles, &addr_f);
  simt_test::transpose_tiles(iin.data(), iout.data(), tiles, &addr_i);
  for (int b = 0; b < tiles; ++b)
    for (int t = 0; t < 64; ++t) CHECK(fout[b * 64 + t] == fin[b * 64 + 63 - t]);
  const int rows = 4 * tiles;  // in: rows x 8, out: 8 x rows
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < 8; ++c) CHECK(iout[c * rows + r] == iin[r * 8 + c]);
  CHECK(addr_f != 0);
  CHECK(addr_i != 0);
  CHECK(addr_f != addr_i);
}

TEST_CASE("simt: deadlocks and misuse are reported as pg::Error, and the runtime recovers") {
  std::vector<int> out(64, 0);
  std::string e = error_of([&] { simt_test::mismatched_barriers(out.data()); });
  CHECK(contains(e, "mismatched barriers"));
  CHECK(contains(e, "mismatched_barriers_kernel"));
  CHECK(contains(e, "test_kernels.cu:"));

  e = error_of([&] { simt_test::barrier_after_exit(out.data()); });
  CHECK(contains(e, "exited"));

  e = error_of([&] { simt_test::missing_shuffle_lane(out.data()); });
  CHECK(contains(e, "deadlock"));
  CHECK(contains(e, "__shfl_xor_sync"));
  CHECK(contains(e, "[0-4,6-31]"));
  CHECK(e.find('\n') == std::string::npos);  // one line

  e = error_of([&] { simt_test::mismatched_warp_ops(out.data()); });
  CHECK(contains(e, "deadlock"));  // lane 5 votes while its warp shuffles
  CHECK(contains(e, "[5] wait in __ballot_sync"));
  CHECK(contains(e, "[0-4,6-31] wait in __shfl_xor_sync"));

  e = error_of([&] { simt_test::bad_shuffle_width(out.data()); });
  CHECK(contains(e, "width 12"));

  std::vector<float> fout(48);
  e = error_of([&] { simt_test::mma_partial_warp(fout.data()); });
  CHECK(contains(e, "needs all 32 lanes"));

  std::vector<unsigned> uout(32);
  e = error_of([&] { simt_test::ldmatrix_misaligned(uout.data()); });
  CHECK(contains(e, "16-byte aligned"));

  // Still usable after aborted blocks (their fibers and stacks are reused).
  std::vector<float> in(1000, 1.0f);
  CHECK(block_sums(in, 2, 257, true) == expected_block_sums(in, 2, 257));
  // Launch errors.
  e = error_of([&] { block_sums(in, 1, 1025, true); });
  CHECK(contains(e, "1024"));
}

TEST_CASE("simt: __syncthreads_count/and/or") {
  std::vector<int> out(4, -1);
  simt_test::sync_reduce(out.data(), 200);
  CHECK(out[0] == 67);  // 0, 3, ..., 198
  CHECK(out[1] == 1);
  CHECK(out[2] == 1);
  CHECK(out[3] == 0);
}

TEST_CASE("simt: dynamic shared memory starts as NaN") {
  std::vector<float> out(70, 0.0f);
  simt_test::uninitialised_smem(out.data(), 70);
  for (float x : out) CHECK(std::isnan(x));
}

TEST_CASE("simt: speed of barriers (256 threads, 300 barriers)") {
  std::vector<int> out(256, 0);
  auto t0 = std::chrono::steady_clock::now();
  simt_test::barrier_loop(300, out.data(), 256);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  for (int x : out) CHECK(x == 300);
  MESSAGE("256 threads x 300 barriers: " << ms << " ms");
  CHECK(ms < 2000.0);  // generous for sanitizer builds; ~tens of ms in Release
}

TEST_CASE("simt: bf16 conversions round to nearest even") {
  std::vector<float> in = {1.0f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, -2.5f, 3.14159f, 1e-40f, 65504.0f, -0.0f,
                           std::numeric_limits<float>::infinity(), std::nanf("")};
  const int n = static_cast<int>(in.size());
  std::vector<unsigned short> bits(n);
  std::vector<float> back(n);
  std::vector<unsigned> pairs(n / 2);
  simt_test::bf16_convert(in.data(), bits.data(), back.data(), pairs.data(), n);
  CHECK(bits[1] == 0x3F80);  // tie -> even (1.0)
  CHECK(bits[2] == 0x3F82);  // tie -> even (1 + 2^-6)
  for (int i = 0; i + 1 < n; ++i) {
    CAPTURE(i);
    CHECK(bits[i] == bf16_bits(in[i]));
    CHECK(back[i] == bf16_value(bf16_bits(in[i])));
  }
  CHECK(bits[n - 1] == 0x7FFF);  // NaN: canonical
  for (int i = 0; i < n / 2; ++i) CHECK(pairs[i] == (unsigned(bits[2 * i + 1]) << 16 | bits[2 * i]));
}

// Tolerance of the mma tests: the model adds exact products in double and rounds once, so
// it is within 2^-24 |d| of the double reference. The bound used, 2^-22 (sum|a*b| + |c|), is
// a few ulps of the largest magnitude involved: loose enough for any accumulation order a
// faithful model (or hardware with fp32 accumulation over k <= 16) may use, and tight
// enough to catch a single misplaced fragment element (an error of order |a*b|).
TEST_CASE("simt: mma.m16n8k8 tf32 model against a double GEMM") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  for (bool round : {false, true}) {
    CAPTURE(round);
    std::vector<float> A(16 * 8), B(8 * 8), C(16 * 8), D(16 * 8);
    for (float& x : A) x = u(rng);
    for (float& x : B) x = u(rng);
    for (float& x : C) x = u(rng);
    simt_test::mma_tf32(A.data(), B.data(), C.data(), D.data(), round);
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 8; ++j) {
        double ab = 0, mag = 0;
        for (int k = 0; k < 8; ++k) {
          float a = round ? round_tf32(A[i * 8 + k]) : truncate_tf32(A[i * 8 + k]);
          float b = round ? round_tf32(B[k * 8 + j]) : truncate_tf32(B[k * 8 + j]);
          ab += double(a) * b;
          mag += std::fabs(double(a) * b);
        }
        // The kernel chains two mma: D = A*B + (A*B + C).
        const double ref = 2 * ab + C[i * 8 + j];
        CAPTURE(i);
        CAPTURE(j);
        CHECK(std::fabs(D[i * 8 + j] - ref) <= 0x1p-22 * (2 * mag + std::fabs(C[i * 8 + j])) * 2);
      }
    }
  }
}

TEST_CASE("simt: ldmatrix + mma.m16n8k16 bf16 model against a double GEMM") {
  std::mt19937 rng(8);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  std::vector<unsigned short> A(16 * 16), Bkn(16 * 8), Bnk(8 * 16);
  std::vector<float> C(16 * 8), D(16 * 8);
  for (auto& h : A) h = bf16_bits(u(rng));
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) Bnk[n * 16 + k] = Bkn[k * 8 + n] = bf16_bits(u(rng));
  for (float& x : C) x = u(rng);
  for (bool nk : {false, true}) {
    CAPTURE(nk);
    simt_test::mma_bf16(A.data(), nk ? Bnk.data() : Bkn.data(), nk, C.data(), D.data());
    for (int i = 0; i < 16; ++i) {
      for (int j = 0; j < 8; ++j) {
        double ref = C[i * 8 + j], mag = std::fabs(C[i * 8 + j]);
        for (int k = 0; k < 16; ++k) {
          double p = double(bf16_value(A[i * 16 + k])) * bf16_value(Bkn[k * 8 + j]);
          ref += p;
          mag += std::fabs(p);
        }
        CAPTURE(i);
        CAPTURE(j);
        CHECK(std::fabs(D[i * 8 + j] - ref) <= 0x1p-22 * mag);
      }
    }
  }
}

TEST_CASE("simt: ldmatrix x1/x2/x4 with and without .trans gathers rows from per-lane addresses") {
  std::vector<unsigned short> M(256);
  for (int e = 0; e < 256; ++e) M[e] = static_cast<unsigned short>(0x1000 * (e / 64) + e % 64);
  std::vector<int> perm(32);
  for (int i = 0; i < 32; ++i) perm[i] = (i * 13 + 5) % 32;  // rows scattered over shared memory
  std::vector<unsigned> out(6 * 32 * 4, 0xDEADBEEFu);
  simt_test::ldmatrix_all(M.data(), perm.data(), out.data());
  auto elem = [&](int i, int r, int c) { return unsigned(M[i * 64 + r * 8 + c]); };
  const int nums[3] = {1, 2, 4};
  for (int v = 0; v < 6; ++v) {
    const int num = nums[v % 3];
    const bool trans = v >= 3;
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < num; ++i) {
        const int q = lane / 4, p = 2 * (lane % 4);
        const unsigned lo = trans ? elem(i, p, q) : elem(i, q, p);
        const unsigned hi = trans ? elem(i, p + 1, q) : elem(i, q, p + 1);
        CAPTURE(v);
        CAPTURE(lane);
        CAPTURE(i);
        CHECK(out[(v * 32 + lane) * 4 + i] == (lo | hi << 16));
      }
    }
  }
}

TEST_CASE("simt: cp.async completes at the wait, not at a barrier") {
  std::vector<float> src(128), out(128);
  for (int i = 0; i < 128; ++i) src[i] = static_cast<float>(i) + 0.5f;
  simt_test::cp_async_copy(src.data(), out.data(), 0);
  CHECK(out == src);

  // Forgot to wait: the barrier does not complete the copies, shared memory is stale (NaN).
  simt_test::cp_async_copy(src.data(), out.data(), 1);
  for (float x : out) CHECK(std::isnan(x));

  // wait_group 1 with two groups committed: the first group has landed, the second not.
  simt_test::cp_async_copy(src.data(), out.data(), 2);
  for (int i = 0; i < 64; ++i) CHECK(out[i] == src[i]);
  for (int i = 64; i < 128; ++i) CHECK(std::isnan(out[i]));

  // Waited, but no barrier before reading the other threads' copies: stale for some seeds.
  int stale = 0;
  for (uint64_t s = 1; s <= 4; ++s) {
    pg::simt::ScopedSeed seed(s);
    simt_test::cp_async_copy(src.data(), out.data(), 3);
    if (out != src) ++stale;
  }
  CHECK(stale >= 1);
}

TEST_CASE("simt: cvt.rna.tf32 rounding") {
  using pg::simt::tc::cvt_rna_tf32_bits;
  auto bits = [](float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    return u;
  };
  CHECK(cvt_rna_tf32_bits(1.0f) == 0x3F800000u);
  CHECK(cvt_rna_tf32_bits(1.0f + 0x1p-11f) == 0x3F802000u);   // tie: away from zero
  CHECK(cvt_rna_tf32_bits(-1.0f - 0x1p-11f) == 0xBF802000u);  // tie: away from zero
  CHECK(cvt_rna_tf32_bits(1.0f + 0x1p-12f) == 0x3F800000u);   // below half: down
  CHECK(cvt_rna_tf32_bits(std::numeric_limits<float>::infinity()) == 0x7F800000u);
  CHECK(std::isnan(pg::simt::tc::u2f(cvt_rna_tf32_bits(std::nanf("")))));
  CHECK(cvt_rna_tf32_bits(std::numeric_limits<float>::max()) == 0x7F800000u);  // rounds up to inf
  CHECK((cvt_rna_tf32_bits(3.14159f) & 0x1FFFu) == 0u);
  CHECK(cvt_rna_tf32_bits(3.14159f) == (bits(3.14159f) + 0x1000u) / 0x2000u * 0x2000u);
}
