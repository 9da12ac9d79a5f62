// The scalar arithmetic of SiLU, sigmoid and the exact GELU, shared by the CPU kernels
// (kernels/cpu/activations.cpp and gelu.cpp, whose loops the compiler vectorises) and their CUDA
// twins (kernels/cuda/activations.cu and gelu.cu). Every function is a fixed sequence of IEEE-754
// double operations, each rounded on its own (+, -, *, /, float <-> double conversions,
// compares, selects and integer bit operations; no FMA, no library call), so a vector lane, the
// scalar tail, any instruction set, the host SIMT runtime and a GPU (through __dadd_rn,
// __dmul_rn, __ddiv_rn) all give the same bits. The float result is the double one rounded once.
//
//   exp_d(a)     exp(a) for a in [-110, 89]: a = n ln2 + r, |r| <= ln2/2 (one rounded ln 2: the
//                reduction's error is < 4e-15 for |n| <= 160), exp(r) = 1 + r + r^2 q(r) with q of degree 6 (a least-squares fit on
//                Chebyshev nodes), times 2^n built in the exponent bits. Relative error < 5e-12.
//   erfcx_d(t)   exp(t^2) erfc(t) for t in [0, 10.5]: a degree-14 polynomial in
//                s = (11/7 t - 3) / (t + 3), which maps [0, 10.5] onto [-1, 1] (a least-squares
//                fit on Chebyshev nodes against 40-digit values). Relative error < 1.3e-12.
// So the float results below are correctly rounded but for double-rounding cases (a double
// value within ~1e-11 relative of a float midpoint): at most 0.5 ulp plus a hair. One exception:
// the GELU gradient near its zero (x ~ -0.7518), where Phi(x) + x phi(x) cancels: there its
// absolute error is ~1e-13 * |dy| (tests/unit/test_activations.cpp measures both).
//
// The conventions of the float formulas the engine used before (kernels/cpu/activations.h):
// exp(-x) is +inf wherever float exp(-x) overflows (x <= -88.72283935546875), so SiLU gives -0
// and sigmoid 0 there (not the subnormal values below), -inf gives NaN for SiLU and its
// gradient; GELU gives x for large x and its float underflow (-0) for very negative x, NaN at
// -inf (x * 0) and in the gradient at +-inf (x * pdf = inf * 0), as the double formulas did.
// defines: pg::kernels::smooth::{exp_d, erfcx_d, silu, sigmoid, silu_grad, gelu, gelu_grad}
#pragma once

#if !defined(__CUDA_ARCH__)
#include <cstdint>
#include <cstring>
#endif

// Which compiler: a .cu file includes kernels/cuda/compat.h before this header, which sets
// PG_SIMT to 0 under nvcc and to 1 on the SIMT runtime; a CPU source has no PG_SIMT. (Only the
// compat headers test the compiler itself: tests/checks/device_seam.sh.)
#if defined(PG_SIMT) && !PG_SIMT
#define PG_SMOOTH_NVCC 1
#define PG_SMOOTH_FN __host__ __device__ __forceinline__
#else
#define PG_SMOOTH_NVCC 0
#define PG_SMOOTH_FN inline
#endif

// Each product and sum rounded on its own in host code (GNU C++ would contract a * b + c into an
// FMA under -march=native), no-trapping-math so that the selects below become vector blends (it
// changes no value; the callers' files use the same options, so these functions inline there);
// under nvcc the _rn intrinsics spell the rounding out.
#if !PG_SMOOTH_NVCC
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off", "no-trapping-math")
#endif
#endif

namespace pg::kernels::smooth {

#if defined(__CUDA_ARCH__)
PG_SMOOTH_FN double add(double a, double b) { return __dadd_rn(a, b); }
PG_SMOOTH_FN double sub(double a, double b) { return __dadd_rn(a, -b); }
PG_SMOOTH_FN double mul(double a, double b) { return __dmul_rn(a, b); }
PG_SMOOTH_FN double div(double a, double b) { return __ddiv_rn(a, b); }
PG_SMOOTH_FN unsigned long long bits_of(double a) { return (unsigned long long)__double_as_longlong(a); }
PG_SMOOTH_FN double from_bits(unsigned long long b) { return __longlong_as_double((long long)b); }
#else
PG_SMOOTH_FN double add(double a, double b) { return a + b; }
PG_SMOOTH_FN double sub(double a, double b) { return a - b; }
PG_SMOOTH_FN double mul(double a, double b) { return a * b; }
PG_SMOOTH_FN double div(double a, double b) { return a / b; }
PG_SMOOTH_FN unsigned long long bits_of(double a) {
  unsigned long long b;
  std::memcpy(&b, &a, sizeof b);
  return b;
}
PG_SMOOTH_FN double from_bits(unsigned long long b) {
  double a;
  std::memcpy(&a, &b, sizeof a);
  return a;
}
#endif

// exp(a), a in [-110, 89] (callers clamp; NaN gives NaN).
PG_SMOOTH_FN double exp_d(double a) {
  constexpr double kLog2e = 1.4426950408889634074;
  constexpr double kShift = 6755399441055744.0;            // 1.5 * 2^52: adding it rounds to an integer
  constexpr double kLn2 = 0.69314718055994530942;
  const double t = add(mul(a, kLog2e), kShift);  // its last mantissa bits hold n
  const double n = sub(t, kShift);
  // |n| <= 160: n * kLn2 is off n ln 2 by < 4e-15 with its rounding, far inside the budget.
  const double r = sub(a, mul(n, kLn2));
  double q = 2.4869216267204257e-05;
  q = add(mul(q, r), 0.00019900452850662854);
  q = add(mul(q, r), 0.0013888837068484587);
  q = add(mul(q, r), 0.008333297052756011);
  q = add(mul(q, r), 0.041666666793701);
  q = add(mul(q, r), 0.16666666722255524);
  q = add(mul(q, r), 0.49999999999951306);
  const double p = add(1.0, add(r, mul(mul(r, r), q)));
  // 2^n: (n + 1023) in the exponent field; the shift drops kShift's own bits.
  const double scale = from_bits((bits_of(t) + 1023ull) << 52);
  return mul(p, scale);
}

// exp(t^2) erfc(t), t in [0, 10.5].
PG_SMOOTH_FN double erfcx_d(double t) {
  const double s = div(sub(mul(t, 1.5714285714285716), 3.0), add(t, 3.0));
  double p = 2.5457007407585878e-08;
  p = add(mul(p, s), -4.7389046813337285e-08);
  p = add(mul(p, s), -3.968791677232957e-07);
  p = add(mul(p, s), 6.713480998144303e-07);
  p = add(mul(p, s), 5.366560577080677e-06);
  p = add(mul(p, s), -1.1491116628703376e-05);
  p = add(mul(p, s), -7.132741817265162e-05);
  p = add(mul(p, s), 0.0003028059735568824);
  p = add(mul(p, s), 0.00051713489994343);
  p = add(mul(p, s), -0.008248285003417996);
  p = add(mul(p, s), 0.03716437523080413);
  p = add(mul(p, s), -0.10667478647063142);
  p = add(mul(p, s), 0.22366885002587109);
  p = add(mul(p, s), -0.35862291746928215);
  p = add(mul(p, s), 0.26546192199701013);
  return p;
}

// exp(-x) as the float formulas saw it: +inf where float exp(-x) overflows. NaN gives a finite
// value (the callers' own operations on x carry the NaN, sigmoid's select).
PG_SMOOTH_FN double exp_neg(float x) {
  const double a = -double(x);
  const double e = exp_d(a > -110.0 ? a : -110.0);  // above 88.7, replaced below
  return a >= 88.72283935546875 ? from_bits(0x7ff0000000000000ull) : e;
}

// x / (1 + exp(-x))
PG_SMOOTH_FN float silu(float x) { return float(div(double(x), add(1.0, exp_neg(x)))); }
// 1 / (1 + exp(-x))
PG_SMOOTH_FN float sigmoid(float x) {
  const float y = float(div(1.0, add(1.0, exp_neg(x))));
  return x != x ? x : y;
}
// g * s * (1 + x * (1 - s)), s = sigmoid(x)
PG_SMOOTH_FN float silu_grad(float x, float g) {
  const double s = div(1.0, add(1.0, exp_neg(x)));
  return float(mul(double(g), mul(s, add(1.0, mul(double(x), sub(1.0, s))))));
}

// Phi(x) = P(N(0,1) <= x) and ex = exp(-x^2 / 2); both exactly 0 (Phi 0 or 1) beyond
// |x| > 14.83, where exp(-x^2 / 2) < e^-110.
PG_SMOOTH_FN double gelu_phi(double x, double& ex) {
  const double a = mul(-0.5, mul(x, x));  // exact: x is a float
  const bool beyond = a < -110.0;
  ex = beyond ? 0.0 : exp_d(a > -110.0 ? a : -110.0);
  const double t = mul(x < 0 ? -x : x, 0.70710678118654752440);
  const double e = mul(ex, erfcx_d(t < 10.5 ? t : 10.5));  // erfc(|x| / sqrt 2)
  const double half = mul(0.5, e);
  return x < 0 ? half : sub(1.0, half);
}
// x Phi(x)
PG_SMOOTH_FN float gelu(float x) {
  double ex;
  const double phi = gelu_phi(double(x), ex);
  return float(mul(double(x), phi));
}
// dy (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
PG_SMOOTH_FN float gelu_grad(float x, float dy) {
  double ex;
  const double xd = double(x);
  const double phi = gelu_phi(xd, ex);
  return float(mul(double(dy), add(phi, mul(xd, mul(ex, 0.39894228040143267794)))));
}

}  // namespace pg::kernels::smooth

#if !PG_SMOOTH_NVCC && defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
