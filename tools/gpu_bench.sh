#!/usr/bin/env bash
# The short GPU speed check, for iterating on the engine's device path: tools/gpu_check.sh with
# --steps bench (its env, device, vendor, deps and build steps, the build making the parchgrad
# target alone; a device probe through the engine; then its bench step) and these defaults:
#
#   bash tools/gpu_bench.sh [--dry-run] OUTDIR
#
# bench: tools/bench_vs_pytorch.py --device cuda, batch 256, 224x224, 3 warm-up + 8 timed
# iterations, the engine beside PyTorch's best in the same run (eager; torch.compile'd where
# BENCH_COMPILE says) on
#   resnet18 fp32 and bf16, resnet50 bf16, efficientnet_b0 fp32 and bf16, convnext_tiny fp32 and
#   bf16, mobilenet_v3_large bf16, and the engine's ParchGrad cls on resnet18 bf16
# (BENCH_RUNS); OUTDIR/bench.json and OUTDIR/bench.md (the table for BENCHMARKS.md), the summary
# last on stdout. Without torchvision PyTorch's models come from tests/gpu's torchvision-free
# builders (same module tree and tensor names).
#
# Time: meant to fit in about 4 minutes with the build (GPU_BENCH_BUDGET_S, default 235 s, is
# gpu_check.sh's GPU_CHECK_BUDGET_S here; GPU_CHECK_RESERVE_S, 120 s of it, is kept for the bench
# step, so the build gets about 105 s. Not yet timed on a GPU machine: the parchgrad target took
# about 9 minutes on this 2-core development machine, so expect 1-1.5 minutes from scratch on
# 16 cores and seconds when BUILD_DIR holds an earlier build (gpu_check.sh uses the same one).
# The bench writes its files after every run, so a run cut short by the budget keeps what it
# measured; with the cache below the next run goes further). torch.compile takes 20-60 s per model and
# precision, so BENCH_COMPILE defaults to resnet18:bf16 only (on: every pair, off: none, or a
# list of model:precision pairs). PyTorch's figures are kept in BENCH_TORCH_CACHE (default
# BUILD_DIR/bench_torch_cache.json; "none": not kept): a later run on the same machine times
# only the engine and takes PyTorch's figures from there (marked "PyTorch: earlier run" in the
# table), so one run with BENCH_COMPILE=on and a longer budget gives every pair its compiled
# figure for the runs after it.
#
# --dry-run (no device): the build as on the GPU machine, then a CPU smoke run of the same models
# (fp32, batch 2, 32x32: BENCH_DRY_RUNS, BENCH_DRY_SIZE) with PyTorch's models from the
# torchvision-free builders, as on the GPU machine (PG_BENCH_NO_TORCHVISION=1; set it to 0 to use
# an installed torchvision).
#
# Everything else (BUILD_DIR, JOBS, PYTHON, GPU_ARCH, ENGINE_CMAKE_ARGS, BENCH_BATCH, ...) as
# tools/gpu_check.sh reads it (its header).
set -u
cd "$(dirname "$0")/.." || exit 2
DRY=0
for a in "$@"; do
  [ "$a" = --dry-run ] && DRY=1
  case "$a" in
    --steps | --steps=*) echo "gpu_bench: --steps is gpu_check.sh's (this is its bench step)" >&2; exit 2 ;;
  esac
done
BUILD=${BUILD_DIR:-${TMPDIR:-/tmp}/parchgrad-gpu-build}
RUNS=${BENCH_RUNS:-resnet18:fp32,resnet18:bf16,resnet50:bf16,efficientnet_b0:fp32,efficientnet_b0:bf16,convnext_tiny:fp32,convnext_tiny:bf16,mobilenet_v3_large:bf16,resnet18:bf16:cls}
# The dry run's runs: each model of RUNS once, fp32 (the CPU has no bf16 or tf32 path here).
DRY_RUNS=$(tr ',' '\n' <<< "$RUNS" | cut -d: -f1 | awk 'NF && !seen[$0]++ { printf "%s%s:fp32", sep, $0; sep = "," }')
CACHE=${BENCH_TORCH_CACHE:-$BUILD/bench_torch_cache.json}
[ "$CACHE" = none ] && CACHE=""
if [ "$DRY" = 1 ]; then
  export PG_BENCH_NO_TORCHVISION=${PG_BENCH_NO_TORCHVISION:-1}
  CACHE=""  # a smoke run measures nothing worth keeping
fi
export BUILD_DIR=$BUILD
export GPU_CHECK_BUDGET_S=${GPU_BENCH_BUDGET_S:-235}
export GPU_CHECK_RESERVE_S=${GPU_CHECK_RESERVE_S:-120}
export BENCH_RUNS=$RUNS
export BENCH_COMPILE=${BENCH_COMPILE:-resnet18:bf16}
export BENCH_DRY_RUNS=${BENCH_DRY_RUNS:-$DRY_RUNS}
export BENCH_DRY_SIZE=${BENCH_DRY_SIZE:-32}
export BENCH_TORCH_CACHE=$CACHE
exec bash tools/gpu_check.sh --steps bench "$@"
