#!/usr/bin/env bash
# The device seam holds (ARCHITECTURE.md, "The device seam"): nothing outside the backends
# tests the build for a device or reaches into the device runtime.
#   1. no PARCHGRAD_GPU (the old per-file device #if) anywhere in the sources;
#   2. nn/gpu/ (the device backend and its runtime) is included only by itself and by the
#      unit test of its arena;
#   3. __CUDACC__ is tested only where nvcc and the CPU execution mode meet: kernels/cuda's
#      compat.h, nvcc.h and ptx.h, and kernels/simt/cuda_compat.h (which refuses nvcc).
# Each rule is first run on a planted violation, which it must report (a rule that finds
# nothing there proves nothing). Exit 0 when the tree is clean.
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 2
SOURCES=(core kernels nn autograd parchgrad weights tools/lib tools/cli tests/unit)

rule1() { grep -rn --include='*.cpp' --include='*.h' --include='*.cu' 'PARCHGRAD_GPU' "$@"; }
rule2() {
  grep -rn --include='*.cpp' --include='*.h' --include='*.cu' '#include "nn/gpu/' "$@" |
    grep -v -E '^([^:]*/)?nn/gpu/[^:]*:' | grep -v -E '^([^:]*/)?tests/unit/test_gpu_arena\.cpp:'
}
rule3() {
  grep -rn --include='*.cpp' --include='*.h' --include='*.cu' '__CUDACC__' "$@" |
    grep -v -E '^([^:]*/)?kernels/cuda/(compat|nvcc|ptx)\.h:' | grep -v -E '^([^:]*/)?kernels/simt/cuda_compat\.h:'
}

# Positive controls.
plant=$(mktemp -d)
trap 'rm -rf "$plant"' EXIT
mkdir -p "$plant/parchgrad"
printf '#if PARCHGRAD_GPU\n#include "nn/gpu/runtime.h"\n#endif\n#if defined(__CUDACC__)\n#endif\n' > "$plant/parchgrad/x.cpp"
for r in rule1 rule2 rule3; do
  if ! $r "$plant" > /dev/null; then
    echo "check_device_seam: $r does not report a planted violation (the check is broken)"
    exit 1
  fi
done

fail=0
for r in rule1 rule2 rule3; do
  out=$($r "${SOURCES[@]}")
  if [ -n "$out" ]; then
    echo "check_device_seam: $r:"
    echo "$out"
    fail=1
  fi
done
[ "$fail" = 0 ] && echo "check_device_seam: clean (3 rules, positive controls reported)"
exit $fail
