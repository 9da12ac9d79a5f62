// Statistics of ParchGrad; see stats_math.h.
//
// Floating-point contraction (fusing a*b+c into one FMA) is switched off for this file:
// the Scipy110 Shapiro-Wilk mode reproduces single-precision results operation by
// operation, and the double-double arithmetic relies on each operation being rounded.

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "parchgrad/stats_math.h"

#include <algorithm>
#include <boost/math/distributions/normal.hpp>
#include <boost/math/distributions/students_t.hpp>
#include <boost/math/policies/policy.hpp>
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"

namespace pg::stats {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Boost.Math reports problems as NaN / inf instead of throwing.
using QuietPolicy = boost::math::policies::policy<
    boost::math::policies::domain_error<boost::math::policies::ignore_error>,
    boost::math::policies::pole_error<boost::math::policies::ignore_error>,
    boost::math::policies::overflow_error<boost::math::policies::ignore_error>,
    boost::math::policies::evaluation_error<boost::math::policies::ignore_error>,
    boost::math::policies::promote_double<false>>;

// --- Shapiro-Wilk (AS R94) -------------------------------------------------------------

// Polynomial c[0] + c[1] x + ... + c[k-1] x^(k-1), in the evaluation order of AS 181.2
// (Horner from the top coefficient, the constant added last).
template <class Real, size_t K>
Real poly(const Real (&c)[K], Real x) {
  static_assert(K >= 1);
  if constexpr (K == 1) {
    return c[0];
  } else {
    Real p = x * c[K - 1];
    for (size_t j = K - 2; j >= 1; --j) p = (p + c[j]) * x;
    return c[0] + p;
  }
}

// Normal quantile, AS 111 (Beasley and Springer 1977), single precision. This is the
// quantile scipy's AS R94 routine uses for the expected normal order statistics.
float quantile_as111(float p) {
  const float q = p - 0.5f;
  if (std::fabs(q) <= 0.42f) {
    const float r = q * q;
    const float num = ((-25.44106049637f * r + 41.39119773534f) * r - 18.61500062529f) * r +
                      2.50662823884f;
    const float den =
        (((3.13082909833f * r - 21.06224101826f) * r + 23.08336743743f) * r -
         8.47351093090f) * r + 1.0f;
    return q * num / den;
  }
  float r = q > 0.0f ? 1.0f - p : p;
  if (r <= 0.0f) return 0.0f;  // AS 111's fault value; p is always in (0, 1) here
  r = std::sqrt(-std::log(r));
  const float z = (((2.32121276858f * r + 4.85014127135f) * r - 2.29796479134f) * r -
                   2.78718931138f) /
                  ((1.63706781897f * r + 3.54388924762f) * r + 1.0f);
  return q < 0.0f ? -z : z;
}

// Upper tail area of the standard normal, AS 66 (Hill 1973), with the extended upper
// cut-off (38) of the routine scipy ships. Accurate to about 1e-9 relative.
double upper_tail_as66(double x) {
  bool up = true;
  double z = x;
  if (z < 0.0) {
    up = false;
    z = -z;
  }
  double tail;
  if (!(z <= 7.0 || (up && z <= 38.0))) {
    tail = 0.0;
  } else {
    const double y = 0.5 * z * z;
    if (z <= 1.28) {
      const double inner = y + 5.75885480458 - 29.8213557808 / (y + 2.62433121679 +
                                                                48.6959930692 / (y + 5.92885724438));
      tail = 0.5 - z * (0.398942280444 - 0.399903438504 * y / inner);
    } else {
      double d = z + 3.99019417011;
      d = z + 0.742380924027 + 30.789933034 / d;
      d = z + 4.8385912808 - 15.1508972451 / d;
      d = z - 0.151679116635 + 5.29330324926 / d;
      d = z + 3.98064794e-4 + 1.98615381364 / d;
      d = z - 3.8052e-8 + 1.00000615302 / d;
      tail = 0.398942280385 * std::exp(-y) / d;
    }
  }
  return up ? tail : 1.0 - tail;
}

// Constants of AS R94 in the working precision.
template <class Real>
struct SwConst {
  static constexpr Real c1[6] = {Real(0.0), Real(0.221157), Real(-0.147981),
                                 Real(-2.071190), Real(4.434685), Real(-2.706056)};
  static constexpr Real c2[6] = {Real(0.0), Real(0.042981), Real(-0.293762),
                                 Real(-1.752461), Real(5.682633), Real(-3.582633)};
  static constexpr Real c3[4] = {Real(0.5440), Real(-0.39978), Real(0.025054),
                                 Real(-6.714e-4)};
  static constexpr Real c4[4] = {Real(1.3822), Real(-0.77857), Real(0.062767),
                                 Real(-0.0020322)};
  static constexpr Real c5[4] = {Real(-1.5861), Real(-0.31082), Real(-0.083751),
                                 Real(0.0038915)};
  static constexpr Real c6[3] = {Real(-0.4803), Real(-0.082676), Real(0.0030302)};
  static constexpr Real g[2] = {Real(-2.273), Real(0.459)};
};
// Float constants are written as float literals (rounded once from decimal).
template <>
struct SwConst<float> {
  static constexpr float c1[6] = {0.0f, 0.221157f, -0.147981f, -2.071190f, 4.434685f,
                                  -2.706056f};
  static constexpr float c2[6] = {0.0f, 0.042981f, -0.293762f, -1.752461f, 5.682633f,
                                  -3.582633f};
  static constexpr float c3[4] = {0.5440f, -0.39978f, 0.025054f, -6.714e-4f};
  static constexpr float c4[4] = {1.3822f, -0.77857f, 0.062767f, -0.0020322f};
  static constexpr float c5[4] = {-1.5861f, -0.31082f, -0.083751f, 0.0038915f};
  static constexpr float c6[3] = {-0.4803f, -0.082676f, 0.0030302f};
  static constexpr float g[2] = {-2.273f, 0.459f};
};

struct FloatOps {
  using Real = float;
  static constexpr float small = 1e-19f;
  static constexpr float a_n3 = 0.70711f;  // sqrt(1/2) as AS R94 writes it
  static constexpr float pi6 = 1.909859f;  // 6 / pi
  static constexpr float stqr = 1.047198f;  // pi / 3
  static float quantile(float p) { return quantile_as111(p); }
  static float upper_tail(float z) { return static_cast<float>(upper_tail_as66(z)); }
  static bool zero_range(float range) { return range < small; }
};

struct DoubleOps {
  using Real = double;
  static constexpr double small = 1e-19;
  static constexpr double a_n3 = 0.70710678118654752440;
  static constexpr double pi6 = 1.90985931710274402923;   // 6 / pi
  static constexpr double stqr = 1.04719755119659774615;  // pi / 3
  static double quantile(double p) { return normal_quantile(p); }
  static double upper_tail(double z) { return normal_sf(z); }
  static bool zero_range(double range) { return !(range > 0.0); }
};

// AS R94 on a sorted sample y (no censoring). Follows the published algorithm's order of
// operations so that the float instantiation reproduces single-precision results.
template <class Ops>
ShapiroResult swilk_sorted(const std::vector<typename Ops::Real>& y) {
  using Real = typename Ops::Real;
  using C = SwConst<Real>;
  const int n = static_cast<int>(y.size());
  const int n2 = n / 2;
  const Real an = static_cast<Real>(n);

  // Coefficients a[0..n2-1] (antisymmetric: the full vector is -a[i] at position i and
  // +a[i] at position n-1-i, 0 at the middle of an odd sample).
  std::vector<Real> a(n2);
  if (n == 3) {
    a[0] = Ops::a_n3;
  } else {
    const Real an25 = an + Real(0.25);
    Real summ2 = 0;
    for (int i = 0; i < n2; ++i) {
      a[i] = Ops::quantile((static_cast<Real>(i + 1) - Real(0.375)) / an25);
      summ2 = summ2 + a[i] * a[i];
    }
    summ2 = summ2 * Real(2);
    const Real ssumm2 = std::sqrt(summ2);
    const Real rsn = Real(1) / std::sqrt(an);
    const Real a1 = poly(C::c1, rsn) - a[0] / ssumm2;
    int first;
    Real fac;
    if (n > 5) {
      first = 2;
      const Real a2 = -a[1] / ssumm2 + poly(C::c2, rsn);
      fac = std::sqrt((summ2 - Real(2) * (a[0] * a[0]) - Real(2) * (a[1] * a[1])) /
                      (Real(1) - Real(2) * (a1 * a1) - Real(2) * (a2 * a2)));
      a[1] = a2;
    } else {
      first = 1;
      fac = std::sqrt((summ2 - Real(2) * (a[0] * a[0])) / (Real(1) - Real(2) * (a1 * a1)));
    }
    a[0] = a1;
    for (int i = first; i < n2; ++i) a[i] = -a[i] / fac;
  }

  ShapiroResult res;
  const Real range = y[n - 1] - y[0];
  if (Ops::zero_range(range)) {
    res.w = 1.0;
    res.p = 1.0;
    res.zero_range = true;
    return res;
  }

  // Full signed coefficient vector.
  std::vector<Real> coef(n, Real(0));
  for (int i = 0; i < n2; ++i) {
    coef[i] = -a[i];
    coef[n - 1 - i] = a[i];
  }
  // Means of the coefficients and of the range-scaled sample (sums in sample order).
  Real sa = coef[0];
  Real sx = y[0] / range;
  for (int i = 1; i < n; ++i) {
    sx = sx + y[i] / range;
    if (coef[i] != Real(0)) sa = sa + coef[i];
  }
  sa = sa / an;
  sx = sx / an;
  Real ssa = 0, ssx = 0, sax = 0;
  for (int i = 0; i < n; ++i) {
    const Real asa = coef[i] - sa;
    const Real xsx = y[i] / range - sx;
    ssa = ssa + asa * asa;
    ssx = ssx + xsx * xsx;
    sax = sax + asa * xsx;
  }
  // 1 - W = 1 - sax^2 / (ssa ssx), formed without cancellation against 1.
  const Real ssassx = std::sqrt(ssa * ssx);
  const Real w1 = (ssassx - sax) * (ssassx + sax) / (ssa * ssx);
  const Real w = Real(1) - w1;
  res.w = static_cast<double>(w);

  if (n == 3) {
    // Exact distribution for n = 3.
    const Real pw = Ops::pi6 * (std::asin(std::sqrt(w)) - Ops::stqr);
    res.p = static_cast<double>(pw);
    return res;
  }
  Real yv = std::log(w1);
  const Real lxx = std::log(an);
  Real m, s;
  if (n <= 11) {
    const Real gamma = poly(C::g, an);
    if (yv >= gamma) {
      res.p = static_cast<double>(Ops::small);
      return res;
    }
    yv = -std::log(gamma - yv);
    m = poly(C::c3, an);
    s = std::exp(poly(C::c4, an));
  } else {
    m = poly(C::c5, lxx);
    s = std::exp(poly(C::c6, lxx));
  }
  res.p = static_cast<double>(Ops::upper_tail((yv - m) / s));
  return res;
}

}  // namespace

ShapiroResult shapiro_wilk(std::vector<double> x, ShapiroMode mode) {
  const size_t n = x.size();
  if (n < 3)
    throw Error("shapiro_wilk: needs at least 3 values, got " + std::to_string(n));
  if (n > static_cast<size_t>(1) << 24)
    throw Error("shapiro_wilk: sample too large (" + std::to_string(n) + " values)");
  for (double v : x)
    if (!std::isfinite(v)) return ShapiroResult{};
  std::sort(x.begin(), x.end());
  // Centre on the median (as numpy computes it), which scipy does before the test.
  const double med = (n % 2) ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2.0;
  if (mode == ShapiroMode::Scipy110) {
    std::vector<float> y(n);
    for (size_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i] - med);
    return swilk_sorted<FloatOps>(y);
  }
  for (double& v : x) v -= med;
  ShapiroResult r = swilk_sorted<DoubleOps>(x);
  if (n == 3 && r.p < 0.0) r.p = 0.0;
  return r;
}

// --- normal distribution ------------------------------------------------------------------

double normal_sf(double z) { return 0.5 * std::erfc(z * 0.70710678118654752440); }

double normal_cdf(double z) { return 0.5 * std::erfc(-z * 0.70710678118654752440); }

double normal_quantile(double p) {
  if (std::isnan(p) || p < 0.0 || p > 1.0) return kNaN;
  if (p == 0.0) return -std::numeric_limits<double>::infinity();
  if (p == 1.0) return std::numeric_limits<double>::infinity();
  return boost::math::quantile(boost::math::normal_distribution<double, QuietPolicy>(), p);
}

// --- t-tests --------------------------------------------------------------------------------

double student_t_sf(double t, double df) {
  if (std::isnan(t) || std::isnan(df) || !(df > 0.0)) return kNaN;
  if (std::isinf(t)) return t > 0 ? 0.0 : 1.0;
  const boost::math::students_t_distribution<double, QuietPolicy> dist(df);
  return boost::math::cdf(boost::math::complement(dist, t));
}

double ttest_greater_p(double n1, double mean1, double m2_1, double n2, double mean2,
                       double m2_2, bool welch) {
  if (!(n1 >= 2.0 && n2 >= 2.0)) return kNaN;
  double df, denom;
  if (welch) {
    const double vn1 = m2_1 / (n1 - 1.0) / n1;
    const double vn2 = m2_2 / (n2 - 1.0) / n2;
    const double s = vn1 + vn2;
    df = (s * s) / (vn1 * vn1 / (n1 - 1.0) + vn2 * vn2 / (n2 - 1.0));
    if (std::isnan(df)) df = 1.0;  // both variances zero: t is +-inf or NaN anyway
    denom = std::sqrt(s);
  } else {
    df = n1 + n2 - 2.0;
    const double svar = (m2_1 + m2_2) / df;
    denom = std::sqrt(svar * (1.0 / n1 + 1.0 / n2));
  }
  const double t = (mean1 - mean2) / denom;
  return student_t_sf(t, df);
}

// --- Welford moments ----------------------------------------------------------------------

void Moments::add(double x) {
  n += 1.0;
  const double d = x - mean;
  mean += d / n;
  m2 += d * (x - mean);
}

void Moments::merge(const Moments& o) {
  if (o.n == 0) return;
  if (n == 0) {
    *this = o;
    return;
  }
  const double nt = n + o.n;
  const double d = o.mean - mean;
  mean += d * (o.n / nt);
  m2 += o.m2 + d * d * (n * o.n / nt);
  n = nt;
}

double Moments::variance_unbiased() const { return n >= 2 ? m2 / (n - 1.0) : kNaN; }

// --- double-double --------------------------------------------------------------------------

namespace {

inline DoubleDouble two_sum(double a, double b) {
  const double s = a + b;
  const double bb = s - a;
  const double e = (a - (s - bb)) + (b - bb);
  return {s, e};
}

// Requires |a| >= |b| (or a == 0).
inline DoubleDouble fast_two_sum(double a, double b) {
  const double s = a + b;
  return {s, b - (s - a)};
}

inline DoubleDouble two_prod(double a, double b) {
  const double p = a * b;
  return {p, std::fma(a, b, -p)};
}

}  // namespace

DoubleDouble dd_add(DoubleDouble a, DoubleDouble b) {
  DoubleDouble s = two_sum(a.hi, b.hi);
  const DoubleDouble t = two_sum(a.lo, b.lo);
  s.lo += t.hi;
  s = fast_two_sum(s.hi, s.lo);
  s.lo += t.lo;
  return fast_two_sum(s.hi, s.lo);
}

DoubleDouble dd_add(DoubleDouble a, double b) {
  DoubleDouble s = two_sum(a.hi, b);
  s.lo += a.lo;
  return fast_two_sum(s.hi, s.lo);
}

DoubleDouble dd_neg(DoubleDouble a) { return {-a.hi, -a.lo}; }

DoubleDouble dd_mul(DoubleDouble a, DoubleDouble b) {
  DoubleDouble p = two_prod(a.hi, b.hi);
  p.lo += a.hi * b.lo + a.lo * b.hi;
  return fast_two_sum(p.hi, p.lo);
}

DoubleDouble dd_div(DoubleDouble a, double b) {
  const double q1 = a.hi / b;
  const DoubleDouble p = two_prod(q1, b);
  const double r = ((a.hi - p.hi) - p.lo) + a.lo;
  return fast_two_sum(q1, r / b);
}

DoubleDouble dd_square(double x) { return two_prod(x, x); }

// --- per-class moments ----------------------------------------------------------------------

void ClassMoments::add(double x) {
  ++n;
  sum = dd_add(sum, x);
  sumsq = dd_add(sumsq, dd_square(x));
}

void ClassMoments::merge(const ClassMoments& o) {
  n += o.n;
  sum = dd_add(sum, o.sum);
  sumsq = dd_add(sumsq, o.sumsq);
}

ClassMoments ClassMoments::minus(const ClassMoments& part) const {
  ClassMoments r;
  r.n = n - part.n;
  r.sum = dd_add(sum, dd_neg(part.sum));
  r.sumsq = dd_add(sumsq, dd_neg(part.sumsq));
  return r;
}

double ClassMoments::mean() const {
  if (n == 0) return 0.0;
  return dd_div(sum, static_cast<double>(n)).hi;
}

double ClassMoments::m2() const {
  if (n == 0) return 0.0;
  const DoubleDouble corr = dd_div(dd_mul(sum, sum), static_cast<double>(n));
  const double m = dd_add(sumsq, dd_neg(corr)).hi;
  return m > 0.0 ? m : 0.0;
}

double ClassMoments::variance_unbiased() const {
  return n >= 2 ? m2() / static_cast<double>(n - 1) : kNaN;
}

std::vector<double> class_vs_rest_p(const std::vector<ClassMoments>& classes,
                                    const ClassMoments& total, bool welch) {
  std::vector<double> p(classes.size());
  for (size_t k = 0; k < classes.size(); ++k) {
    const ClassMoments& c = classes[k];
    const ClassMoments rest = total.minus(c);
    p[k] = ttest_greater_p(static_cast<double>(c.n), c.mean(), c.m2(),
                           static_cast<double>(rest.n), rest.mean(), rest.m2(), welch);
  }
  return p;
}

std::vector<double> class_vs_rest_p(const std::vector<ClassMoments>& classes, bool welch) {
  ClassMoments total;
  for (const ClassMoments& c : classes) total.merge(c);
  return class_vs_rest_p(classes, total, welch);
}

}  // namespace pg::stats
