// tools/lib/progress: a ProgressGroup gathers the Progress objects of several worker threads
// (`--gpu all`): their totals add up, their items and skips are counted once, in the group;
// without a group a Progress counts alone, as before.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include "core/error.h"
#include "tools/lib/progress.h"

using namespace pg;

TEST_CASE("progress group: the workers' Progress objects report into one group") {
  {
    io::ProgressGroup group("test (3 GPUs)");
    std::vector<std::thread> workers;
    for (int k = 0; k < 3; ++k)
      workers.emplace_back([k]() {
        io::Progress p("test " + std::to_string(k) + "/3", 100 + k);
        for (int i = 0; i < 100 + k; ++i) {
          if (i % 10 == 0) p.skip();
          else p.advance();
        }
        CHECK(p.skipped() == 10 + (k > 0 ? 1 : 0));
        p.summary("nothing");  // prints nothing: the group says it
      });
    for (auto& w : workers) w.join();
    CHECK(group.total() == 303);
    CHECK(group.done() == 303);
    CHECK(group.skipped() == 32);
    // One group at a time.
    CHECK_THROWS_AS(io::ProgressGroup{"second"}, Error);
  }
  // Removed with its destructor: a Progress counts alone again.
  io::Progress alone("alone", 2);
  alone.skip();
  CHECK(alone.skipped() == 1);
  io::ProgressGroup again("again");
  CHECK(again.total() == 0);
}
