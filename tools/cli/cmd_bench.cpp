#include "tools/cli/commands.h"

namespace pg::cli {
void register_bench(CLI::App& app) { (void)app; }  // placeholder until written
}  // namespace pg::cli
