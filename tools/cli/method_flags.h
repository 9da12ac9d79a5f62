// The flags that choose an attribution method and its ParchGrad settings, shared by
// `parchgrad saliency` and `parchgrad eval`, and the configurations built from them. They are
// capi/saliency.h's option table and code, the ones the C API runs (pg_saliency_options_set,
// pg_saliency): the command line registers the table's options as its flags.
#pragma once
#include <CLI/CLI.hpp>

#include "capi/saliency.h"

namespace pg::cli {

using api::build_configs;
using api::Config;
using api::MethodFlags;
using api::MethodResources;
using api::parchgrad_options;
using api::settings_json;
using api::split_list;

// --stats, --alpha, --quantile, --shapiro-threshold, --gamma, --no-variance-conservation,
// --exact-variance, --layers, --ig-steps, --ig-baseline, --ig-blur-sigma, --sg-samples,
// --sg-sigma, --sg-noise, --seed, --gradcam-layer (api::method_options()).
void add_method_flags(CLI::App* app, MethodFlags& f);

// --method, --parchgrad, --batch, --threads (api::saliency_options()).
void add_saliency_flags(CLI::App* app, api::SaliencySettings& s);

}  // namespace pg::cli
