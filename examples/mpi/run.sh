#!/bin/bash
# The three large jobs under MPI's launcher, on one node or several: every process takes its
# share of the images (`--shard auto`: OMPI_COMM_WORLD_RANK/SIZE under Open MPI, PMI_RANK/SIZE
# under MPICH or Intel MPI) and, with --device cuda, the GPU of its node-local rank
# (OMPI_COMM_WORLD_LOCAL_RANK or MPI_LOCALRANKID modulo the visible GPUs); the engine does not
# link MPI. Then one process merges, into the files one run writes.
#
#   NP=8 WEIGHTS=resnet50-0676ba61.pth DATA=/data/imagenet/val bash examples/mpi/run.sh
#
# The lines themselves, for 8 processes:
#   mpirun -np 8 parchgrad stats --weights W --data TREE --device cuda --shard auto --out out/stats/stats.pgshard
#   mpirun -np 8 parchgrad saliency --weights W --device cuda --shard auto --out out/maps TREE
#   mpirun -np 8 parchgrad eval --weights W --data TREE --device cuda --shard auto --out out/eval/REPORT
# (MPICH: mpiexec -n 8 ...; more processes than cores: Open MPI's --oversubscribe; as root:
# --allow-run-as-root.) tests/python/test_scale_out.py runs this script with NP=3 on the CPU.
set -euo pipefail
PARCHGRAD=${PARCHGRAD:-parchgrad}
MPIRUN=${MPIRUN:-mpirun}
NP=${NP:-4}
WEIGHTS=${WEIGHTS:-resnet50-0676ba61.pth}
DATA=${DATA:-/data/imagenet/val}           # an ImageFolder tree
OUT=${OUT:-out}
DEVICE=${DEVICE:-cuda}
read -r -a EXTRA <<< "${MPIRUN_ARGS:-}"     # e.g. "--oversubscribe" on a small machine
mkdir -p "$OUT/stats" "$OUT/eval"

"$MPIRUN" -np "$NP" "${EXTRA[@]}" "$PARCHGRAD" stats --weights "$WEIGHTS" --data "$DATA" --device "$DEVICE" \
  --shard auto --out "$OUT/stats/stats.pgshard"
"$PARCHGRAD" stats merge "$OUT"/stats/stats-*-of-"$NP".pgshard --out "$OUT/stats.safetensors"

"$MPIRUN" -np "$NP" "${EXTRA[@]}" "$PARCHGRAD" saliency --weights "$WEIGHTS" --stats "$OUT/stats.safetensors" \
  --method grad --parchgrad cls --device "$DEVICE" --shard auto --out "$OUT/maps" "$DATA"
"$PARCHGRAD" merge-results "$OUT/maps"

"$MPIRUN" -np "$NP" "${EXTRA[@]}" "$PARCHGRAD" eval --weights "$WEIGHTS" --stats "$OUT/stats.safetensors" \
  --data "$DATA" --methods grad,grad+cls --device "$DEVICE" --shard auto --out "$OUT/eval/REPORT"
"$PARCHGRAD" eval merge "$OUT"/eval/REPORT-*-of-"$NP".json
