#!/usr/bin/env bash
# The one command that checks the CUDA kernels on a GPU machine (bare: nvcc, a host C++
# compiler; no package registry, no network). Run tools/vendor_gpu_deps.sh beforehand on
# the development machine and carry `.vendor` to the GPU machine with the working tree.
#
#   bash tools/gpu_check.sh [--dry-run] OUTDIR
#
# Steps (each one's failure is recorded and the next step still runs):
#   env         nvcc, host compiler, target architecture, compute-sanitizer, vendored files
#   device      nvidia-smi's card/driver line (the architecture is taken from it)
#   vendor      unpacks .vendor/lib/*.gz (OpenBLAS, libgfortran, libquadmath) into the build
#               directory and checks their sha256 against .vendor/MANIFEST.txt
#   build       nvcc: kernels/cuda/*.cu, tests/cuda/test_kernels_gpu.cu, broken_kernels.cu;
#               host compiler: the CPU twins of kernels/cpu (OpenMP when the compiler has
#               it, else tests/cuda/omp_stub); nvcc: tests/cuda/test_tensor_core_hw.cu
#   host        test_kernels_gpu --host-only (no device): the vendored OpenBLAS loads, the
#               dgrad twin agrees with plain double loops, unsupported shapes are refused
#   probe       test_kernels_gpu --probe: is there a CUDA device?
#   tensor_core test_tensor_core_hw: host models of mma.sync/ldmatrix/cvt/cp.async vs hardware
#   kernels     test_kernels_gpu: every kernel vs its CPU twin, determinism, timings
#   memcheck+   positive control: --broken=oob must be flagged by memcheck
#   memcheck    compute-sanitizer memcheck (leak check on) of test_kernels_gpu --quick
#   racecheck+  positive control: --broken=race must be flagged by racecheck
#   racecheck   compute-sanitizer racecheck of test_kernels_gpu --quick
#   (compute-sanitizer looked up on PATH, next to nvcc, in /usr/local/cuda and in pip's
#   nvidia/ packages; without it these four steps are SKIPped with a message)
#   (synccheck, initcheck: with EXTRA_SANITIZERS=1)
# --dry-run: env, vendor, build and host only (no device needed; exit 0 when they pass).
#
# OUTDIR gets every log (build.log, <step>.log, timings.txt, summary.txt); the summary table
# is printed last on stdout. Exit status: 0 when no step failed, 1 otherwise, 2 on bad usage.
# A step that needs the device is SKIPped when the probe found none (and the probe FAILs).
#
# Environment: NVCC, CXX (host compiler, default g++), GPU_ARCH (e.g. 90; default: from
# nvidia-smi, else 90), JOBS (parallel compiles, default nproc), BUILD_DIR (default
# ${TMPDIR:-/tmp}/parchgrad-gpu-build), GPU_CHECK_BUDGET_S (wall-clock budget for the whole
# script, default 540: each step's timeout is cut to what is left), COMPUTE_SANITIZER,
# EXTRA_SANITIZERS=1.
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

usage() { echo "usage: bash tools/gpu_check.sh [--dry-run] OUTDIR" >&2; }
DRY=0
OUTDIR=""
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage; exit 2 ;;
    *) [ -z "$OUTDIR" ] || { usage; exit 2; }; OUTDIR=$a ;;
  esac
done
[ -n "$OUTDIR" ] || { usage; exit 2; }
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
BUILD=${BUILD_DIR:-${TMPDIR:-/tmp}/parchgrad-gpu-build}
mkdir -p "$BUILD/obj" "$BUILD/lib" || exit 2
BUDGET=${GPU_CHECK_BUDGET_S:-540}
T0=$SECONDS

# ---- step bookkeeping ------------------------------------------------------------------------
NAMES=() STATES=() TIMES=() DETAILS=()
record() {  # name state seconds detail
  NAMES+=("$1") STATES+=("$2") TIMES+=("$3") DETAILS+=("$4")
  printf '[%-4s] %-12s %s\n' "$2" "$1" "$4"
}
left() { echo $((BUDGET - (SECONDS - T0))); }
# step_timeout CAP: the cap, or what is left of the budget (minus a reserve), whichever is less.
step_timeout() {
  local l
  l=$(($(left) - 10))
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
# Counts of the test programs' PASS/FAIL lines, and the first FAIL line.
test_detail() {
  local log=$1 p f first
  p=$(grep -c '^PASS' "$log")
  f=$(grep -c '^FAIL' "$log")
  first=$(grep -m1 '^FAIL' "$log" | cut -c1-110)
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

# ---- build ----------------------------------------------------------------------------------------
BLOG=$OUTDIR/build.log
: > "$BLOG"
bstart=$SECONDS
BUILD_OK=0
TC_OK=0
if [ -n "$NVCC_BIN" ] && [ -n "$CXX_BIN" ]; then
  JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
  NVFLAGS=(-std=c++17 -O3 -I"$ROOT" -lineinfo -ccbin "$CXX_BIN"
           -gencode "arch=compute_$ARCH,code=sm_$ARCH" -gencode "arch=compute_$ARCH,code=compute_$ARCH")
  CXXFLAGS=(-std=c++17 -O3 -DNDEBUG -I"$ROOT")
  # nvcc refuses host compilers newer than it knows: retry once with -allow-unsupported-compiler.
  printf '__global__ void k() {}\nint main() { k<<<1, 1>>>(); return 0; }\n' > "$BUILD/probe.cu"
  if ! "$NVCC_BIN" "${NVFLAGS[@]}" "$BUILD/probe.cu" -o "$BUILD/probe" >> "$BLOG" 2>&1; then
    if grep -qi 'unsupported' "$BLOG"; then
      NVFLAGS+=(-allow-unsupported-compiler)
      echo "retrying with -allow-unsupported-compiler" >> "$BLOG"
    fi
  fi
  # OpenMP: the compiler's, or the stub (twins single-threaded; OpenBLAS may then not load).
  printf '#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n' > "$BUILD/omp_probe.cpp"
  if "$CXX_BIN" -fopenmp "$BUILD/omp_probe.cpp" -o "$BUILD/omp_probe" >> "$BLOG" 2>&1; then
    OMP_CXX=(-fopenmp)
    OMP_NV=(-Xcompiler=-fopenmp)
    OMP_LINK=(-Xcompiler=-fopenmp -lgomp)
    omp_note="OpenMP"
  else
    OMP_CXX=(-I"$ROOT/tests/cuda/omp_stub")
    OMP_NV=(-I"$ROOT/tests/cuda/omp_stub")
    OMP_LINK=()
    omp_note="no OpenMP in $(basename "$CXX_BIN"): stub omp.h, single-threaded twins"
  fi
  # The BF16 data-gradient variant is tested when this tree's header declares it.
  if grep -q 'launch_conv_dgrad_bf16' kernels/cuda/conv_dgrad.h; then
    NVFLAGS+=(-DPG_GPU_TEST_BF16=1)
    omp_note="$omp_note, with bf16 dgrad"
  fi
  echo "flags: nvcc ${NVFLAGS[*]} ${OMP_NV[*]}; c++ ${CXXFLAGS[*]} ${OMP_CXX[*]}" >> "$BLOG"

  # One compile per source, at most JOBS at a time; each writes its own log.
  objs=()
  compile() {  # object, then the command
    local obj=$1
    shift
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n 2>/dev/null || sleep 0.2; done
    ("$@" > "$BUILD/obj/$obj.log" 2>&1 && touch "$BUILD/obj/$obj.ok") &
    objs+=("$BUILD/obj/$obj")
  }
  rm -f "$BUILD"/obj/*.ok "$BUILD"/obj/*.o "$BUILD/test_kernels_gpu" "$BUILD/test_tensor_core_hw"
  for cu in kernels/cuda/*.cu tests/cuda/test_kernels_gpu.cu tests/cuda/broken_kernels.cu; do
    o=$(basename "$cu" .cu)_cu.o
    compile "$o" "$NVCC_BIN" "${NVFLAGS[@]}" "${OMP_NV[@]}" -c "$cu" -o "$BUILD/obj/$o"
  done
  for cpp in kernels/cpu/relu.cpp kernels/cpu/pool.cpp kernels/cpu/channel_stats.cpp kernels/cpu/conv2d.cpp; do
    o=$(basename "$cpp" .cpp)_cpp.o
    compile "$o" "$CXX_BIN" "${CXXFLAGS[@]}" "${OMP_CXX[@]}" -c "$cpp" -o "$BUILD/obj/$o"
  done
  compile blas_cpp.o "$CXX_BIN" "${CXXFLAGS[@]}" "${OMP_CXX[@]}" "-DPARCHGRAD_OPENBLAS_DIR=\"$BUILD/lib\"" \
    -c kernels/cpu/blas.cpp -o "$BUILD/obj/blas_cpp.o"
  # The tensor-core hardware test is one self-contained source.
  compile test_tensor_core_hw "$NVCC_BIN" "${NVFLAGS[@]}" tests/cuda/test_tensor_core_hw.cu -o "$BUILD/test_tensor_core_hw"
  wait
  # test_kernels_gpu is linked when all of its objects compiled (test_tensor_core_hw is apart).
  kobjs_ok=1
  for obj in "${objs[@]}"; do
    { echo "=== $(basename "$obj")"; cat "$obj.log"; } >> "$BLOG"
    if [ ! -f "$obj.ok" ]; then
      echo "FAILED: $(basename "$obj")" >> "$BLOG"
      [ "$(basename "$obj")" = test_tensor_core_hw ] || kobjs_ok=0
    fi
  done
  [ -f "$BUILD/obj/test_tensor_core_hw.ok" ] && TC_OK=1
  if [ "$kobjs_ok" = 1 ]; then
    echo "=== link test_kernels_gpu" >> "$BLOG"
    if "$NVCC_BIN" "${NVFLAGS[@]}" "$BUILD"/obj/*_cu.o "$BUILD"/obj/*_cpp.o "${OMP_LINK[@]+"${OMP_LINK[@]}"}" -ldl \
        -o "$BUILD/test_kernels_gpu" >> "$BLOG" 2>&1; then
      BUILD_OK=1
    else
      echo "FAILED: link of test_kernels_gpu" >> "$BLOG"
    fi
  fi
  failed=$(grep '^FAILED' "$BLOG" | cut -d' ' -f2- | tr '\n' ' ')
  if [ "$BUILD_OK" = 1 ] && [ "$TC_OK" = 1 ]; then
    record build PASS $((SECONDS - bstart)) "sm_$ARCH, $omp_note, -j$JOBS -> $BUILD"
  else
    record build FAIL $((SECONDS - bstart)) "failed: ${failed:-?} (see build.log)"
  fi
else
  record build FAIL 0 "no nvcc or no host compiler"
fi

# ---- runs -------------------------------------------------------------------------------------------
export LD_LIBRARY_PATH="$BUILD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
KBIN=$BUILD/test_kernels_gpu
TBIN=$BUILD/test_tensor_core_hw
HAVE_DEVICE=0
RUN_STEPS=(tensor_core kernels memcheck+ memcheck racecheck+ racecheck)

# host side, no device: OpenBLAS from the build's lib directory, twin vs double loops
if [ "$BUILD_OK" = 1 ]; then
  s0=$SECONDS
  run_logged "$OUTDIR/host.log" "$(step_timeout 120)" "$KBIN" --host-only
  rc=$?
  if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
  record host $st $((SECONDS - s0)) "exit $rc; $(test_detail "$OUTDIR/host.log"); $(grep -m1 '^INFO OpenBLAS' "$OUTDIR/host.log" | cut -c6-80)"
else
  record host SKIP 0 "test_kernels_gpu not built"
fi

if [ "$DRY" = 1 ]; then
  for s in probe "${RUN_STEPS[@]}"; do record "$s" SKIP 0 "dry run"; done
elif [ "$BUILD_OK" != 1 ]; then
  record probe SKIP 0 "test_kernels_gpu not built"
  # The tensor-core test stands alone (it reports a missing device itself).
  if [ "$TC_OK" = 1 ]; then
    s0=$SECONDS
    run_logged "$OUTDIR/tensor_core.log" "$(step_timeout 90)" "$TBIN"
    rc=$?
    if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
    record tensor_core $st $((SECONDS - s0)) "exit $rc; $(test_detail "$OUTDIR/tensor_core.log")"
  else
    record tensor_core SKIP 0 "not built"
  fi
  for s in "${RUN_STEPS[@]:1}"; do record "$s" SKIP 0 "test_kernels_gpu not built"; done
else
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

if [ "$DRY" != 1 ] && [ "$BUILD_OK" = 1 ]; then
  if [ "$HAVE_DEVICE" != 1 ]; then
    for s in "${RUN_STEPS[@]}"; do record "$s" SKIP 0 "no CUDA device"; done
  else
    # tensor-core instruction models vs the hardware
    s0=$SECONDS
    if [ "$TC_OK" = 1 ]; then
      run_logged "$OUTDIR/tensor_core.log" "$(step_timeout 90)" "$TBIN"
      rc=$?
      if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
      record tensor_core $st $((SECONDS - s0)) "exit $rc; $(test_detail "$OUTDIR/tensor_core.log")"
    else
      record tensor_core FAIL 0 "test_tensor_core_hw not built"
    fi
    # every kernel vs its twin, determinism, timings
    s0=$SECONDS
    run_logged "$OUTDIR/kernels.log" "$(step_timeout 240)" "$KBIN"
    rc=$?
    grep '^TIME' "$OUTDIR/kernels.log" > "$OUTDIR/timings.txt"
    if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
    record kernels $st $((SECONDS - s0)) "exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'); $(test_detail "$OUTDIR/kernels.log"); $(grep -c '^TIME' "$OUTDIR/timings.txt") timings"
    # sanitizers, each with its positive control
    if [ -z "$SANITIZER" ]; then
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
