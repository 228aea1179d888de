#!/usr/bin/env bash
# Weak scaling of dptrain on this machine: images/s (forward, backward,
# allreduce and update, from metrics.jsonl) at a fixed per-rank batch with
# 1 thread per rank, for 1 and 2 ranks over shared memory and over
# loopback TCP, and the share of step time spent waiting for allreduce.
#
#   benchmarks/weak_scaling.sh [CONFIG] [PER_RANK_BATCH] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/convbn_fmnist.textproto}
batch=${2:-64}
steps=${3:-300}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lscpu | grep -E "^Model name" || true

measure() {  # ranks label mpi-args...
  local n=$1 label=$2
  shift 2
  mpirun -np "$n" --bind-to none -x OMP_NUM_THREADS=1 "$@" build/dist/dptrain train "$config" \
    --run-dir "$out/$label" --set data.batch_size=$((batch * n)) --set solver.max_steps="$steps" \
    --set runtime.log_every_steps=$((steps / 3)) --set data.test_limit=1000 >/dev/null
  # The last train record covers the last third of the steps (warm).
  grep '"kind":"train"' "$out/$label/metrics.jsonl" | tail -1 |
    sed -E 's/.*"images_per_sec":([0-9.e+-]+).*"allreduce_wait_fraction":([0-9.e+-]+).*/\1 \2/'
}

read -r one _ < <(measure 1 one)
read -r two wait2 < <(measure 2 two)
read -r tcp waittcp < <(measure 2 tcp --mca btl tcp,self)
printf "%-28s %10s %8s %12s\n" "setup" "images/s" "speedup" "allreduce_wait"
printf "%-28s %10.0f %8s %12s\n" "1 rank" "$one" "1.00" "-"
printf "%-28s %10.0f %8.2f %12.3f\n" "2 ranks (shared memory)" "$two" "$(awk "BEGIN{print $two/$one}")" "$wait2"
printf "%-28s %10.0f %8.2f %12.3f\n" "2 ranks (loopback TCP)" "$tcp" "$(awk "BEGIN{print $tcp/$one}")" "$waittcp"
