// The C API (capi/include/parchgrad/parchgrad.h) under bad input and under threads.
//   test_capi bad     DATA_DIR   every kind of bad input returns its code and a clear message,
//                                and the process keeps working (valid calls after give the
//                                same maps as before)
//   test_capi threads DATA_DIR   two threads on two models, then on one model, give the maps
//                                of one thread, bit for bit (grad and grad+cls)
// DATA_DIR holds resnet_synth.pth, stats.safetensors and examples/*.png (assets/default).
// Built three times: with the engine as it is (CTest capi), and by the fixture capi_sanitized_build
// with ASan + UBSan (capi_asan: bad, threads) and with ThreadSanitizer (capi_tsan: threads).
// Written against the C header only, as a user's program is.
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <parchgrad/parchgrad.h>

namespace {

int failures = 0;
std::string data;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);              \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

// A call that must fail with `code` and a message containing `needle`.
void expect_error(const char* what, int rc, int code, const char* needle) {
  const std::string msg = pg_last_error();
  const bool ok = rc == code && msg.find(needle) != std::string::npos && msg.find('\n') == std::string::npos;
  std::printf("%s %-44s -> %d \"%s\"\n", ok ? "ok  " : "FAIL", what, rc, msg.c_str());
  if (!ok) {
    std::printf("     expected code %d and a one-line message containing \"%s\"\n", code, needle);
    ++failures;
  }
}

// Two preprocessed example images, [2, 3, 224, 224].
std::vector<float> inputs() {
  std::vector<float> x(2 * 3 * 224 * 224);
  const char* names[2] = {"star.png", "ring.png"};
  for (int i = 0; i < 2; ++i) {
    unsigned char* rgb = nullptr;
    int h = 0, w = 0;
    const std::string p = data + "/examples/" + names[i];
    if (pg_image_read(p.c_str(), &rgb, &h, &w) != PG_OK) {
      std::printf("FAIL reading %s: %s\n", p.c_str(), pg_last_error());
      std::exit(1);
    }
    CHECK(pg_preprocess_u8(rgb, h, w, 224, x.data() + size_t(i) * 3 * 224 * 224) == PG_OK);
    pg_free(rgb);
  }
  return x;
}

pg_model* load() {
  pg_model* m = nullptr;
  const std::string w = data + "/resnet_synth.pth";
  if (pg_model_load(w.c_str(), nullptr, "cpu", &m) != PG_OK) {
    std::printf("FAIL loading %s: %s\n", w.c_str(), pg_last_error());
    std::exit(1);
  }
  return m;
}

std::vector<float> maps_of(pg_model* m, const std::vector<float>& x, const pg_saliency_options* o) {
  std::vector<float> maps(2 * 224 * 224, -1.f);
  const int rc = pg_saliency(m, x.data(), 2, 224, 224, nullptr, o, maps.data(), nullptr);
  if (rc != PG_OK) {
    std::printf("FAIL pg_saliency: %d %s\n", rc, pg_last_error());
    ++failures;
  }
  return maps;
}

bool same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::string scratch_dir() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp ? tmp : "/tmp";
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A safetensors file's JSON header (metadata and tensor entries) and its tensor bytes.
std::pair<std::string, std::string> safetensors_parts(const std::string& path) {
  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  if (bytes.size() >= 8) std::memcpy(&n, bytes.data(), 8);
  if (bytes.size() < 8 || n > bytes.size() - 8) {
    std::printf("FAIL %s is not a safetensors file\n", path.c_str());
    ++failures;
    return {};
  }
  return {bytes.substr(8, n), bytes.substr(8 + n)};
}

// x [3 x h x w] as a float32 .npy file.
void write_npy(const std::string& path, const std::vector<float>& x, int h, int w) {
  std::string head = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, " + std::to_string(h) + ", " +
                     std::to_string(w) + "), }";
  while ((10 + head.size() + 1) % 64) head += ' ';
  head += '\n';
  const uint16_t len = uint16_t(head.size());
  std::ofstream f(path, std::ios::binary);
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(reinterpret_cast<const char*>(&len), 2);
  f << head;
  f.write(reinterpret_cast<const char*>(x.data()), std::streamsize(x.size() * sizeof(float)));
}

// Statistics with a preset other than the model's own: pg_stats_run with "preprocess"
// convnext_tiny over three example images (one class folder each) writes the statistics that
// the defaults write over .npy files of those images preprocessed by pg_preprocess_preset_u8
// with convnext_tiny (a .npy file is taken as it is), byte for byte, and records the preset in
// its metadata; the model's own preset (pg_stats) gives other statistics. Bad settings are
// refused in one line and leave the options as they were.
void stats_presets(pg_model* m) {
  namespace fs = std::filesystem;
  const fs::path dir = scratch_dir() + "/capi_stats_" + std::to_string(std::rand());
  for (const char* name : {"circle", "ring", "star"}) {
    const std::string src = data + "/examples/" + name + ".png";
    fs::create_directories(dir / "png" / name);
    fs::create_directories(dir / "npy" / name);
    fs::copy_file(src, dir / "png" / name / (std::string(name) + ".png"));
    unsigned char* rgb = nullptr;
    int h = 0, w = 0, oh = 0, ow = 0;
    CHECK(pg_image_read(src.c_str(), &rgb, &h, &w) == PG_OK);
    CHECK(pg_preprocess_shape(h, w, "convnext_tiny", -1, -1, &oh, &ow) == PG_OK && oh == 224 && ow == 224);
    std::vector<float> x(size_t(3) * 224 * 224);
    CHECK(pg_preprocess_preset_u8(rgb, h, w, "convnext_tiny", -1, -1, nullptr, x.data()) == PG_OK);
    pg_free(rgb);
    write_npy((dir / "npy" / name / (std::string(name) + ".npy")).string(), x, 224, 224);
  }
  const std::string png = (dir / "png").string(), npy = (dir / "npy").string();
  const std::string a = (dir / "preset.safetensors").string(), b = (dir / "npy.safetensors").string(),
                    c = (dir / "own.safetensors").string();
  pg_stats_options* o = pg_stats_options_new();
  CHECK(o != nullptr);
  CHECK(pg_stats_options_set(o, "preprocess", "convnext_tiny") == PG_OK);
  expect_error("stats options: unknown preset", pg_stats_options_set(o, "--preprocess", "nope\n"), PG_ERR_ARGUMENT,
               "unknown preset 'nope\\x0a'");
  expect_error("stats options: unknown filter", pg_stats_options_set(o, "interpolation", "nearest"), PG_ERR_ARGUMENT,
               "'nearest' is neither bilinear nor bicubic");
  expect_error("stats options: crop -2", pg_stats_options_set(o, "crop", "-2"), PG_ERR_ARGUMENT, "--crop");
  expect_error("stats options: batch x", pg_stats_options_set(o, "batch", "x"), PG_ERR_ARGUMENT, "'x' is not an integer");
  expect_error("stats options: bad test", pg_stats_options_set(o, "test", "z"), PG_ERR_ARGUMENT, "'z'");
  expect_error("stats options: unknown name", pg_stats_options_set(o, "out", "s.safetensors"), PG_ERR_ARGUMENT,
               "unknown option 'out'");
  expect_error("stats options: NULL options", pg_stats_options_set(nullptr, "test", "welch"), PG_ERR_ARGUMENT, "NULL");
  expect_error("stats: NULL data_dir", pg_stats_run(m, nullptr, o, a.c_str()), PG_ERR_ARGUMENT, "data_dir is NULL");
  CHECK(pg_stats_run(m, png.c_str(), o, a.c_str()) == PG_OK);
  CHECK(pg_stats_run(m, npy.c_str(), nullptr, b.c_str()) == PG_OK);
  CHECK(pg_stats(m, png.c_str(), nullptr, nullptr, 0, c.c_str()) == PG_OK);
  const auto pa = safetensors_parts(a), pb = safetensors_parts(b), pc = safetensors_parts(c);
  const bool ok = !pa.second.empty() && pa.second == pb.second && pa.second != pc.second &&
                  pa.first.find("ConvNeXt_Tiny_Weights.IMAGENET1K_V1") != std::string::npos &&
                  pa.first.find("\\\"resize\\\":236") != std::string::npos &&
                  pc.first.find("\\\"resize\\\":256") != std::string::npos;
  std::printf("%s %-44s -> %zu bytes of tensors\n", ok ? "ok  " : "FAIL", "stats: preset convnext_tiny", pa.second.size());
  if (!ok) {
    std::printf("     expected the .npy run's tensors, not the model's own preset's, and the preset in the metadata\n");
    ++failures;
  }
  pg_stats_options_free(o);
  pg_stats_options_free(nullptr);
  std::error_code ec;
  fs::remove_all(dir, ec);
}

void bad_inputs() {
  const std::string weights = data + "/resnet_synth.pth";
  const std::vector<float> x = inputs();
  pg_model* m = load();
  const std::vector<float> before = maps_of(m, x, nullptr);
  pg_model* out = nullptr;
  std::vector<float> maps(2 * 224 * 224);

  // Models.
  expect_error("model: NULL weights", pg_model_load(nullptr, nullptr, "cpu", &out), PG_ERR_ARGUMENT, "weights is NULL");
  CHECK(out == nullptr);
  expect_error("model: NULL out", pg_model_load(weights.c_str(), nullptr, "cpu", nullptr), PG_ERR_ARGUMENT, "out is NULL");
  expect_error("model: missing file", pg_model_load("/nonexistent/w.pth", nullptr, "cpu", &out), PG_ERR_FILE,
               "/nonexistent/w.pth");
  CHECK(out == nullptr);
  {
    // A .pth cut in half, and bytes that are no weight file at all.
    std::ifstream f(weights, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const char* tmp = std::getenv("TMPDIR");
    const std::string dir = tmp ? tmp : "/tmp";
    const std::string cut = dir + "/capi_cut_" + std::to_string(std::rand()) + ".pth";
    std::ofstream(cut, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size() / 2));
    expect_error("model: truncated .pth", pg_model_load(cut.c_str(), nullptr, "cpu", &out), PG_ERR_FILE, cut.c_str());
    const std::string junk = dir + "/capi_junk_" + std::to_string(std::rand()) + ".safetensors";
    std::ofstream(junk, std::ios::binary) << "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": [1, 2, 3]}";
    expect_error("model: corrupt .safetensors", pg_model_load(junk.c_str(), nullptr, "cpu", &out), PG_ERR_FILE,
                 junk.c_str());
    std::remove(cut.c_str());
    std::remove(junk.c_str());
    CHECK(out == nullptr);
  }
  expect_error("model: unknown architecture", pg_model_load(weights.c_str(), "resnet19", "cpu", &out),
               PG_ERR_ARGUMENT, "resnet19");
  expect_error("model: wrong architecture", pg_model_load(weights.c_str(), "vgg11", "cpu", &out), PG_ERR_FILE,
               "resnet_synth.pth");
  expect_error("model: unknown device", pg_model_load(weights.c_str(), nullptr, "tpu", &out), PG_ERR_ARGUMENT, "tpu");
  expect_error("model: bad device index", pg_model_load(weights.c_str(), nullptr, "cuda:x", &out), PG_ERR_ARGUMENT,
               "cuda:x");
  if (!pg_has_device("cuda")) {
    expect_error("model: cuda not compiled in", pg_model_load(weights.c_str(), nullptr, "cuda", &out), PG_ERR_DEVICE,
                 "no CUDA backend");
  } else {
    // Compiled in: a machine without a usable GPU says so with PG_ERR_DEVICE.
    const int rc = pg_model_load(weights.c_str(), nullptr, "cuda", &out);
    std::printf("%s %-44s -> %d \"%s\"\n", rc == PG_OK || rc == PG_ERR_DEVICE ? "ok  " : "FAIL", "model: cuda", rc,
                rc ? pg_last_error() : "");
    CHECK(rc == PG_OK || rc == PG_ERR_DEVICE);
    CHECK((rc == PG_OK) == (out != nullptr));
    pg_model_free(out);
    out = nullptr;
  }
  CHECK(out == nullptr);
  CHECK(pg_model_num_classes(nullptr) == -1);
  CHECK(pg_model_arch(nullptr) == nullptr);
  CHECK(pg_model_class_name(m, 6) == nullptr);
  CHECK(pg_model_class_name(m, -1) == nullptr);
  CHECK(pg_model_class_name(m, 4) != nullptr && std::strcmp(pg_model_class_name(m, 4), "star") == 0);
  CHECK(pg_model_preset(nullptr) == nullptr);
  CHECK(pg_model_preset(m) != nullptr && std::strcmp(pg_model_preset(m), "imagenet") == 0);  // a custom ResNet
  pg_model_free(nullptr);

  // Options.
  pg_saliency_options* o = pg_saliency_options_new();
  CHECK(o != nullptr);
  expect_error("options: NULL options", pg_saliency_options_set(nullptr, "method", "ig"), PG_ERR_ARGUMENT, "NULL");
  expect_error("options: NULL name", pg_saliency_options_set(o, nullptr, "ig"), PG_ERR_ARGUMENT, "name is NULL");
  expect_error("options: unknown name", pg_saliency_options_set(o, "metod", "ig"), PG_ERR_ARGUMENT, "metod");
  expect_error("options: unknown method", pg_saliency_options_set(o, "method", "lime"), PG_ERR_ARGUMENT, "lime");
  expect_error("options: unknown mode", pg_saliency_options_set(o, "parchgrad", "both"), PG_ERR_ARGUMENT, "both");
  expect_error("options: not a number", pg_saliency_options_set(o, "alpha", "0.05x"), PG_ERR_ARGUMENT, "0.05x");
  expect_error("options: NaN", pg_saliency_options_set(o, "sg-sigma", "nan"), PG_ERR_ARGUMENT, "--sg-sigma");
  expect_error("options: out of range", pg_saliency_options_set(o, "alpha", "2"), PG_ERR_ARGUMENT, "(0, 1)");
  expect_error("options: bad gamma", pg_saliency_options_set(o, "gamma", "infinity"), PG_ERR_ARGUMENT, "--gamma");
  expect_error("options: flag with a value", pg_saliency_options_set(o, "exact-variance", "yes"), PG_ERR_ARGUMENT,
               "yes");
  expect_error("options: integer", pg_saliency_options_set(o, "ig-steps", "2.5"), PG_ERR_ARGUMENT, "2.5");
  expect_error("options: file output", pg_saliency_options_set(o, "out", "dir"), PG_ERR_ARGUMENT, "file output");
  expect_error("options: model's", pg_saliency_options_set(o, "--device", "cuda"), PG_ERR_ARGUMENT, "pg_model_load");
  expect_error("options: missing stats", pg_saliency_options_set(o, "stats", "/nonexistent/s.safetensors"),
               PG_ERR_FILE, "/nonexistent/s.safetensors");
  expect_error("options: weights as stats", pg_saliency_options_set(o, "stats", weights.c_str()), PG_ERR_FILE,
               "resnet_synth.pth");
  expect_error("options: missing noise", pg_saliency_options_set(o, "sg-noise", "/nonexistent/n.npy"), PG_ERR_FILE,
               "/nonexistent/n.npy");
  // Failed sets left the defaults: the maps are grad's.
  CHECK(same(maps_of(m, x, o), before));
  CHECK(pg_saliency_options_set(o, "parchgrad", "cls") == PG_OK);
  expect_error("saliency: cls without stats", pg_saliency(m, x.data(), 2, 224, 224, nullptr, o, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "needs --stats");
  CHECK(pg_saliency_options_set(o, "method", "gradcam") == PG_OK);
  const std::string stats = data + "/stats.safetensors";
  CHECK(pg_saliency_options_set(o, "stats", stats.c_str()) == PG_OK);
  expect_error("saliency: gradcam+cls", pg_saliency(m, x.data(), 2, 224, 224, nullptr, o, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "Grad-CAM");
  CHECK(pg_saliency_options_set(o, "parchgrad", "off") == PG_OK);
  expect_error("saliency: stats that do nothing", pg_saliency(m, x.data(), 2, 224, 224, nullptr, o, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "does nothing");
  CHECK(pg_saliency_options_set(o, "method", "grad") == PG_OK);
  CHECK(pg_saliency_options_set(o, "parchgrad", "cls") == PG_OK);
  CHECK(pg_saliency_options_set(o, "layers", "nope") == PG_OK);  // names are checked against the model
  expect_error("saliency: unknown layer", pg_saliency(m, x.data(), 2, 224, 224, nullptr, o, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "nope");

  // Saliency arguments.
  expect_error("saliency: NULL model", pg_saliency(nullptr, x.data(), 2, 224, 224, nullptr, nullptr, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "model is NULL");
  expect_error("saliency: NULL x", pg_saliency(m, nullptr, 2, 224, 224, nullptr, nullptr, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "x is NULL");
  expect_error("saliency: NULL maps", pg_saliency(m, x.data(), 2, 224, 224, nullptr, nullptr, nullptr, nullptr),
               PG_ERR_ARGUMENT, "maps is NULL");
  expect_error("saliency: n = 0", pg_saliency(m, x.data(), 0, 224, 224, nullptr, nullptr, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "n = 0");
  expect_error("saliency: h = 0", pg_saliency(m, x.data(), 2, 0, 224, nullptr, nullptr, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "0 x 224");
  expect_error("saliency: w < 0", pg_saliency(m, x.data(), 2, 224, -5, nullptr, nullptr, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "224 x -5");
  expect_error("saliency: sizes too large", pg_saliency(m, x.data(), 1 << 20, 1 << 14, 1 << 14, nullptr, nullptr,
                                                        maps.data(), nullptr),
               PG_ERR_ARGUMENT, "too large");
  const int far[2] = {0, 6}, below[2] = {-7, 0};
  expect_error("saliency: target out of range", pg_saliency(m, x.data(), 2, 224, 224, far, nullptr, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "targets[1] = 6");
  expect_error("saliency: rank out of range", pg_saliency(m, x.data(), 2, 224, 224, below, nullptr, maps.data(), nullptr),
               PG_ERR_ARGUMENT, "targets[0] = -7");
  expect_error("saliency: k = 0", pg_saliency_targets(m, x.data(), 2, 224, 224, far, 0, nullptr, maps.data(), nullptr,
                                                      nullptr),
               PG_ERR_ARGUMENT, "k = 0");
  expect_error("saliency: NULL targets", pg_saliency_targets(m, x.data(), 2, 224, 224, nullptr, 1, nullptr, maps.data(),
                                                             nullptr, nullptr),
               PG_ERR_ARGUMENT, "targets is NULL");
  {
    std::vector<float> nan = x;
    nan[12345] = std::nanf("");
    expect_error("saliency: NaN input", pg_saliency(m, nan.data(), 2, 224, 224, nullptr, nullptr, maps.data(), nullptr),
                 PG_ERR_ARGUMENT, "NaN");
  }
  // An input smaller than the network's downsampling: refused by the engine, with a reason.
  {
    std::vector<float> tiny(3 * 2 * 2, 0.5f), tmaps(4);
    const int rc = pg_saliency(m, tiny.data(), 1, 2, 2, nullptr, nullptr, tmaps.data(), nullptr);
    std::printf("%s %-44s -> %d \"%s\"\n", rc == PG_ERR_ARGUMENT || rc == PG_OK ? "ok  " : "FAIL",
                "saliency: 2 x 2 input", rc, rc ? pg_last_error() : "");
    CHECK(rc == PG_ERR_ARGUMENT || rc == PG_OK);
  }

  // Inputs and statistics.
  unsigned char* rgb = reinterpret_cast<unsigned char*>(1);
  int h = 0, w = 0;
  expect_error("image: missing", pg_image_read("/nonexistent/a.png", &rgb, &h, &w), PG_ERR_FILE, "/nonexistent/a.png");
  CHECK(rgb == nullptr);
  expect_error("image: not an image", pg_image_read(weights.c_str(), &rgb, &h, &w), PG_ERR_FILE, "resnet_synth.pth");
  expect_error("image: NULL out", pg_image_read(weights.c_str(), nullptr, &h, &w), PG_ERR_ARGUMENT, "rgb is NULL");
  unsigned char px[12] = {0};
  float xs[3 * 224 * 224];
  expect_error("preprocess: NULL rgb", pg_preprocess_u8(nullptr, 2, 2, 224, xs), PG_ERR_ARGUMENT, "rgb is NULL");
  expect_error("preprocess: width 0", pg_preprocess_u8(px, 2, 0, 224, xs), PG_ERR_ARGUMENT, "2 x 0");
  expect_error("preprocess: size 0", pg_preprocess_u8(px, 2, 2, 0, xs), PG_ERR_ARGUMENT, "size = 0");
  // Presets: the shape of x, the "imagenet" preset equal to pg_preprocess_u8's 224 bit for bit,
  // another preset's different pixels, and bad names refused in one line.
  {
    int oh = 0, ow = 0;
    CHECK(pg_preprocess_shape(256, 300, "convnext_tiny", -1, -1, &oh, &ow) == PG_OK && oh == 224 && ow == 224);
    CHECK(pg_preprocess_shape(256, 300, "ConvNeXt_Tiny_Weights.IMAGENET1K_V1", -1, 0, &oh, &ow) == PG_OK &&
          oh == 236 && ow == 276);
    CHECK(pg_preprocess_shape(256, 300, nullptr, 0, 0, &oh, &ow) == PG_OK && oh == 256 && ow == 300);
    CHECK(pg_preprocess_shape(40, 30, "EfficientNet_B3_Weights.IMAGENET1K_V1", -1, -1, &oh, &ow) == PG_OK &&
          oh == 300 && ow == 300);
    unsigned char* img = nullptr;
    int ih = 0, iw = 0;
    const std::string star = data + "/examples/star.png";
    CHECK(pg_image_read(star.c_str(), &img, &ih, &iw) == PG_OK);
    std::vector<float> a(3 * 224 * 224, -1.f), b(3 * 224 * 224, -2.f), c(3 * 224 * 224, -3.f);
    CHECK(pg_preprocess_u8(img, ih, iw, 224, a.data()) == PG_OK);
    CHECK(pg_preprocess_preset_u8(img, ih, iw, "imagenet", -1, -1, nullptr, b.data()) == PG_OK);
    CHECK(a == b);
    CHECK(pg_preprocess_preset_u8(img, ih, iw, nullptr, -1, -1, nullptr, b.data()) == PG_OK);
    CHECK(a == b);
    CHECK(pg_preprocess_preset_u8(img, ih, iw, "convnext_tiny", -1, -1, nullptr, c.data()) == PG_OK);
    CHECK(a != c);
    CHECK(pg_preprocess_preset_u8(img, ih, iw, "imagenet", 236, -1, nullptr, b.data()) == PG_OK);
    CHECK(b == c);  // convnext_tiny: 236/224 bilinear with ImageNet's mean and std
    CHECK(pg_preprocess_preset_u8(img, ih, iw, "imagenet", 236, -1, "bicubic", b.data()) == PG_OK);
    CHECK(b != c);  // (the 256x256 image is not resized at 256: its filter shows at 236)
    expect_error("preprocess: unknown preset", pg_preprocess_preset_u8(img, ih, iw, "nope\n", -1, -1, nullptr, b.data()),
                 PG_ERR_ARGUMENT, "unknown preset 'nope\\x0a'");
    expect_error("preprocess: unknown filter",
                 pg_preprocess_preset_u8(img, ih, iw, "imagenet", -1, -1, "nearest", b.data()), PG_ERR_ARGUMENT,
                 "'nearest' is neither bilinear nor bicubic");
    expect_error("preprocess: crop -2", pg_preprocess_shape(2, 2, "imagenet", -1, -2, &oh, &ow), PG_ERR_ARGUMENT,
                 "crop = -2");
    expect_error("preprocess: shape of unknown preset", pg_preprocess_shape(2, 2, "resnet", -1, -1, &oh, &ow),
                 PG_ERR_ARGUMENT, "pg_preprocess_shape: unknown preset 'resnet'");
    expect_error("options: preprocess", pg_saliency_options_set(o, "preprocess", "convnext_tiny"), PG_ERR_ARGUMENT,
                 "pg_preprocess_preset_u8");
    expect_error("preprocess: NULL x", pg_preprocess_preset_u8(img, ih, iw, nullptr, -1, -1, nullptr, nullptr),
                 PG_ERR_ARGUMENT, "x is NULL");
    pg_free(img);
  }
  expect_error("stats: missing folder", pg_stats(m, "/nonexistent/data", nullptr, nullptr, 0, "/tmp/x.safetensors"),
               PG_ERR_FILE, "/nonexistent/data");
  expect_error("stats: bad test", pg_stats(m, data.c_str(), nullptr, "z", 0, "/tmp/x.safetensors"), PG_ERR_ARGUMENT,
               "'z'");
  stats_presets(m);

  // The thread's message is its own.
  pg_saliency_options_set(o, "metod", "x");
  const std::string mine = pg_last_error();
  std::thread([] { pg_saliency_options_set(nullptr, "a", "b"); }).join();
  CHECK(mine == pg_last_error());

  // Logits: the clean inputs', whatever the method (grad: from its own pass; ig: from the
  // clean forward before the copies), and the top-1 they give is the target top-1 resolves to.
  {
    std::vector<float> lg(2 * 6, 0.f), li(2 * 6, 1.f), mi(2 * 224 * 224);
    CHECK(pg_saliency(m, x.data(), 2, 224, 224, nullptr, nullptr, maps.data(), lg.data()) == PG_OK);
    pg_saliency_options* ig = pg_saliency_options_new();
    CHECK(pg_saliency_options_set(ig, "method", "ig") == PG_OK && pg_saliency_options_set(ig, "ig-steps", "2") == PG_OK);
    CHECK(pg_saliency(m, x.data(), 2, 224, 224, nullptr, ig, mi.data(), li.data()) == PG_OK);
    CHECK(same(lg, li));
    const int top1[2] = {-1, -1};
    int resolved[2] = {-5, -5};
    CHECK(pg_saliency_targets(m, x.data(), 2, 224, 224, top1, 1, nullptr, maps.data(), resolved, nullptr) == PG_OK);
    for (int i = 0; i < 2; ++i) {
      int best = 0;
      for (int k = 1; k < 6; ++k)
        if (lg[size_t(i) * 6 + size_t(k)] > lg[size_t(i) * 6 + size_t(best)]) best = k;
      CHECK(resolved[i] == best);
    }
    CHECK(resolved[0] == 4);  // star.png is a star
    pg_saliency_options_free(ig);
  }

  // The process keeps working: the same maps as before any error.
  CHECK(same(maps_of(m, x, nullptr), before));
  pg_saliency_options_free(o);
  pg_saliency_options_free(nullptr);
  pg_model_free(m);
}

void threads() {
  const std::vector<float> x = inputs();
  pg_model* a = load();
  pg_model* b = load();
  pg_saliency_options* cls = pg_saliency_options_new();
  const std::string stats = data + "/stats.safetensors";
  CHECK(pg_saliency_options_set(cls, "parchgrad", "cls") == PG_OK);
  CHECK(pg_saliency_options_set(cls, "stats", stats.c_str()) == PG_OK);
  const pg_saliency_options* configs[2] = {nullptr, cls};
  for (const pg_saliency_options* o : configs) {
    const std::vector<float> ref = maps_of(a, x, o);
    for (pg_model* second : {b, a}) {
      std::vector<float> r1, r2;
      std::thread t1([&] { r1 = maps_of(a, x, o); });
      std::thread t2([&] { r2 = maps_of(second, x, o); });
      t1.join();
      t2.join();
      const bool ok = same(r1, ref) && same(r2, ref);
      std::printf("%s two threads, %s, %s: maps equal one thread's\n", ok ? "ok  " : "FAIL",
                  second == b ? "two models" : "one model", o ? "grad+cls" : "grad");
      if (!ok) ++failures;
    }
  }
  pg_saliency_options_free(cls);
  pg_model_free(a);
  pg_model_free(b);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::strcmp(argv[1], "bad") != 0 && std::strcmp(argv[1], "threads") != 0)) {
    std::fprintf(stderr, "usage: test_capi bad|threads DATA_DIR\n");
    return 2;
  }
  data = argv[2];
  std::printf("%s\n", pg_build_info());
  if (std::strcmp(argv[1], "bad") == 0) bad_inputs();
  else threads();
  std::printf("%s: %d failure(s)\n", argv[1], failures);
  return failures ? 1 : 0;
}
