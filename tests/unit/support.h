// Helpers shared by the unit tests.
#pragma once
#include <string>

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

}  // namespace pg::test
