#!/usr/bin/env bash
# The one command that checks the CUDA kernels and the engine's device path on a GPU machine
# (bare: nvcc, CMake, a host C++ compiler, a Python with PyTorch; no package registry, no
# network, no pkg-config). Run tools/vendor_gpu_deps.sh beforehand on the development machine
# and carry `.vendor` to the GPU machine with the working tree. Everything is built by CMake,
# once; the kernel tests are its CTest tests labelled `gpu`.
#
#   bash tools/gpu_check.sh [--dry-run] [--steps STEP,...] OUTDIR
#
# --steps: only these of the steps after the build (host, probe, gpu, sanitizers (the four
# memcheck/racecheck steps), unit, cli, models, invariance, bench); env, device, vendor, deps and
# build always run, the build making only the targets the chosen steps need (bench, models,
# invariance, cli: parchgrad alone), and the probe runs whenever a chosen step needs the device
# (through parchgrad_kernels_gpu --probe when it is built, else a one-image `parchgrad bench
# --device cuda`). tools/gpu_bench.sh is `--steps bench` with its own defaults.
#
# Steps (each one's failure is recorded and the next step still runs):
#   env         nvcc, host compiler, CMake, compute-sanitizer, Python with torch
#   device      nvidia-smi's card/driver line (the architecture is taken from it)
#   vendor      unpacks .vendor/lib/*.gz (OpenBLAS, libgfortran, libquadmath) into the build
#               directory and checks their sha256 against .vendor/MANIFEST.txt
#   deps        unpacks .vendor/deps.tar.gz (the engine build's headers and libraries: libzip,
#               nlohmann-json, CLI11, stb, pugixml, Boost.Math, doctest) into BUILD_DIR/deps,
#               checks every member's sha256, links the unpacked OpenBLAS into
#               deps/lib/openblas-openmp, and puts libzip's own dependencies (libcrypto, libbz2,
#               libz) beside it only where the machine's loader has none
#   build       CMake: the whole project with PARCHGRAD_CUDA=ON and PARCHGRAD_GPU_TESTS=ON against
#               that prefix (-DPARCHGRAD_DEPS_PREFIX; nothing from pkg-config or system -dev
#               packages), CMAKE_CUDA_ARCHITECTURES from the device step, in BUILD_DIR/engine;
#               targets parchgrad, parchgrad_unit, parchgrad_kernels_gpu (tests/cuda/
#               test_kernels_gpu.cu on the shared case tables of tests/kernels/) and
#               parchgrad_tensor_core_hw; then checks that no vendored library's header came
#               from /usr/include (the compiler's dependency files) and that the binary resolves
#               libzip to the vendored copy and finds cuDNN and cuBLAS (ldd).
#               BUILD_DIR/engine/parchgrad-run runs a binary of that build with the vendored,
#               the pip nvidia-* packages' and the toolkit's library directories on its path
#   host        parchgrad_kernels_gpu --host-only (no device): the vendored OpenBLAS loads, the
#               dgrad twin agrees with plain double loops, unsupported shapes are refused
#   probe       parchgrad_kernels_gpu --probe: is there a CUDA device?
#   gpu         ctest -L gpu: tensor_core_hw (host models of mma.sync/ldmatrix/cvt/cp.async vs
#               the hardware) and kernels_gpu (every kernel vs its CPU twin on the shared
#               tables, realistic shapes, determinism, timings into OUTDIR/timings.txt)
#   memcheck+   positive control: parchgrad_kernels_gpu --broken=oob must be flagged by memcheck
#   memcheck    compute-sanitizer memcheck (leak check on) of parchgrad_kernels_gpu --quick
#   racecheck+  positive control: --broken=race must be flagged by racecheck
#   racecheck   compute-sanitizer racecheck of parchgrad_kernels_gpu --quick
#   (compute-sanitizer looked up on PATH, next to nvcc, in /usr/local/cuda and in pip's
#   nvidia/ packages; without it these four steps are SKIPped with a message)
#   (synccheck, initcheck: with EXTRA_SANITIZERS=1)
#   unit        parchgrad_unit (doctest) of that build
#   cli         that build on the bundled model: inspect, preprocess, gradient and saliency on
#               the CPU; what --device cuda answers is noted
#   models      tests/gpu/models_check.py: 24 architectures with random weights, the cuda
#               input gradient against the CPU backend and PyTorch on the GPU (1e-4), the
#               bf16/tf32 maps against PyTorch float64, no farther than 1.5x PyTorch's own
#               autocast-bf16 / TF32 map is, Spearman no lower than PyTorch's - 0.005; OUTDIR/models/
#   invariance  tests/gpu/invariance_check.py: resnet18 and vgg11_bn (random weights), examples
#               and flat-colour images, maps of --batch 1, 8 and 3 bitwise equal with
#               --deterministic (fp32, bf16, --dgrad cudnn); without it, differences reported
#   bench       tools/bench_vs_pytorch.py --device cuda at batch 256, 224x224: resnet18 fp32,
#               tf32 and bf16, resnet50 and vgg16 bf16, ParchGrad cls on resnet18 bf16, each
#               beside PyTorch's best saliency in the same run; OUTDIR/bench.json and bench.md
#               (a table to paste into BENCHMARKS.md)
# One budget for all: unit and cli run (niced, in the background) beside the device steps;
# models runs beside the sanitizer steps (both check correctness, not speed); bench runs last,
# alone on the GPU, and GPU_CHECK_RESERVE_S of the budget is kept for it. unit and cli are
# listed after the device steps.
# --dry-run (no device needed; exit 0 when they pass): env, vendor, deps, build, host, unit,
# cli, then `tests/gpu/models_check.py --selftest` (small models of the 13 ResNets and VGGs and
# one full-width model of each other family: mobilenet_v2, mobilenet_v3_small, efficientnet_b0,
# convnext_tiny at 64x64, through the CPU backend against PyTorch on the CPU; the fallback model
# builders against torchvision) as models, the invariance script's self-test, and a CPU smoke
# run of bench_vs_pytorch.py (BENCH_DRY_RUNS, default resnet18:fp32, batch 2, BENCH_DRY_SIZE,
# default 64) as bench.
#
# OUTDIR gets every log (build.log, <step>.log, timings.txt, summary.txt); the summary table
# is printed last on stdout. Exit status: 0 when no step failed, 1 otherwise, 2 on bad usage.
# A step that needs the device is SKIPped when the probe found none (and the probe FAILs).
#
# Environment: NVCC, CXX (host compiler, default g++), GPU_ARCH (e.g. 90; default: from
# nvidia-smi, else 90), JOBS (parallel compiles, default nproc), BUILD_DIR (default
# ${TMPDIR:-/tmp}/parchgrad-gpu-build), GPU_CHECK_BUDGET_S (wall-clock budget for the whole
# script, default 540: each step's timeout is cut to what is left), COMPUTE_SANITIZER,
# EXTRA_SANITIZERS=1, PYTHON (one that imports torch and numpy; default: the first of python3,
# /usr/bin/python3, python that does), CMAKE (default cmake), GPU_CHECK_RESERVE_S (seconds kept
# for bench, default 150), ENGINE_CMAKE_ARGS (more -D options for the configure, e.g. a cuDNN
# that cmake/cuda.cmake does not find), PG_DEPS_FALLBACKS=all (use every vendored fallback
# library, even where the system has one), BENCH_RUNS (model:precision[:cls|ins],... for the bench
# step), BENCH_BATCH (256), BENCH_COMPILE (auto|on|off|model:precision,...: torch.compile'd
# PyTorch beside eager, for all or the listed pairs; each model and precision compiles for
# 20-60 s, so a short lease may want off), BENCH_TORCH_CACHE (a file keeping PyTorch's bench
# figures between runs; default none), BENCH_DRY_RUNS and BENCH_DRY_SIZE (the dry run's bench).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

usage() { echo "usage: bash tools/gpu_check.sh [--dry-run] [--steps STEP,...] OUTDIR" >&2; }
DRY=0
OUTDIR=""
ALL_STEPS="host,probe,gpu,sanitizers,unit,cli,models,invariance,bench"
STEPS=$ALL_STEPS
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --steps) [ $# -ge 2 ] || { usage; exit 2; }; STEPS=$2; shift ;;
    --steps=*) STEPS=${1#--steps=} ;;
    -h | --help) usage; exit 0 ;;
    -*) usage; exit 2 ;;
    *) [ -z "$OUTDIR" ] || { usage; exit 2; }; OUTDIR=$1 ;;
  esac
  shift
done
[ -n "$OUTDIR" ] || { usage; exit 2; }
for s in ${STEPS//,/ }; do
  [[ ",$ALL_STEPS," == *",$s,"* ]] || { echo "gpu_check: unknown step '$s' (steps: $ALL_STEPS)" >&2; exit 2; }
done
# want STEP: was it chosen (--steps)?
want() { [[ ",$STEPS," == *",$1,"* ]]; }
# Does a chosen step need the device (then the probe runs)?
needs_device() { want probe || want gpu || want sanitizers || want models || want invariance || want bench; }
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
BUILD=${BUILD_DIR:-${TMPDIR:-/tmp}/parchgrad-gpu-build}
mkdir -p "$BUILD/lib" || exit 2
BUDGET=${GPU_CHECK_BUDGET_S:-540}
T0=$SECONDS
# Seconds of the budget kept for the bench step (last, alone on the GPU): the steps before it
# get their timeouts from what is left minus this.
RESERVE=${GPU_CHECK_RESERVE_S:-150}
[ "$DRY" = 1 ] && RESERVE=0
want bench || RESERVE=0

# ---- step bookkeeping ------------------------------------------------------------------------
NAMES=() STATES=() TIMES=() DETAILS=()
record() {  # name state seconds detail
  NAMES+=("$1") STATES+=("$2") TIMES+=("$3") DETAILS+=("$4")
  printf '[%-4s] %-12s %s\n' "$2" "$1" "$4"
}
left() { echo $((BUDGET - (SECONDS - T0))); }
# step_timeout CAP: the cap, or what is left of the budget (minus a reserve: 10 s, and the
# bench reserve unless a second argument says 0), whichever is less.
step_timeout() {
  local l
  l=$(($(left) - 10 - ${2:-$RESERVE}))
  [ "$l" -lt "$1" ] && echo "$l" || echo "$1"
}
# run_logged LOG TIMEOUT CMD...: runs CMD with its output in LOG; returns its status
# (124 when it ran out of time).
run_logged() {
  local log=$1 t=$2
  shift 2
  if [ "$t" -lt 5 ]; then
    echo "not run: time budget used up" > "$log"
    return 124
  fi
  echo "+ $*" > "$log"
  timeout --kill-after=10 "$t" "$@" >> "$log" 2>&1
}
# run_appended LOG TIMEOUT CMD...: the same, appending to LOG.
run_appended() {
  local log=$1 t=$2
  shift 2
  if [ "$t" -lt 5 ]; then
    echo "not run: time budget used up: $*" >> "$log"
    return 124
  fi
  echo "+ $*" >> "$log"
  timeout --kill-after=10 "$t" "$@" >> "$log" 2>&1
}
# Deferred records: unit and cli finish in the background and are listed after the device steps.
LATER=()
record_later() {
  LATER+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4")
  printf '[%-4s] %-12s %s\n' "$2" "$1" "$4"
}
flush_later() {
  local r n st t d
  for r in "${LATER[@]+"${LATER[@]}"}"; do
    IFS=$'\t' read -r n st t d <<< "$r"
    NAMES+=("$n") STATES+=("$st") TIMES+=("$t") DETAILS+=("$d")  # printed when it was recorded
  done
  LATER=()
}
# Counts of the test programs' PASS/FAIL lines, and the first FAIL line.
# (ctest -V prefixes each line of a test's output with "N: ".)
test_detail() {
  local log=$1 p f first
  p=$(grep -Ec '^([0-9]+: )?PASS' "$log")
  f=$(grep -Ec '^([0-9]+: )?FAIL' "$log")
  first=$(grep -E -m1 '^([0-9]+: )?FAIL' "$log" | cut -c1-110)
  echo "$p PASS, $f FAIL${first:+; first: $first}"
}

# ---- env ---------------------------------------------------------------------------------------
find_nvcc() {
  local c
  for c in "${NVCC:-}" "$(command -v nvcc 2>/dev/null)" "${CUDA_HOME:-/nonexistent}/bin/nvcc" \
           /usr/local/cuda/bin/nvcc $(ls -d /usr/local/cuda-*/bin/nvcc 2>/dev/null | sort -rV); do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  # A pip-installed toolkit (nvidia-cuda-nvcc wheel).
  c=$(python3 - 2>/dev/null <<'EOF'
import glob, site, sys
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in sorted(glob.glob(d + "/nvidia/*/bin/nvcc")) + sorted(glob.glob(d + "/nvidia/cuda_nvcc/bin/nvcc")):
        print(p); sys.exit(0)
EOF
  )
  [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  return 1
}
find_sanitizer() {
  local c nv_dir=$1
  for c in "${COMPUTE_SANITIZER:-}" "$(command -v compute-sanitizer 2>/dev/null)" "$nv_dir/compute-sanitizer" \
           "$nv_dir/../compute-sanitizer/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer \
           /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    [ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return 0; }
  done
  c=$(python3 - 2>/dev/null <<'EOF'
import glob, site, sys
for d in site.getsitepackages() + [site.getusersitepackages()]:
    for p in sorted(glob.glob(d + "/nvidia/**/compute-sanitizer", recursive=True)):
        import os
        if os.path.isfile(p) and os.access(p, os.X_OK):
            print(p); sys.exit(0)
EOF
  )
  [ -n "$c" ] && { echo "$c"; return 0; }
  return 1
}

ENVLOG=$OUTDIR/env.log
{
  echo "date: $(date -u)"
  echo "host: $(uname -a)"
  echo "tree: $ROOT ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
} > "$ENVLOG"
NVCC_BIN=$(find_nvcc) || NVCC_BIN=""
CXX_BIN=$(command -v "${CXX:-g++}" 2>/dev/null) || CXX_BIN=""
SANITIZER=""
if [ -n "$NVCC_BIN" ]; then
  SANITIZER=$(find_sanitizer "$(dirname "$NVCC_BIN")") || SANITIZER=""
fi
env_detail="nvcc ${NVCC_BIN:-MISSING}"
if [ -n "$NVCC_BIN" ]; then
  "$NVCC_BIN" --version >> "$ENVLOG" 2>&1
  env_detail="nvcc $("$NVCC_BIN" --version 2>/dev/null | grep -o 'release [0-9.]*' | head -1)"
fi
if [ -n "$CXX_BIN" ]; then
  "$CXX_BIN" --version >> "$ENVLOG" 2>&1
  env_detail="$env_detail, $(basename "$CXX_BIN") $("$CXX_BIN" -dumpfullversion 2>/dev/null)"
else
  env_detail="$env_detail, host compiler ${CXX:-g++} MISSING"
fi
env_detail="$env_detail, $(uname -m), sanitizer: ${SANITIZER:-none}"
echo "compute-sanitizer: ${SANITIZER:-not found}" >> "$ENVLOG"
# The engine steps: CMake, and a Python with PyTorch and numpy (the models and bench steps).
find_python() {
  local c
  for c in "${PYTHON:-}" python3 /usr/bin/python3 python; do
    [ -n "$c" ] && command -v "$c" > /dev/null 2>&1 || continue
    "$c" -c 'import torch, numpy' > /dev/null 2>&1 && { command -v "$c"; return 0; }
  done
  return 1
}
CMAKE_BIN=$(command -v "${CMAKE:-cmake}" 2>/dev/null) || CMAKE_BIN=""
PYTHON_BIN=$(find_python) || PYTHON_BIN=""
TORCH_NOTE="no Python with torch+numpy"
if [ -n "$PYTHON_BIN" ]; then
  TORCH_NOTE=$("$PYTHON_BIN" -c 'import torch, numpy
try:
    import torchvision; tv = "torchvision " + torchvision.__version__
except Exception:
    tv = "no torchvision"
print("torch %s (cuda %s), numpy %s, %s" % (torch.__version__, torch.version.cuda, numpy.__version__, tv))' 2>&1 | tail -1)
fi
{
  echo "cmake: ${CMAKE_BIN:-not found} $([ -n "$CMAKE_BIN" ] && "$CMAKE_BIN" --version | head -1)"
  echo "python: ${PYTHON_BIN:-none with torch and numpy}: $TORCH_NOTE"
  echo "make: $(command -v make || echo none), ninja: $(command -v ninja || echo none)"
} >> "$ENVLOG"
env_detail="$env_detail, cmake $([ -n "$CMAKE_BIN" ] && "$CMAKE_BIN" --version | head -1 | grep -o '[0-9][0-9.]*' || echo MISSING), $TORCH_NOTE"
if [ -n "$NVCC_BIN" ] && [ -n "$CXX_BIN" ]; then
  record env INFO 0 "$env_detail"
else
  record env FAIL 0 "$env_detail"
fi

# ---- device (nvidia-smi) ------------------------------------------------------------------------
ARCH=${GPU_ARCH:-}
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi > "$OUTDIR/nvidia-smi.log" 2>&1
  line=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1)
  # Drivers older than compute_cap in --query-gpu: the same without it.
  [ -n "$line" ] || line=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
  if [ -n "$line" ]; then
    cap=$(echo "$line" | awk -F', *' '{print $4}' | tr -d '.')
    [ -z "$ARCH" ] && [[ "$cap" =~ ^[0-9]+$ ]] && ARCH=$cap
    record device INFO 0 "$line"
  else
    record device INFO 0 "nvidia-smi gave no GPU line: $(head -1 "$OUTDIR/nvidia-smi.log" | cut -c1-90)"
  fi
else
  record device INFO 0 "nvidia-smi not found (the probe step decides whether there is a device)"
fi
ARCH=${ARCH:-90}

# ---- vendor ---------------------------------------------------------------------------------------
# The vendored shared libraries go to $BUILD/lib; blas.cpp gets that directory compiled in
# (PARCHGRAD_OPENBLAS_DIR) and the runs get it on LD_LIBRARY_PATH (OpenBLAS's libgfortran).
VLOG=$OUTDIR/vendor.log
: > "$VLOG"
vstart=$SECONDS
if [ ! -d "$ROOT/.vendor/lib" ]; then
  record vendor FAIL 0 ".vendor/lib missing: run tools/vendor_gpu_deps.sh and carry .vendor (dgrad then uses double loops)"
else
  vok=1
  for src in "$ROOT"/.vendor/lib/*; do
    name=$(basename "$src" .gz)
    if [ "${src%.gz}" != "$src" ]; then
      gzip -dc "$src" > "$BUILD/lib/$name" 2>> "$VLOG" || vok=0
    else
      cp "$src" "$BUILD/lib/$name" 2>> "$VLOG" || vok=0
    fi
    want=$(awk -v n="lib/$name" '$1 == n' "$ROOT/.vendor/MANIFEST.txt" 2>/dev/null | grep -o 'sha256=[0-9a-f]*' | cut -d= -f2)
    have=$(sha256sum "$BUILD/lib/$name" | cut -d' ' -f1)
    if [ -n "$want" ] && [ "$want" != "$have" ]; then
      echo "sha256 mismatch: $name ($have, manifest $want)" >> "$VLOG"
      vok=0
    fi
    echo "$name: $(stat -c %s "$BUILD/lib/$name") bytes, sha256 $have" >> "$VLOG"
  done
  arch_note=""
  grep -q 'arch=amd64' "$ROOT/.vendor/MANIFEST.txt" 2>/dev/null && [ "$(uname -m)" != x86_64 ] &&
    { arch_note=" (amd64 libraries on $(uname -m): OpenBLAS will not load)"; vok=0; }
  if [ "$vok" = 1 ]; then
    record vendor PASS $((SECONDS - vstart)) "$(ls "$BUILD/lib" | tr '\n' ' ')-> $BUILD/lib"
  else
    record vendor FAIL $((SECONDS - vstart)) "see vendor.log$arch_note"
  fi
fi

# ---- deps -----------------------------------------------------------------------------------------
# The engine build's prefix: .vendor/deps.tar.gz unpacked into $BUILD/deps (include/, lib/), the
# OpenBLAS of the vendor step linked in, libzip's dependencies added where the loader lacks them.
DEPS=$BUILD/deps
DLOG=$OUTDIR/deps.log
: > "$DLOG"
DEPS_OK=0
# system_has_lib NAME: does the dynamic loader find NAME (x86-64) without help?
system_has_lib() {
  local d ldc
  ldc=$(command -v ldconfig 2>/dev/null || echo /sbin/ldconfig)
  if [ -x "$ldc" ] && "$ldc" -p 2>/dev/null | grep -Eq "^[[:space:]]+$1 \(.*x86-64"; then
    return 0
  fi
  for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64 /usr/lib64; do
    [ -e "$d/$1" ] && return 0
  done
  return 1
}
dstart=$SECONDS
MANIFEST=$ROOT/.vendor/MANIFEST.txt
if [ ! -f "$ROOT/.vendor/deps.tar.gz" ]; then
  record deps FAIL 0 ".vendor/deps.tar.gz missing: run this tree's tools/vendor_gpu_deps.sh and carry .vendor"
else
  dok=1
  want=$(awk '$1 == "deps.tar.gz"' "$MANIFEST" | grep -o 'sha256=[0-9a-f]*' | cut -d= -f2)
  have=$(sha256sum "$ROOT/.vendor/deps.tar.gz" | cut -d' ' -f1)
  if [ "$want" != "$have" ]; then
    echo "sha256 mismatch: deps.tar.gz ($have, manifest ${want:-none})" >> "$DLOG"
    dok=0
  fi
  rm -rf "$DEPS"
  mkdir -p "$DEPS"
  tar -xzf "$ROOT/.vendor/deps.tar.gz" -C "$DEPS" >> "$DLOG" 2>&1 || { echo "tar failed" >> "$DLOG"; dok=0; }
  # Every member against the manifest: files by sha256, symbolic links by presence.
  awk '$1 ~ /^deps\// && $2 ~ /^sha256=/ { f = substr($1, 6); h = substr($2, 8); print h "  " f }' "$MANIFEST" \
    > "$BUILD/deps.sha256"
  nfiles=$(wc -l < "$BUILD/deps.sha256")
  (cd "$DEPS" && sha256sum -c --quiet "$BUILD/deps.sha256") >> "$DLOG" 2>&1 ||
    { echo "sha256 check of the unpacked members failed" >> "$DLOG"; dok=0; }
  for l in $(awk '$1 ~ /^deps\// && $2 ~ /^link=/ { print substr($1, 6) }' "$MANIFEST"); do
    [ -L "$DEPS/$l" ] && [ -e "$DEPS/$l" ] || { echo "missing or dangling link: $l" >> "$DLOG"; dok=0; }
  done
  [ "$nfiles" -gt 0 ] || { echo "the manifest lists no deps/ members" >> "$DLOG"; dok=0; }
  # OpenBLAS (unpacked by the vendor step) where CMakeLists.txt looks for it in a prefix.
  mkdir -p "$DEPS/lib/openblas-openmp"
  if [ -f "$BUILD/lib/libopenblas.so.0" ]; then
    ln -sf "$BUILD/lib/libopenblas.so.0" "$DEPS/lib/openblas-openmp/libopenblas.so.0"
  else
    echo "no unpacked OpenBLAS in $BUILD/lib (vendor step)" >> "$DLOG"
    dok=0
  fi
  # libzip's own dependencies: the machine's where its loader has one, else the vendored copy
  # next to libzip (found at link time through the rpath, at run time through parchgrad-run).
  fallbacks=""
  for f in "$DEPS"/lib/fallback/*; do
    [ -f "$f" ] || continue
    n=$(basename "$f")
    if [ "${PG_DEPS_FALLBACKS:-auto}" = all ] || ! system_has_lib "$n"; then
      cp "$f" "$DEPS/lib/$n"
      fallbacks="$fallbacks $n"
    fi
  done
  echo "fallback libraries used:${fallbacks:- none (the system has them)}" >> "$DLOG"
  if [ "$dok" = 1 ]; then
    DEPS_OK=1
    record deps PASS $((SECONDS - dstart)) "$nfiles files, sha256 ok, fallbacks:${fallbacks:- none} -> $DEPS"
  else
    record deps FAIL $((SECONDS - dstart)) "see deps.log"
  fi
fi

# ---- helpers of the build and the background steps -------------------------------------------------
# wait_detached STATUS_FILE PID_FILE: until STATUS_FILE has its "done" line or the process is gone.
wait_detached() {
  local pid
  while ! grep -q '^done' "$1" 2> /dev/null; do
    pid=$(cat "$2" 2> /dev/null)
    if [ -n "$pid" ] && ! kill -0 "$pid" 2> /dev/null; then
      grep -q '^done' "$1" 2> /dev/null || echo "the background job ended without its last line" >> "$1"
      return
    fi
    sleep 1
  done
}
# The engine's run-time library path: OpenBLAS's libgfortran/libquadmath ($BUILD/lib), libzip and
# its fallbacks ($DEPS/lib), the pip nvidia-* packages' lib directories (cuDNN, cuBLAS), the
# toolkit's.
engine_ld_path() {
  local dirs=("$BUILD/lib" "$DEPS/lib") d nv
  if [ -n "$PYTHON_BIN" ]; then
    while IFS= read -r d; do dirs+=("$d"); done < <("$PYTHON_BIN" - 2>/dev/null <<'EOF'
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit(0)
seen = []
for root in list(nvidia.__path__):
    for lib in sorted(glob.glob(root + "/*/lib/*.so*") + glob.glob(root + "/*/lib64/*.so*")):
        d = os.path.dirname(lib)
        if d not in seen:
            seen.append(d)
print("\n".join(seen))
EOF
    )
  fi
  nv=$(dirname "$(dirname "$NVCC_BIN")")
  for d in "$nv/lib64" "$nv/lib" "$nv"/targets/*/lib; do
    [ -d "$d" ] && dirs+=("$d")
  done
  (IFS=:; echo "${dirs[*]}")
}
# The engine build's own checks of the command line (host only), in $BUILD/cli.
cli_checks() {
  local run=$EBUILD/parchgrad-run w=$ROOT/assets/default/resnet_synth.pth d=$BUILD/cli log=$OUTDIR/cli.log
  local ex rc=0
  rm -rf "$d"
  mkdir -p "$d"
  mapfile -t ex < <(ls "$ROOT"/assets/default/examples/*.png | head -2)
  run_appended "$log" 60 "$run" --version || rc=1
  run_appended "$log" 60 "$run" inspect "$w" || rc=1
  run_appended "$log" 60 "$run" preprocess "${ex[0]}" -o "$d/x.npy" || rc=1
  run_appended "$log" 60 "$run" gradient --device cpu --weights "$w" --input "$d/x.npy" \
    --logits-out "$d/logits.npy" --grad-out "$d/grad.npy" || rc=1
  run_appended "$log" 60 "$run" saliency --device cpu --weights "$w" --out "$d/maps" "${ex[@]}" || rc=1
  for f in "$d/grad.npy" "$d/maps/results.jsonl"; do
    [ -s "$f" ] || { echo "missing: $f" >> "$log"; rc=1; }
  done
  [ "$(ls "$d"/maps/*.png 2>/dev/null | wc -l)" = "${#ex[@]}" ] || { echo "saliency wrote no PNG per image" >> "$log"; rc=1; }
  # What the device path says (here or on the GPU; not a failure either way).
  run_appended "$log" 60 "$run" gradient --device cuda --weights "$w" --input "$d/x.npy" --grad-out "$d/grad_cuda.npy"
  echo "cuda_rc $?" >> "$log"
  return $rc
}
# ---- build: one CMake configure and build ------------------------------------------------------------
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
EBUILD=$BUILD/engine
BLOG=$OUTDIR/build.log
: > "$BLOG"
BUILD_OK=0
ENGINE_OK=0
KBIN=$EBUILD/tests/parchgrad_kernels_gpu
ENGINE_LD=""
# Headers of vendored libraries that must not come from the system.
VENDORED_RE='^/usr/(local/)?include/((x86_64|aarch64)-linux-gnu/)?(boost|CLI|nlohmann|stb|pugixml|pugiconfig|zip|zipconf|doctest|jpeglib|jmorecfg|jerror|jconfig)'
# build_checks: which headers the compiler read and which libraries the binary resolves; sets
# ENGINE_OK and BUILD_DETAIL (the detail of the build record).
build_checks() {
  local deps_list nsys nvend missing h isys lddout nf zip cudnn cublas detail
  if [ -f "$EBUILD/build.ninja" ]; then
    (cd "$EBUILD" && ninja -t deps) > "$BUILD/engine.deps" 2> /dev/null
  else
    find "$EBUILD" -name '*.o.d' -exec cat {} + > "$BUILD/engine.deps" 2> /dev/null
  fi
  deps_list=$BUILD/engine.headers
  tr -s ' \\' '\n' < "$BUILD/engine.deps" | sed 's/:$//' | sort -u > "$deps_list"
  grep -E "$VENDORED_RE" "$deps_list" > "$OUTDIR/engine_system_headers.txt"
  nsys=$(wc -l < "$OUTDIR/engine_system_headers.txt")
  nvend=$(grep -c "^$DEPS/include/" "$deps_list")
  missing=""
  local want_h=(CLI/CLI.hpp nlohmann/json.hpp stb/stb_image.h stb/stb_image_write.h stb/stb_easy_font.h
                boost/math/distributions/students_t.hpp boost/config.hpp zip.h pugixml.hpp jpeglib.h)
  # (doctest only where the unit tests are among the targets)
  [[ " ${BUILD_TARGETS[*]} " == *" parchgrad_unit "* ]] && want_h+=(doctest/doctest.h)
  for h in "${want_h[@]}"; do
    grep -qx "$DEPS/include/$h" "$deps_list" || missing="$missing $h"
  done
  isys=$(grep -c -- "-isystem $DEPS/include" "$EBUILD/compile_commands.json" 2> /dev/null)
  lddout=$(LD_LIBRARY_PATH="$ENGINE_LD" ldd "$EBUILD/parchgrad" 2>&1)
  echo "$lddout" > "$OUTDIR/engine_ldd.txt"
  nf=$(grep -c 'not found' <<< "$lddout")
  zip=$(grep -o 'libzip.so.4 => [^ ]*' <<< "$lddout" | awk '{print $3}')
  cudnn=$(grep -o 'libcudnn.so[.0-9]* => [^ ]*' <<< "$lddout" | awk '{print $3}')
  cublas=$(grep -o 'libcublas.so[.0-9]* => [^ ]*' <<< "$lddout" | awk '{print $3}')
  detail="headers: $nvend vendored, $nsys from the system"
  [ -n "$missing" ] && detail="$detail, vendored not seen:$missing"
  detail="$detail; -isystem $DEPS/include in $isys compile commands; libzip ${zip:-?}, cuDNN ${cudnn:-?}, cuBLAS ${cublas:-?}"
  [ "$nf" = 0 ] || detail="$detail; ldd: $nf not found (engine_ldd.txt)"
  if [ "$nsys" = 0 ] && [ -z "$missing" ] && [ "$nf" = 0 ] && [ "$zip" = "$DEPS/lib/libzip.so.4" ]; then
    ENGINE_OK=1
  fi
  BUILD_DETAIL=$detail
}
# The targets the chosen steps need.
BUILD_TARGETS=(parchgrad)
want unit && BUILD_TARGETS+=(parchgrad_unit)
if want host || want gpu || want sanitizers || { want probe && [ "$DRY" != 1 ]; }; then
  BUILD_TARGETS+=(parchgrad_kernels_gpu)
fi
want gpu && BUILD_TARGETS+=(parchgrad_tensor_core_hw)
bstart=$SECONDS
if [ "$DEPS_OK" != 1 ] || [ -z "$NVCC_BIN" ] || [ -z "$CXX_BIN" ] || [ -z "$CMAKE_BIN" ]; then
  why="no deps prefix"
  [ -n "$NVCC_BIN" ] && [ -n "$CXX_BIN" ] || why="no nvcc or no host compiler"
  [ -n "$CMAKE_BIN" ] || why="no cmake"
  record build FAIL 0 "not built: $why"
else
  ENGINE_LD=$(engine_ld_path)
  mkdir -p "$EBUILD"
  cat > "$EBUILD/parchgrad-run" <<EOS
#!/usr/bin/env bash
# Made by tools/gpu_check.sh: runs this build's parchgrad (or \$PG_RUN_BINARY, relative to the build
# directory) with the vendored, pip nvidia-* and toolkit library directories on its path.
export LD_LIBRARY_PATH="$ENGINE_LD\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$EBUILD/\${PG_RUN_BINARY:-parchgrad}" "\$@"
EOS
  chmod +x "$EBUILD/parchgrad-run"
  echo "run-time library path: $ENGINE_LD" >> "$BLOG"
  gen_args=()
  # Ninja when there is one, else make ($CMAKE_GENERATOR, as CMake reads it, wins); a build
  # directory made with another generator is started afresh.
  if [ -n "${CMAKE_GENERATOR:-}" ]; then
    gen=$CMAKE_GENERATOR
  elif command -v ninja > /dev/null 2>&1; then
    gen=Ninja
  else
    gen="Unix Makefiles"
  fi
  had=$(sed -n 's/^CMAKE_GENERATOR:INTERNAL=//p' "$EBUILD/CMakeCache.txt" 2> /dev/null)
  if [ -n "$had" ] && [ "$had" != "$gen" ]; then
    echo "$EBUILD was made with '$had', not '$gen': starting it afresh" >> "$BLOG"
    rm -rf "$EBUILD/CMakeCache.txt" "$EBUILD/CMakeFiles"
  fi
  # nvcc refuses host compilers newer than it knows: then -allow-unsupported-compiler.
  printf '__global__ void k() {}\nint main() { k<<<1, 1>>>(); return 0; }\n' > "$BUILD/nvcc_probe.cu"
  if ! "$NVCC_BIN" -ccbin "$CXX_BIN" "$BUILD/nvcc_probe.cu" -o "$BUILD/nvcc_probe" >> "$BLOG" 2>&1 &&
      grep -qi unsupported "$BLOG"; then
    gen_args+=(-DCMAKE_CUDA_FLAGS=-allow-unsupported-compiler)
  fi
  # shellcheck disable=SC2206  # ENGINE_CMAKE_ARGS is a list of words on purpose
  gen_args+=(${ENGINE_CMAKE_ARGS:-})
  # cmake/cuda.cmake asks `python3` for the pip nvidia-* packages: let that be $PYTHON_BIN.
  pypath=""
  [ -n "$PYTHON_BIN" ] && pypath="$(dirname "$PYTHON_BIN"):"
  PATH="$pypath$PATH" run_appended "$BLOG" "$(step_timeout 120)" "$CMAKE_BIN" -S "$ROOT" -B "$EBUILD" \
    -G "$gen" -DCMAKE_BUILD_TYPE=Release -DPARCHGRAD_CUDA=ON -DPARCHGRAD_GPU_TESTS=ON -DPARCHGRAD_DEPS_PREFIX="$DEPS" \
    -DCMAKE_CXX_COMPILER="$CXX_BIN" -DCMAKE_CUDA_COMPILER="$NVCC_BIN" -DCMAKE_CUDA_HOST_COMPILER="$CXX_BIN" \
    -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DSYSTEM_PYTHON="${PYTHON_BIN:-python3-not-found}" "${gen_args[@]}"
  rc=$?
  if [ "$rc" != 0 ]; then
    record build FAIL $((SECONDS - bstart)) "configure failed (exit $rc): $(grep -m1 -E 'CMake Error|error' "$BLOG" | cut -c1-100) (see build.log)"
  else
    run_appended "$BLOG" "$(step_timeout 480)" "$CMAKE_BIN" --build "$EBUILD" -j "$JOBS" \
      --target "${BUILD_TARGETS[@]}"
    rc=$?
    if [ "$rc" != 0 ]; then
      record build FAIL $((SECONDS - bstart)) "build failed (exit $rc$([ "$rc" = 124 ] && echo ', timed out')): $(grep -m1 -E 'error|Error' "$BLOG" | cut -c1-100)"
    else
      BUILD_OK=1
      build_checks
      if [ "$ENGINE_OK" = 1 ]; then st=PASS; else st=FAIL; fi
      record build $st $((SECONDS - bstart)) "sm_$ARCH, -j$JOBS, ${BUILD_TARGETS[*]}; $BUILD_DETAIL"
    fi
  fi
fi
export LD_LIBRARY_PATH="$BUILD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- unit, cli: in the background (niced) beside the device steps; recorded later ------------------------
ASTAT=$BUILD/aux.status
: > "$ASTAT"
AUX_STARTED=0
aux_job() {
  local t0=$SECONDS
  if want unit; then
    run_logged "$OUTDIR/unit.log" "$(step_timeout 180)" env OPENBLAS_NUM_THREADS=1 PG_RUN_BINARY=tests/parchgrad_unit \
      nice -n 5 "$EBUILD/parchgrad-run"
    echo "unit $? $((SECONDS - t0))" >> "$ASTAT"
  fi
  t0=$SECONDS
  if want cli; then
    : > "$OUTDIR/cli.log"
    cli_checks
    echo "cli $? $((SECONDS - t0))" >> "$ASTAT"
  fi
}
if [ "$BUILD_OK" = 1 ] && { want unit || want cli; }; then
  # Detached (not one of this shell's jobs); "done" marks its end.
  rm -f "$BUILD/aux.pid"
  ( (echo "$BASHPID" > "$BUILD/aux.pid"; aux_job; echo "done" >> "$ASTAT") > /dev/null 2>&1 & )
  AUX_STARTED=1
fi
# astat NAME: "rc seconds" of one background stage, empty when it did not run.
astat() { awk -v n="$1" '$1 == n { print $2, $3 }' "$ASTAT" 2>/dev/null | tail -1; }
collect_aux() {
  local rc secs detail st
  want unit || want cli || return
  if [ "$AUX_STARTED" != 1 ]; then
    want unit && record_later unit SKIP 0 "not built"
    want cli && record_later cli SKIP 0 "not built"
    return
  fi
  wait_detached "$ASTAT" "$BUILD/aux.pid"
  rc=$(astat unit)
  if ! want unit; then
    :
  elif [ -z "$rc" ]; then
    record_later unit FAIL 0 "did not run (see unit.log)"
  else
    secs=${rc##* }
    rc=${rc%% *}
    detail=$(grep -m1 '^\[doctest\] test cases' "$OUTDIR/unit.log" | sed 's/\[doctest\] //; s/  */ /g')
    if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
    record_later unit $st "$secs" "exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'); ${detail:-no doctest summary (see unit.log)}"
  fi
  rc=$(astat cli)
  if ! want cli; then
    :
  elif [ -z "$rc" ]; then
    record_later cli FAIL 0 "did not run (see cli.log)"
  else
    secs=${rc##* }
    rc=${rc%% *}
    detail="inspect, preprocess, gradient, saliency on the CPU"
    if grep -q '^cuda_rc 0' "$OUTDIR/cli.log"; then
      detail="$detail; --device cuda: ran"
    else
      detail="$detail; --device cuda: $(grep -v '^+' "$OUTDIR/cli.log" | grep -m1 -E 'error|device' | cut -c1-110)"
    fi
    if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; detail="failed (see cli.log); $detail"; fi
    record_later cli $st "$secs" "$detail"
  fi
}

# ---- host, probe ---------------------------------------------------------------------------------------
HAVE_DEVICE=0
RUN_STEPS=()
want gpu && RUN_STEPS+=(gpu)
want sanitizers && RUN_STEPS+=(memcheck+ memcheck racecheck+ racecheck)
PROBE=()
needs_device && PROBE=(probe)
if ! want host; then
  :
elif [ "$BUILD_OK" = 1 ]; then
  s0=$SECONDS
  run_logged "$OUTDIR/host.log" "$(step_timeout 120)" "$KBIN" --host-only
  rc=$?
  if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
  record host $st $((SECONDS - s0)) "exit $rc; $(test_detail "$OUTDIR/host.log"); $(grep -m1 '^INFO OpenBLAS' "$OUTDIR/host.log" | cut -c6-80)"
else
  record host SKIP 0 "not built"
fi
if [ "${#PROBE[@]}" = 0 ]; then
  for s in "${RUN_STEPS[@]+"${RUN_STEPS[@]}"}"; do record "$s" SKIP 0 "dry run"; done
elif [ "$DRY" = 1 ]; then
  for s in probe "${RUN_STEPS[@]+"${RUN_STEPS[@]}"}"; do record "$s" SKIP 0 "dry run"; done
elif [ "$BUILD_OK" != 1 ]; then
  for s in probe "${RUN_STEPS[@]+"${RUN_STEPS[@]}"}"; do record "$s" SKIP 0 "not built"; done
elif [[ " ${BUILD_TARGETS[*]} " == *" parchgrad_kernels_gpu "* ]]; then
  s0=$SECONDS
  run_logged "$OUTDIR/probe.log" "$(step_timeout 60)" "$KBIN" --probe
  rc=$?
  if [ "$rc" = 0 ]; then
    HAVE_DEVICE=1
    record probe PASS $((SECONDS - s0)) "$(grep -m1 '^INFO device' "$OUTDIR/probe.log" | cut -c13-120)"
  else
    msg=$(grep -m1 '^FAIL' "$OUTDIR/probe.log" | cut -c6-120)
    record probe FAIL $((SECONDS - s0)) "${msg:-probe exited $rc (see probe.log)}"
  fi
else
  # Without the kernel test program (--steps without host/gpu/sanitizers): the engine's own
  # device path on one small batch.
  s0=$SECONDS
  run_logged "$OUTDIR/probe.log" "$(step_timeout 90)" "$EBUILD/parchgrad-run" bench --device cuda --model resnet18 \
    --batch 2 --size 64 --iters 1 --warmup 1 --json
  rc=$?
  if [ "$rc" = 0 ]; then
    HAVE_DEVICE=1
    record probe PASS $((SECONDS - s0)) "parchgrad bench --device cuda ran (resnet18, batch 2): $(grep -m1 '^device: ' "$OUTDIR/probe.log" | cut -c9-100)"
  else
    record probe FAIL $((SECONDS - s0)) "parchgrad bench --device cuda exited $rc: $(grep -v '^+' "$OUTDIR/probe.log" | grep -m1 -iE 'error|device' | cut -c1-100)"
  fi
fi

# sanitizer_step NAME LOG TIMEOUT_CAP EXPECT TOOL ARGS...: EXPECT is "clean" (the tool must
# report nothing and the program must pass) or "flagged" (the tool must report errors).
sanitizer_step() {
  local name=$1 log=$2 cap=$3 expect=$4 tool=$5 s0=$SECONDS rc errs
  shift 5
  run_logged "$log" "$(step_timeout "$cap")" "$SANITIZER" --tool "$tool" --error-exitcode 86 "$@"
  rc=$?
  # memcheck/initcheck/synccheck end with "ERROR SUMMARY: N errors"; racecheck with
  # "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)".
  errs=$(grep -Eo '(ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY: [0-9]+ hazard)' "$log" | grep -Eo '[0-9]+' |
         awk '{ s += $1 } END { print s + 0 }')
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    record "$name" FAIL $((SECONDS - s0)) "timed out (see $(basename "$log"))"
  elif [ "$expect" = flagged ]; then
    if [ "$rc" = 86 ] || [ "$errs" -gt 0 ]; then
      record "$name" PASS $((SECONDS - s0)) "positive control flagged ($errs reported, exit $rc)"
    else
      record "$name" FAIL $((SECONDS - s0)) "positive control NOT flagged (exit $rc): the $tool results mean nothing"
    fi
  else
    if [ "$rc" = 0 ] && [ "$errs" = 0 ] && grep -q '^SUMMARY: .* 0 failed' "$log"; then
      record "$name" PASS $((SECONDS - s0)) "0 errors; $(test_detail "$log")"
    else
      record "$name" FAIL $((SECONDS - s0)) "exit $rc, $errs reported; $(test_detail "$log")"
    fi
  fi
}

# ---- the models step, started beside the sanitizers -------------------------------------------------
MODELS_PID=""
# Is there a device for the engine? The probe's answer.
engine_device() { [ "$HAVE_DEVICE" = 1 ]; }
# The models step beside the sanitizers: up to 300 s, no model started after two thirds of that.
start_models() {
  local t
  want models || return
  [ "$DRY" = 1 ] && return
  [ "$ENGINE_OK" = 1 ] && [ -n "$PYTHON_BIN" ] && engine_device || return
  t=$(step_timeout 300)
  [ "$t" -ge 60 ] || return
  rm -f "$BUILD/models.rc" "$BUILD/models.status" "$BUILD/models.pid"
  MODELS_START=$SECONDS
  ( (
    echo "$BASHPID" > "$BUILD/models.pid"
    run_logged "$OUTDIR/models.log" "$t" env PYTHONUNBUFFERED=1 "$PYTHON_BIN" "$ROOT/tests/gpu/models_check.py" \
      --bin "$EBUILD/parchgrad-run" --out "$OUTDIR/models" --time-limit $((t * 2 / 3)) --timeout 150
    echo $? > "$BUILD/models.rc"
    echo "done" > "$BUILD/models.status"
  ) > /dev/null 2>&1 & )
  MODELS_PID=started
}

# ---- gpu (ctest -L gpu), sanitizers -------------------------------------------------------------------
if [ "$DRY" != 1 ] && [ "$BUILD_OK" = 1 ]; then
  if [ "$HAVE_DEVICE" != 1 ]; then
    for s in "${RUN_STEPS[@]+"${RUN_STEPS[@]}"}"; do record "$s" SKIP 0 "no CUDA device"; done
  else
    # tensor_core_hw and kernels_gpu, their output in the log (-V: each line prefixed "N: ")
    if want gpu; then
      s0=$SECONDS
      CTEST_BIN=$(dirname "$CMAKE_BIN")/ctest
      [ -x "$CTEST_BIN" ] || CTEST_BIN=ctest
      run_logged "$OUTDIR/gpu.log" "$(step_timeout 300)" "$CTEST_BIN" --test-dir "$EBUILD" -L gpu -V --timeout 280
      rc=$?
      grep -o 'TIME .*' "$OUTDIR/gpu.log" > "$OUTDIR/timings.txt"
      if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
      record gpu $st $((SECONDS - s0)) "exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'); $(grep -m1 -E 'tests passed' "$OUTDIR/gpu.log"); $(test_detail "$OUTDIR/gpu.log"); $(wc -l < "$OUTDIR/timings.txt") timings"
    fi
    start_models
    # sanitizers, each with its positive control
    if ! want sanitizers; then
      :
    elif [ -z "$SANITIZER" ]; then
      for s in memcheck+ memcheck racecheck+ racecheck; do record "$s" SKIP 0 "compute-sanitizer not found"; done
    else
      # The positive controls first: they are quick, and without them a clean run proves nothing.
      sanitizer_step memcheck+ "$OUTDIR/memcheck_control.log" 60 flagged memcheck "$KBIN" --broken=oob
      sanitizer_step memcheck "$OUTDIR/memcheck.log" 150 clean memcheck --leak-check full "$KBIN" --quick
      sanitizer_step racecheck+ "$OUTDIR/racecheck_control.log" 60 flagged racecheck "$KBIN" --broken=race
      sanitizer_step racecheck "$OUTDIR/racecheck.log" 200 clean racecheck "$KBIN" --quick
      if [ "${EXTRA_SANITIZERS:-0}" = 1 ]; then
        sanitizer_step synccheck "$OUTDIR/synccheck.log" 120 clean synccheck "$KBIN" --quick
        sanitizer_step initcheck "$OUTDIR/initcheck.log" 120 clean initcheck "$KBIN" --quick
      fi
    fi
  fi
fi

# ---- unit, cli, models, invariance, bench ----------------------------------------------------------------
collect_aux
flush_later
# models: the architectures of models_check.py on the device (started beside the sanitizers, or here when the
# device steps did not run), or the self-test
[ -z "$MODELS_PID" ] && start_models
models_detail() {  # LOG: the script's last summary lines
  local last worst
  last=$(grep -E '^models: ' "$1" | tail -1)
  worst=$(grep -E '^worst: ' "$1" | tail -1 | cut -c8-)
  echo "${last:-no summary line (see $(basename "$1"))}${worst:+; worst $worst}"
}
if ! want models; then
  :
elif [ "$DRY" = 1 ]; then
  if [ "$ENGINE_OK" = 1 ] && [ -n "$PYTHON_BIN" ]; then
    s0=$SECONDS
    run_logged "$OUTDIR/models.log" "$(step_timeout 420)" env PYTHONUNBUFFERED=1 "$PYTHON_BIN" \
      "$ROOT/tests/gpu/models_check.py" --bin "$EBUILD/parchgrad-run" --out "$OUTDIR/models" --selftest \
      --models +mobilenet_v2,mobilenet_v3_small,efficientnet_b0,convnext_tiny --threads "$JOBS" --jobs 1
    rc=$?
    if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
    record models $st $((SECONDS - s0)) "selftest (CPU): exit $rc; $(models_detail "$OUTDIR/models.log")"
  else
    record models SKIP 0 "selftest needs the engine build and a Python with torch"
  fi
elif [ -n "$MODELS_PID" ]; then
  wait_detached "$BUILD/models.status" "$BUILD/models.pid"
  rc=$(cat "$BUILD/models.rc" 2> /dev/null || echo 1)
  if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
  record models $st $((SECONDS - MODELS_START)) "exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'); $(models_detail "$OUTDIR/models.log")"
elif ! engine_device; then
  record models SKIP 0 "no CUDA device"
elif [ "$ENGINE_OK" != 1 ]; then
  record models SKIP 0 "engine not built"
elif [ -z "$PYTHON_BIN" ]; then
  record models FAIL 0 "no Python that imports torch and numpy (set PYTHON)"
else
  record models FAIL 0 "not started: time budget used up"
fi
# invariance: an image's map bitwise the same at --batch 1, 8 and 3 with --deterministic
# (fp32, bf16, --dgrad cudnn), and what happens without it (tests/gpu/invariance_check.py)
inv_detail() {
  local last
  last=$(grep -E '^invariance: ' "$1" | tail -1)
  echo "${last:-no summary line (see $(basename "$1"))}"
}
if ! want invariance; then
  :
elif [ "$DRY" = 1 ]; then
  if [ "$ENGINE_OK" = 1 ] && [ -n "$PYTHON_BIN" ]; then
    s0=$SECONDS
    run_logged "$OUTDIR/invariance.log" "$(step_timeout 180)" env PYTHONUNBUFFERED=1 "$PYTHON_BIN" \
      "$ROOT/tests/gpu/invariance_check.py" --bin "$EBUILD/parchgrad-run" --out "$OUTDIR/invariance" --selftest
    rc=$?
    if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
    record invariance $st $((SECONDS - s0)) "selftest (CPU): exit $rc; $(inv_detail "$OUTDIR/invariance.log")"
  else
    record invariance SKIP 0 "selftest needs the engine build and a Python with torch"
  fi
elif ! engine_device; then
  record invariance SKIP 0 "no CUDA device"
elif [ "$ENGINE_OK" != 1 ]; then
  record invariance SKIP 0 "engine not built"
elif [ -z "$PYTHON_BIN" ]; then
  record invariance FAIL 0 "no Python that imports torch and numpy (set PYTHON)"
else
  s0=$SECONDS
  run_logged "$OUTDIR/invariance.log" "$(step_timeout 240)" env PYTHONUNBUFFERED=1 "$PYTHON_BIN" \
    "$ROOT/tests/gpu/invariance_check.py" --bin "$EBUILD/parchgrad-run" --out "$OUTDIR/invariance" --timeout 120
  rc=$?
  if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
  record invariance $st $((SECONDS - s0)) "exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'); $(inv_detail "$OUTDIR/invariance.log")"
fi
# bench: last, alone on the GPU, with the reserve kept for it
bench_detail() {  # JSON: one "model/precision[+pg] saliency ratio" per run
  "$PYTHON_BIN" - "$1" 2> /dev/null <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
parts = []
for r in d["results"]:
    lab = r["model"] + ("/" + r["precision"] if r["device"] == "cuda" else "")
    parts.append("%s %.0f img/s (%.2fx torch)" % (lab, r["engine_saliency_ips"], r["saliency_ratio"]))
    for m in ("cls", "ins"):
        v = r["engine_reported"].get("parchgrad_%s_ips" % m)
        if v:
            parts.append("%s+%s %.0f img/s" % (lab, m, v))
parts += ["FAILED " + f["run"] for f in d.get("failed", [])]
print(", ".join(parts))
EOF
}
BENCH_RUNS=${BENCH_RUNS:-resnet18:fp32,resnet18:tf32,resnet18:bf16,resnet50:bf16,vgg16:bf16,resnet18:bf16:cls}
# The dry run's CPU smoke run (fp32 only on the CPU): BENCH_DRY_RUNS at BENCH_DRY_SIZE, batch 2.
BENCH_DRY_RUNS=${BENCH_DRY_RUNS:-resnet18:fp32}
BENCH_DRY_SIZE=${BENCH_DRY_SIZE:-64}
# BENCH_TORCH_CACHE: a file that keeps PyTorch's figures between runs (bench_vs_pytorch.py --torch-cache).
bench_cache=()
[ -n "${BENCH_TORCH_CACHE:-}" ] && bench_cache=(--torch-cache "$BENCH_TORCH_CACHE")
if ! want bench; then
  :
elif [ "$DRY" = 1 ]; then
  if [ "$ENGINE_OK" = 1 ] && [ -n "$PYTHON_BIN" ]; then
    s0=$SECONDS
    run_logged "$OUTDIR/bench.log" "$(step_timeout 300)" env PYTHONUNBUFFERED=1 "$PYTHON_BIN" \
      "$ROOT/tools/bench_vs_pytorch.py" --bin "$EBUILD/parchgrad-run" --device cpu --runs "$BENCH_DRY_RUNS" \
      --batch 2 --size "$BENCH_DRY_SIZE" --iters 1 --warmup 1 --threads "$JOBS" --json-out "$OUTDIR/bench.json" \
      --md-out "$OUTDIR/bench.md" "${bench_cache[@]+"${bench_cache[@]}"}"
    rc=$?
    if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
    record bench $st $((SECONDS - s0)) "CPU smoke run ($BENCH_DRY_RUNS, batch 2, ${BENCH_DRY_SIZE}x$BENCH_DRY_SIZE): exit $rc; $(bench_detail "$OUTDIR/bench.json")"
  else
    record bench SKIP 0 "smoke run needs the engine build and a Python with torch"
  fi
elif ! engine_device; then
  record bench SKIP 0 "no CUDA device"
elif [ "$ENGINE_OK" != 1 ]; then
  record bench SKIP 0 "engine not built"
elif [ -z "$PYTHON_BIN" ]; then
  record bench FAIL 0 "no Python that imports torch and numpy (set PYTHON)"
else
  s0=$SECONDS
  run_logged "$OUTDIR/bench.log" "$(step_timeout 300 0)" env PYTHONUNBUFFERED=1 "$PYTHON_BIN" \
    "$ROOT/tools/bench_vs_pytorch.py" --bin "$EBUILD/parchgrad-run" --device cuda --runs "$BENCH_RUNS" \
    --compile "${BENCH_COMPILE:-auto}" --batch "${BENCH_BATCH:-256}" --size 224 --iters 8 --warmup 3 \
    --json-out "$OUTDIR/bench.json" --md-out "$OUTDIR/bench.md" "${bench_cache[@]+"${bench_cache[@]}"}"
  rc=$?
  if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
  record bench $st $((SECONDS - s0)) "exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'); $(bench_detail "$OUTDIR/bench.json")"
fi

# ---- summary (last on stdout) ----------------------------------------------------------------------
nfail=0 nskip=0
for st in "${STATES[@]}"; do
  [ "$st" = FAIL ] && nfail=$((nfail + 1))
  [ "$st" = SKIP ] && nskip=$((nskip + 1))
done
{
  echo
  echo "==== gpu_check summary$([ "$DRY" = 1 ] && echo ' (dry run)'): $OUTDIR ===="
  printf '%-12s %-5s %5s  %s\n' step state secs detail
  for i in "${!NAMES[@]}"; do
    printf '%-12s %-5s %5s  %s\n' "${NAMES[$i]}" "${STATES[$i]}" "${TIMES[$i]}" "${DETAILS[$i]}"
  done
  if [ "$nfail" = 0 ]; then
    echo "RESULT: PASS ($nskip skipped, $((SECONDS - T0)) s)"
  else
    echo "RESULT: FAIL ($nfail failed, $nskip skipped, $((SECONDS - T0)) s); logs in $OUTDIR"
  fi
} | tee "$OUTDIR/summary.txt"
[ "$nfail" = 0 ]
