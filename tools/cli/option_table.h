// The command line's face of capi/saliency.h's option tables: each option of a table becomes a
// CLI11 flag of the same name, help and default, whose value goes through the table's own
// parser, the parser pg_saliency_options_set uses. A value the parser refuses is a usage error
// (exit 2, "--name: why"); what the model or the other options decide is checked later.
#pragma once
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "capi/saliency.h"
#include "core/error.h"

namespace pg::cli {

template <class S>
void add_table_options(CLI::App* app, const std::vector<api::Option<S>>& table, S& target) {
  for (const api::Option<S>& o : table) {
    const std::string flag = std::string("--") + o.name;
    auto set = o.set;
    if (o.flag) {
      app->add_flag_function(
          flag, [&target, set](std::int64_t count) { set(target, count > 0 ? "true" : "false"); }, o.help);
      continue;
    }
    CLI::Option* opt = app->add_option_function<std::string>(
        flag, [&target, set](const std::string& v) { set(target, v); }, o.help);
    const std::string prefix = flag + ": ";
    opt->check(CLI::Validator(
        [set, prefix](std::string& v) {
          S probe;
          try {
            set(probe, v);
            return std::string();
          } catch (const Error& e) {
            // CLI11 names the option itself.
            std::string why = e.what();
            return why.rfind(prefix, 0) == 0 ? why.substr(prefix.size()) : why;
          }
        },
        ""));
    if (o.show_default) opt->default_str(o.show(S{}));
  }
}

}  // namespace pg::cli
