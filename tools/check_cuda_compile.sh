#!/usr/bin/env bash
# Compile checks of the CUDA side of the SIMT runtime (kernels/simt), with nvcc and no GPU:
#   1. the runtime's test kernels (tests/simt_kernels/test_kernels.cu, which use every
#      device path of kernels/cuda/compat.h and ptx.h) compile for sm_90;
#      ptxas's register and shared-memory use per kernel is printed;
#   2. the PTX holds the intended instructions (mma.sync tf32/bf16, ldmatrix, cp.async);
#   3. the SASS holds HMMA (tensor-core MMA), LDSM (ldmatrix) and LDGSTS (cp.async), when
#      cuobjdump is available (it is not part of every CUDA install: skipped otherwise);
#   4. the hardware test program tests/cuda/test_tensor_core_hw.cu compiles and links.
# Exits non-zero on any failure; exits 0 with a message when nvcc is absent.
# Usage: bash tools/check_cuda_compile.sh   (env: NVCC, CUDA_ARCH=sm_90, KEEP=dir for outputs)
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
  echo "check_cuda_compile: nvcc not found (set NVCC=...): skipped"
  exit 0
fi
ARCH=${CUDA_ARCH:-sm_90}
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$OUT"' EXIT
FLAGS=(-arch="$ARCH" -std=c++17 -I. -O3)
start=$(date +%s)
fail=0
echo "check_cuda_compile: $("$NVCC" --version | tail -1), $ARCH"

# 1. Test kernels: object file, with ptxas statistics.
if "$NVCC" "${FLAGS[@]}" -Xptxas -v -c tests/simt_kernels/test_kernels.cu -o "$OUT/test_kernels.o" \
    2> "$OUT/ptxas.log"; then
  echo "ok   nvcc -c tests/simt_kernels/test_kernels.cu"
  # "Compiling entry function '<mangled>'" is followed by "Used N registers, ...".
  awk '/Compiling entry function/ { match($0, /_Z[A-Za-z0-9_]+/); fn = substr($0, RSTART, RLENGTH) }
       /Used [0-9]+ registers/ { sub(/.*Used/, "Used"); printf "       %-60s %s\n", fn, $0 }' "$OUT/ptxas.log"
else
  cat "$OUT/ptxas.log"
  echo "FAIL nvcc -c tests/simt_kernels/test_kernels.cu"
  fail=1
fi

# 2. PTX: the instructions kernels/cuda/ptx.h emits.
if "$NVCC" "${FLAGS[@]}" -ptx tests/simt_kernels/test_kernels.cu -o "$OUT/test_kernels.ptx"; then
  for ins in "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" \
             "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" \
             "ldmatrix.sync.aligned.m8n8.x1.shared.b16" "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16" \
             "ldmatrix.sync.aligned.m8n8.x4.shared.b16" "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16" \
             "cvt.rna.tf32.f32" "cp.async.ca.shared.global" "cp.async.cg.shared.global" \
             "cp.async.commit_group" "cp.async.wait_group" "cp.async.wait_all"; do
    if grep -qF "$ins" "$OUT/test_kernels.ptx"; then
      echo "ok   PTX has $ins"
    else
      echo "FAIL PTX lacks $ins"
      fail=1
    fi
  done
else
  echo "FAIL nvcc -ptx tests/simt_kernels/test_kernels.cu"
  fail=1
fi

# 3. SASS, if cuobjdump is there.
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || echo "$(dirname "$NVCC")/cuobjdump")}
if [ -x "$CUOBJDUMP" ] && [ -f "$OUT/test_kernels.o" ]; then
  "$CUOBJDUMP" --dump-sass "$OUT/test_kernels.o" > "$OUT/test_kernels.sass"
  for op in HMMA.1688.F32.TF32 HMMA.16816.F32.BF16 LDSM LDGSTS; do
    n=$(grep -c "$op" "$OUT/test_kernels.sass" || true)
    if [ "$n" -gt 0 ]; then
      echo "ok   SASS has $op ($n)"
    else
      echo "FAIL SASS lacks $op"
      fail=1
    fi
  done
else
  echo "skip SASS check: cuobjdump not found (not shipped with this CUDA install)"
fi

# 4. The hardware test program (runs only on a GPU machine).
if "$NVCC" "${FLAGS[@]}" tests/cuda/test_tensor_core_hw.cu -o "$OUT/test_tensor_core_hw"; then
  echo "ok   nvcc tests/cuda/test_tensor_core_hw.cu (run it on a GPU: it prints PASS/FAIL per instruction)"
else
  echo "FAIL nvcc tests/cuda/test_tensor_core_hw.cu"
  fail=1
fi

echo "check_cuda_compile: $([ $fail = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start )) s"
exit $fail
