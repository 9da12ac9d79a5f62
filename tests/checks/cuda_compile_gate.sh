#!/usr/bin/env bash
# Compile gate of the CUDA side (kernels/cuda/*.cu and the SIMT runtime's test kernels), with
# nvcc and no GPU:
#   1. every kernels/cuda/*.cu compiles for sm_90 SASS plus compute_90 PTX (the JIT fallback),
#      with -Xptxas -v; the registers, shared memory and spills of each kernel are listed, and
#      any spill (non-zero "spill stores" or "spill loads") fails the gate;
#   2. the tensor-core kernels (TENSOR_CORE_KERNELS below: file:kernel-name-substring) hold
#      the mma.sync instruction in their PTX and HMMA in their SASS;
#   3. each kernels/cuda object holds both an sm_90 ELF and PTX (cuobjdump --list-elf/--list-ptx);
#   4. tests/cuda/test_tensor_core_hw.cu (the hardware check of the host models, which calls
#      every wrapper of kernels/cuda/ptx.h) compiles for sm_90 without spills, its PTX holds
#      the instructions ptx.h emits (mma.sync tf32/bf16, every ldmatrix form, cvt.rna.tf32,
#      cp.async and its groups) and its SASS HMMA, LDSM (ldmatrix) and LDGSTS (cp.async).
# The GPU-side test programs themselves (tests/cuda/test_kernels_gpu.cu, test_tensor_core_hw.cu)
# are CMake targets of every build with the CUDA backend, so a build links them.
# SASS: cuobjdump (CUOBJDUMP=..., then PATH, then nvcc's directory); without it
# tests/checks/sass_dump.sh (Debian's nvidia disassembler, fetched once; SASS_OPTIONAL=1 makes its
# failure a skip), and step 3 is skipped.
# Exits 0 with a message when nvcc is absent. Env: NVCC, CUOBJDUMP, KEEP=dir for outputs,
# NVCC_EXTRA=more nvcc flags (e.g. -maxrregcount=24 to see the spill check fail).
set -euo pipefail
cd "$(dirname "$0")/../.."

# file:substring of the (mangled) kernel name that must use the tensor cores[:type], type
# tf32 (default: mma.sync m16n8k8 .tf32 in the PTX, HMMA.1688.F32.TF32 in the SASS) or bf16
# (mma.sync m16n8k16 .bf16, HMMA.16816.F32.BF16).
TENSOR_CORE_KERNELS=(
  "kernels/cuda/conv_dgrad.cu:dgrad_tf32_kernel:tf32"   # conv dgrad, TF32 operands
  "kernels/cuda/conv_dgrad.cu:dgrad_bf16_kernel:bf16"   # conv dgrad, BF16 operands
)
PTX_PROGRAM=tests/cuda/test_tensor_core_hw.cu
PTX_PROGRAM_PTX=("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"
               "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
               "ldmatrix.sync.aligned.m8n8.x1.shared.b16" "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16"
               "ldmatrix.sync.aligned.m8n8.x2.shared.b16" "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16"
               "ldmatrix.sync.aligned.m8n8.x4.shared.b16" "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"
               "cvt.rna.tf32.f32" "cp.async.ca.shared.global" "cp.async.cg.shared.global"
               "cp.async.commit_group" "cp.async.wait_group")
PTX_PROGRAM_SASS=(HMMA.1688.F32.TF32 HMMA.16816.F32.BF16 LDSM LDGSTS)

NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
  echo "cuda_compile_gate: nvcc not found (set NVCC=...): skipped"
  exit 0
fi
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || echo "$(dirname "$NVCC")/cuobjdump")}
[ -x "$CUOBJDUMP" ] || CUOBJDUMP=""
DEMANGLE=$(command -v c++filt || echo cat)
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$OUT"' EXIT
FLAGS=(-std=c++17 -I. -O3 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90)
read -r -a EXTRA <<< "${NVCC_EXTRA:-}"
FLAGS+=("${EXTRA[@]+"${EXTRA[@]}"}")
fail=0
echo "cuda_compile_gate: $("$NVCC" --version | tail -1)"
echo "cuda_compile_gate: cuobjdump: ${CUOBJDUMP:-not found}"

# compile SRC BASE: OUT/BASE.o with ptxas statistics in OUT/BASE.ptxas, the kernels listed
# (registers, shared memory, stack, spills); fails on a spill.
compile() {
  local cu=$1 base=$2
  if ! "$NVCC" "${FLAGS[@]}" -Xptxas -v -c "$cu" -o "$OUT/$base.o" 2> "$OUT/$base.ptxas"; then
    cat "$OUT/$base.ptxas"
    echo "FAIL nvcc -c $cu"
    return 1
  fi
  echo "ok   $cu"
  # ptxas prints, per entry: "Compiling entry function '<mangled>' for 'sm_90'", then
  # "N bytes stack frame, S bytes spill stores, L bytes spill loads", then "Used R registers...".
  # Only the sm_90 SASS compile matters (the compute_90 PTX target runs no ptxas).
  awk -v demangle="$DEMANGLE" '
    /Compiling entry function/ { match($0, /_Z[A-Za-z0-9_]+/); fn = substr($0, RSTART, RLENGTH)
                                 cmd = "echo " fn " | " demangle; cmd | getline name; close(cmd)
                                 gsub(/\(anonymous namespace\)::/, "", name); sub(/\(.*/, "", name); sub(/.*::/, "", name) }
    /spill stores/ { st = $5; ld = $9; frame = $1 }
    /Used [0-9]+ registers/ { r = $0; sub(/.*Used /, "", r); sub(/ registers.*/, "", r)
                              smem = "0"; if (match($0, /[0-9]+ bytes smem/)) { smem = substr($0, RSTART, RLENGTH); sub(/ bytes smem/, "", smem) }
                              printf "       %-34s %3d registers  %6s B smem  %s B stack  spills %s/%s\n", name, r, smem, frame, st, ld
                              if (st != 0 || ld != 0) bad = 1 }
    END { exit bad }' "$OUT/$base.ptxas" || { echo "FAIL $cu: register spills"; return 1; }
}

# sass SRC BASE: OUT/BASE.sass from OUT/BASE.o (cuobjdump) or an sm_90 cubin (sass_dump.sh);
# returns 2 when no disassembler could be had and SASS_OPTIONAL=1.
sass() {
  local cu=$1 base=$2
  [ -f "$OUT/$base.sass" ] && return 0
  if [ -n "$CUOBJDUMP" ]; then
    "$CUOBJDUMP" --dump-sass "$OUT/$base.o" > "$OUT/$base.sass"
    return 0
  fi
  # No cuobjdump (the CI toolkits): tests/checks/sass_dump.sh disassembles an sm_90 cubin with the
  # nvdisasm of Debian's CUDA package.
  if "$NVCC" -std=c++17 -I. -O3 -arch=sm_90 -cubin -o "$OUT/$base.cubin" "$cu" &&
     bash tests/checks/sass_dump.sh "$OUT/$base.cubin" > "$OUT/$base.sass"; then
    return 0
  fi
  rm -f "$OUT/$base.sass"
  if [ "${SASS_OPTIONAL:-0}" = 1 ]; then
    echo "skip SASS of $cu: no disassembler could be had (SASS_OPTIONAL=1)"
    return 2
  fi
  echo "FAIL $cu: cannot disassemble the SASS (no cuobjdump, tests/checks/sass_dump.sh failed)"
  return 1
}

shopt -s nullglob
# ---- 1, 3: the kernels --------------------------------------------------------------------------
for cu in kernels/cuda/*.cu; do
  base=$(basename "$cu" .cu)
  compile "$cu" "$base" || { fail=1; continue; }
  if [ -n "$CUOBJDUMP" ]; then
    if "$CUOBJDUMP" --list-elf "$OUT/$base.o" | grep -q sm_90 && "$CUOBJDUMP" --list-ptx "$OUT/$base.o" | grep -q ptx; then
      echo "ok   $base.o holds sm_90 SASS and compute_90 PTX"
    else
      echo "FAIL $base.o lacks the sm_90 ELF or the PTX fallback"
      fail=1
    fi
  fi
done

# ---- 2: the tensor-core kernels -------------------------------------------------------------------
for entry in "${TENSOR_CORE_KERNELS[@]+"${TENSOR_CORE_KERNELS[@]}"}"; do
  IFS=: read -r cu kernel type <<< "$entry"
  case "${type:-tf32}" in
    tf32) ptx_re='mma\.sync\.aligned\.m16n8k8\.row\.col\.f32\.tf32\.tf32\.f32'; sass_re='HMMA\.1688\.F32\.TF32' ;;
    bf16) ptx_re='mma\.sync\.aligned\.m16n8k16\.row\.col\.f32\.bf16\.bf16\.f32'; sass_re='HMMA\.16816\.F32\.BF16' ;;
    *) echo "FAIL $entry: unknown tensor-core type ${type}"; fail=1; continue ;;
  esac
  base=$(basename "$cu" .cu)
  if [ ! -f "$cu" ] || [ ! -f "$OUT/$base.o" ]; then
    echo "FAIL tensor-core kernel $kernel: $cu missing or not compiled"
    fail=1
    continue
  fi
  [ -f "$OUT/$base.ptx" ] || "$NVCC" "${FLAGS[@]}" -ptx -o "$OUT/$base.ptx" "$cu" 2>/dev/null || true
  # The PTX of this kernel only: from its ".entry <mangled>" line to the next ".entry".
  if re=$ptx_re awk -v k="$kernel" '/\.entry/ { on = index($0, k) > 0 } on && $0 ~ ENVIRON["re"] { n++ }
                         END { exit n > 0 ? 0 : 1 }' "$OUT/$base.ptx" 2>/dev/null; then
    echo "ok   $kernel: PTX has ${ptx_re//\\/}"
  else
    echo "FAIL $kernel: no mma.sync in the PTX"
    fail=1
  fi
  rc=0
  sass "$cu" "$base" || rc=$?
  [ "$rc" = 2 ] && continue
  [ "$rc" = 0 ] || { fail=1; continue; }
  # The SASS of this kernel only: from its header ("Function : <mangled>" from cuobjdump,
  # ".text.<mangled>:" from nvdisasm) to the next one.
  hmma=$(re=$sass_re awk -v k="$kernel" '/Function :|^\.text\./ { on = index($0, k) > 0 } on && $0 ~ ENVIRON["re"] { n++ } END { print n + 0 }' "$OUT/$base.sass")
  if [ "$hmma" -gt 0 ]; then
    echo "ok   $kernel: SASS has $hmma ${sass_re//\\/} instructions"
  else
    echo "FAIL $kernel: no ${sass_re//\\/} in the SASS"
    fail=1
  fi
done

# ---- 4: every instruction of kernels/cuda/ptx.h, in the hardware check's kernels -----------------
if compile "$PTX_PROGRAM" ptx_program; then
  if "$NVCC" "${FLAGS[@]}" -ptx -o "$OUT/ptx_program.ptx" "$PTX_PROGRAM"; then
    for ins in "${PTX_PROGRAM_PTX[@]}"; do
      if grep -qF "$ins" "$OUT/ptx_program.ptx"; then
        echo "ok   PTX of $PTX_PROGRAM has $ins"
      else
        echo "FAIL PTX of $PTX_PROGRAM lacks $ins"
        fail=1
      fi
    done
  else
    echo "FAIL nvcc -ptx $PTX_PROGRAM"
    fail=1
  fi
  rc=0
  sass "$PTX_PROGRAM" ptx_program || rc=$?
  if [ "$rc" = 0 ]; then
    for op in "${PTX_PROGRAM_SASS[@]}"; do
      n=$(grep -c "$op" "$OUT/ptx_program.sass" || true)
      if [ "$n" -gt 0 ]; then
        echo "ok   SASS of $PTX_PROGRAM has $op ($n)"
      else
        echo "FAIL SASS of $PTX_PROGRAM lacks $op"
        fail=1
      fi
    done
  elif [ "$rc" != 2 ]; then
    fail=1
  fi
else
  fail=1
fi

if [ "$fail" != 0 ]; then
  echo "cuda_compile_gate: FAILED"
  exit 1
fi
echo "cuda_compile_gate: passed"
