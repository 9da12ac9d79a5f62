// Helpers shared by the unit tests.
#pragma once
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"

namespace pg::test {

// Runs f; returns the message of the pg::Error it throws, or "" when it throws nothing (so a
// check on the message fails when an error was expected, and `== ""` says none was).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const pg::Error& e) {
    return e.what();
  }
  return "";
}

// n normal draws with standard deviation `scale`, a fixed function of the seed.
inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace pg::test
