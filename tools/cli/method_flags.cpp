#include "tools/cli/method_flags.h"

#include "tools/cli/option_table.h"

namespace pg::cli {

void add_method_flags(CLI::App* app, MethodFlags& f) { add_table_options<MethodFlags>(app, api::method_options(), f); }

void add_saliency_flags(CLI::App* app, api::SaliencySettings& s) {
  add_table_options<api::SaliencySettings>(app, api::saliency_options(), s);
}

}  // namespace pg::cli
