// Statistics behind ParchGrad's channel selection (method doc, sections 3 and 4): the
// Shapiro-Wilk normality test, one-sided two-sample t-tests, the normal survival function,
// and streaming per-class accumulators that can be merged across shards.
//
// Pure functions on doubles: no tensors, no I/O, no threads.
//
// NaN convention: a test that is undefined for its input (a group with fewer than 2
// values, zero variance in both groups with equal means, non-finite data) returns NaN as
// the raw result. ParchGrad treats such a channel as "not significant" / "not shown to be
// non-normal", i.e. p = 1: callers apply nan_to_one() where they consume p-values.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace pg::stats {

inline double nan_to_one(double p) { return std::isnan(p) ? 1.0 : p; }

// ---------------------------------------------------------------------------------------
// Shapiro-Wilk W test, Royston's algorithm (Applied Statistics AS R94, 1995).
//
// Two evaluations of the same algorithm:
//  - ShapiroMode::Scipy110 (default): what scipy.stats.shapiro gives in scipy <= 1.10,
//    whose AS R94 routine works in single precision. The sample is centred on its median
//    (in double, as scipy does), rounded to float, and W and p are computed in float with
//    the normal quantile of AS 111 and the normal tail area of AS 66 (in double), as that
//    routine does. W and p are float values widened to double. Observed to agree with
//    scipy 1.10 to the last bit (tests/python/test_stats_math.py). The single precision
//    limits the accuracy for large samples: for n >= 500 and W close to 1, p carries
//    relative errors of 1e-3 .. 1e-1 against an exact evaluation of the same formulas, and
//    p below about 1e-45 underflows to 0.
//  - ShapiroMode::Double: the same formulas in double precision with exact normal
//    quantiles and tail areas (Boost.Math / erfc). Against scipy 1.10 (measured): W within
//    4e-7 and p within 1e-5 relative for n <= 50; for n = 500 .. 20000 W differs by up to
//    5e-5 and p by up to ~10% (scipy's single-precision error, not this mode's).
//
// Both modes: n >= 3 is required (pg::Error otherwise). Samples larger than 5000 are
// computed as well (scipy only warns there: the p-value approximation was fitted up to
// 5000). A sample with zero range (all values equal after centring, or, in Scipy110 mode,
// a range below 1e-19) gives W = 1, p = 1 and zero_range = true, as scipy 1.10 does.
// A non-finite value anywhere gives W = p = NaN. For n = 3 the Scipy110 mode can return a
// p slightly below 0 (about -9e-7 at W = 0.75), as scipy does; Double mode clamps to 0.
enum class ShapiroMode { Scipy110, Double };

struct ShapiroResult {
  double w = NAN;
  double p = NAN;
  bool zero_range = false;  // the sample had (numerically) zero range: W = p = 1
};

ShapiroResult shapiro_wilk(std::vector<double> x, ShapiroMode mode = ShapiroMode::Scipy110);

// ---------------------------------------------------------------------------------------
// Normal distribution.

// 1 - Phi(z), accurate in the upper tail (via erfc: relative error ~1e-15 up to z ~ 38,
// where it underflows). normal_sf(NaN) = NaN.
double normal_sf(double z);
// Phi(z).
double normal_cdf(double z);
// Phi^-1(p) for 0 < p < 1 (Boost.Math); -inf / +inf at 0 / 1, NaN outside [0, 1].
double normal_quantile(double p);

// ---------------------------------------------------------------------------------------
// One-sided two-sample t-test, alternative "greater": H1 = mean of group 1 > mean of
// group 2. Groups are given by count n, mean and m2 = sum of squared deviations from the
// mean. welch = false: Student's t with pooled variance, df = n1 + n2 - 2. welch = true:
// Welch's t with Welch-Satterthwaite df (df = 1 where that is 0/0, as scipy does).
// p = survival function of Student's t at t (Boost.Math).
//
// Equals scipy.stats.ttest_ind(a, b, equal_var=not welch, alternative="greater").pvalue
// (scipy 1.10), including its special cases: NaN when n1 < 2 or n2 < 2 (scipy's ddof=1
// variance of one value is NaN) or when t is 0/0 (both variances zero and equal means);
// 0 or 1 when only the variances are zero (t = +inf / -inf).
double ttest_greater_p(double n1, double mean1, double m2_1, double n2, double mean2,
                       double m2_2, bool welch);

// Student's t survival function P(T > t) for df > 0 (Boost.Math); t = +-inf allowed.
double student_t_sf(double t, double df);

// ---------------------------------------------------------------------------------------
// Streaming moments, Welford's update with Chan et al.'s pairwise merge. Good to ~1e-15
// relative, but merging shards is not bitwise equal to one pass (floating point is not
// associative); use ClassMoments where that matters.
struct Moments {
  double n = 0, mean = 0, m2 = 0;
  void add(double x);
  void merge(const Moments& o);
  double variance_unbiased() const;  // m2 / (n - 1); NaN for n < 2
};

// A double-double number hi + lo (|lo| <= ulp(hi) / 2), about 106 significant bits.
struct DoubleDouble {
  double hi = 0, lo = 0;
  double value() const { return hi; }  // hi is the sum rounded to double
};
DoubleDouble dd_add(DoubleDouble a, DoubleDouble b);
DoubleDouble dd_add(DoubleDouble a, double b);
DoubleDouble dd_neg(DoubleDouble a);
DoubleDouble dd_mul(DoubleDouble a, DoubleDouble b);
DoubleDouble dd_div(DoubleDouble a, double b);
DoubleDouble dd_square(double x);  // x*x exactly (barring under/overflow)

// Per (class, channel) accumulator for the class-vs-rest tests: the count, the sum and the
// sum of squares, the sums kept in double-double. Mean and m2 are derived from the sums
// (m2 = sumsq - sum^2 / n, evaluated in double-double), and the "rest" of a class is the
// total minus that class, which is why sums rather than Welford moments are kept.
//
// What "merging shards equals one run" means here: every add and merge is an error-free
// double-double operation up to a relative error of about 2^-106 of the sums, so the
// results rounded to double (mean(), m2()) do not depend on how the values were split
// into shards or in which order shards are merged, except in the vanishingly rare case
// where the exact value lies within ~n * 2^-106 (relative) of a rounding boundary of
// double. The count is exact. m2 carries a relative error of about
// 2^-106 * (sumsq / m2) = 2^-106 * (1 + n mean^2 / m2): far below double rounding for any
// data whose coefficient of variation is above 1e-7.
struct ClassMoments {
  int64_t n = 0;
  DoubleDouble sum, sumsq;

  void add(double x);
  void merge(const ClassMoments& o);
  // The moments of this set without the values of `part` (which must be a subset):
  // count, sum and sum of squares subtracted.
  ClassMoments minus(const ClassMoments& part) const;

  double mean() const;               // 0 for n = 0
  double m2() const;                 // >= 0; 0 for n = 0
  double variance_unbiased() const;  // NaN for n < 2
};

// For one channel: given the moments of each class (index = class), the one-sided p-value
// of "class k > all other values" for every k (ttest_greater_p of class k against the
// total minus class k; Student or Welch). Raw results: NaN where the test is undefined
// (callers map NaN -> 1, see nan_to_one).
std::vector<double> class_vs_rest_p(const std::vector<ClassMoments>& classes, bool welch);
// Same with the total over all classes given (e.g. merged once for many uses).
std::vector<double> class_vs_rest_p(const std::vector<ClassMoments>& classes,
                                    const ClassMoments& total, bool welch);

}  // namespace pg::stats
