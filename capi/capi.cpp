// The C API (capi/include/parchgrad/parchgrad.h) over the engine: argument checks, the C++
// calls the command line makes (capi/saliency.h), results copied out, every exception turned
// into a result code and a thread-local message. Nothing here prints.
#include "capi/include/parchgrad/parchgrad.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "capi/dataset.h"
#include "capi/saliency.h"
#include "core/error.h"
#include "nn/backend.h"
#include "nn/model.h"
#include "parchgrad/attribution.h"
#include "tools/lib/image_io.h"
#include "tools/lib/preprocess_presets.h"
#include "weights/class_names.h"

struct pg_model {
  std::unique_ptr<pg::nn::Model> model;
  std::string device = "cpu";
  int gpu = 0;
  std::string weights;
  std::vector<std::string> names;
  std::string preset;  // the model's own preprocessing preset's name
};

struct pg_saliency_options {
  pg::api::SaliencySettings settings;
  pg::api::DeviceSettings device;
  pg::api::MethodResources resources;
};

// The settings of pg_stats_run: `parchgrad stats`'s flags that change the file.
struct pg_stats_options {
  std::string labels, test = "student";
  int batch = 0;                 // 0: 16
  pg::api::SaliencySettings pre;  // only preprocess, resize, crop and interpolation are read
};

namespace {

thread_local std::string t_error;

// A device runs one call at a time (its library settings are set per call); models on
// different devices run concurrently, each call on its calling thread's device (the runtime
// keeps one state per device: nn/gpu/runtime.h).
std::mutex& device_mutex(int gpu) {
  static std::mutex mu[64];
  return mu[gpu >= 0 && gpu < 64 ? gpu : 0];
}

// An error of the API's own checks, with its code.
struct ApiError : pg::Error {
  int code;
  ApiError(int c, const std::string& msg) : pg::Error(msg), code(c) {}
};

[[noreturn]] void fail(int code, const std::string& msg) { throw ApiError(code, msg); }

// Runs f, turning every exception into a result code (pg::Error: `engine_code`) and the
// calling thread's message.
template <class F>
int guard(int engine_code, F&& f) noexcept {
  try {
    f();
    return PG_OK;
  } catch (const ApiError& e) {
    try { t_error = e.what(); } catch (...) {}
    return e.code;
  } catch (const pg::Error& e) {
    try { t_error = e.what(); } catch (...) {}
    return engine_code;
  } catch (const std::bad_alloc&) {
    try { t_error = "out of memory"; } catch (...) {}
    return PG_ERR_MEMORY;
  } catch (const std::exception& e) {
    try { t_error = std::string("internal error: ") + e.what(); } catch (...) {}
    return PG_ERR_INTERNAL;
  } catch (...) {
    try { t_error = "internal error: unknown exception"; } catch (...) {}
    return PG_ERR_INTERNAL;
  }
}

// New options holding the defaults; NULL (and the message) when out of memory.
template <class Options>
Options* new_options() noexcept {
  try {
    return new Options();
  } catch (...) {
    try { t_error = "out of memory"; } catch (...) {}
    return nullptr;
  }
}

void need(const void* p, const char* function, const char* what) {
  if (!p) fail(PG_ERR_ARGUMENT, std::string(function) + ": " + what + " is NULL");
}

// "cpu", "cuda", "cuda:I" -> (device, index).
void parse_device(const char* spec, std::string* device, int* index) {
  const std::string s = spec ? spec : "";
  *index = 0;
  if (s.empty() || s == "cpu") {
    *device = "cpu";
    return;
  }
  if (s == "cuda") {
    *device = "cuda";
    return;
  }
  if (s.rfind("cuda:", 0) == 0 && s.size() > 5 && s.size() < 9 &&
      s.find_first_not_of("0123456789", 5) == std::string::npos) {
    *device = "cuda";
    *index = std::atoi(s.c_str() + 5);
    return;
  }
  fail(PG_ERR_ARGUMENT, "pg_model_load: device '" + pg::printable(s) + "' is not cpu, cuda or cuda:I");
}

bool has_cuda() { return std::strcmp(pg::nn::device_backend().runtime_name(), "none") != 0; }

// The options of `parchgrad saliency` that are not saliency settings, and where they went.
const char* not_a_saliency_option(const std::string& name) {
  static const char* const output[] = {"out", "o", "colormap", "overlay-opacity", "explain-masks", "compare",
                                       "all-targets", "classes"};
  static const char* const model[] = {"weights", "model", "device", "gpu"};
  for (const char* n : output)
    if (name == n) return "an option of the command line's file output, not a saliency setting";
  for (const char* n : model)
    if (name == n) return "chosen when the model is loaded (pg_model_load), not a saliency setting";
  if (name == "target") return "given per call (the targets argument of pg_saliency), not a saliency setting";
  // (In the option table for the command line's images; pg_saliency takes normalised inputs.)
  for (const char* n : {"preprocess", "resize", "crop", "interpolation"})
    if (name == n) return "the images' preprocessing, done before pg_saliency (pg_preprocess_preset_u8), not a saliency setting";
  return nullptr;
}

// The saliency of a batch: the command line's code path (capi/saliency.h) on a caller's buffers.
void saliency(pg_model* m, const float* x, int n, int h, int w, const int* targets, int k,
              const pg_saliency_options* o, float* maps, int* resolved, float* logits, const char* fn) {
  need(m, fn, "the model");
  need(x, fn, "x");
  need(maps, fn, "maps");
  if (n < 1) fail(PG_ERR_ARGUMENT, std::string(fn) + ": n = " + std::to_string(n) + " (at least 1 sample)");
  if (h < 1 || w < 1)
    fail(PG_ERR_ARGUMENT, std::string(fn) + ": h x w = " + std::to_string(h) + " x " + std::to_string(w) +
                              " (both must be at least 1)");
  if (k < 1) fail(PG_ERR_ARGUMENT, std::string(fn) + ": k = " + std::to_string(k) + " (at least 1 target set)");
  // Sizes whose products stay far from overflow (2^36 floats is 256 GiB).
  if (double(n) * 3.0 * double(h) * double(w) * double(k) > double(int64_t(1) << 36))
    fail(PG_ERR_ARGUMENT, std::string(fn) + ": n x 3 x h x w x k is too large");
  const pg::nn::Model& model = *m->model;
  const int K = model.num_classes();
  std::vector<std::vector<int>> sets(size_t(k), std::vector<int>(size_t(n), -1));
  if (targets) {
    for (int j = 0; j < k; ++j)
      for (int i = 0; i < n; ++i) {
        const int t = targets[size_t(j) * size_t(n) + size_t(i)];
        if (t >= K || t < -K)
          fail(PG_ERR_ARGUMENT, std::string(fn) + ": targets[" + std::to_string(size_t(j) * size_t(n) + size_t(i)) +
                                    "] = " + std::to_string(t) + " is out of range for a model with " +
                                    std::to_string(K) + " classes (a class id in [0, " + std::to_string(K) +
                                    "), or -r for the r-th ranked class, r <= " + std::to_string(K) + ")");
        sets[size_t(j)][size_t(i)] = t;
      }
  }
  static const pg_saliency_options defaults{};
  const pg_saliency_options& opt = o ? *o : defaults;
  const pg::api::SaliencySettings& s = opt.settings;

  pg::Tensor xt({int64_t(n), 3, int64_t(h), int64_t(w)});
  std::memcpy(xt.data(), x, sizeof(float) * size_t(xt.numel()));
  pg::check_input(xt, fn);

  // --threads: the calling thread's OpenMP thread count for this call only.
  struct Threads {
    int before = omp_get_max_threads();
    ~Threads() { omp_set_num_threads(before); }
  } restore;
  if (s.threads > 0) omp_set_num_threads(s.threads);
  const int max_batch = s.batch > 0 ? s.batch : pg::api::default_batch();
  pg::api::MethodResources resources = opt.resources;  // (files read when their option was set)
  std::vector<pg::api::Config> configs = pg::api::build_configs({pg::api::config_spec(s)}, s.m, resources, model, max_batch);

  std::unique_lock<std::mutex> lock(device_mutex(m->gpu), std::defer_lock);
  if (m->device != "cpu") lock.lock();
  pg::nn::Context ctx;
  pg::api::setup_device(m->device, m->gpu, opt.device, ctx);
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ids[size_t(i)] = i;
  const std::vector<pg::Explanation> exps = pg::api::saliency_batch(model, ctx, xt, sets, configs[0], ids);
  if (exps.size() != size_t(k)) fail(PG_ERR_INTERNAL, std::string(fn) + ": internal error: wrong number of maps");
  const size_t plane = size_t(n) * size_t(h) * size_t(w);
  for (int j = 0; j < k; ++j) {
    const pg::Explanation& e = exps[size_t(j)];
    if (size_t(e.maps.numel()) != plane || e.targets.size() != size_t(n))
      fail(PG_ERR_INTERNAL, std::string(fn) + ": internal error: maps of shape " + e.maps.shape_str());
    std::memcpy(maps + size_t(j) * plane, e.maps.data(), sizeof(float) * plane);
    if (resolved) std::memcpy(resolved + size_t(j) * size_t(n), e.targets.data(), sizeof(int) * size_t(n));
  }
  if (logits) {
    const pg::Tensor& l = exps[0].logits;  // of the clean inputs, from the pass that made the maps
    if (l.numel() != int64_t(n) * K) fail(PG_ERR_INTERNAL, std::string(fn) + ": internal error: logits " + l.shape_str());
    std::memcpy(logits, l.data(), sizeof(float) * size_t(l.numel()));
  }
}

}  // namespace

extern "C" {

const char* pg_version(void) { return PARCHGRAD_VERSION; }

const char* pg_build_info(void) {
  static const std::string info = [] {
    std::string backend = "none";
    try {
      backend = pg::nn::device_backend().runtime_name();
    } catch (...) {
    }
    std::string compiler;
#if defined(__clang__)
    compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
    compiler = "GCC " __VERSION__;
#endif
    nlohmann::json j = {{"version", PARCHGRAD_VERSION},
                        {"devices", backend == "none" ? std::vector<std::string>{"cpu"}
                                                      : std::vector<std::string>{"cpu", "cuda"}},
                        {"device_backend", backend},
                        {"compiler", compiler},
                        {"openmp", _OPENMP}};
    return j.dump();
  }();
  return info.c_str();
}

int pg_has_device(const char* device) {
  try {
    if (!device) return 0;
    if (std::strcmp(device, "cpu") == 0) return 1;
    if (std::strcmp(device, "cuda") == 0) return has_cuda() ? 1 : 0;
  } catch (...) {
  }
  return 0;
}

const char* pg_last_error(void) { return t_error.c_str(); }

int pg_model_load(const char* weights, const char* arch, const char* device, pg_model** out) {
  if (out) *out = nullptr;
  std::unique_ptr<pg_model> m;
  int code = guard(PG_ERR_ARGUMENT, [&] {
    need(out, "pg_model_load", "out");
    need(weights, "pg_model_load", "weights");
    m = std::make_unique<pg_model>();
    parse_device(device, &m->device, &m->gpu);
    const std::string a = arch ? arch : "";
    if (!a.empty()) {
      const auto& known = pg::nn::known_architectures();
      if (std::find(known.begin(), known.end(), a) == known.end()) {
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        fail(PG_ERR_ARGUMENT, "pg_model_load: unknown architecture '" + pg::printable(a) + "' (" + list +
                                  ", or NULL to infer it from the weights)");
      }
    }
  });
  if (code != PG_OK) return code;
  if (m->device != "cpu") {
    code = guard(PG_ERR_DEVICE, [&] {
      if (!has_cuda())
        fail(PG_ERR_DEVICE, "pg_model_load: device cuda: this build of parchgrad has no CUDA backend (see "
                            "pg_build_info)");
      std::lock_guard<std::mutex> lock(device_mutex(m->gpu));
      pg::nn::Context ctx;
      pg::api::setup_device(m->device, m->gpu, pg::api::DeviceSettings{}, ctx);
    });
    if (code != PG_OK) return code;
  }
  code = guard(PG_ERR_FILE, [&] {
    m->weights = weights;
    m->model = pg::nn::load_model(weights, arch ? arch : "");
    m->names = pg::weights::class_names_for(weights, "", m->model->num_classes());
    m->preset = pg::io::model_preprocess(m->model->arch()).name;
    *out = m.release();
  });
  return code;
}

void pg_model_free(pg_model* m) { delete m; }

int pg_model_num_classes(const pg_model* m) { return m && m->model ? m->model->num_classes() : -1; }

const char* pg_model_arch(const pg_model* m) { return m && m->model ? m->model->arch().c_str() : nullptr; }

const char* pg_model_preset(const pg_model* m) { return m && m->model ? m->preset.c_str() : nullptr; }

const char* pg_model_class_name(const pg_model* m, int k) {
  if (!m || k < 0 || size_t(k) >= m->names.size()) return nullptr;
  return m->names[size_t(k)].c_str();
}

pg_saliency_options* pg_saliency_options_new(void) { return new_options<pg_saliency_options>(); }

void pg_saliency_options_free(pg_saliency_options* o) { delete o; }

int pg_saliency_options_set(pg_saliency_options* o, const char* name, const char* value) {
  return guard(PG_ERR_ARGUMENT, [&] {
    need(o, "pg_saliency_options_set", "the options");
    need(name, "pg_saliency_options_set", "name");
    std::string key = name;
    if (key.rfind("--", 0) == 0) key = key.substr(2);
    if (const char* why = not_a_saliency_option(key))
      fail(PG_ERR_ARGUMENT, "pg_saliency_options_set: --" + key + " is " + why);
    pg::api::SaliencySettings s = o->settings;
    pg::api::DeviceSettings d = o->device;
    if (!pg::api::set_option(s, d, key, value ? value : ""))
      fail(PG_ERR_ARGUMENT, "pg_saliency_options_set: unknown option '" + pg::printable(key) +
                                "' (the flags of `parchgrad saliency --help` that set a map: method, parchgrad, "
                                "stats, alpha, quantile, gamma, layers, ig-steps, sg-samples, ...)");
    pg::api::check_settings(s);
    pg::api::check_settings(d);
    pg_saliency_options next{s, d, o->resources};
    if (key == "stats" || key == "sg-noise" || key == "ig-baseline") {
      try {
        next.resources = pg::api::load_resources(s.m, true);
      } catch (const pg::Error& e) {
        fail(PG_ERR_FILE, e.what());
      }
    }
    *o = std::move(next);
  });
}

int pg_saliency(pg_model* m, const float* x, int n, int h, int w, const int* targets, const pg_saliency_options* o,
                float* maps, float* logits) {
  return guard(PG_ERR_ARGUMENT, [&] { saliency(m, x, n, h, w, targets, 1, o, maps, nullptr, logits, "pg_saliency"); });
}

int pg_saliency_targets(pg_model* m, const float* x, int n, int h, int w, const int* targets, int k,
                        const pg_saliency_options* o, float* maps, int* resolved, float* logits) {
  return guard(PG_ERR_ARGUMENT, [&] {
    need(targets, "pg_saliency_targets", "targets");
    saliency(m, x, n, h, w, targets, k, o, maps, resolved, logits, "pg_saliency_targets");
  });
}

int pg_preprocess_u8(const unsigned char* rgb, int height, int width, int size, float* x) {
  return guard(PG_ERR_ARGUMENT, [&] {
    need(rgb, "pg_preprocess_u8", "rgb");
    need(x, "pg_preprocess_u8", "x");
    if (height < 1 || width < 1 || height > 65535 || width > 65535)
      fail(PG_ERR_ARGUMENT, "pg_preprocess_u8: height x width = " + std::to_string(height) + " x " +
                                std::to_string(width) + " (each in [1, 65535])");
    if (size < 1 || size > 8192)
      fail(PG_ERR_ARGUMENT, "pg_preprocess_u8: size = " + std::to_string(size) + " (in [1, 8192])");
    pg::io::Image8 img;
    img.w = width;
    img.h = height;
    img.rgb.assign(rgb, rgb + size_t(width) * size_t(height) * 3);
    const int resize = int(int64_t(size) * 256 / 224);
    const pg::Tensor t = pg::io::normalize_imagenet(pg::io::imagenet_crop(img, resize, size));
    std::memcpy(x, t.data(), sizeof(float) * size_t(t.numel()));
  });
}

}  // extern "C"

namespace {

// The preprocessing a preset name and its overrides give (the command line's --preprocess,
// --resize, --crop and --interpolation, with their checks), for the C function fn.
pg::io::Preprocess preset_of(const char* fn, const char* preset, int resize, int crop, const char* interpolation) {
  if (resize < -1 || resize > 8192)
    fail(PG_ERR_ARGUMENT, std::string(fn) + ": resize = " + std::to_string(resize) + " (-1, 0 or in [1, 8192])");
  if (crop < -1 || crop > 8192)
    fail(PG_ERR_ARGUMENT, std::string(fn) + ": crop = " + std::to_string(crop) + " (-1, 0 or in [1, 8192])");
  pg::io::Preprocess p;  // "imagenet"
  const std::string name = preset ? preset : "";
  if (!name.empty() && !pg::io::find_preprocess(name, &p))
    fail(PG_ERR_ARGUMENT, std::string(fn) + ": unknown preset '" + pg::printable(name) +
                              "' (a torchvision weights name such as EfficientNet_B0_Weights.IMAGENET1K_V1, a model "
                              "name, or imagenet)");
  if (resize >= 0) p.resize = resize;
  if (crop >= 0) p.crop = crop;
  if (interpolation && !pg::io::parse_interpolation(interpolation, &p.interpolation))
    fail(PG_ERR_ARGUMENT, std::string(fn) + ": interpolation '" + pg::printable(interpolation) +
                              "' is neither bilinear nor bicubic");
  return p;
}

// A statistics run of model m with settings o, for the C function fn (the caller's guard turns
// errors into codes).
void stats(pg_model* m, const char* data_dir, const pg_stats_options& o, const char* out_path, const char* fn) {
  need(m, fn, "the model");
  need(data_dir, fn, "data_dir");
  need(out_path, fn, "out_path");
  std::unique_lock<std::mutex> lock(device_mutex(m->gpu), std::defer_lock);
  if (m->device != "cpu") lock.lock();
  pg::nn::Context ctx;
  pg::api::setup_device(m->device, m->gpu, pg::api::DeviceSettings{}, ctx);
  pg::api::StatsJob job;
  job.data = data_dir;
  job.labels = o.labels;
  job.test = o.test;
  job.batch = o.batch > 0 ? o.batch : 16;
  job.pre = o.pre;
  job.out = out_path;
  job.weights_name = m->weights;
  pg::api::dataset_stats(*m->model, ctx, job);
}

void check_image_size(const char* fn, int height, int width) {
  if (height < 1 || width < 1 || height > 65535 || width > 65535)
    fail(PG_ERR_ARGUMENT, std::string(fn) + ": height x width = " + std::to_string(height) + " x " +
                              std::to_string(width) + " (each in [1, 65535])");
}

}  // namespace

extern "C" {

int pg_preprocess_shape(int height, int width, const char* preset, int resize, int crop, int* out_height,
                        int* out_width) {
  return guard(PG_ERR_ARGUMENT, [&] {
    need(out_height, "pg_preprocess_shape", "out_height");
    need(out_width, "pg_preprocess_shape", "out_width");
    check_image_size("pg_preprocess_shape", height, width);
    const pg::io::Preprocess p = preset_of("pg_preprocess_shape", preset, resize, crop, nullptr);
    int h = height, w = width;
    if (p.resize > 0) pg::io::resize_short_side_size(width, height, p.resize, &w, &h);
    if (p.crop > 0) h = w = p.crop;
    *out_height = h;
    *out_width = w;
  });
}

int pg_preprocess_preset_u8(const unsigned char* rgb, int height, int width, const char* preset, int resize, int crop,
                            const char* interpolation, float* x) {
  return guard(PG_ERR_ARGUMENT, [&] {
    need(rgb, "pg_preprocess_preset_u8", "rgb");
    need(x, "pg_preprocess_preset_u8", "x");
    check_image_size("pg_preprocess_preset_u8", height, width);
    const pg::io::Preprocess p = preset_of("pg_preprocess_preset_u8", preset, resize, crop, interpolation);
    pg::io::Image8 img;
    img.w = width;
    img.h = height;
    img.rgb.assign(rgb, rgb + size_t(width) * size_t(height) * 3);
    const pg::Tensor t = pg::io::preprocess_image(img, p);
    std::memcpy(x, t.data(), sizeof(float) * size_t(t.numel()));
  });
}

int pg_image_read(const char* path, unsigned char** rgb, int* height, int* width) {
  if (rgb) *rgb = nullptr;
  return guard(PG_ERR_FILE, [&] {
    need(path, "pg_image_read", "path");
    need(rgb, "pg_image_read", "rgb");
    need(height, "pg_image_read", "height");
    need(width, "pg_image_read", "width");
    const pg::io::Image8 img = pg::io::load_image_rgb(path);
    auto* p = static_cast<unsigned char*>(std::malloc(img.rgb.size()));
    if (!p) throw std::bad_alloc();
    std::memcpy(p, img.rgb.data(), img.rgb.size());
    *rgb = p;
    *height = img.h;
    *width = img.w;
  });
}

void pg_free(void* p) { std::free(p); }

int pg_stats(pg_model* m, const char* data_dir, const char* labels, const char* test, int batch, const char* out_path) {
  return guard(PG_ERR_FILE, [&] {
    pg_stats_options o;
    o.labels = labels ? labels : "";
    o.test = test ? test : "student";
    if (o.test != "student" && o.test != "welch")
      fail(PG_ERR_ARGUMENT, "pg_stats: test '" + pg::printable(o.test) + "' is not student or welch");
    if (batch < 0) fail(PG_ERR_ARGUMENT, "pg_stats: batch = " + std::to_string(batch) + " (0 for 16, or at least 1)");
    o.batch = batch;
    stats(m, data_dir, o, out_path, "pg_stats");
  });
}

pg_stats_options* pg_stats_options_new(void) { return new_options<pg_stats_options>(); }

void pg_stats_options_free(pg_stats_options* o) { delete o; }

int pg_stats_options_set(pg_stats_options* o, const char* name, const char* value) {
  return guard(PG_ERR_ARGUMENT, [&] {
    const char* fn = "pg_stats_options_set";
    need(o, fn, "the options");
    need(name, fn, "name");
    std::string key = name;
    if (key.rfind("--", 0) == 0) key = key.substr(2);
    const std::string v = value ? value : "";
    pg_stats_options next = *o;
    if (key == "test") {
      if (v != "student" && v != "welch")
        fail(PG_ERR_ARGUMENT, std::string(fn) + ": --test: '" + pg::printable(v) + "' is not student or welch");
      next.test = v;
    } else if (key == "labels") {
      next.labels = v;
    } else if (key == "batch" || key == "preprocess" || key == "resize" || key == "crop" || key == "interpolation") {
      // The command line's parsers of `parchgrad stats` (the saliency table's entries).
      pg::api::SaliencySettings s = next.pre;
      for (const auto& opt : pg::api::saliency_options())
        if (key == opt.name) opt.set(s, v);
      if (key == "batch") {
        if (s.batch < 0) fail(PG_ERR_ARGUMENT, std::string(fn) + ": --batch = " + std::to_string(s.batch) + " (0 for 16, or at least 1)");
        next.batch = s.batch;
      } else {
        next.pre = s;
      }
      pg::io::Preprocess p;
      if (!next.pre.preprocess.empty() && !pg::io::find_preprocess(next.pre.preprocess, &p))
        fail(PG_ERR_ARGUMENT, std::string(fn) + ": --preprocess: unknown preset '" + pg::printable(next.pre.preprocess) +
                                  "' (a torchvision weights name such as EfficientNet_B0_Weights.IMAGENET1K_V1, a model "
                                  "name, or imagenet)");
      if (!next.pre.interpolation.empty() && !pg::io::parse_interpolation(next.pre.interpolation, &p.interpolation))
        fail(PG_ERR_ARGUMENT, std::string(fn) + ": --interpolation: '" + pg::printable(next.pre.interpolation) +
                                  "' is neither bilinear nor bicubic");
    } else {
      fail(PG_ERR_ARGUMENT, std::string(fn) + ": unknown option '" + pg::printable(key) +
                                "' (the flags of `parchgrad stats` that change the file: test, batch, labels, "
                                "preprocess, resize, crop, interpolation)");
    }
    *o = std::move(next);
  });
}

int pg_stats_run(pg_model* m, const char* data_dir, const pg_stats_options* o, const char* out_path) {
  return guard(PG_ERR_FILE, [&] {
    static const pg_stats_options defaults{};
    stats(m, data_dir, o ? *o : defaults, out_path, "pg_stats_run");
  });
}

}  // extern "C"
