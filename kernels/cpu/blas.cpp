#include "kernels/cpu/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "core/error.h"

#ifndef PARCHGRAD_OPENBLAS_DIR
#error "PARCHGRAD_OPENBLAS_DIR must name the directory of the OpenMP build of OpenBLAS"
#endif

namespace pg::blas {

namespace {

// cblas.h's enum values, so that this file needs no BLAS header.
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                         int);
using SetThreadsFn = void (*)(int);
using CoreNameFn = char* (*)();

struct Lib {
  SgemmFn sgemm = nullptr;
  SetThreadsFn set_threads = nullptr;
  CoreNameFn corename = nullptr;
  std::string choice;
};

// The OpenBLAS kernel family for this CPU's features, or null to leave the choice to
// OpenBLAS. Its AVX-512 kernels need F, BW, DQ and VL; its AVX2 kernels AVX2 and FMA.
const char* core_for_features() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return nullptr;
}

Lib load() {
  Lib lib;
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  if (user && *user) {
    lib.choice = "user";
  } else if (const char* core = core_for_features()) {
    setenv("OPENBLAS_CORETYPE", core, 1);  // read by OpenBLAS when it is loaded, just below
    lib.choice = "features";
  } else {
    lib.choice = "library";
  }
  const std::string dir = PARCHGRAD_OPENBLAS_DIR;
  void* h = nullptr;
  std::string errors;
  for (const char* name : {"/libopenblas.so.0", "/libopenblas.so"}) {
    h = dlopen((dir + name).c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) break;
    errors += std::string(errors.empty() ? "" : "; ") + dlerror();
  }
  if (!h) throw Error(dir + "/libopenblas.so.0: cannot load OpenBLAS (" + errors + ")");
  lib.sgemm = reinterpret_cast<SgemmFn>(dlsym(h, "cblas_sgemm"));
  lib.set_threads = reinterpret_cast<SetThreadsFn>(dlsym(h, "openblas_set_num_threads"));
  lib.corename = reinterpret_cast<CoreNameFn>(dlsym(h, "openblas_get_corename"));
  if (!lib.sgemm || !lib.set_threads)
    throw Error(dir + "/libopenblas.so.0: not OpenBLAS (cblas_sgemm or openblas_set_num_threads missing)");
  return lib;
}

const Lib& lib() {
  static std::once_flag once;
  static Lib instance;
  static std::string failure;
  std::call_once(once, [] {
    try {
      instance = load();
    } catch (const Error& e) {
      failure = e.what();
    }
  });
  if (!failure.empty()) throw Error(failure);
  return instance;
}

}  // namespace

void init() { lib(); }

void sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
           int ldb, float beta, float* C, int ldc) {
  lib().sgemm(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, M, N, K, alpha, A, lda, B, ldb,
              beta, C, ldc);
}

void set_num_threads(int threads) { lib().set_threads(threads); }

std::string core_name() {
  const Lib& l = lib();
  return l.corename ? std::string(l.corename()) : std::string("unknown");
}

std::string core_choice() { return lib().choice; }

}  // namespace pg::blas
