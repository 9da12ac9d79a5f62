#include "nn/profile.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

namespace pg::nn::profile {

namespace {
bool g_on = false;
std::mutex g_mu;
struct Counter {
  double seconds = 0, flops = 0;
  long calls = 0;
};
std::map<std::string, Counter> g_counters;
}  // namespace

void enable(bool on) { g_on = on; }
bool enabled() { return g_on; }

void add(const std::string& name, double seconds, double flops) {
  std::lock_guard<std::mutex> lock(g_mu);
  Counter& c = g_counters[name];
  c.seconds += seconds;
  c.flops += flops;
  ++c.calls;
}

void report(FILE* out) {
  std::lock_guard<std::mutex> lock(g_mu);
  std::vector<std::pair<std::string, Counter>> rows(g_counters.begin(), g_counters.end());
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.seconds > b.second.seconds; });
  double total = 0;
  for (auto& r : rows) total += r.second.seconds;
  std::fprintf(out, "%-28s %8s %9s %6s %9s\n", "op", "calls", "seconds", "share", "GFLOP/s");
  for (auto& [name, c] : rows)
    std::fprintf(out, "%-28s %8ld %9.3f %5.1f%% %9.1f\n", name.c_str(), c.calls, c.seconds,
                 total > 0 ? 100 * c.seconds / total : 0, c.seconds > 0 ? c.flops / c.seconds / 1e9 : 0);
  g_counters.clear();
}

}  // namespace pg::nn::profile
