// parchgrad/stats_math: moments and merge exactness, normal tails, t-tests, Shapiro-Wilk
// special cases. Reference values from scipy 1.10 / mpmath (40 digits).
// (tests/python/test_stats_math.py compares against scipy on many more samples.)
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "parchgrad/stats_math.h"

namespace st = pg::stats;

namespace {

double rel_err(double got, double want) {
  return std::fabs(got - want) / std::max(std::fabs(want), 1e-300);
}

// Two-pass mean and m2 in long double (64-bit significand on x86).
void two_pass(const std::vector<double>& x, double& mean, double& m2) {
  long double s = 0;
  for (double v : x) s += v;
  const long double m = s / static_cast<long double>(x.size());
  long double q = 0;
  for (double v : x) q += (v - m) * (v - m);
  mean = static_cast<double>(m);
  m2 = static_cast<double>(q);
}

std::vector<double> gap_like(size_t n, double offset, double scale, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> x(n);
  for (double& v : x) v = offset + scale * std::max(nd(rng) + 0.3, 0.0);
  return x;
}

// Splits [0, n) into random contiguous shards.
std::vector<size_t> random_cuts(size_t n, std::mt19937_64& rng) {
  std::uniform_int_distribution<size_t> nshards(1, 40), pos(0, n);
  std::vector<size_t> cuts{0, n};
  for (size_t k = nshards(rng); k > 1; --k) cuts.push_back(pos(rng));
  std::sort(cuts.begin(), cuts.end());
  return cuts;
}

}  // namespace

TEST_CASE("stats: Welford moments and their merge") {
  const std::vector<double> x = gap_like(10000, 0.0, 1.0, 1);
  double mean, m2;
  two_pass(x, mean, m2);
  st::Moments one;
  for (double v : x) one.add(v);
  CHECK(one.n == 10000);
  CHECK(rel_err(one.mean, mean) < 1e-13);
  CHECK(rel_err(one.m2, m2) < 1e-12);
  CHECK(rel_err(one.variance_unbiased(), m2 / 9999) < 1e-12);

  std::mt19937_64 rng(2);
  const std::vector<size_t> cuts = random_cuts(x.size(), rng);
  st::Moments merged;
  for (size_t s = 0; s + 1 < cuts.size(); ++s) {
    st::Moments shard;
    for (size_t i = cuts[s]; i < cuts[s + 1]; ++i) shard.add(x[i]);
    merged.merge(shard);
  }
  CHECK(merged.n == 10000);
  CHECK(rel_err(merged.mean, mean) < 1e-13);
  CHECK(rel_err(merged.m2, m2) < 1e-12);

  st::Moments empty, a;
  a.add(2.0);
  CHECK(std::isnan(a.variance_unbiased()));
  a.merge(empty);
  empty.merge(a);
  CHECK(empty.n == 1);
  CHECK(empty.mean == 2.0);
}

TEST_CASE("stats: ClassMoments shards merge to the one-pass result bitwise") {
  // Plain GAP-like values, and values with a large offset (m2 by cancellation).
  for (double offset : {0.0, 1e4}) {
    const std::vector<double> x = gap_like(10000, offset, 0.5, 3);
    st::ClassMoments one;
    for (double v : x) one.add(v);
    double mean, m2;
    two_pass(x, mean, m2);
    CHECK(one.n == 10000);
    CHECK(rel_err(one.mean(), mean) < 1e-15);
    CHECK(rel_err(one.m2(), m2) < 1e-12);

    std::mt19937_64 rng(4);
    for (int trial = 0; trial < 50; ++trial) {
      const std::vector<size_t> cuts = random_cuts(x.size(), rng);
      std::vector<st::ClassMoments> shards(cuts.size() - 1);
      for (size_t s = 0; s + 1 < cuts.size(); ++s)
        for (size_t i = cuts[s]; i < cuts[s + 1]; ++i) shards[s].add(x[i]);
      // Merge in shard order, and in a shuffled order.
      st::ClassMoments in_order;
      for (const auto& s : shards) in_order.merge(s);
      std::shuffle(shards.begin(), shards.end(), rng);
      st::ClassMoments shuffled;
      for (const auto& s : shards) shuffled.merge(s);
      for (const st::ClassMoments* m : {&in_order, &shuffled}) {
        CHECK(m->n == one.n);
        CHECK(m->mean() == one.mean());
        CHECK(m->m2() == one.m2());
      }
    }
  }
}

TEST_CASE("stats: ClassMoments rest = total minus class") {
  const std::vector<double> x = gap_like(3000, 0.0, 2.0, 5);
  st::ClassMoments total, part, rest;
  for (size_t i = 0; i < x.size(); ++i) {
    total.add(x[i]);
    (i % 7 == 3 ? part : rest).add(x[i]);
  }
  const st::ClassMoments diff = total.minus(part);
  CHECK(diff.n == rest.n);
  CHECK(rel_err(diff.mean(), rest.mean()) < 1e-15);
  CHECK(rel_err(diff.m2(), rest.m2()) < 1e-14);

  st::ClassMoments empty;
  CHECK(empty.mean() == 0.0);
  CHECK(empty.m2() == 0.0);
  CHECK(std::isnan(empty.variance_unbiased()));
  st::ClassMoments same;
  for (int i = 0; i < 5; ++i) same.add(0.1);
  CHECK(same.m2() == 0.0);  // never negative
}

TEST_CASE("stats: double-double helpers") {
  const st::DoubleDouble s = st::dd_add(st::DoubleDouble{1.0, 0.0}, 1e-20);
  CHECK(s.hi == 1.0);
  CHECK(s.lo == 1e-20);
  const st::DoubleDouble sq = st::dd_square(1.0 + 0x1p-30);  // 1 + 2^-29 + 2^-60
  CHECK(sq.hi == 1.0 + 0x1p-29);
  CHECK(sq.lo == 0x1p-60);
  const st::DoubleDouble q = st::dd_div(st::DoubleDouble{1.0, 0.0}, 3.0);
  const st::DoubleDouble back = st::dd_mul(q, st::DoubleDouble{3.0, 0.0});
  CHECK(std::fabs(back.hi - 1.0 + back.lo) < 1e-30);
}

TEST_CASE("stats: normal survival function in the tails") {
  struct Ref {
    double z, sf;
  };
  // mpmath ncdf(-z), 40 digits.
  const Ref refs[] = {{0.0, 0.5},
                      {1.0, 0.15865525393145705141},
                      {1.959963984540054, 0.025000000000000010876},
                      {5.0, 2.8665157187919391167e-7},
                      {10.0, 7.619853024160526066e-24},
                      {20.0, 2.7536241186062336951e-89},
                      {30.0, 4.9067139271481870595e-198},
                      {37.5, 4.6053530095819548438e-308},
                      {-3.0, 0.99865010196836990547}};
  for (const Ref& r : refs) {
    CAPTURE(r.z);
    CHECK(rel_err(st::normal_sf(r.z), r.sf) < 1e-13);
    CHECK(std::fabs(st::normal_cdf(-r.z) - r.sf) <= 1e-16 + 1e-13 * r.sf);
  }
  CHECK(st::normal_sf(-50.0) == 1.0);
  CHECK(st::normal_sf(40.0) < 1e-300);
  CHECK(st::normal_sf(INFINITY) == 0.0);
  CHECK(std::isnan(st::normal_sf(NAN)));
  CHECK(std::fabs(st::normal_quantile(0.025) + 1.959963984540054) < 1e-14);
  CHECK(st::normal_quantile(0.0) == -INFINITY);
  CHECK(std::isnan(st::normal_quantile(1.5)));
}

TEST_CASE("stats: one-sided t-tests") {
  auto moments = [](const std::vector<double>& v) {
    st::ClassMoments m;
    for (double x : v) m.add(x);
    return m;
  };
  const st::ClassMoments a = moments({1.2, 3.4, 2.2, 5.1, 4.0});
  const st::ClassMoments b = moments({0.3, 1.1, 2.5, 0.9});
  auto p = [](const st::ClassMoments& x, const st::ClassMoments& y, bool welch) {
    return st::ttest_greater_p(double(x.n), x.mean(), x.m2(), double(y.n), y.mean(), y.m2(),
                               welch);
  };
  // scipy.stats.ttest_ind(a, b, equal_var=..., alternative="greater").pvalue
  CHECK(rel_err(p(a, b, false), 0.028954683556139407) < 1e-12);
  CHECK(rel_err(p(a, b, true), 0.024625456198419892) < 1e-12);
  CHECK(rel_err(p(b, a, false), 0.97104531644386061) < 1e-12);
  CHECK(rel_err(p(b, a, true), 0.97537454380158017) < 1e-12);

  for (bool welch : {false, true}) {
    CAPTURE(welch);
    const st::ClassMoments one = moments({1.0});
    const st::ClassMoments c2 = moments({2.0, 2.0, 2.0});
    const st::ClassMoments c1 = moments({1.0, 1.0});
    CHECK(std::isnan(p(one, b, welch)));   // n < 2
    CHECK(std::isnan(p(b, one, welch)));
    CHECK(p(c2, c1, welch) == 0.0);        // zero variances, t = +inf
    CHECK(p(c1, c2, welch) == 1.0);        // t = -inf
    CHECK(std::isnan(p(c1, c1, welch)));   // 0 / 0
    CHECK(st::nan_to_one(p(c1, c1, welch)) == 1.0);
  }
  CHECK(st::nan_to_one(0.25) == 0.25);
  CHECK(rel_err(st::student_t_sf(2.0, 3.0), 0.069662984279421) < 1e-12);
}

TEST_CASE("stats: class_vs_rest_p equals the t-test of each class against the rest") {
  std::mt19937_64 rng(9);
  std::normal_distribution<double> nd(0.0, 1.0);
  const int k = 6;
  std::vector<std::vector<double>> per_class(k);
  for (int c = 0; c < k; ++c)
    for (int i = 0; i < 20 + 13 * c; ++i) per_class[c].push_back(0.2 * c + nd(rng));
  per_class[4].resize(1);  // one member: NaN
  per_class[5].clear();    // no member: NaN
  std::vector<st::ClassMoments> cls(k);
  for (int c = 0; c < k; ++c)
    for (double x : per_class[c]) cls[c].add(x);
  for (bool welch : {false, true}) {
    const std::vector<double> p = st::class_vs_rest_p(cls, welch);
    REQUIRE(p.size() == size_t(k));
    for (int c = 0; c < k; ++c) {
      st::ClassMoments rest;
      for (int o = 0; o < k; ++o)
        if (o != c)
          for (double x : per_class[o]) rest.add(x);
      const double want =
          st::ttest_greater_p(double(cls[c].n), cls[c].mean(), cls[c].m2(), double(rest.n),
                              rest.mean(), rest.m2(), welch);
      CAPTURE(c);
      if (c >= 4) {
        CHECK(std::isnan(p[c]));
      } else {
        CHECK(rel_err(p[c], want) < 1e-12);
      }
    }
  }
}

TEST_CASE("stats: Shapiro-Wilk") {
  CHECK_THROWS_AS(st::shapiro_wilk({}), pg::Error);
  CHECK_THROWS_AS(st::shapiro_wilk({1.0, 2.0}), pg::Error);
  CHECK_THROWS_AS(st::shapiro_wilk({1.0, 2.0}, st::ShapiroMode::Double), pg::Error);

  // scipy.stats.shapiro (1.10) values.
  const std::vector<double> x12 = {2.1, 3.4, 1.9, 5.6, 4.4, 3.3, 2.8, 4.0, 3.9, 4.7, 1.2, 3.1};
  st::ShapiroResult r = st::shapiro_wilk(x12);
  CHECK(r.w == 0.99025171995162964);
  CHECK(r.p == 0.99979686737060547);
  CHECK_FALSE(r.zero_range);
  r = st::shapiro_wilk({1.0, 2.0, 4.0, 8.0, 16.0});
  CHECK(r.w == 0.87610882520675659);
  CHECK(r.p == 0.29204869270324707);
  r = st::shapiro_wilk({0.0, 0.0, 1.0});
  CHECK(r.w == 0.7500000596046448);
  CHECK(r.p == -9.106917104872991e-07);

  // Double mode: same formulas in double; close to scipy where float is not limiting.
  r = st::shapiro_wilk(x12, st::ShapiroMode::Double);
  CHECK(rel_err(r.w, 0.99025171995162964) < 1e-6);
  CHECK(rel_err(r.p, 0.99979686737060547) < 1e-5);
  r = st::shapiro_wilk({0.0, 0.0, 1.0}, st::ShapiroMode::Double);
  CHECK(std::fabs(r.w - 0.75) < 1e-15);
  CHECK(r.p >= 0.0);
  CHECK(r.p < 1e-12);
  r = st::shapiro_wilk({0.0, 1.0, 2.0}, st::ShapiroMode::Double);
  CHECK(std::fabs(r.w - 1.0) < 1e-15);
  CHECK(std::fabs(r.p - 1.0) < 1e-6);

  for (st::ShapiroMode mode : {st::ShapiroMode::Scipy110, st::ShapiroMode::Double}) {
    r = st::shapiro_wilk(std::vector<double>(10, 0.3), mode);
    CHECK(r.zero_range);
    CHECK(r.w == 1.0);
    CHECK(r.p == 1.0);
    r = st::shapiro_wilk({1.0, NAN, 2.0, 3.0}, mode);
    CHECK(std::isnan(r.w));
    CHECK(std::isnan(r.p));
    CHECK(st::nan_to_one(r.p) == 1.0);
  }

  // Large sample (beyond AS R94's 5000): computed, normal data not rejected.
  std::mt19937_64 rng(7);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> big(20000);
  for (double& v : big) v = nd(rng);
  for (st::ShapiroMode mode : {st::ShapiroMode::Scipy110, st::ShapiroMode::Double}) {
    r = st::shapiro_wilk(big, mode);
    CHECK(r.w > 0.999);
    CHECK(r.p > 0.0);
    CHECK(r.p <= 1.0);
  }
}
